"""The analytical model's fast paths (planner.analytic) give the very floats of their plain
definitions: the prefill pool's busy passes from a cached prefix sum, the coupled pool's
per-instance queue laid out by instance, the busy count on arrival by shifted
comparisons, the per-link KV queue, and the KV-transfer share cached per link speed."""
import numpy as np
import pytest

from planner import catalog
from planner.analytic import coupled, prefill, transfer
from planner.perf.model import PerfModel
from planner.workload import build_workload
from profile_eff import profile_eff
from traces.trace import Trace


def bursty_trace(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(0.05, n) * rng.choice([0.05, 1.0, 4.0], n)     # bursts and lulls
    a = np.cumsum(gaps)
    return Trace(a - a[0], rng.integers(1, 3000, n), rng.integers(1, 400, n), name="bursty")


@pytest.mark.parametrize("servers", [1, 2, 5, 40])
def test_prefill_ttft_is_its_definition_from_backlog_and_pool_wait(servers):
    wl = build_workload(bursty_trace())
    pm = PerfModel(catalog.gpu("a100"), catalog.model("opt-13b"), eff=profile_eff())
    pool = prefill.prefill_pool(pm, wl, 512, 16)
    r = prefill.prefill_ttft(pool, wl, servers)
    a, merged, alone = wl.arrival_s, pool.merged_s, pool.alone_s
    busy = prefill.backlog_s(a, merged, servers) > (servers - 1) * float(merged.mean())
    w = np.where(busy, merged, alone)
    wait = prefill.pool_wait_s(a, w, servers)
    s = wl.sample
    ws, ms = wait[s], merged[s]
    fill_rate = (wl.window_sum_prompt / wl.window_duration_s)[wl.window_index[s]] / servers
    extra = pool.seconds_per_token * np.minimum(pool.fill_room * pool.chunk_tokens, fill_rate * (ws + ms))
    assert np.array_equal(r.work_s, w)
    assert np.array_equal(r.start_s, a + wait)
    assert np.array_equal(r.ttft_sample_s, np.where(ws > 0, ws + ms + extra, alone[s]))
    assert np.array_equal(r.busy_sample, ws > 0)
    assert 0 < busy.mean() < 1 or servers in (1, 40)          # both branches seen where it matters


@pytest.mark.parametrize("n,instances", [(1, 1), (1, 3), (7, 3), (9, 3), (10, 1), (3000, 7), (3000, 64), (50, 80)])
def test_round_robin_busy_intervals_are_the_sorted_ones(n, instances):
    rng = np.random.default_rng(n + instances)
    a = np.sort(rng.uniform(0, 20, n))
    w = rng.exponential(0.3, n)
    back = prefill.round_robin_backlog_s(a, w, instances)
    ref = coupled.PrefillBusy(a, back, w, instances)        # grouped by a stable argsort of j mod n
    got = coupled.PrefillBusy.round_robin(a, w, instances)
    for field in ("start", "length", "cum", "bounds"):
        assert np.array_equal(getattr(got, field), getattr(ref, field)), field
    assert np.array_equal(got.backlog_at(np.arange(n)), back)
    order = np.argsort(np.arange(n) % instances, kind="stable")
    assert np.array_equal(coupled.instance_order(n, instances)[0], order)


def test_busy_count_on_arrival_is_the_sorted_search():
    rng = np.random.default_rng(3)
    for trial in range(200):
        n = int(rng.integers(1, 300))
        a = np.round(np.sort(rng.uniform(0, 5, n)), 1)                 # ties between arrivals
        done = np.round(a + rng.exponential(rng.choice([0.01, 0.5, 5.0]), n), 1)   # and with done times
        if trial % 5 == 0:
            done = a.copy()                                             # work 0: done == arrival
        cap = int(rng.integers(1, 80))
        ds = np.sort(done, kind="stable")
        ref = np.minimum(np.maximum(np.arange(n) - np.searchsorted(ds, a, side="right"), 0), cap)
        assert np.array_equal(transfer._busy_on_arrival(a, ds, cap), ref), (trial, n, cap)


def test_per_link_queue_is_a_lindley_recursion_on_each_link():
    rng = np.random.default_rng(4)
    n, links = 2000, 6
    start = np.sort(rng.uniform(0, 30, n))
    x = rng.exponential(0.05, n) * (rng.random(n) > 0.1)
    link = rng.integers(0, links, n)
    got = transfer.per_link_backlog_s(start, x, link, links)
    ref = np.zeros(n)
    for k in range(links):
        u, last_t, last_x = 0.0, None, 0.0
        for i in np.flatnonzero(link == k):
            u = 0.0 if last_t is None else max(u + last_x - (start[i] - last_t), 0.0)
            ref[i], last_t, last_x = u, start[i], x[i]
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


def test_transfer_share_cached_per_link_speed_is_the_share_of_the_sorted_sends():
    rng = np.random.default_rng(6)
    tr = bursty_trace(2000, seed=6)
    wl = build_workload(tr)
    done = wl.arrival_s + rng.exponential(0.2, len(wl.arrival_s))
    for gb_s in (10.0, 2.5, 10.0):                 # the third call reads the first's cache
        got = transfer.kv_transfer_sample_s(wl, done, 3, 2e5, gb_s, 1e-4, wl.arrival_s)
        x = wl.prompt_tokens * (2e5 / (gb_s * 1e9)) * (wl.output_tokens > 1)
        start = np.maximum.accumulate(done)
        link = transfer.link_of_request(wl.arrival_s, done, 3)
        backlog = transfer.per_link_backlog_s(start, x, link, 3)[wl.sample]
        sends = x[x > 0]
        share = transfer.expected_min(sends, x[wl.sample]) / float(sends.mean())
        assert np.array_equal(got, 1e-4 + x[wl.sample] + backlog * share)


def test_prefill_work_buffer_is_reused_without_carrying_state_and_dies_with_the_workload():
    import gc
    wl = build_workload(bursty_trace(seed=8))
    pm = PerfModel(catalog.gpu("a100"), catalog.model("opt-13b"), eff=profile_eff())
    pool = prefill.prefill_pool(pm, wl, 1024, 16)
    first = {n: prefill.prefill_ttft(pool, wl, n) for n in (2, 9, 3)}
    again = {n: prefill.prefill_ttft(pool, wl, n) for n in (3, 2, 9)}      # another order, same buffer
    for n in first:
        assert np.array_equal(first[n].start_s, again[n].start_s)
        assert np.array_equal(first[n].ttft_sample_s, again[n].ttft_sample_s)
    assert first[2].start_s is not again[2].start_s                          # results are the caller's own
    assert len(prefill._WORK_BUFFERS.get(wl, {})) == 1
    before = len(prefill._WORK_BUFFERS)
    del wl, pool, first, again
    gc.collect()
    assert len(prefill._WORK_BUFFERS) == before - 1
