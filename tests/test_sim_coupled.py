"""Coupled baselines: vLLM-style whole-prompt prefill that stalls decodes, Sarathi-style chunks."""
import numpy as np
import pytest

from planner.engines.config import engine_config
from planner.plan import Deployment, Role
from planner.sim import simulate
from traces.trace import Trace


def trace(rows):
    a, p, o = zip(*rows)
    return Trace(np.array(a, float), np.array(p), np.array(o))


def coupled(mode, n=1, chunk=512):
    # the front end streams without limit here (the fitted rate is tested in test_sim_frontend)
    return Deployment(mode=mode, model="llama-2-7b", chunk_tokens=chunk, coupled=Role("a100", n),
                      engine=engine_config("vllm", frontend_chunks_per_s=0.0))


def dsum(perf, b, ctx0, k):
    return sum(perf.decode_time_s(b, ctx0 + i * b) for i in range(k))


def test_vllm_one_request():
    d = coupled("coupled")
    perf = d.perf("coupled")
    r = simulate(d, trace([(2.0, 1000, 10)])).records.iloc[0]
    first = 2.0 + perf.prefill_time_s(1000, 0)
    assert r.first_token_s == pytest.approx(first, rel=1e-12)
    assert r.finish_s == pytest.approx(first + dsum(perf, 1, 1000, 9), rel=1e-12)
    assert r.prefill_instance == r.decode_instance == 0


def test_vllm_prefill_stalls_the_running_decode():
    d = coupled("coupled")
    perf = d.perf("coupled")
    rec = simulate(d, trace([(0.0, 100, 200), (0.5, 1500, 2)])).records
    r0, r1 = rec.iloc[0], rec.iloc[1]
    it = r0.first_token_s + np.cumsum([perf.decode_time_s(1, 100 + i) for i in range(199)])
    k = int(np.searchsorted(it, 0.5))             # the boundary after r1 arrives
    assert r1.prefill_start_s == 0.5
    assert r1.first_token_s == pytest.approx(it[k] + perf.prefill_time_s(1500, 0), rel=1e-12)
    # r1 decodes one token with r0, then r0 goes on alone; the prefill cost r0 that long
    ctx = 100 + k + 1
    end_pair = r1.first_token_s + perf.decode_time_s(2, ctx + 1500)
    assert r1.finish_s == pytest.approx(end_pair, rel=1e-12)
    rest = 199 - (k + 1) - 1
    assert r0.finish_s == pytest.approx(end_pair + dsum(perf, 1, ctx + 1, rest), rel=1e-12)


def test_vllm_prefill_batches_waiting_prompts_up_to_the_token_budget():
    d = coupled("coupled")
    perf = d.perf("coupled")
    rec = simulate(d, trace([(0.0, 1500, 2), (0.0, 500, 2), (0.0, 100, 2)])).records
    t1 = perf.prefill_time_s(2000, 0, requests=2)   # 1500 + 500 fit the 2048 budget, 100 does not
    assert rec.first_token_s[0] == rec.first_token_s[1] == pytest.approx(t1, rel=1e-12)
    # vLLM prioritises prefill: the next iteration is the left-over prompt, before any decode
    assert rec.first_token_s[2] == pytest.approx(t1 + perf.prefill_time_s(100, 0), rel=1e-12)
    assert rec.finish_s[0] == pytest.approx(rec.first_token_s[2] + perf.decode_time_s(3, 2100), rel=1e-12)


def test_sarathi_one_request_in_chunks():
    d = coupled("chunked_coupled")
    perf = d.perf("coupled")
    r = simulate(d, trace([(0.0, 1000, 10)])).records.iloc[0]
    first = perf.prefill_time_s(512, 0) + perf.prefill_time_s(488, 512)
    assert r.first_token_s == pytest.approx(first, rel=1e-12)
    assert r.finish_s == pytest.approx(first + dsum(perf, 1, 1000, 9), rel=1e-12)


def test_sarathi_mixed_iteration_carries_decodes_and_a_chunk():
    d = coupled("chunked_coupled")
    perf = d.perf("coupled")
    rec = simulate(d, trace([(0.0, 100, 300), (0.2, 700, 2)])).records
    r0, r1 = rec.iloc[0], rec.iloc[1]
    it = r0.first_token_s + np.cumsum([perf.decode_time_s(1, 100 + i) for i in range(299)])
    k = int(np.searchsorted(it, 0.2))
    ctx = 100 + k + 1
    # two mixed iterations: 511 prompt tokens + 1 decode, then 189 + 1 (511 cached)
    m1 = perf.mixed_time_s(511, 0, 1, ctx)
    m2 = perf.mixed_time_s(189, 511, 1, ctx + 1)
    assert r1.prefill_start_s == pytest.approx(it[k], rel=1e-12)
    assert r1.first_token_s == pytest.approx(it[k] + m1 + m2, rel=1e-12)
    assert r1.finish_s == pytest.approx(r1.first_token_s + perf.decode_time_s(2, ctx + 2 + 700), rel=1e-12)


