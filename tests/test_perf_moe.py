"""Step cost of modern models: MoE experts, MLA, sliding-window and linear attention, and
TP x attention-DP x EP layouts (planner.perf.layers, moe_tables, sources)."""
from dataclasses import replace

import numpy as np
import pytest

from planner import catalog
from planner.errors import InputError
from planner.perf import tables
from planner.perf.layers import Layout, kernels_per_step, layout_problem
from planner.perf.memory import kv_bytes_per_token_per_gpu, weight_bytes_per_gpu
from planner.perf.model import PerfModel
from planner.perf.step import StepModel

H200 = catalog.gpu("h200")
DSV3 = catalog.model("deepseek-ai/DeepSeek-V3")
needs_tables = pytest.mark.skipif(tables.data_root() is None, reason="kernel tables (the `silicon` extra) not installed")


def roofline(model, **kw) -> PerfModel:
    return PerfModel(H200, model, source="roofline", **kw)


def test_moe_step_has_router_shared_and_routed_experts_and_experts_are_weight_bound_at_small_batches():
    pm = roofline(DSV3, tp=8, dtype="fp8_block")
    one = pm.step([1], [1000]).ops
    many = pm.step([1] * 64, [1000] * 64).ops
    for op in ("router", "shared_experts", "experts", "qkv_proj", "attention_generation"):
        assert one[op] > 0, op
    # weight-bound: 64 tokens x top-8 touch ~220 of 256 experts, each read once - the cost
    # follows the experts touched (~28x, less the kernels' fixed time), not the tokens (64x)
    touched = 256 * (1 - (1 - 8 / 256) ** 64)
    assert 8 < many["experts"] / one["experts"] < touched / 8 * 1.2
    # 3 dense leading layers run the dense MLP, the other 58 the experts
    assert one["mlp_up"] > 0 and one["experts"] > 10 * one["mlp_up"]


def test_expert_weights_split_over_all_gpus_attention_over_the_rank_tp():
    tp8 = weight_bytes_per_gpu(DSV3, Layout(tp=8), "fp8_block")
    dp8 = weight_bytes_per_gpu(DSV3, Layout(tp=1, dp=8, ep=8), "fp8_block")
    tp8ep8 = weight_bytes_per_gpu(DSV3, Layout(tp=8, ep=8), "fp8_block")
    assert tp8 == pytest.approx(tp8ep8)                 # EP or MoE-TP: each GPU holds 1/8 of the experts
    parts = DSV3.param_breakdown()
    replicated = (parts["attention"] + parts["other"]) * (1 - 1 / 8)
    assert dp8 - tp8 == pytest.approx(replicated * (dp8 - tp8) / (dp8 - tp8), rel=0.35)
    assert 80e9 < tp8 < 95e9                            # ~671 GB of FP8 weights over 8 GPUs
    assert dp8 > tp8 + 5e9                              # attention replicated on every DP rank


def test_mla_latent_is_whole_on_every_gpu_gqa_kv_is_split_by_heads():
    llama = catalog.model("meta-llama/Llama-3.1-70B")
    assert kv_bytes_per_token_per_gpu(DSV3, "bf16", 8) == DSV3.kv_bytes_per_token("bf16")
    assert DSV3.kv_bytes_per_token("bf16") == 61 * 576 * 2
    assert kv_bytes_per_token_per_gpu(llama, "bf16", 8) == pytest.approx(llama.kv_bytes_per_token("bf16") / 8)
    # 16 GPUs of TP for 8 KV heads: each head on two GPUs
    assert kv_bytes_per_token_per_gpu(llama, "bf16", 16) == pytest.approx(llama.kv_bytes_per_token("bf16") / 8)


def test_attention_dp_ranks_see_the_gathered_tokens_in_the_moe_layers():
    tp = StepModel(H200, DSV3, layout=Layout(tp=8), gemm_dtype="fp8", source="roofline", moe_dtype="fp8_block")
    dp = StepModel(H200, DSV3, layout=Layout(tp=1, dp=8, ep=8), gemm_dtype="fp8", source="roofline",
                   moe_dtype="fp8_block")
    # one rank holding 32 tokens: its MoE layers route the 8 ranks' 256 tokens
    dp32, tp256 = dp.step([1] * 32, [1000] * 32).ops, tp.step([1] * 256, [1000] * 256).ops
    assert dp32["experts"] == pytest.approx(tp256["experts"], rel=0.25)
    assert dp32["qkv_proj"] > tp.step([1] * 32, [1000] * 32).ops["qkv_proj"]     # attention at TP 1


