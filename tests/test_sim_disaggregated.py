"""Ten-line scenarios with times checked by hand against the PerfModel (disaggregated)."""
import numpy as np
import pytest

from planner.perf.model import kv_transfer_time_s
from planner.plan import Deployment, Policies, Role
from planner.sim import simulate
from traces.trace import Trace


def trace(rows):
    a, p, o = zip(*rows)
    return Trace(np.array(a, float), np.array(p), np.array(o))


def dep(P=1, D=1, gpu="a100", model="llama-2-7b", chunk=512, **pol):
    return Deployment(mode="disaggregated", model=model, chunk_tokens=chunk, prefill=Role(gpu, P),
                      decode=Role(gpu, D), policies=Policies(**pol))


def decode_sum(perf, batch, ctx0, iters):
    return sum(perf.decode_time_s(batch, ctx0 + i * batch) for i in range(iters))


def test_one_request_through_an_empty_cluster():
    d = dep()
    pp, pd_ = d.perf("prefill"), d.perf("decode")
    r = simulate(d, trace([(1.0, 1000, 10)])).records.iloc[0]
    first = 1.0 + pp.prefill_time_s(512, 0) + pp.prefill_time_s(488, 512)
    assert r.prefill_start_s == 1.0 and r.first_token_s == pytest.approx(first, rel=1e-12)
    kv = first + float(kv_transfer_time_s(pp.kv_bytes_per_token * 1000, d.kv_link_gb_s, d.kv_latency_s))
    assert r.kv_done_s == pytest.approx(kv, rel=1e-12) and r.decode_start_s == r.kv_done_s
    assert r.finish_s == pytest.approx(kv + decode_sum(pd_, 1, 1000, 9), rel=1e-12)
    assert (r.prefill_instance, r.decode_instance) == (0, 1)


def test_one_token_output_finishes_at_prefill():
    d = dep()
    r = simulate(d, trace([(0.0, 100, 1)])).records.iloc[0]
    assert r.finish_s == r.first_token_s == pytest.approx(d.perf("prefill").prefill_time_s(100, 0))
    assert r.decode_instance == -1 and np.isnan(r.kv_done_s)


def test_two_requests_share_a_chunk_fcfs():
    d = dep()
    pp = d.perf("prefill")
    rec = simulate(d, trace([(0.0, 300, 2), (0.0, 300, 2)])).records
    t1 = pp.prefill_time_s(512, 0, requests=2)    # 300 of r0 + 212 of r1, nothing cached
    t2 = t1 + pp.prefill_time_s(88, 212)          # the rest of r1, 212 cached
    assert rec.first_token_s.tolist() == pytest.approx([t1, t2], rel=1e-12)
    assert rec.prefill_start_s.tolist() == [0.0, 0.0]


def test_decode_arrival_joins_at_the_next_iteration_boundary():
    # two 1-chunk prompts arriving apart; the second joins the first's batch mid-run
    d = dep(dispatcher="least_loaded")
    d = Deployment(**{**d.__dict__, "decode": Role("a100", 1)})
    pdm = d.perf("decode")
    rec = simulate(d, trace([(0.0, 100, 50), (0.3, 100, 5)])).records
    r0, r1 = rec.iloc[0], rec.iloc[1]
    # r0 decodes alone until r1's KV lands; r1 joins at the first boundary after that
    it = [pdm.decode_time_s(1, 100 + i) for i in range(49)]
    bounds = r0.decode_start_s + np.cumsum(it)
    k = int(np.searchsorted(bounds, r1.kv_done_s))          # boundary index (0-based) after kv_done
    assert r1.decode_start_s == pytest.approx(bounds[k], rel=1e-12)
    # from there: 4 iterations with batch 2, r1 done; r0 continues alone
    ctx = (100 + k + 1) + 100
    assert r1.finish_s == pytest.approx(bounds[k] + decode_sum(pdm, 2, ctx, 4), rel=1e-12)
    left = 49 - (k + 1) - 4
    assert r0.finish_s == pytest.approx(r1.finish_s + decode_sum(pdm, 1, 100 + k + 1 + 4, left), rel=1e-12)


@pytest.mark.parametrize("order,expected", [("fcfs", [0, 1, 2, 3]), ("sjf", [0, 3, 2, 1]),
                                            ("ljf", [0, 1, 2, 3])])
def test_prefill_orders(order, expected):
    # r0 occupies the instance; r1..r3 queue behind it and are served in policy order
    d = dep(chunk=512, prefill_order=order, prefill_batch_limit=1)
    rows = [(0.0, 512, 2), (0.01, 400, 2), (0.02, 300, 2), (0.03, 200, 2)]
    rec = simulate(d, trace(rows)).records
    assert list(np.argsort(rec.first_token_s.to_numpy(), kind="stable")) == expected


def test_batch_limit_caps_requests_per_chunk():
    d = dep(prefill_batch_limit=2)
    pp = d.perf("prefill")
    rec = simulate(d, trace([(0.0, 100, 2)] * 3)).records
    t1 = pp.prefill_time_s(200, 0, requests=2)
    assert rec.first_token_s.tolist() == pytest.approx([t1, t1, t1 + pp.prefill_time_s(100, 0)], rel=1e-12)


def test_kv_transfers_share_the_link():
    d = Deployment(mode="disaggregated", model="llama-2-7b", chunk_tokens=512, prefill=Role("a100", 1),
                   decode=Role("a100", 1), kv_link_gb_s=1.0, kv_latency_s=0.01)
    pp = d.perf("prefill")
    rec = simulate(d, trace([(0.0, 200, 2), (0.0, 200, 2)])).records
    done = pp.prefill_time_s(400, 0, requests=2)
    b = pp.kv_bytes_per_token * 200
    # both start together and share 1 GB/s: each takes twice as long as alone
    assert rec.kv_done_s.tolist() == pytest.approx([done + 2 * b / 1e9 + 0.01] * 2, rel=1e-9)


def test_least_loaded_prefill_routing():
    d = dep(P=2)
    rec = simulate(d, trace([(0.0, 2000, 2), (0.0, 100, 2), (0.0, 100, 2)])).records
    assert rec.prefill_instance.tolist() == [0, 1, 1]


def test_seeded_runs_are_reproducible():
    rng = np.random.default_rng(1)
    rows = [(float(t), int(p), int(o)) for t, p, o in zip(np.sort(rng.uniform(0, 20, 300)),
                                                           rng.integers(10, 3000, 300), rng.integers(1, 600, 300))]
    d = dep(P=2, D=3)
    a, b = simulate(d, trace(rows), seed=3), simulate(d, trace(rows), seed=3)
    assert a.records.equals(b.records)
    assert a.summary["finished"] == 300
    rec = a.records
    assert (rec.first_token_s >= rec.arrival_s).all() and (rec.finish_s >= rec.first_token_s).all()


def test_padded_chunks_cost_a_full_chunk():
    d = dep()
    pp = d.perf("prefill")
    r = simulate(d, trace([(0.0, 700, 1)]), pad_prefill_chunks=True).records.iloc[0]
    # 512 tokens, then the last 188 padded to a full chunk with 512 cached
    assert r.first_token_s == pytest.approx(pp.prefill_time_s(512, 0) + pp.prefill_time_s(512, 512), rel=1e-12)
