"""The step-cost model (planner.perf.step through planner.perf.model.PerfModel): a step costed
op by op, with either source of op latencies - measured kernel tables ("kernels", needs the
`silicon` extra; skipped without it) or the roofline fitted to them ("roofline", always).
Memory accounting and the simulator's closed forms over the same model."""
from __future__ import annotations

import math

import numpy as np
import pytest

from planner import catalog
from planner.engines.config import engine_config
from planner.perf import memory, tables
from planner.perf import step as step_mod
from planner.perf.model import PerfModel
from planner.perf.sources import Geometry, op_source
from planner.perf.step import CpuCost
from planner.sim.costs import DecodeCost

H100 = catalog.gpu("h100")
H200 = catalog.gpu("h200")
LLAMA70 = catalog.model("llama-3.1-70b")
LLAMA8 = catalog.model("llama-3.1-8b")
GEMMS = ("qkv_proj", "o_proj", "mlp_up", "mlp_down")
TOKEN_OPS = GEMMS + ("norms_elementwise", "allreduce", "embedding")   # ops over the step's (padded) tokens


@pytest.fixture(params=["kernels", "roofline"])
def source(request):
    if request.param == "kernels" and tables.data_root() is None:
        pytest.skip("measured kernels need the silicon extra: pip install -e '.[silicon]'")
    return request.param


def pm(source, gpu=H100, model=LLAMA70, tp=1, **kw) -> PerfModel:
    return PerfModel(gpu, model, tp=tp, source=source, **kw)


def test_source_is_named(source):
    name = pm(source).source_name
    assert name.startswith("measured kernels, vllm" if source == "kernels" else "roofline fitted to h100-sxm's")


# ---- ops -----------------------------------------------------------------------------------------

def test_fp8_gemm_is_faster_than_bf16_at_layer_shapes_and_keeps_the_tables_exceptions(source):
    def gemm(dtype, m, n, k):
        src = op_source(H100, Geometry(64, 8, 128, dtype, "bf16", 1), "vllm", source)
        return float(np.ravel(src.gemm_s(m, n, k))[0])
    assert gemm("fp8", 4096, 8192, 8192) < gemm("bf16", 4096, 8192, 8192)
    assert gemm("fp8", 16384, 28672, 8192) < gemm("bf16", 16384, 28672, 8192)
    if source == "kernels":     # the tables: 0.50 ms against 0.70 (the roofline's FP8 fit: 0.67 against 0.71)
        assert gemm("fp8", 4096, 8192, 8192) < 0.8 * gemm("bf16", 4096, 8192, 8192)
    # a one-token GEMM on a small matrix: FP8's activation quantisation costs more than it saves
    # (the tables: 4.7 us against 2.6 us on H100), and the model keeps that
    assert gemm("fp8", 1, 128, 128) > gemm("bf16", 1, 128, 128)


@pytest.mark.parametrize("what", ["prefill", "decode"])
def test_tp2_step_of_a_70b_model_is_below_tp1_and_above_half_of_it(source, what):
    one, two = pm(source, tp=1), pm(source, tp=2)
    t = (lambda p: p.prefill_time_s(4096)) if what == "prefill" else (lambda p: p.decode_time_s(64, 64 * 2048))
    assert 0.5 * t(one) < t(two) < t(one)
    # the difference from a clean halving is the all-reduce (and the GEMMs' lower efficiency)
    ops = two.step([4096], [0]).ops if what == "prefill" else two.step([1] * 64, [2047] * 64).ops
    assert ops["allreduce"] > 0 and one.step([4096], [0]).ops["allreduce"] == 0


def test_a_mixed_step_costs_its_gemms_plus_its_attention(source):
    p = pm(source, tp=4)
    new, cached = [512] + [1] * 32, [1024] + [2000] * 32
    s = p.step(new, cached)
    gemms = sum(s.ops[k] for k in GEMMS)
    attention = s.ops["attention_context"] + s.ops["attention_generation"]
    assert s.ops["attention_context"] > 0 and s.ops["attention_generation"] > 0
    # attention adds to the GEMMs (it is never folded into a max with them)
    assert s.seconds >= gemms + attention > max(gemms, attention)
    # the same chunk alone costs less by at least the decodes' attention
    alone = p.step([512], [1024])
    assert s.seconds - alone.seconds > s.ops["attention_generation"]