def test_sliding_layers_read_a_window_linear_layers_a_state_neither_grows_with_context():
    oss = catalog.model("openai/gpt-oss-120b")
    full = replace(oss, layer_types=("full",) * oss.layers, sliding_window=0)
    slope = {}
    for name, m in (("swa", oss), ("full", full)):
        pm = roofline(m, tp=1, dtype="mxfp4")
        slope[name] = float(pm.decode_time_s(32, 32 * 16000) - pm.decode_time_s(32, 32 * 8000))
    assert slope["swa"] == pytest.approx(slope["full"] * oss.count_layers("full") / oss.layers, rel=0.05)
    qwen = catalog.model("Qwen/Qwen3.5-397B-A17B")
    pm = roofline(qwen, tp=8, dtype="fp8_block")
    # a decode step reads and writes each sequence's recurrent state in every linear layer
    state = qwen.linear_state_bytes() / 8
    assert pm.step([1] * 8, [1000] * 8).ops["attention_generation"] > 2 * 8 * state / (H200.memory_gb_s * 1e9)
    dense_attn = replace(qwen, layer_types=("full",) * qwen.layers)
    grow = [float(roofline(m, tp=8, dtype="fp8_block").decode_time_s(16, 16 * 20000)
                  - roofline(m, tp=8, dtype="fp8_block").decode_time_s(16, 16 * 10000)) for m in (qwen, dense_attn)]
    assert grow[0] == pytest.approx(grow[1] * 15 / 60, rel=0.05)    # 15 of 60 layers attend over the context


def test_layouts_that_cannot_run_are_refused_with_the_reason():
    llama = catalog.model("llama-3.1-8b")
    assert "dense" in layout_problem(llama, Layout(tp=1, dp=2))
    assert "does not divide" in layout_problem(DSV3, Layout(tp=8, ep=3))
    with pytest.raises(InputError, match="expert parallelism"):
        StepModel(H200, llama, layout=Layout(tp=2, ep=2), source="roofline")
    lightning = replace(DSV3, layer_types=("linear",) * DSV3.layers, linear_attention="lightning")
    with pytest.raises(InputError, match="lightning"):
        StepModel(H200, lightning, source="roofline")


def test_fp4_gemms_run_in_16_bit_on_a_gpu_without_fp4_tensor_cores():
    oss = catalog.model("openai/gpt-oss-120b")
    assert roofline(oss, tp=2, dtype="fp4").steps.geo.gemm_dtype == "bf16"
    assert PerfModel(catalog.gpu("b200"), oss, tp=2, dtype="fp4", source="roofline").steps.geo.gemm_dtype == "fp4"


@needs_tables
def test_moe_table_reads_the_measured_curve_and_swaps_tp_for_ep_at_the_same_gpu_count():
    from planner.perf.moe_tables import MoeGeometry, moe_table, moe_table_or_swap
    geo = MoeGeometry(7168, 2048, 8, 256, 1, 8, "fp8_block")
    table, version = moe_table("h200_sxm", "sglang", geo)
    assert "fp8_block" in version
    assert table.seconds([16384])[0] == pytest.approx(10.18e-3, rel=0.02)      # the measured row
    assert table.seconds([1])[0] < table.seconds([64])[0] < table.seconds([4096])[0]
    oss = MoeGeometry(2880, 2880, 4, 128, 2, 1, "fp4")
    (swapped, ep), version = moe_table_or_swap("b200_sxm", "trtllm", oss)
    assert ep == 2 and "as 1x2" in version


