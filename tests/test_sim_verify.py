"""The simulator as the verifier: slower step costs, preempted requests and peak KV
occupancy, the engine's admission, the stratified sample of a large trace and its
weighted percentiles, and `replay`'s verdict against an SLO."""
from dataclasses import replace

import numpy as np
import pytest

from planner import catalog
from planner.engines.config import engine_config
from planner.plan import Deployment as _Deployment, Policies, Role
from planner.search.candidates import SLO
from planner.sim import replay, simulate
from planner.sim.decode import GREEDY, RESERVE_STATIC
from planner.sim.run import engine_admission
from planner.sim.sample import verification_trace, weighted_quantiles
from profile_eff import profile_eff
from traces.synthetic import generate
from traces.trace import Trace


def Deployment(*args, **kw):
    return _Deployment(*args, **{"efficiency": profile_eff(), **kw})


SMALL_V100 = catalog.register_gpu(replace(catalog.gpu("v100"), name="v100-32e9-bytes-v", memory_gb=32e9 / 2**30,
                                          aliases=()))


def trace(rows):
    a, p, o = zip(*rows)
    return Trace(np.array(a, float), np.array(p), np.array(o))


def small_memory(**pol):
    pol.setdefault("predictor_accuracy", 1.0)
    return Deployment(mode="disaggregated", model="opt-13b", chunk_tokens=2048, prefill=Role(SMALL_V100.name, 2),
                      decode=Role(SMALL_V100.name, 1), policies=Policies(**pol))


def test_step_scale_multiplies_every_step_of_a_lone_request():
    """One request alone: TTFT is its prefill, its decode steps follow one another; with every
    step 1.5x as costly both grow 1.5x (the KV transfer is not a step and does not; nor the
    front end's streaming, unlimited here)."""
    dep = Deployment("coupled", "opt-13b", 4096, coupled=Role("a100", 1),
                     engine=engine_config("vllm", frontend_chunks_per_s=0.0))
    t = trace([(0.0, 1000, 50)])
    base = simulate(dep, t).records.iloc[0]
    slow = simulate(dep, t, step_scale=1.5).records.iloc[0]
    assert (slow.first_token_s - slow.arrival_s) == pytest.approx(1.5 * (base.first_token_s - base.arrival_s), rel=1e-9)
    assert (slow.finish_s - slow.first_token_s) == pytest.approx(1.5 * (base.finish_s - base.first_token_s), rel=1e-9)
    with pytest.raises(Exception, match="step scale"):
        simulate(dep, t, step_scale=0.0)


def test_preempted_requests_and_peak_kv_are_counted():
    """Two 1000-token prompts growing to 1300 tokens on an instance holding 138 blocks of
    16: the second is preempted once (one request preempted), when the pair held every
    token the instance has (2 x 1104 = 138 x 16): the peak is 100%."""
    d = small_memory(decode_admission="greedy")
    res = simulate(d, trace([(0.0, 1000, 300), (0.0, 1000, 300)]))
    assert res.stats["preemptions"] == 1 and res.stats["preempted_requests"] == 1
    cap = d.perf("decode").kv_capacity_tokens // 16 * 16
    # preempted when 2 x ceil((1000 + m + 1)/16) > 138: at m = 104, holding 2 x 1104 tokens
    assert cap == 2 * 1104 and res.stats["kv_peak_fraction"] == pytest.approx(1.0, rel=1e-12)
    assert res.summary["preempted_requests"] == 1
    lone = simulate(d, trace([(0.0, 1000, 300)]))
    assert lone.stats["preempted_requests"] == 0
    # its prompt and the 299 tokens its decode steps append (the first came from the prefill)
    assert lone.stats["kv_peak_fraction"] == pytest.approx(1299 / cap, rel=1e-9)


def test_engine_admission_follows_the_engine_profile():
    assert engine_admission(engine_config("vllm")) == GREEDY
    assert engine_admission(engine_config("sglang")) == GREEDY        # retract: recompute, as vLLM
    assert engine_admission(engine_config("trtllm")) == RESERVE_STATIC  # guaranteed no evict


def test_weighted_quantiles():
    v = np.array([1.0, 2.0, 3.0, 4.0])
    assert weighted_quantiles(v, None, (50,)) == [float(np.percentile(v, 50))]
    # weight 3 on the value 1: half the mass is below 1
    assert weighted_quantiles(v, np.array([3.0, 1.0, 1.0, 1.0]), (50, 90)) == [1.0, 4.0]
    # zero weights do not count
    assert weighted_quantiles(v, np.array([0.0, 0.0, 1.0, 1.0]), (50,)) == [3.0]