def test_decode_step_grows_with_total_kv_at_fixed_batch(source):
    p = pm(source, model=LLAMA8)
    for b in (8, 64, 512):
        t = [p.decode_time_s(b, b * s) for s in (1024, 2048, 4096, 8192, 32768)]
        assert np.all(np.diff(t) > 0), (b, t)
        # and never falls as the KV grows, at any batch
        kv = np.linspace(0, b * 65536, 200)
        assert np.all(np.diff(p.decode_time_s(np.full(kv.shape, b), kv)) >= -1e-15)


def test_decode_only_steps_pad_to_the_next_cuda_graph_size(source):
    graphs = pm(source, model=LLAMA8, graph_sizes=(1, 2, 4, 8, 16, 32))
    plain = pm(source, model=LLAMA8)

    def gemm_s(p, new, cached):
        return sum(p.step(new, cached).ops[k] for k in TOKEN_OPS)
    # five decodes run the token-wise ops of eight (the captured graph), as an eight-token chunk would
    assert gemm_s(graphs, [1] * 5, [100] * 5) == pytest.approx(gemm_s(plain, [8], [0]), rel=1e-12)
    assert gemm_s(plain, [1] * 5, [100] * 5) == pytest.approx(gemm_s(plain, [5], [0]), rel=1e-12)
    # attention and the LM head still run the real batch: the padding adds exactly the difference
    pad = gemm_s(graphs, [1] * 5, [100] * 5) - gemm_s(plain, [1] * 5, [100] * 5)
    assert graphs.decode_time_s(5, 505) - plain.decode_time_s(5, 505) == pytest.approx(pad, rel=1e-9)
    # beyond the largest graph, and in steps with a prefill chunk, nothing is padded
    assert graphs.decode_time_s(33, 33 * 101) == plain.decode_time_s(33, 33 * 101)
    assert graphs.mixed_time_s(2, 0, 5, 505) == plain.mixed_time_s(2, 0, 5, 505)
    # the vectorised path pads the same way
    b = np.array([1, 3, 5, 9, 17, 33, 40])
    want = [graphs.decode_time_s(int(x), float(x) * 300) for x in b]
    assert graphs.decode_time_s(b, b * 300.0) == pytest.approx(want, rel=1e-12)


# ---- the step's interfaces agree ---------------------------------------------------------------

@pytest.mark.parametrize("cpu", [CpuCost(), CpuCost(per_step_s=2e-3, per_seq_s=1e-5),
                                 CpuCost(per_step_s=30e-3, per_seq_s=1e-5, overlap=True)],
                         ids=["no-cpu", "cpu-added", "cpu-overlapped"])
def test_step_breakdown_sums_to_its_seconds_and_matches_the_step_functions(source, cpu):
    p = pm(source, model=LLAMA8, tp=2, cpu=cpu, graph_sizes=engine_config("vllm").graph_sizes)
    cases = [  # (new tokens, cached tokens) per request, and the equivalent call
        (([2000], [0]), lambda: p.prefill_time_s(2000, 0)),
        (([512], [4096]), lambda: p.prefill_time_s(512, 4096)),
        (([20000], [0]), lambda: p.prefill_time_s(20000, 0)),            # beyond the tabulated tokens
        # three slices over prefixes of 100: their slice-weighted prefix is 100
        (([256] * 3, [100] * 3), lambda: p.prefill_time_s(768, 100, requests=3)),
        (([1] * 7, [999] * 7), lambda: p.decode_time_s(7, 7 * 1000)),    # a decode attends to cached + 1
        (([1] * 3000, [99] * 3000), lambda: p.decode_time_s(3000, 3000 * 100)),  # beyond BATCH_MAX
        (([512] + [1] * 40, [2048] + [499] * 40), lambda: p.mixed_time_s(512, 2048, 40, 40 * 500)),
    ]
    for (new, cached), want in cases:
        s = p.step(new, cached)
        assert s.seconds == pytest.approx(math.fsum(s.ops.values()), rel=1e-12)
        assert all(v >= 0 for v in s.ops.values())
        assert s.seconds == pytest.approx(float(want()), rel=1e-9), (len(new), new[0], cached[0])
    assert p.step([], []).seconds == 0.0 and p.decode_time_s(0, 0) == 0.0