@needs_tables
def test_a_decode_batch_reads_the_weights_of_the_experts_random_routing_touches():
    from planner.perf.moe_tables import MoeGeometry, moe_table_or_swap
    from planner.perf.sources import op_source
    oss = catalog.model("openai/gpt-oss-120b")        # 128 experts, top 4
    step = StepModel(catalog.gpu("b200"), oss, tp=1, gemm_dtype="fp4", engine="vllm", moe_dtype="mxfp4")
    geo = MoeGeometry(oss.hidden, oss.expert_ffn, 4, 128, 1, 1, "mxfp4")
    (table, _), _ = moe_table_or_swap("b200_sxm", "vllm", geo)
    src = op_source(catalog.gpu("b200"), step.geo, "vllm", "auto")
    got = src.moe_s(np.array([1.0, 32.0, 4096.0]), geo)
    # one token: as measured; 32 tokens reach 81 of 128 experts at random (the table's
    # balanced 32 reach all 128): the balanced count that reaches 81 is 20.4
    touched = 128 * (1 - (1 - 4 / 128) ** 32) / 4
    assert touched == pytest.approx(20.4, abs=0.1)
    assert got[0] == pytest.approx(table.seconds([1.0])[0])
    assert got[1] == pytest.approx(table.seconds([touched])[0]) and got[1] < 0.8 * table.seconds([32.0])[0]
    assert got[2] == pytest.approx(table.seconds([4096.0])[0], rel=1e-3)   # every expert busy either way


def test_moe_tables_are_read_by_what_their_token_count_counts():
    import pandas as pd
    from planner.perf.moe_tables import tokens_are_global

    def frame(ep8_over_ep1: float):
        rows = []
        for n in (64, 4096, 16384):
            one = 1e-3 * n
            rows += [dict(moe_dtype="fp8", hidden_size=7168, inter_size=2048, topk=8, num_experts=256, moe_tp_size=1,
                          moe_ep_size=ep, num_tokens=n, distribution="balanced", latency=lat)
                     for ep, lat in ((1, one), (8, one * ep8_over_ep1))]
        return pd.DataFrame(rows)
    assert tokens_are_global(frame(1.5 / 8))          # a 1 x 8 GPU computes an eighth of the pairs
    assert not tokens_are_global(frame(0.7))          # ... all of them: the count is per EP rank
    assert tokens_are_global(frame(0.7).query("moe_ep_size == 1"))   # nothing to tell by: the current collectors'


@needs_tables
def test_tensor_and_expert_parallel_moe_gpus_compute_the_same_pairs():
    from planner.perf.moe_tables import _moe_frames
    assert [g for _, v, g in _moe_frames("h200_sxm", "sglang") if v in ("0.5.14", "0.5.10")] == [True, False]
    kimi = catalog.model("moonshotai/Kimi-K2.5")
    b200 = catalog.gpu("b200")
    tp = PerfModel(b200, kimi, tp=4, dtype="fp4", engine="vllm").steps
    ep = PerfModel(b200, kimi, tp=4, ep=4, dtype="fp4", engine="vllm").steps
    for batch in (16, 64, 512):
        # 4 GPUs: a quarter of every expert or every expert of a quarter; the replicated
        # batch's pairs either way (measured: 22.9 against 27.7 ms TPOT at 64 clients)
        assert ep._lin_ops["experts"][batch] == pytest.approx(tp._lin_ops["experts"][batch], rel=0.35)


@needs_tables
def test_vllm_block_fp8_gemm_table_is_capped_at_its_bf16_table_and_mla_uses_sglang_kernels():
    m = catalog.model("MiniMaxAI/MiniMax-M2.5")
    src = PerfModel(catalog.gpu("b200"), m, tp=2, dtype="fp8_block", engine="vllm").steps.src
    assert src.capped_gemm > 3 and "capped at bf16" in src.describe()
    assert src.gemm_s(np.array([8.0]), 4096, 3072)[0] <= src.gemm16_s(np.array([8.0]), 4096, 3072)[0]
    sg = PerfModel(catalog.gpu("b200"), m, tp=2, dtype="fp8_block", engine="sglang").steps.src
    assert sg.capped_gemm == 0
    kimi = PerfModel(catalog.gpu("b200"), catalog.model("moonshotai/Kimi-K2.5"), tp=8, dtype="int4", engine="vllm")
    assert "MLA: sglang" in kimi.source_name