def test_coupled_requests_spread_over_instances():
    d = coupled("coupled", n=3)
    rec = simulate(d, trace([(0.0, 100, 50)] * 6)).records
    assert sorted(rec.prefill_instance.tolist()) == [0, 0, 1, 1, 2, 2]
    assert (rec.prefill_instance == rec.decode_instance).all()


@pytest.mark.parametrize("prompts,padded_iters", [((300, 100), [(2, 300)]), ((400, 100), [(1, 400), (1, 100)])])
def test_vllm_02_pads_prompt_batches(prompts, padded_iters):
    # vLLM <= 0.2: a prompt batch costs count x longest; at most 256 padding tokens
    d = coupled("coupled")
    perf = d.perf("coupled")
    rows = [(0.0, p, 2) for p in prompts]
    packed = simulate(d, trace(rows)).records
    packed_s = perf.prefill_time_s(sum(prompts), 0, requests=2)     # two prompts, each its own attention
    assert packed.first_token_s.tolist() == pytest.approx([packed_s] * 2, rel=1e-12)
    padded = simulate(d, trace(rows), coupled_prefill="padded").records
    # a second prompt iteration runs right after the first, before any decode iteration
    ends = np.cumsum([perf.prefill_time_s(n * w, 0, requests=n) for n, w in padded_iters])
    want = [ends[0], ends[-1]]
    assert padded.first_token_s.tolist() == pytest.approx(want, rel=1e-12)


class _Rank:
    def __init__(self, waiting: int, decoding: int, limit: int = 64):
        self.pq, self.partial, self.B, self.batch_limit = [0] * waiting, -1, decoding, limit
        self.adp_wait = self.adp_batch = 0


def test_attention_dp_balance_holds_prompts_until_every_rank_has_one_or_the_timeout():
    from planner.sim.coupled import AdpBalance
    gate = AdpBalance(timeout_iters=3, batching_wait_iters=0)
    a, b = _Rank(waiting=1, decoding=8), _Rank(waiting=0, decoding=8)
    gate.ranks = [a, b]
    assert [gate.may_start(a) for _ in range(3)] == [False, False, True]    # timed out on its third step
    b.pq = [1]
    assert gate.may_start(a) and gate.may_start(b)                          # both have one: both start
    idle = _Rank(waiting=0, decoding=0)
    gate.ranks = [a, idle]
    assert gate.may_start(a)                  # a rank with nothing to decode: nobody waits
    batching = AdpBalance(timeout_iters=50, batching_wait_iters=2)
    batching.ranks = [a, b]
    assert [batching.may_start(a) for _ in range(3)] == [False, False, True]   # all ready: waits 2 steps more


def test_a_scheduler_that_takes_requests_in_every_k_decode_steps_delays_their_prefill():
    from dataclasses import replace
    # no streaming limit: the first token reaches the client as the prefill ends
    base = replace(coupled("coupled"), engine=engine_config("sglang", frontend_chunks_per_s=0.0))
    perf = base.perf("coupled")
    rows = [(0.0, 1000, 400), (1.0, 200, 5)]        # the second arrives while the first decodes
    every = simulate(base, trace(rows)).records.iloc[1]
    k = 30
    polled = simulate(replace(base, engine=replace(base.engine, recv_interval=k)), trace(rows)).records.iloc[1]
    step = perf.decode_time_s(1, 1000)
    wait = polled.first_token_s - every.first_token_s
    # taken in at the next multiple of k decode steps since the first request's prefill
    assert 0 < wait <= k * step * 1.2
    assert polled.first_token_s - polled.arrival_s > every.first_token_s - every.arrival_s
    idle = simulate(replace(base, engine=replace(base.engine, recv_interval=k)), trace([(0.0, 200, 5)])).records
    assert idle.iloc[0].first_token_s == pytest.approx(perf.prefill_time_s(200, 0), rel=1e-9)   # idle: at once


def test_tensorrt_llm_batch_waiting_holds_a_prompt_k_steps_while_others_decode():
    """batch_wait_timeout_iters k: a prompt arriving while a request decodes waits k steps
    (its tokens stay under the ratio's share of the budget); on an idle engine it starts at once."""
    from dataclasses import replace
    base = replace(coupled("chunked_coupled", chunk=8192), engine=engine_config("trtllm"))
    perf = base.perf("coupled")
    rows = [(0.0, 1000, 400), (1.0, 200, 5)]
    plain = simulate(base, trace(rows)).records.iloc[1]
    k = 20
    waits = replace(base, engine=replace(base.engine, batch_wait_iters=k, batch_wait_ratio=0.9))
    held = simulate(waits, trace(rows)).records.iloc[1]
    step = perf.decode_time_s(1, 1000)
    assert held.first_token_s - plain.first_token_s == pytest.approx(k * step, rel=0.15)
    big = simulate(waits, trace([(0.0, 1000, 400), (1.0, 7800, 5)])).records.iloc[1]   # 7801 >= 0.9 x 8192
    assert big.prefill_start_s - big.arrival_s < 2 * step
    idle = simulate(waits, trace([(0.0, 200, 5)])).records.iloc[0]
    assert idle.first_token_s == pytest.approx(perf.prefill_time_s(200, 0), rel=0.05)