def test_scalar_step_equals_the_vectorised_one_on_random_points(source):
    rng = np.random.default_rng(10)
    n = 400
    p_tok = np.where(rng.random(n) < 0.3, 0, rng.integers(1, 30000, n)).astype(float)
    k_tok = np.where(rng.random(n) < 0.3, 0, rng.integers(0, 300_000, n)).astype(float)
    b = rng.integers(0, 3000, n).astype(float)
    b[:20] = 0
    ctx = b * rng.integers(1, 40_000, n)
    reqs = rng.integers(1, 9, n).astype(float)
    for kw in ({}, {"graph_sizes": engine_config("sglang").graph_sizes, "cpu": CpuCost(5e-3, 2e-5, True)}):
        p = pm(source, tp=4, **kw)
        vec = p.mixed_time_s(p_tok, k_tok, b, ctx)
        one = [p.step_s(p_tok[i], k_tok[i], int(b[i]), ctx[i]) for i in range(n)]
        assert vec == pytest.approx(one, rel=1e-9, abs=1e-15)
        vec = p.prefill_time_s(p_tok, k_tok, reqs)
        one = [p.step_s(p_tok[i], k_tok[i], 0, 0.0, int(reqs[i])) for i in range(n)]
        assert vec == pytest.approx(one, rel=1e-9, abs=1e-15)


def test_without_the_extra_the_model_works_on_the_roofline_and_says_so(monkeypatch):
    monkeypatch.setattr(tables, "data_root", lambda: None)
    step_mod._tabulated.cache_clear()
    try:
        p = PerfModel(H100, LLAMA70, tp=2)
        assert p.source_name == "roofline fitted to h100-sxm's kernel tables"
        assert PerfModel(catalog.gpu("l4"), LLAMA8).source_name == "roofline fitted to other GPUs' kernel tables (median)"
        assert 0 < p.decode_time_s(32, 32 * 1000) < p.prefill_time_s(4096) < 10
        assert p.step([512, 1, 1], [0, 100, 200]).ops["attention_generation"] > 0
        with pytest.raises(LookupError, match="no `silicon` extra"):
            _ = PerfModel(H100, LLAMA70, source="kernels").steps
    finally:
        step_mod._tabulated.cache_clear()   # no roofline tables left cached as "auto" for later tests


# ---- memory ----------------------------------------------------------------------------------------

def test_weight_and_kv_bytes_of_llama_70b():
    bf16 = PerfModel(H200, LLAMA70, tp=2).weight_bytes
    fp8 = PerfModel(H200, LLAMA70, tp=2, dtype="fp8").weight_bytes
    assert bf16 == pytest.approx(141.1e9, rel=0.005)              # 70.6B parameters in 16 bit
    assert 0.5 < fp8 / bf16 < 0.52                                 # embeddings and norms stay 16 bit
    assert PerfModel(H200, LLAMA70).kv_bytes_per_token == 327_680  # 2 x 80 layers x 8 heads x 128 x 2 B
    assert PerfModel(H200, LLAMA70, kv_dtype="fp8").kv_bytes_per_token == 163_840
    # 4-bit weights: int4 with a 16-bit scale per 128, fp4 with an 8-bit scale per 16
    assert memory.weight_bytes(LLAMA70, "int4") < memory.weight_bytes(LLAMA70, "fp4") < fp8 * 2 / 3


def test_kv_capacity_follows_the_memory_fraction():
    def cap(fraction, **kw):
        return PerfModel(H200, LLAMA70, tp=2, memory_fraction=fraction, **kw).kv_capacity_tokens
    assert cap(0.8) < cap(0.9)
    # each GPU holds half the KV heads: 0.1 of its memory holds 0.1 x 141 GiB / 163,840 B more tokens
    assert cap(0.9) - cap(0.8) == pytest.approx(0.1 * H200.memory_bytes / (327_680 / 2), abs=1)
    assert cap(0.9, kv_dtype="fp8") == pytest.approx(2 * cap(0.9), abs=2)
    # TP 1 at bf16 does not fit on one H100 (141 GB of weights in 80 GiB)
    assert not PerfModel(H100, LLAMA70).fits and PerfModel(H100, LLAMA70, tp=4).fits


