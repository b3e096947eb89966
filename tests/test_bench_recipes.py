"""The InferenceMAX vLLM recipes a dev.csv row ran, by its run date (planner.bench.rows)."""
from planner.bench.rows import resolve

MINIMAX = {"id": "m", "model_path": "MiniMaxAI/MiniMax-M2.5", "system": "b200_sxm", "backend": "vllm",
           "backend_version": "0.17.0", "precision": "fp8", "mode": "agg", "isl": 1024, "osl": 1024,
           "concurrency": 4, "gemm_quant_mode": "fp8_block", "moe_quant_mode": "fp8_block", "tp_size": 4,
           "pp_size": 1, "attention_dp_size": 1, "moe_tp_size": 4, "moe_ep_size": 1, "measured": "2026-03-11"}


def test_the_march_minimax_recipes_split_the_experts_over_every_gpu_whatever_ep_size_the_row_names():
    march = resolve(MINIMAX)        # `if [ "$EP_SIZE" -ge 1 ]` passed --enable-expert-parallel for EP_SIZE=1
    assert (march.coupled.tp, march.coupled.ep) == (4, 4)
    # the first B200 recipe turned FlashInfer's and DeepGEMM's FP8 MoE off: Triton's fused MoE
    assert march.engine.moe_kernel == "triton" and march.kv_dtype == "bf16"
    branch = resolve(dict(MINIMAX, measured="2026-03-28"))      # its pull request's later runs
    assert branch.coupled.ep == 4 and branch.engine.moe_kernel == "" and branch.kv_dtype == "fp8"
    assert branch.engine.stream_interval == 20
    april = resolve(dict(MINIMAX, measured="2026-04-03", backend_version="0.19.0"))   # EP only for EP_SIZE > 1
    assert april.coupled.ep == 1 and april.engine.moe_kernel == "" and april.engine.token_budget == 2048
    h200 = dict(MINIMAX, system="h200_sxm", backend_version="0.18.0")
    assert resolve(dict(h200, measured="2026-03-27")).coupled.ep == 4       # from 5e2c705d3 (2026-03-13)
    assert resolve(dict(h200, measured="2026-03-01")).coupled.ep == 1


def test_gpt_oss_recipes_capture_graphs_to_2048_tokens_and_take_an_fp8_kv_cache_on_b200_from_january():
    row = dict(MINIMAX, model_path="openai/gpt-oss-120b", precision="fp4", gemm_quant_mode="",
               moe_quant_mode="w4a16_mxfp4", tp_size=2, moe_tp_size=2, measured="2026-02-25")
    b200 = resolve(row)
    assert (b200.engine.graph_max_batch, b200.engine.token_budget, b200.engine.max_seqs) == (2048, 8192, 512)
    assert b200.kv_dtype == "fp8" and b200.coupled.ep == 1
    assert resolve(dict(row, measured="2025-11-02")).kv_dtype == "bf16"
    h200 = resolve(dict(row, system="h200_sxm", measured="2026-03-27"))
    assert h200.engine.graph_max_batch == 2048 and h200.kv_dtype == "bf16"
    # a row's own override wins over its recipe
    assert resolve(row, {"graph_max_batch": 512}).engine.graph_max_batch == 512


def test_tensorrt_llm_gpt_oss_rows_take_20000_tokens_a_step_and_h200_keeps_the_checkpoints_kv_format():
    row = dict(MINIMAX, model_path="openai/gpt-oss-120b", backend="trtllm", backend_version="1.1.0rc2.post2",
               precision="fp4", gemm_quant_mode="", moe_quant_mode="w4a16_mxfp4", tp_size=2, moe_tp_size=2)
    b200, h200 = resolve(row), resolve(dict(row, system="h200_sxm"))
    assert b200.engine.token_budget == h200.engine.token_budget == 20000
    assert (b200.kv_dtype, h200.kv_dtype) == ("fp8", "bf16")     # kv_cache_config dtype: fp8 | auto