def test_eager_steps_take_at_least_their_kernel_launches_graph_replayed_decodes_do_not():
    from planner.perf.layers import kernels_per_step
    from planner.perf.step import CpuCost
    llama = catalog.model("meta-llama/Llama-3.1-70B")
    # per layer: DeepSeek's MLA + MoE launch far more kernels than a dense GQA layer
    assert kernels_per_step(DSV3, Layout(tp=8), True) / DSV3.layers > 2 * kernels_per_step(llama, Layout(tp=8), True) / 80
    assert kernels_per_step(llama, Layout(tp=8), True, fused_quant=True) < kernels_per_step(llama, Layout(tp=8), True)
    slow = CpuCost(per_kernel_s=100e-6)
    pm = roofline(DSV3, tp=8, dtype="fp8_block", cpu=slow, graph_sizes=(1, 2, 4, 8))
    floor = pm.steps.kernels * 100e-6
    prefill = pm.step([16], [0])
    assert prefill.seconds == pytest.approx(floor) and prefill.ops["host_launch"] > 0
    assert float(pm.prefill_time_s(16)) == pytest.approx(floor)
    decode = pm.step([1] * 4, [1000] * 4)              # a captured batch: one graph replay
    assert decode.ops["host_launch"] == 0 and decode.seconds < floor
    eager_decode = pm.step([1] * 16, [1000] * 16)      # beyond the largest graph
    assert eager_decode.seconds == pytest.approx(floor)
    # piecewise graphs (vLLM V1): a prompt step within the largest captured size launches
    # only its attention eagerly, one kernel a layer; a larger one every kernel
    piece = roofline(DSV3, tp=8, dtype="fp8_block", cpu=slow, graph_sizes=(1, 2, 4, 8), piecewise_graphs=True)
    small = piece.step([6], [0])
    assert small.seconds < floor and small.ops["host_launch"] == pytest.approx(
        max(DSV3.layers * 100e-6 - (small.seconds - small.ops["host_launch"]), 0.0))
    assert piece.step([16], [0]).seconds == pytest.approx(floor)
    assert float(piece.steps.mixed_s(6, 0, 0, 0)) == pytest.approx(small.seconds)
    assert float(piece.steps.mixed_v(np.array([6.0, 16.0]), np.zeros(2), np.zeros(2), np.zeros(2), np.ones(2))[1]) \
        == pytest.approx(floor)


def test_without_graph_padding_only_exact_captured_batches_replay_a_graph():
    from planner.engines.config import engine_config
    from planner.perf.step import CpuCost
    trt = engine_config("trtllm")
    assert trt.graph_sizes[-3:] == (32, 64, 128) and 48 not in trt.graph_sizes
    pm = roofline(DSV3, tp=8, dtype="fp8_block", cpu=CpuCost(per_kernel_s=100e-6), graph_sizes=trt.graph_sizes,
                  graph_padding=False)
    floor = pm.steps.kernels * 100e-6
    assert pm.step([1] * 32, [1000] * 32).ops["host_launch"] == 0
    assert pm.step([1] * 48, [1000] * 48).seconds == pytest.approx(floor)       # eager: no graph of 48
    assert float(pm.decode_time_s(np.array([32.0, 48.0]), np.array([32e3, 48e3]))[1]) == pytest.approx(floor)


def test_layout_candidates_and_the_fastest_that_fits():
    from planner.perf.layouts import best_layout, layouts
    llama = catalog.model("meta-llama/Llama-3.1-70B")
    assert layouts(llama, 8) == [Layout(tp=8)]
    assert layouts(DSV3, 8) == [Layout(tp=8), Layout(tp=8, ep=8), Layout(tp=1, dp=8, ep=8)]
    assert Layout(tp=1, dp=8, ep=8) not in layouts(DSV3, 8, attention_dp=False)
    assert layouts(DSV3, 3) == []                   # 3 divides neither the 128 heads nor the 256 experts
    pm = roofline(DSV3, dtype="fp8_block")
    assert best_layout(pm, 4) is None                                        # 671 GB of FP8 fit no 4 x H200
    got = best_layout(pm, 8)
    assert got is not None and got.layout.gpus == 8 and got.fits
    # the chosen layout serves at least as many tokens per GPU as any other that fits
    rate = {}
    for lay in layouts(DSV3, 8):
        cand = replace(pm, tp=lay.tp, dp=lay.dp, ep=lay.ep)
        b = 16 * 8 // lay.dp
        rate[lay] = b * lay.dp / float(cand.decode_time_s(b, b * 2048))
    assert rate[got.layout] >= max(rate.values()) / 1.02