# ---- the simulator's closed forms over this model ----------------------------------------------

@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_simulator_decode_lines_are_exact(source, engine):
    p = pm(source, tp=4, **engine_config(engine).perf_kwargs())
    dc = DecodeCost(p)
    for b in (1, 5, 64, 300, 2500):
        assert dc.lines(b).exact, b
        for t in (0.0, b * 100.0, b * 3000.0, b * 50_000.0):
            assert dc.time_s(b, t) == pytest.approx(float(p.decode_time_s(b, t)), rel=1e-9)
        t0, k = b * 500.0, 37
        assert dc.run_time_s(b, t0, k) == pytest.approx(sum(float(p.decode_time_s(b, t0 + i * b)) for i in range(k)),
                                                        rel=1e-9)


def test_kernels_no_table_measures_cost_a_graph_replay_floor_each():
    """Each norm / RoPE / cache-write / activation / quantisation kernel costs at least
    KERNEL_GPU_S (measured on an H200, docs/gpu-results.md), so a one-token step's
    elementwise part is that floor times their count, and fused quantisation removes exactly
    one kernel per FP8 GEMM."""
    from planner.perf.layers import KERNEL_GPU_S, Layout, kernels_per_step, small_kernels_per_step
    llama = catalog.model("meta-llama/Llama-3.1-70B")
    lay = Layout(tp=8)
    small, small_fused = small_kernels_per_step(llama, lay, True), small_kernels_per_step(llama, lay, True, True)
    # per layer: two norms, RoPE, cache write, activation (5) + 4 FP8 casts; plus 3 per step
    assert small == 80 * (5 + 4) + 3 and small_fused == 80 * 5 + 3
    assert small < kernels_per_step(llama, lay, True)
    pm = PerfModel(catalog.gpu("h200"), llama, tp=8, dtype="fp8", source="roofline")
    one = pm.step([1], [100]).ops["norms_elementwise"]
    assert one == pytest.approx(KERNEL_GPU_S * small, rel=0.01)
    big = pm.step([8192], [0]).ops["norms_elementwise"]
    assert big > one + 1e-3   # 8192 tokens' bytes dominate the floor


# ---- speculative decoding (MTP) ----------------------------------------------------------------

DSR1 = catalog.model("deepseek-ai/DeepSeek-R1-0528")


def mtp(source, k=3, a=0.85, **kw) -> PerfModel:
    return pm(source, gpu=H200, model=DSR1, tp=8, ep=8, dtype="fp8_block", kv_dtype="fp8", spec_tokens=k,
              spec_acceptance=a, engine="trtllm", graph_sizes=(1, 2, 4, 8, 16, 32, 64, 128), **kw)


def test_speculative_tokens_per_step_are_the_chain_of_acceptances(source):
    assert mtp(source).steps.spec_tokens_per_step == pytest.approx(1 + 0.85 + 0.85 ** 2 + 0.85 ** 3)
    assert mtp(source, k=2, a=1.0).steps.spec_tokens_per_step == 3.0
    assert mtp(source, k=0).steps.spec_tokens_per_step == 1.0


def test_speculative_decode_costs_a_verify_of_k_plus_1_tokens_and_k_draft_layers_per_generated_token(source):
    plain, spec = mtp(source, k=0), mtp(source, k=3, a=1.0)
    b, kv = 16, 16 * 2048.0
    s = spec.steps
    verify, draft = s._speculative_parts(b, kv)
    # the verify pass is a decode step of the model on 4 tokens per sequence ...
    assert verify == pytest.approx(s._lin_s(s.padded_batch(b) * 4) + s.decode_attention_s(b * 4, kv * 4)
                                   + s._head_s(b * 4))
    assert verify > plain.decode_time_s(b, kv) - 1e-12
    # ... and the three drafts one layer of 61 each, plus the LM head
    assert draft == pytest.approx(3 * ((s._lin_s(s.padded_batch(b)) + s.decode_attention_s(b, kv)) / DSR1.layers
                                       + s._head_s(b)))
    assert spec.decode_time_s(b, kv) == pytest.approx(float(s.cpu.total(verify + draft, b)) / 4)
    # memory-bound small batches: a 4-token verify costs far less than 4 plain steps, so MTP
    # is faster per token even at 85% acceptance; with nothing accepted it is slower
    assert mtp(source).decode_time_s(b, kv) < 0.6 * plain.decode_time_s(b, kv)
    assert mtp(source, a=0.0).decode_time_s(b, kv) > plain.decode_time_s(b, kv)


