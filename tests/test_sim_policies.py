"""Decode memory, admission policies, preemption, flips, dispatcher, predictor, closed loop."""
import random
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from planner import catalog
from planner.errors import InputError
from profile_eff import profile_eff
from planner.plan import Deployment as _Deployment, Policies, Role

def Deployment(*args, **kw):
    """These tests hand-compute the queueing and simulator formulas on a calibrated-profile
    performance model (planner.perf.profile), the same for every release of kernel tables."""
    return _Deployment(*args, **{"efficiency": profile_eff(), **kw})
from planner.sim import LengthPredictor, read_confusion, simulate, simulate_closed_loop
from planner.sim.dispatch import Dispatcher
from traces.trace import Trace


def trace(rows):
    a, p, o = zip(*rows)
    return Trace(np.array(a, float), np.array(p), np.array(o))


# A V100 with 32e9 bytes (29.8 GiB) of memory: OPT-13B keeps 2213 KV tokens, 138 blocks of 16
SMALL_V100 = catalog.register_gpu(replace(catalog.gpu("v100"), name="v100-32e9-bytes", memory_gb=32e9 / 2**30,
                                          aliases=()))


def small_memory(P=2, D=1, **pol):
    pol.setdefault("predictor_accuracy", 1.0)
    return Deployment(mode="disaggregated", model="opt-13b", chunk_tokens=2048, prefill=Role(SMALL_V100.name, P),
                      decode=Role(SMALL_V100.name, D), policies=Policies(**pol))


def dsum(perf, b, ctx0, k):
    return sum(perf.decode_time_s(b, ctx0 + i * b) for i in range(k))


def test_capacity_is_the_one_from_the_perf_model():
    assert small_memory().perf("decode").kv_capacity_tokens // 16 == 138


def test_greedy_runs_out_of_memory_and_preempts_by_recompute():
    d = small_memory(decode_admission="greedy")
    pd_ = d.perf("decode")
    res = simulate(d, trace([(0.0, 1000, 300), (0.0, 1000, 300)]))
    r0, r1 = res.records.iloc[0], res.records.iloc[1]
    assert r0.decode_start_s == r1.decode_start_s          # both admitted at once
    # 2 * ceil((1000 + m + 1) / 16) > 138 first at boundary m = 104: r1 (admitted last) leaves
    assert res.summary["preemptions"] == 1
    t0 = r0.decode_start_s
    assert r0.finish_s == pytest.approx(t0 + dsum(pd_, 2, 2000, 104) + dsum(pd_, 1, 1104, 195), rel=1e-12)
    # r1 waits for the memory, recomputes its 1104 tokens of KV, then makes its last 195 tokens
    stall = pd_.prefill_time_s(1104, 0)
    assert r1.finish_s == pytest.approx(r0.finish_s + stall + dsum(pd_, 1, 1104, 195), rel=1e-12)


def test_reserve_static_waits_for_the_reservation():
    d = small_memory(decode_admission="reserve_static")
    pd_ = d.perf("decode")
    res = simulate(d, trace([(0.0, 1000, 300), (0.0, 1000, 300)]))
    r0, r1 = res.records.iloc[0], res.records.iloc[1]
    # each reserves ceil((1000 + 200) / 16) = 75 blocks; 150 > 138, so r1 waits for r0
    assert res.summary["preemptions"] == 0
    assert r1.decode_start_s == r0.finish_s
    assert r0.finish_s == pytest.approx(r0.decode_start_s + dsum(pd_, 1, 1000, 299), rel=1e-12)
    assert r1.finish_s == pytest.approx(r0.finish_s + dsum(pd_, 1, 1000, 299), rel=1e-12)


@pytest.mark.parametrize("policy,waits", [("reserve_static", True), ("reserve_dynamic", False)])
def test_reserve_dynamic_counts_on_the_shortest_job_ending(policy, waits):
    # r1 (500 tokens, predicted 0 more) reaches decode first and reserves 32 blocks; r0
    # reserves ceil(1700 / 16) = 107: 139 > 138 now, but fits once r1 ends
    d = small_memory(decode_admission=policy)
    rec = simulate(d, trace([(0.0, 1300, 450), (0.0, 500, 50)])).records
    r0, r1 = rec.iloc[0], rec.iloc[1]
    assert r1.decode_start_s < r0.decode_start_s
    assert bool(r0.decode_start_s == r1.finish_s) is waits


def test_a_request_larger_than_decode_memory_is_aborted_not_hung():
    d = small_memory(P=1)
    res = simulate(d, trace([(0.0, 2000, 400), (0.0, 100, 5)]))
    assert res.summary["aborted"] == 1 and res.summary["finished"] == 1
    assert np.isnan(res.records.finish_s[0]) and np.isfinite(res.records.finish_s[1])


def test_idle_decode_instance_flips_to_prefill_and_is_logged():
    d = Deployment(mode="disaggregated", model="llama-2-7b", chunk_tokens=512, prefill=Role("a100", 1),
                   decode=Role("a100", 2), policies=Policies(flip_idle_s=0.1, flip_latency_s=1.0))
    res = simulate(d, trace([(0.0, 4000, 20)] * 40))
    # both decode instances are idle from t=0; at 0.1 the first flips (ready at 1.1)
    assert res.flips.iloc[0].tolist() == [0.1, 1, "decode", "prefill", 1.1]
    assert len(res.flips) == 1           # the last decode instance never flips
    rec = res.records
    assert set(rec.prefill_instance) == {0, 1}
    assert rec.prefill_start_s[rec.prefill_instance == 1].min() == pytest.approx(1.1)
    assert set(rec.decode_instance) == {2}
    assert res.summary["finished"] == 40


