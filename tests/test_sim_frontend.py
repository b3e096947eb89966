"""The streaming front end (planner.sim.frontend): a single process that sends each step's
tokens to the clients; once the engine outpaces it, tokens queue in front of it, clients see
them late (the first one too), and a closed-loop client's next request waits for its last."""
from dataclasses import replace

import pytest

from planner.bench.predict import Client, predict_spec
from planner.bench.rows import resolve
from planner.sim.frontend import FrontEnd

ROW = {"id": "r8", "model_path": "meta-llama/Llama-3.1-8B-Instruct", "system": "h200_sxm", "backend": "sglang",
       "backend_version": "0.5.6.post2", "precision": "fp8", "gemm_quant_mode": "fp8", "mode": "agg", "isl": 1000,
       "osl": 500, "concurrency": 256, "tp_size": 4, "pp_size": 1, "attention_dp_size": 1, "batch_size": 256}
NO_LIMIT = {"frontend_chunks_per_s": 0.0}
CLIENT = Client()


def test_the_backlog_grows_while_the_engine_outpaces_the_front_end_and_drains_after():
    fe = FrontEnd(1000.0)                     # 1 ms a token
    fe.made(0.0, 1.0, 1500)                   # 1.5 s of work in 1 s: 0.5 s behind
    assert fe.wait == pytest.approx(0.5)
    assert fe.seen(1.0) == pytest.approx(1.501)
    fe.made(1.0, 2.0, 500)                    # half its capacity: drains 0.5 s over the second
    assert fe.wait == pytest.approx(0.0)
    fe.made(2.0, 2.0, 100)                    # a burst at one instant
    assert fe.seen(2.05) == pytest.approx(2.05 + 0.05 + 0.001)
    assert fe.seen(3.0) == pytest.approx(3.001)
    # a rank reporting a run that began before the last update: only the new span drains
    fe.made(3.0, 4.0, 1000)
    fe.made(3.5, 4.0, 500)
    assert fe.wait == pytest.approx(0.5)
    with pytest.raises(ValueError):
        FrontEnd(0.0)


def test_a_closed_loop_streams_no_faster_than_the_front_end_and_ttft_grows_with_the_output():
    free = predict_spec(resolve(ROW, NO_LIMIT), client=CLIENT)
    rate = 0.4 * free["pred_tokens_per_s_per_gpu"] * 4          # well under what the engine makes
    capped = {"frontend_chunks_per_s": rate}
    spec = resolve(ROW, capped)
    assert spec.engine.frontend_tokens_per_s == pytest.approx(rate)
    got = predict_spec(spec, client=CLIENT)
    assert got["status"] == "ok"
    assert got["pred_tokens_per_s_per_gpu"] * 4 == pytest.approx(rate, rel=0.15)
    # the clients wait for queued tokens, the first one included: TTFT rises far more than TPOT
    ttft_x, tpot_x = got["pred_ttft_ms"] / free["pred_ttft_ms"], got["pred_tpot_ms"] / free["pred_tpot_ms"]
    assert ttft_x > 3 and ttft_x > 2 * tpot_x
    # with more tokens per request the queue in front of each first token is longer
    longer = predict_spec(resolve(dict(ROW, osl=1000), capped), client=CLIENT)
    assert longer["pred_ttft_ms"] > 1.5 * got["pred_ttft_ms"]
    # streaming every 10 steps sends a tenth of the chunks: the same rate no longer binds
    chunked = predict_spec(resolve(ROW, {**capped, "stream_interval": 10}), client=CLIENT)
    assert chunked["pred_ttft_ms"] == pytest.approx(free["pred_ttft_ms"], rel=0.05)
    # so does a second front-end process per worker: twice the rate
    assert replace(spec.engine, frontend_workers=2).frontend_tokens_per_s == pytest.approx(2 * rate)


def test_sglang_rows_stream_as_their_recipes_do():
    qwen = dict(ROW, model_path="Qwen/Qwen3.5-397B-A17B", system="b200_sxm", backend_version="0.5.9",
                tp_size=8, moe_tp_size=8, moe_ep_size=1)
    eng = resolve(qwen).engine
    assert (eng.stream_interval, eng.frontend_workers) == (30, 6)                 # 87b5ee212
    assert resolve(dict(qwen, measured="2026-04-14")).engine.stream_interval == 50  # from 92985b879
    assert resolve(dict(qwen, system="h200_sxm")).engine.stream_interval == 50
    assert resolve(dict(qwen, precision="bf16", gemm_quant_mode="", moe_quant_mode="", measured="2026-04-14")
                   ).engine.stream_interval == 30
    assert eng.settings()["tokenizer_worker_num"] == 6 and eng.first_token_alone
    assert resolve(qwen).kv_dtype == "fp8"                                  # --kv-cache-dtype fp8_e4m3
    dsr1 = dict(qwen, model_path="deepseek-ai/DeepSeek-R1")
    assert resolve(dsr1).engine.stream_interval == 30
    h200 = resolve(dict(dsr1, system="h200_sxm"))
    assert h200.engine.stream_interval == 10 and h200.kv_dtype == "bf16"   # its H200 recipe: 16-bit KV
    # the 8B rows of another sweep keep SGLang's defaults: every token, one process
    eng = resolve(ROW).engine
    assert (eng.stream_interval, eng.frontend_workers) == (1, 1)


def test_vllm_and_tensorrt_llm_rows_stream_as_their_recipes_did_on_the_run_date():
    minimax = dict(ROW, model_path="MiniMaxAI/MiniMax-M2.5", system="b200_sxm", backend="vllm",
                   backend_version="0.19.0", tp_size=2, moe_tp_size=2, moe_ep_size=1, measured="2026-04-10")
    assert resolve(minimax).engine.stream_interval == 20              # set from 2026-04-03
    assert resolve(dict(minimax, measured="2026-03-20")).engine.stream_interval == 1
    assert resolve(dict(minimax, system="h200_sxm")).engine.stream_interval == 1   # its H200 recipe: every token
    gptoss = dict(minimax, model_path="openai/gpt-oss-120b", backend="trtllm", backend_version="1.1.0rc2.post2",
                  precision="fp4", gemm_quant_mode="", moe_quant_mode="w4a16_mxfp4")
    eng = resolve(gptoss).engine
    assert (eng.stream_interval, eng.frontend_workers, eng.first_token_alone) == (20, 4, True)


def test_predict_names_the_front_ends_rate_and_takes_it_as_an_engine_setting():
    from click.testing import CliRunner

    from planner.cli import main
    args = ["predict", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "h200", "--engine", "sglang",
            "--dtype", "fp8", "--tp", "2", "--isl", "1000", "--osl", "500", "--concurrency", "256",
            "--prompts-per-client", "3"]
    r = CliRunner().invoke(main, [*args, "--engine-setting", "frontend_chunks_per_s=5000"])
    assert r.exit_code == 0, r.output
    assert "front end streams at most 5,000 tokens/s" in r.output
    r = CliRunner().invoke(main, [*args, "--engine-setting", "frontend_chunks_per_s=0"])
    assert "front end streams without limit" in r.output
    r = CliRunner().invoke(main, [*args, "--engine-setting", "frontend_workers=0"])
    assert r.exit_code == 2 and "frontend_workers must be >= 1" in r.output
