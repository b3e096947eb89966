"""`planner predict` and the engine profiles behind it."""
import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from planner import catalog
from planner.bench.predict import INFERENCEMAX, Client, predict_spec
from planner.bench.rows import resolve
from planner.cli import main
from planner.engines.config import engine_config
from planner.errors import InputError
from planner.plan import Deployment, Plan, Role, plan_from_dict

DEV = Path(__file__).resolve().parents[2] / "shared" / "silicon" / "dev.csv"

ROW = {"id": "r1", "model_path": "meta-llama/Llama-3.1-70B", "system": "h200_sxm", "backend": "vllm",
       "precision": "fp8", "gemm_quant_mode": "fp8", "mode": "agg", "isl": 1024, "osl": 256, "concurrency": 8,
       "tp_size": 4, "pp_size": 1, "attention_dp_size": 1, "batch_size": 8}


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_single_configuration_prints_ttft_tpot_and_the_step_cost_source():
    r = run("predict", "--model", "meta-llama/Llama-3.1-70B", "--gpu", "h200", "--engine", "vllm", "--dtype", "fp8",
            "--tp", "4", "--isl", "1024", "--osl", "256", "--concurrency", "8")
    assert r.exit_code == 0, r.output
    assert "TTFT" in r.output and "TPOT" in r.output and "step costs:" in r.output
    # the engine defaults it assumed, for the GPU, in the engine's own flag names
    assert "engine settings assumed: vllm: max_num_batched_tokens 8192, max_num_seqs 1024" in r.output
    r = run("predict", "--model", "meta-llama/Llama-3.1-70B", "--gpu", "b200", "--engine", "sglang", "--dtype", "fp8",
            "--tp", "4", "--isl", "1024", "--osl", "256", "--concurrency", "8", "--engine-setting", "max_seqs=64")
    assert "sglang: chunked_prefill_size 16384, max_running_requests 64" in r.output, r.output
    # the client it assumed, and a fixed-length one on request
    base = ("predict", "--model", "meta-llama/Llama-3.1-70B", "--gpu", "h200", "--dtype", "fp8", "--tp", "4",
            "--isl", "1024", "--osl", "256", "--concurrency", "8")
    r = run(*base)
    assert "client: 8 clients at once, 10 requests each, lengths uniform in [0.8 L, L]" in r.output
    fixed = run(*base, "--range-ratio", "1", "--prompts-per-client", "3")
    assert fixed.exit_code == 0 and "3 requests each, lengths uniform in [1 L, L]" in fixed.output
    assert fixed.output.splitlines()[0] != r.output.splitlines()[0]
    bad = run(*base, "--range-ratio", "0")
    assert bad.exit_code == 2 and "--range-ratio" in bad.output


@pytest.mark.parametrize("args,needle", [
    (("--gpu", "h2000"), "did you mean h200"),
    (("--engine", "vlm"), "did you mean vllm"),
    (("--model", "llama-3.1-70"), "unknown model"),
])
def test_unknown_names_are_one_line_errors_with_close_names(args, needle):
    base = {"--model": "llama-3.1-70b", "--gpu": "h200", "--engine": "vllm"}
    base.update(dict(zip(args[::2], args[1::2])))
    flat = [x for kv in base.items() for x in kv]
    r = CliRunner().invoke(main, ["predict", *flat, "--isl", "100", "--osl", "10", "--concurrency", "1"])
    assert r.exit_code == 2 and needle in r.output and "Traceback" not in r.output


def test_rows_file_keeps_every_row_and_says_why_it_cannot_predict_some(tmp_path):
    moe = dict(ROW, id="moe", model_path="deepseek-ai/DeepSeek-R1-unknown")
    disagg = dict(ROW, id="dis", pp_size=2)
    measured = dict(ROW, id="meas", silicon_ttft_ms=200.0, silicon_tpot_ms=12.0)
    src = tmp_path / "rows.csv"
    pd.DataFrame([ROW, moe, disagg, measured]).to_csv(src, index=False)
    out = tmp_path / "pred.csv"
    r = run("predict", "--rows", str(src), "-o", str(out))
    assert r.exit_code == 0, r.output
    pred = pd.read_csv(out)
    assert list(pred["id"]) == ["r1", "moe", "dis", "meas"]
    st = dict(zip(pred["id"], pred["status"]))
    assert st["r1"] == "ok" and st["meas"] == "ok"
    assert "not in the catalog" in st["moe"] and "pipeline parallelism" in st["dis"]
    assert pred.loc[pred["id"] == "moe", "pred_ttft_ms"].isna().all()       # never guessed
    assert "TTFT med|e|" in r.output                                         # measured columns are scored
    assert pred.loc[0, "source"].startswith(("measured kernels", "roofline"))