def test_sglang_recipes_prefill_batches_take_their_chunked_prefill_and_max_prefill_tokens():
    dsr1 = dict(MINIMAX, model_path="deepseek-ai/DeepSeek-R1", backend="sglang", backend_version="0.5.9",
                tp_size=8, moe_tp_size=8, measured="2026-03-25")
    assert resolve(dsr1).engine.token_budget == 32768                   # --chunked-prefill-size 32768
    assert resolve(dict(dsr1, tp_size=4, moe_tp_size=4)).engine.token_budget == 8192      # its TP 4 branch
    fp4 = dict(dsr1, precision="fp4", gemm_quant_mode="nvfp4",
               moe_quant_mode="nvfp4")
    assert resolve(fp4).engine.token_budget == 16384                    # 16384 chunks, the default batch
    qwen = dict(dsr1, model_path="Qwen/Qwen3.5-397B-A17B")
    assert resolve(qwen).engine.token_budget == 32768
    assert resolve(dict(qwen, system="h200_sxm")).engine.token_budget == 16384
    # a row of another sweep (no recipe: Llama-3.1-8B) keeps SGLang's default for the GPU
    llama = dict(dsr1, model_path="meta-llama/Llama-3.1-8B-Instruct", system="h200_sxm", tp_size=1, moe_tp_size=1)
    assert resolve(llama).engine.token_budget == 8192


def test_sglang_disaggregated_rows_take_the_srt_slurm_recipes_prefill_batch():
    row = {**MINIMAX, "model_path": "deepseek-ai/DeepSeek-R1", "backend": "sglang", "backend_version": "0.5.9",
           "mode": "disagg", "tp_size": None, "moe_tp_size": None, "moe_ep_size": None, "prefill_num_workers": 1,
           "prefill_tp_size": 8, "prefill_pp_size": 1, "prefill_attention_dp_size": 1, "prefill_moe_tp_size": 8,
           "prefill_moe_ep_size": 1, "decode_num_workers": 1, "decode_tp_size": 8, "decode_pp_size": 1,
           "decode_attention_dp_size": 1, "decode_moe_tp_size": 8, "decode_moe_ep_size": 1, "decode_batch_size": 4}
    spec = resolve(row)
    assert spec.disaggregated and spec.engine.token_budget == 32768     # --max-prefill-tokens 32768
    assert resolve(dict(row, system="h200_sxm")).engine.token_budget == 32768


def test_tensorrt_llm_deepseek_recipes_budget_one_prompt_beside_the_batch_and_h200s_january_run_is_speculative():
    row = dict(MINIMAX, model_path="deepseek-ai/DeepSeek-R1", backend="trtllm", backend_version="1.1.0rc2.post2",
               system="h200_sxm", tp_size=8, moe_tp_size=1, moe_ep_size=8, concurrency=64,
               measured="2025-12-15")
    plain = resolve(row)        # (CONC + ISL + 64 + 63) / 64 * 64: one 1k prompt beside 64 decodes
    assert plain.engine.spec_tokens == 0 and plain.engine.token_budget == 1152
    assert resolve(dict(row, measured="2026-01-28")).engine.token_budget == 8192    # floored from 2026-01-21
    mtp = resolve(dict(row, measured="2026-01-14"))          # pull request 392's run: MTP 3, batch x 4
    assert mtp.engine.spec_tokens == 3 and mtp.engine.token_budget == 1344
    dp = resolve(dict(row, measured="2026-01-14", concurrency=256, tp_size=1, attention_dp_size=8))
    assert dp.engine.spec_tokens == 1 and dp.engine.token_budget == 1152     # 32 a rank x 2 + 1024 + 64
    b200 = dict(row, system="b200_sxm")
    assert resolve(dict(b200, measured="2026-01-14")).engine.spec_tokens == 3     # the same pull request's run
    assert resolve(b200).engine.spec_tokens == 0