@needs_tables
def test_an_fp4_moe_kernel_an_engines_tables_lack_comes_from_another_engines_tables_of_the_gpu():
    """vLLM's B200 tables have gpt-oss only as the weight-only MXFP4 kernel (16-bit math);
    the MXFP4 x MXFP8 kernel its Blackwell recipes select is TensorRT-LLM's table of the same
    GPU, about 3x faster at prefill sizes. Hopper has no such kernel: vLLM's own table."""
    from planner.perf.moe_tables import MoeGeometry, moe_table, moe_table_or_swap
    geo = MoeGeometry(2880, 2880, 4, 128, 1, 1, "mxfp4")
    (table, ep), version = moe_table_or_swap("b200_sxm", "vllm", geo)
    own, _ = moe_table("b200_sxm", "vllm", geo, ("w4a16_mxfp4",))
    assert version.startswith("trtllm") and table.dtype == "w4a8_mxfp4_mxfp8" and ep == 1
    assert table.seconds([8192.0])[0] < 0.5 * own.seconds([8192.0])[0]
    (hopper, _), version = moe_table_or_swap("h200_sxm", "vllm", geo)
    assert hopper.dtype == "w4a16_mxfp4" and not version.startswith(("trtllm", "sglang"))


def test_a_qk_norm_over_all_heads_all_reduces_its_variances_when_attention_is_split():
    minimax = catalog.model("MiniMaxAI/MiniMax-M2.5")
    assert minimax.qk_norm_per_layer and not DSV3.qk_norm_per_layer
    per_head = replace(minimax, qk_norm_per_layer=False)
    src = roofline(minimax, tp=4, dtype="fp8_block").steps.src

    def allreduce(model, tp):
        return roofline(model, tp=tp, dtype="fp8_block").step([1] * 8, [1000] * 8).ops.get("allreduce", 0.0)

    # TP 4: one more all-reduce per attention layer, of 8 tokens x 2 fp32 variances
    extra = allreduce(minimax, 4) - allreduce(per_head, 4)
    assert extra == pytest.approx(minimax.layers * float(src.allreduce_s(8 * 2 * 4)), rel=1e-6)
    assert extra > 0
    # one GPU holds every head: nothing to reduce
    assert allreduce(minimax, 1) == allreduce(per_head, 1) == 0
    # kernels: the variances and the norm in every layer, their all-reduce when split
    L = minimax.layers
    for tp, more in ((1, 2), (4, 3)):
        got = kernels_per_step(minimax, Layout(tp=tp), True) - kernels_per_step(per_head, Layout(tp=tp), True)
        assert got == more * L


@needs_tables
def test_a_named_moe_kernel_family_is_read_from_the_newest_table_that_measured_it():
    from planner.perf.moe_tables import MoeGeometry, moe_table
    minimax = catalog.model("MiniMaxAI/MiniMax-M2.5")
    geo = MoeGeometry(minimax.hidden, minimax.expert_ffn, minimax.experts_per_token, minimax.experts, 4, 1,
                      "fp8_block")
    fastest, fast_version = moe_table("b200_sxm", "vllm", geo)
    triton, triton_version = moe_table("b200_sxm", "vllm", geo, kernel="triton")
    # vLLM 0.24's B200 table measured only FlashInfer's FP8 MoE; the Triton fused_experts the
    # older collectors timed ("vllm_fused_moe") comes from an older table, and is slower
    assert fast_version.startswith("0.24.0") and "triton" in triton_version and not triton_version.startswith("0.24")
    assert (triton.seconds([1024, 8192]) > 1.3 * fastest.seconds([1024, 8192])).all()
    b200 = catalog.gpu("b200")
    steps = {k: PerfModel(b200, minimax, tp=4, dtype="fp8_block", engine="vllm", moe_kernel=k).steps
             for k in ("", "triton")}
    assert steps["triton"].step([1024], [0]).ops["experts"] > 1.3 * steps[""].step([1024], [0]).ops["experts"]
    assert "triton" in steps["triton"].describe()


def test_an_unknown_moe_kernel_family_is_an_input_error():
    from planner.engines.config import engine_config
    with pytest.raises(InputError, match="moe_kernel='cutlass' is not one of triton"):
        engine_config("vllm", moe_kernel="cutlass")