def test_speculative_prefill_adds_the_mtp_layer_and_paths_agree(source):
    plain, spec = mtp(source, k=0), mtp(source)
    assert spec.prefill_time_s(4096) == pytest.approx(plain.prefill_time_s(4096) * (1 + 1 / DSR1.layers), rel=0.02)
    for p, k, b, ctx in ((0, 0, 24, 24 * 1500.0), (2048, 0, 0, 0.0), (0, 0, 1, 900.0)):
        scalar = spec.steps.mixed_s(p, k, b, ctx)
        vector = spec.steps.mixed_v(np.array([p], float), np.array([k], float), np.array([b], float),
                                    np.array([ctx], float), np.array([1.0]))
        assert vector[0] == pytest.approx(scalar)
    new, cached = np.ones(24), np.full(24, 1499.0)
    step = spec.step(new, cached)
    assert step.seconds == pytest.approx(spec.decode_time_s(24, 24 * 1500.0))
    assert set(step.ops) == {"speculative_verify", "speculative_draft", "host_launch", "engine_cpu"}


def test_speculative_decodes_mixed_with_a_prompt_chunk_are_charged_per_generated_token(source):
    spec, plain = mtp(source), mtp(source, k=0)
    s = spec.steps
    p, b, kv = 2048.0, 24, 24 * 1500.0
    prompt = spec.prefill_time_s(p)
    share = s._speculative_share(p, s._lin_s(p), b, kv)
    mixed = s.mixed_s(p, 0.0, b, kv)
    assert mixed == pytest.approx(float(s.cpu.total(prompt + share, b + 1)), rel=1e-6)
    # the decodes' share is their verify rows and drafts over the 3.2 tokens a step yields:
    # per step, 4 rows a sequence cost more than the plain decodes' 1 and at most 4 times it
    added = plain.mixed_time_s(p, 0.0, b, kv) - plain.prefill_time_s(p)
    assert added < share * s.spec_tokens_per_step < 4 * added
    vector = s.mixed_v(np.array([p]), np.array([0.0]), np.array([float(b)]), np.array([kv]), np.array([1.0]))
    assert vector[0] == pytest.approx(mixed)
    step = spec.step(np.r_[np.ones(b), p], np.r_[np.full(b, 1499.0), 0.0])
    assert step.seconds == pytest.approx(mixed, rel=1e-6) and step.ops["speculative_decodes"] == pytest.approx(share)


def test_speculative_decoding_settings_and_validation():
    from planner.errors import InputError
    from planner.plan import Deployment, Role
    eng = engine_config("trtllm", spec_tokens=2)
    assert eng.settings()["speculative_decoding"].startswith("2 draft tokens per step")
    dep = Deployment(mode="chunked_coupled", model="llama-3.1-8b", chunk_tokens=8192, coupled=Role("h200", 1, 1),
                     engine=eng)
    assert dep.perf("coupled").steps.spec_k == 2
    with pytest.raises(InputError, match="spec_tokens must be >= 0"):
        engine_config("trtllm", spec_tokens=-1)


def test_prompts_sharing_a_step_attend_over_their_own_tokens_not_one_long_sequence(source):
    p = pm(source, model=LLAMA8, tp=1)
    four = p.prefill_time_s(32768, 0, requests=4)
    assert four == pytest.approx(p.step([8192] * 4, [0] * 4).seconds, rel=1e-9)
    # the same tokens as one prompt: the same linear ops, ~4x the causal attention (s^2)
    attention = p.step([8192] * 4, [0] * 4).ops["attention_context"]
    assert 2.5 * attention < p.prefill_time_s(32768, 0) - four < 3.5 * attention