def test_missing_columns_and_missing_folder_are_input_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("model_path,system\nx,y\n")
    r = CliRunner().invoke(main, ["predict", "--rows", str(bad)])
    assert r.exit_code == 2 and "missing column" in r.output
    good = tmp_path / "rows.csv"
    pd.DataFrame([ROW]).to_csv(good, index=False)
    r = CliRunner().invoke(main, ["predict", "--rows", str(good), "-o", str(tmp_path / "no" / "p.csv")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_tpot_grows_with_concurrency_and_falls_with_tp():
    base = resolve(ROW)
    lo = predict_spec(replace(base, concurrency=4))
    hi = predict_spec(replace(base, concurrency=64, coupled=replace(base.coupled, max_batch=64)))
    assert lo["status"] == hi["status"] == "ok"
    assert hi["pred_tpot_ms"] > lo["pred_tpot_ms"] and hi["pred_ttft_ms"] > lo["pred_ttft_ms"]
    tp8 = predict_spec(replace(base, coupled=replace(base.coupled, tp=8)))
    assert tp8["pred_tpot_ms"] < predict_spec(base)["pred_tpot_ms"]


def test_the_client_bursts_n_prompts_at_once_and_its_first_round_weighs_one_in_ten():
    base = replace(resolve(ROW), concurrency=32, coupled=replace(resolve(ROW).coupled, max_batch=32))
    full = predict_spec(base)
    # the first round is 32 prompts at once: TTFT well above one prompt's at 1 client
    alone = predict_spec(replace(base, concurrency=1, coupled=replace(base.coupled, max_batch=1)))
    burst_only = predict_spec(base, client=Client(prompts_per_client=1))
    assert burst_only["pred_ttft_ms"] > 2 * alone["pred_ttft_ms"]
    assert alone["pred_ttft_ms"] < full["pred_ttft_ms"] < burst_only["pred_ttft_ms"]
    # simulating fewer rounds keeps the burst's weight: close to the full run
    short = predict_spec(base, client=replace(INFERENCEMAX, rounds=4))
    assert short["pred_ttft_ms"] == pytest.approx(full["pred_ttft_ms"], rel=0.1)
    assert short["pred_tpot_ms"] == pytest.approx(full["pred_tpot_ms"], rel=0.05)
    # lengths uniform in [0.8 L, L]: shorter on average than fixed at L
    fixed = predict_spec(base, client=Client(range_ratio=1.0))
    assert fixed["pred_ttft_ms"] > full["pred_ttft_ms"]


def test_client_lengths_and_weights():
    import numpy as np
    c = Client(prompts_per_client=10, range_ratio=0.8)
    x = c.lengths(1000, 5000, np.random.default_rng(0))
    assert x.min() >= 800 and x.max() <= 1000 and abs(x.mean() - 900) < 5
    first = np.array([True, True, False, False, False, False])
    assert c.mean(np.array([10.0, 10.0, 0.0, 0.0, 0.0, 0.0]), first) == pytest.approx(1.0)
    assert Client(rounds=50).simulated == 10 and Client(rounds=4).simulated == 4
    with pytest.raises(InputError):
        Client(range_ratio=0.0)


def test_engines_differ_in_how_they_schedule():
    v, s, t = (engine_config(e) for e in ("vllm", "sglang", "trtllm"))
    assert v.schedule == "mixed" and s.schedule == "prefill_first" and t.admission == "no_evict"
    assert set(v.settings()) == {"max_num_batched_tokens", "max_num_seqs", "gpu_memory_utilization"}
    assert set(s.settings()) == {"chunked_prefill_size", "max_running_requests", "mem_fraction_static"}
    assert v.graph_sizes[:3] == (1, 2, 4) and max(v.graph_sizes) <= v.graph_max_batch
    assert engine_config("tensorrt-llm").name == "trtllm"
    with pytest.raises(InputError, match="unknown engine"):
        engine_config("tgi")
    with pytest.raises(InputError, match="unknown engine setting"):
        engine_config("vllm", max_num_seqs=3)


def test_engine_settings_survive_a_plan_json_round_trip():
    eng = engine_config("sglang", token_budget=4096, cpu_per_step_s=1e-3)
    dep = Deployment("coupled", "llama-3.1-8b", 4096, coupled=Role("h100", 1), engine=eng)
    again = plan_from_dict(json.loads(Plan(dep).to_json())).deployment
    assert again.engine == eng
    assert again.perf("coupled").decode_time_s(8, 8000) == dep.perf("coupled").decode_time_s(8, 8000)


def test_cpu_time_adds_or_hides_under_the_gpu_time():
    base = resolve(ROW)
    pm = Deployment("coupled", base.model, 8192, coupled=Role("h200", 1, 4), dtype="fp8",
                    engine=replace(base.engine, cpu_per_step_s=0.0, cpu_per_seq_s=0.0, overlap=False)).perf("coupled")
    add = replace(pm, cpu=replace(pm.cpu, per_step_s=2e-3))
    hide = replace(add, cpu=replace(add.cpu, overlap=True))
    gpu = pm.decode_time_s(8, 8000)
    assert add.decode_time_s(8, 8000) == pytest.approx(gpu + 2e-3)
    assert hide.decode_time_s(8, 8000) == pytest.approx(max(gpu, 2e-3))


@pytest.mark.skipif(not DEV.is_file(), reason="../shared/silicon/dev.csv not found")
def test_dense_aggregated_dev_rows_are_predicted_within_a_sane_band():
    from planner.bench.run import predict_frame
    df = pd.read_csv(DEV)
    dense = df[df["model_path"].str.contains("Llama") & (df["mode"] == "agg")].sample(12, random_state=3)
    pred = predict_frame(dense)
    assert (pred["status"] == "ok").all(), pred["status"].tolist()
    ratio_tpot = pred["pred_tpot_ms"] / pred["silicon_tpot_ms"]
    ratio_ttft = pred["pred_ttft_ms"] / pred["silicon_ttft_ms"]
    # TPOT: the step cost. TensorRT-LLM's CPU time per sequence is fitted on every row, MoE
    # included (planner/data/engine_fits.csv): it over-predicts dense TensorRT-LLM runs at 64+
    # clients (3 of these 12 rows), as docs/validation-silicon.md reports
    assert ratio_tpot.between(0.6, 1.6).mean() >= 0.75
    assert ratio_tpot[pred["backend"] == "vllm"].between(0.8, 1.25).all()
    assert ratio_ttft.between(0.25, 4.0).mean() >= 0.75     # TTFT: queueing at the edge of the KV memory is harder


MOE_ROW = {"id": "ds", "model_path": "deepseek-ai/DeepSeek-R1", "system": "b200_sxm", "backend": "trtllm",
           "precision": "fp8", "gemm_quant_mode": "fp8", "moe_quant_mode": "fp8_block", "mode": "agg",
           "isl": 1024, "osl": 128, "concurrency": 32, "tp_size": 1, "pp_size": 1, "attention_dp_size": 8,
           "moe_tp_size": 1, "moe_ep_size": 8, "batch_size": 4}


def test_moe_rows_run_every_attention_dp_rank_and_count_all_gpus():
    spec = resolve(MOE_ROW)
    assert spec.coupled.dp == 8 and spec.coupled.ep == 8 and spec.moe_dtype == "fp8_block" and spec.gpus == 8
    assert spec.dtype == "fp8_block"          # the checkpoint's block-wise FP8, as the engine loads it
    got = predict_spec(spec)
    assert got["status"] == "ok", got
    # no DP column: the MoE group's GPUs beyond the attention TP are DP ranks (vLLM's -dp)
    vllm = resolve(dict(MOE_ROW, backend="vllm", attention_dp_size=float("nan"), moe_tp_size=2, moe_ep_size=4))
    assert (vllm.coupled.tp, vllm.coupled.dp, vllm.coupled.ep) == (1, 8, 4)


def test_tensorrt_llm_deepseek_rows_stream_their_first_chunk_after_the_recipes_interval():
    row = dict(MOE_ROW, tp_size=8, attention_dp_size=1, moe_ep_size=8, concurrency=4, batch_size=4, osl=256)
    spec = resolve(row)
    assert (spec.engine.stream_interval, spec.engine.first_token_alone) == (10, False)
    assert spec.engine.settings()["stream_interval"] == 10
    late, alone = predict_spec(spec), predict_spec(replace(spec, engine=replace(spec.engine, first_token_alone=True)))
    # the first chunk waits 9 decode steps: TTFT grows by about 9 TPOTs, TPOT barely moves
    added = late["pred_ttft_ms"] - alone["pred_ttft_ms"]
    assert added == pytest.approx(9 * alone["pred_tpot_ms"], rel=0.1)
    assert late["pred_tpot_ms"] == pytest.approx(alone["pred_tpot_ms"], rel=0.05)
    for other in (dict(row, backend="sglang"), dict(row, model_path="openai/gpt-oss-120b", moe_quant_mode="mxfp4")):
        assert resolve(other).engine.first_token_alone


def test_tensorrt_llm_deepseek_b200_rows_of_the_mtp_image_decode_speculatively():
    row = dict(MOE_ROW, tp_size=8, attention_dp_size=1, moe_ep_size=8, concurrency=8, batch_size=8,
               backend_version="1.2.0rc6.post3")
    mtp = resolve(row)              # dsr1_fp8_b200_trt_mtp.sh: 3 draft tokens, 1 with attention DP
    assert mtp.engine.spec_tokens == 3 and mtp.describe().endswith(", MTP 3")
    assert resolve(dict(row, tp_size=1, attention_dp_size=8)).engine.spec_tokens == 1
    plain = resolve(dict(row, backend_version="1.2.0rc6.post2"))
    assert plain.engine.spec_tokens == 0 and "MTP" not in plain.describe()
    assert resolve(row, {"spec_tokens": 0}).engine.spec_tokens == 0      # an override wins
    # an aggregated engine: prompt chunks mix with speculative decodes; MTP cuts TPOT
    fast, slow = predict_spec(mtp), predict_spec(plain)
    assert fast["status"] == "ok" and fast["pred_tpot_ms"] < 0.7 * slow["pred_tpot_ms"]


@pytest.mark.parametrize("cols, want", [
    (dict(tp_size=16, attention_dp_size=1, moe_tp_size=4, moe_ep_size=4, backend="sglang"), (4, 1, 4, 16)),
    (dict(tp_size=64, attention_dp_size=1, moe_tp_size=8, moe_ep_size=8, backend="sglang"), (8, 1, 8, 16)),
    (dict(tp_size=1, attention_dp_size=16, moe_tp_size=4, moe_ep_size=4, backend="trtllm"), (1, 4, 4, 256)),
    (dict(tp_size=4, attention_dp_size=4, moe_tp_size=1, moe_ep_size=16, backend="vllm"), (4, 1, 4, 64)),
])
def test_rows_recording_an_engines_gpu_count_squared_are_read_as_that_engine(cols, want):
    row = dict(MOE_ROW, batch_size=16, concurrency=16, **cols)
    spec = resolve(row)
    c = spec.coupled      # want: tp, dp, ep and the engine's whole batch (the column is per DP rank)
    assert (c.tp, c.dp, c.ep, c.max_batch * c.dp) == want
    assert spec.gpus == want[0] * want[1] and "(file: tp_size" in spec.describe()
    literal = resolve(row, literal_layout=True).coupled
    assert literal.tp * literal.dp == cols["tp_size"] * cols["attention_dp_size"] and not literal.squared_from
    # real layouts stay as written (TP 8 EP 8, TP 8 with MoE TP 4 x EP 2, DP 8 EP 8); TP 4 with
    # MoE TP 2 x EP 2 is the squared form of TP 2 EP 2
    for tp, dp, moe_tp, ep in ((8, 1, 1, 8), (8, 1, 4, 2), (1, 8, 1, 8), (4, 1, 2, 2)):
        r = resolve(dict(MOE_ROW, batch_size=32, tp_size=tp, attention_dp_size=dp, moe_tp_size=moe_tp,
                         moe_ep_size=ep)).coupled
        assert (r.tp, r.dp, r.ep) == ((2, 1, 2) if (tp, moe_tp) == (4, 2) else (tp, dp, ep))


def test_tensorrt_llm_rows_capture_graphs_up_to_their_max_batch_padded():
    row = dict(MOE_ROW, backend="trtllm", backend_version="1.2.0", batch_size=512)
    eng = resolve(row).engine
    assert eng.graph_padding and eng.graph_sizes[-1] == 512
    assert resolve(dict(row, backend="vllm")).engine.graph_sizes[-1] <= 512    # other engines: their defaults


def test_tensorrt_llm_attention_dp_rows_hold_prompts_for_the_ranks_balance():
    row = dict(MOE_ROW, backend="trtllm", backend_version="1.2.0", concurrency=64, batch_size=8, osl=256)
    spec = resolve(row)
    assert spec.engine.adp_timeout_iters == 60 and "enable_balance true" in spec.engine.settings()["attention_dp_config"]
    off = resolve(row, {"adp_timeout_iters": 0})
    held, free = predict_spec(spec), predict_spec(off)
    # a prompt waits until all 8 ranks have one (or 60 steps): TTFT grows by steps, not by
    # a prefill; the decodes barely change
    assert held["pred_ttft_ms"] > free["pred_ttft_ms"] + 5 * held["pred_tpot_ms"]
    assert held["pred_tpot_ms"] == pytest.approx(free["pred_tpot_ms"], rel=0.25)


def test_sglang_rows_on_blackwell_take_the_recipes_receive_interval():
    row = dict(MOE_ROW, backend="sglang", backend_version="0.5.9", tp_size=8, attention_dp_size=1, moe_ep_size=1,
               moe_tp_size=8, batch_size=64, concurrency=64)
    assert resolve(row).engine.recv_interval == 30
    assert resolve(dict(row, concurrency=8)).engine.recv_interval == 10
    assert resolve(dict(row, system="h200_sxm")).engine.recv_interval == 1      # H200 recipes: every step
    assert resolve(row, {"recv_interval": 1}).engine.recv_interval == 1
    assert resolve(row).engine.settings()["scheduler_recv_interval"] == 30
    glm = dict(row, model_path="zhipuai/GLM-5", precision="fp8", gemm_quant_mode="fp8_block", moe_quant_mode="fp8_block")
    assert resolve(glm).engine.recv_interval == 1                                # glm5_fp8 recipes: every step
    assert resolve(dict(glm, precision="fp4", gemm_quant_mode="nvfp4", moe_quant_mode="nvfp4")).engine.recv_interval == 30


def test_disaggregated_rows_include_the_kv_transfer_and_the_decode_admission_in_ttft():
    assert "worker counts not recorded" in resolve(dict(MOE_ROW, mode="disagg", prefill_tp_size=8))
    row = dict(MOE_ROW, id="xpyd", mode="disagg", prefill_tp_size=8, prefill_moe_ep_size=8, prefill_num_workers=1,
               prefill_batch_size=1, decode_tp_size=1, decode_attention_dp_size=8, decode_moe_ep_size=8,
               decode_num_workers=1, decode_batch_size=16, concurrency=16)
    spec = resolve(row)
    assert spec.disaggregated and spec.gpus == 16
    got = predict_spec(spec)
    assert got["status"] == "ok", got
    from planner.bench.predict import deployment, kv_link
    dep = deployment(spec)
    assert kv_link(spec) == catalog.gpu("b200").network_gbit_s / 8 / 8 * 8   # 16 GPUs: two nodes, over the NICs
    prefill_s = float(dep.perf("prefill").prefill_time_s(1024))
    kv_s = dep.perf("prefill").kv_bytes_per_token * 1024 / (dep.kv_link_gb_s * 1e9)
    assert got["pred_ttft_ms"] / 1e3 > prefill_s + kv_s


@pytest.mark.skipif(not DEV.is_file(), reason="../shared/silicon/dev.csv not found")
def test_dev_rows_resolve_unless_their_deployment_is_unknown_and_the_rest_say_why():
    df = pd.read_csv(DEV)
    got = [resolve(r) for r in df.to_dict("records")]
    reasons = [g for g in got if isinstance(g, str)]
    unknown = [r for r in reasons if "worker counts not recorded" in r]
    from_recipes = [g for g in got if not isinstance(g, str) and g.disaggregated and g.prefill.recipe]
    # every aggregated row and every xPyD row with its worker counts resolves; of those
    # without, the ones an InferenceMAX recipe pins down resolve from it
    without = df["prefill_num_workers"].isna().sum() - (df["mode"] == "agg").sum()
    assert len(unknown) == without - len(from_recipes) and len(from_recipes) > 400
    # and one NVIDIA model-card row whose clients need more replicas than it records
    replicas = [r for r in reasons if "more engine replicas ran than the row records" in r]
    assert len(reasons) == len(unknown) + len(replicas) and len(replicas) == 1
    assert all(len(r) < 200 for r in reasons)


def test_xpyd_rows_without_worker_counts_take_the_deployment_of_the_recipe_they_ran():
    row = dict(MOE_ROW, mode="disagg", system="h200_sxm", isl=1024, osl=1024, prefill_tp_size=8,
               prefill_moe_ep_size=8, prefill_attention_dp_size=1, decode_tp_size=8, decode_moe_ep_size=8,
               decode_attention_dp_size=1, concurrency=288)
    spec = resolve(row)     # srt-slurm recipes/trtllm/h200/1k1k/stp/c32_ctx1_gen9_tep8_batch256_eplb0_mtp0.yaml
    assert (spec.prefill.workers, spec.prefill.dp, spec.prefill.ep) == (1, 8, 8)
    assert (spec.decode.workers, spec.decode.tp, spec.decode.max_batch) == (9, 8, 256)
    assert "(recipe: c32_ctx1_gen9_tep8_batch256_eplb0_mtp0.yaml)" in spec.describe()
    assert spec.engine.spec_tokens == 0
    mtp = resolve(dict(row, concurrency=13))    # only an MTP recipe ran it: c1_ctx1_gen11_tep8_batch1_eplb0_mtp3
    assert (mtp.decode.workers, mtp.engine.spec_tokens) == (11, 3)
    assert "MTP 3 (recipe: c1_ctx1_gen11_tep8_batch1_eplb0_mtp3.yaml)" in mtp.describe()
    assert "3 draft tokens per step" in mtp.engine.settings()["speculative_decoding"]
    # one request per decode engine: 3 drafts at 85% give 3.2 tokens a step for about one
    # step's cost (a verify of 4 rows reads the weights once)
    plain = predict_spec(replace(mtp, engine=replace(mtp.engine, spec_tokens=0)))
    assert predict_spec(mtp)["pred_tpot_ms"] < 0.6 * plain["pred_tpot_ms"]
    assert "no InferenceMAX disaggregated recipe" in resolve(dict(row, concurrency=5))


def test_tensorrt_llm_llama_rows_take_their_recipes_batch_waiting_at_1k_1k_below_tp8():
    row = dict(ROW, backend="trtllm", backend_version="1.1.0", isl=1024, osl=1024)
    eng = resolve(row).engine
    assert (eng.batch_wait_iters, eng.batch_wait_ratio, eng.token_budget) == (20, 0.9, 16384)
    assert eng.settings()["batch_wait_timeout_iters"] == 20
    for other in (dict(row, tp_size=8), dict(row, osl=8192), dict(row, backend="vllm")):
        assert resolve(other).engine.batch_wait_iters == 0
    assert resolve(row, {"batch_wait_iters": 0}).engine.batch_wait_iters == 0     # an override wins
    waits, plain = predict_spec(resolve(row)), predict_spec(resolve(row, {"batch_wait_iters": 0, "batch_wait_ratio": 0}))
    assert waits["pred_ttft_ms"] > plain["pred_ttft_ms"] + 10 * waits["pred_tpot_ms"]