def test_sample_of_a_large_trace_keeps_the_busiest_window_and_weights_strata():
    t = generate("mixed", n_requests=20_000, rate_per_s=20.0, seed=3)
    whole = verification_trace(t, 50_000)
    assert not whole.sampled and whole.trace is t
    small = verification_trace(t, 4_000)              # 4,000 requests: windows of >= 1,500 each
    assert small.sampled and small.windows == 2 and len(small.trace) < 6_000
    vt = verification_trace(t, 4_000, 12_000)          # traces over 4,000 sampled, 12,000 at a time
    assert vt.sampled and vt.windows == 8
    n_counted = int(np.count_nonzero(vt.weights))
    assert 7_000 <= n_counted <= 12_000 and len(vt.trace) < 15_000
    # the weights of the counted requests stand for the whole trace
    assert float(vt.weights.sum()) == pytest.approx(len(t), rel=1e-9)
    # the busiest window (by prompt + output tokens) is in the sample, arrivals as they were
    w = vt.window_s
    idx = (t.arrival_s // w).astype(int)
    load = np.bincount(idx, weights=t.prompt_tokens + t.output_tokens)
    busiest = int(np.argmax(load))
    lo, hi = np.searchsorted(t.arrival_s, [busiest * w, (busiest + 1) * w])
    gaps = np.diff(t.arrival_s[lo:hi])
    sample_gaps = np.diff(vt.trace.arrival_s)
    assert any(np.allclose(sample_gaps[i:i + len(gaps)], gaps) for i in range(len(sample_gaps) - len(gaps) + 1))
    assert "stratified sample" in vt.note and "busiest" in vt.note


def test_replay_judges_the_slo_and_reports_memory():
    dep = Deployment("coupled", "opt-13b", 4096, coupled=Role("a100", 1))
    t = trace([(0.1 * i, 300, 20) for i in range(40)])
    vt = verification_trace(t, 1000)
    ok = replay(dep, vt, SLO(ttft_s=10.0, tpot_s=1.0))
    assert ok["meets"] and ok["worst_ratio"] < 1 and ok["preempted_requests"] == 0
    assert ok["ttft_s"]["p90"] == pytest.approx(simulate(dep, t).summary["ttft_s"]["p90"], rel=1e-12)
    assert 0 < ok["kv_peak_fraction"] < 1 and ok["kv_headroom"] == pytest.approx(1 - ok["kv_peak_fraction"])
    tight = replay(dep, vt, SLO(ttft_s=ok["ttft_s"]["p90"] * 0.9, tpot_s=1.0))
    assert not tight["meets"] and tight["limited_by"] == "ttft"
    assert tight["ratios"]["ttft"] == pytest.approx(1 / 0.9, rel=1e-9)


PARENT = None


def _dies_in_a_worker(vt, slo, seed, x):
    import os
    if os.getpid() != PARENT:
        os._exit(3)                  # a worker that dies mid-job
    return x * 2


def test_replays_in_a_pool_equal_those_in_process_and_a_dead_worker_falls_back():
    import os
    from planner.sim.parallel import Replayer
    global PARENT
    PARENT = os.getpid()
    dep = Deployment("coupled", "opt-13b", 4096, coupled=Role("a100", 1))
    vt = verification_trace(trace([(0.1 * i, 300, 20) for i in range(40)]), 1000)
    slo = SLO(ttft_s=10.0, tpot_s=1.0)
    with Replayer(vt, slo, 0, workers=2) as rp:
        pooled = rp.submit(dep, rate_scale=2.0).get()
        assert rp.pool is not None
        h = rp.call(_dies_in_a_worker, 21)
        assert h.get() == 42 and rp.pool is None          # answered here, the pool abandoned
        after = rp.submit(dep, rate_scale=2.0).get()      # later replays run in this process
    here = replay(dep, vt, slo, rate_scale=2.0)
    for r in (pooled, after):
        assert {k: v for k, v in r.items() if k != "wall_s"} == {k: v for k, v in here.items() if k != "wall_s"}


def test_long_run_fluid_queue_counts_requests_behind_a_growing_backlog():
    from planner.sim.verify import long_run
    n = np.full(10, 100.0)                      # 10 req/s in windows of 10 s
    d = np.full(10, 10.0)
    ok = long_run(10.6, n, d, SLO(ttft_s=1.0))
    assert ok["meets"] and ok["late_share"] == 0.0 and ok["final_backlog_requests"] == 0.0
    busy = long_run(10.3, n, d, SLO(ttft_s=1.0))     # no fluid backlog, but 97% of the throughput
    assert busy["late_share"] == 0.0 and not busy["meets"]
    # at 9.5 req/s the backlog grows by 5 requests a window: from the 3rd window on it starts
    # above 9.5 requests (1 s of work), so 8 of the 10 windows' requests queue past 1 s
    slow = long_run(9.5, n, d, SLO(ttft_s=1.0))
    assert slow["final_backlog_requests"] == pytest.approx(50.0)
    assert slow["late_share"] == pytest.approx(0.8) and not slow["meets"]
    assert slow["utilisation"] == pytest.approx(10 / 9.5)


def test_saturated_capacity_separates_a_load_the_instance_keeps_up_with_from_one_it_does_not():
    """The closed loop's rate is the rate the instance sustains: at 80% of it an open-loop
    replay's queue stays bounded; at 130% the last arrivals wait far longer than the first."""
    from planner.sim.verify import capacity_per_s
    dep = Deployment("chunked_coupled", "opt-13b", 512, coupled=Role("a100", 1),
                     engine=replace(engine_config("vllm"), token_budget=512))
    lengths = generate("mixed", n_requests=3000, rate_per_s=10.0, seed=4)
    cap = capacity_per_s(dep, lengths)
    assert cap > 0
    two = replace(dep, coupled=Role("a100", 2))
    assert capacity_per_s(two, lengths) == pytest.approx(2 * cap, rel=1e-12)   # a coupled pool: per instance x count

    def ttft_trend(factor):
        t = lengths.time_scaled(lengths.rate_per_s / (factor * cap))
        r = simulate(dep, t).records
        ttft = (r["first_token_s"] - r["arrival_s"]).to_numpy()
        k = len(ttft) // 5
        return float(np.median(ttft[:k])), float(np.median(ttft[-k:]))
    first, last = ttft_trend(0.8)
    assert last < 5 * max(first, 0.05)
    first, last = ttft_trend(1.3)
    assert last > 20 * max(first, 0.05)