def test_no_flip_without_flip_policy():
    d = Deployment(mode="disaggregated", model="llama-2-7b", chunk_tokens=512, prefill=Role("a100", 1),
                   decode=Role("a100", 2))
    assert len(simulate(d, trace([(0.0, 4000, 20)] * 40)).flips) == 0


def _inst(iid):
    return SimpleNamespace(iid=iid, accepting=True)


def test_dispatchers():
    insts = [_inst(0), _inst(1), _inst(2)]
    dsp = Dispatcher("least_loaded", random.Random(0), {})
    for i in insts:
        dsp.register(i.iid, 10_000)
    dsp.assign(0, 5000, 0)
    dsp.assign(1, 100, 0)
    assert dsp.choose(insts, 500, 0).iid == 2
    # power of two: among the two sampled with room, the lower heavy:light ratio wins
    p2 = Dispatcher("power_of_two", random.Random(0), {})
    for i in insts[:2]:
        p2.register(i.iid, 10_000)
    p2.assign(0, 100, 400)   # heavy
    p2.assign(1, 100, 0)     # light
    assert all(p2.choose(insts[:2], 500, 400).iid == 1 for _ in range(20))
    # no room on 1: the other one is taken whatever its ratio
    p2.assign(1, 9_800, 0)
    assert p2.choose(insts[:2], 500, 400).iid == 0
    rnd = Dispatcher("random", random.Random(0), {})
    for i in insts:
        rnd.register(i.iid, 10_000)
    picks = [rnd.choose(insts, 1, 0).iid for _ in range(300)]
    assert set(picks) == {0, 1, 2} and max(picks.count(k) for k in range(3)) < 140
    # round robin deals in turn whatever the load (TensorRT-LLM's router, SGLang's DP controller)
    rr = Dispatcher("round_robin", random.Random(0), {})
    for i in insts:
        rr.register(i.iid, 10_000)
    rr.assign(0, 9_000, 0)
    assert [rr.choose(insts, 1, 0).iid for _ in range(5)] == [0, 1, 2, 0, 1]


def test_predictor_accuracy_and_neighbouring_misses():
    out = np.random.default_rng(0).integers(1, 2000, 50_000)
    lp = LengthPredictor(bucket_tokens=200, accuracy=0.749)
    pred = lp.predict(out, seed=1)
    true = out // 200
    assert np.mean(pred == true) == pytest.approx(0.749, abs=0.01)
    miss = np.abs(pred - true)[pred != true]
    assert np.mean(miss == 1) > 0.6 and miss.max() <= 9
    assert np.array_equal(LengthPredictor(accuracy=1.0).predict(out), true)
    assert np.array_equal(lp.lower_bound_tokens([0, 3]), [0, 600])


def test_confusion_matrix_from_file(tmp_path):
    f = tmp_path / "cm.csv"
    f.write_text("true,b0,b1\nb0,0,10\nb1,5,5\n")
    cm = read_confusion(f)
    pred = LengthPredictor(bucket_tokens=100, confusion=cm).predict(np.array([50] * 1000 + [150] * 1000), seed=0)
    assert (pred[:1000] == 1).all() and 0.4 < pred[1000:].mean() < 0.6
    f.write_text("a,b\nc,d\n")
    with pytest.raises(InputError):
        read_confusion(f)


def test_closed_loop_one_client_sends_after_each_finish():
    d = Deployment(mode="disaggregated", model="llama-2-7b", chunk_tokens=512, prefill=Role("a100", 1),
                   decode=Role("a100", 1))
    res = simulate_closed_loop(d, clients=1, requests=4, prompt_tokens=300, output_tokens=20, think_s=0.5)
    rec = res.records
    assert rec.arrival_s.tolist()[0] == 0.0
    assert rec.arrival_s.to_numpy()[1:] == pytest.approx(rec.finish_s.to_numpy()[:-1] + 0.5)
    jct = rec.finish_s - rec.arrival_s
    assert jct.max() - jct.min() < 1e-9          # an empty cluster each time: identical requests
    many = simulate_closed_loop(d, clients=8, requests=64, trace=trace([(0.0, 300, 20), (0.0, 900, 200)]))
    assert many.summary["finished"] == 64
    assert set(zip(many.records.prompt_tokens, many.records.output_tokens)) == {(300, 20), (900, 200)}


def test_round_robin_deals_coupled_requests_in_turn_least_outstanding_skips_the_busy_one():
    def instances(policy):
        d = Deployment(mode="coupled", model="llama-2-7b", chunk_tokens=2048, coupled=Role("a100", 3),
                       policies=Policies(dispatcher=policy))
        # a long request first, then short ones, each done before the next arrives
        res = simulate(d, trace([(0.0, 300, 800)] + [(1.0 * i, 100, 2) for i in range(1, 7)]))
        rec = res.records.sort_values("arrival_s")
        assert rec["finish_s"].iloc[0] > 7.0           # the long one runs throughout
        return rec["prefill_instance"].tolist()
    assert instances("round_robin") == [0, 1, 2, 0, 1, 2, 0]
    assert instances("least_loaded") == [0] + [1] * 6
