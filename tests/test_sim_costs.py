"""The simulator's cheap iteration costs equal the planner's PerfModel (one source of truth)."""
import math

import numpy as np
import pytest

from planner.plan import Deployment, Role
from planner.sim.costs import DecodeCost, Lines, PrefillCost


def _perf(model="opt-13b", gpu="v100", tp=1):
    return Deployment(mode="coupled", model=model, chunk_tokens=512, coupled=Role(gpu, 1, tp)).perf("coupled")


@pytest.mark.parametrize("model,gpu,tp", [("opt-13b", "v100", 1), ("llama-2-7b", "a100", 1),
                                          ("llama-2-70b", "h100", 4), ("opt-125m", "t4", 1)])
def test_costs_match_perf_model(model, gpu, tp):
    perf = _perf(model, gpu, tp)
    pc, dc = PrefillCost(perf), DecodeCost(perf)
    for c in (1, 16, 100, 512, 2048):
        for k in (0, 10, 512, 4000):
            assert pc.time_s(c, k) == pytest.approx(perf.prefill_time_s(c, k), rel=1e-12)
    for b in (1, 2, 16, 128, 256):
        assert dc.lines(b).exact
        for t in (0, 5, 1000, 50_000, 400_000):
            assert dc.time_s(b, t) == pytest.approx(perf.decode_time_s(b, t), rel=1e-12)


def test_run_time_is_the_sum_of_iterations_and_inverts():
    perf = _perf("llama-2-7b", "a100")
    dc = DecodeCost(perf)
    for b, t0, k in ((1, 100, 1), (3, 1000, 17), (200, 5, 300), (64, 90_000, 1000)):
        direct = sum(perf.decode_time_s(b, t0 + i * b) for i in range(k))
        assert dc.run_time_s(b, t0, k) == pytest.approx(direct, rel=1e-10)
        # the inverse: the most iterations that end within a budget
        for frac in (0.0, 0.3, 0.999, 1.0):
            budget = frac * direct
            got = dc.iterations_within(b, t0, budget, k)
            assert dc.run_time_s(b, t0, got) <= budget + 1e-12
            if got < k:
                assert dc.run_time_s(b, t0, got + 1) > budget


def test_lines_fall_back_to_the_function_when_not_piecewise_linear():
    ln = Lines(lambda x: math.sqrt(x + 1.0))
    assert not ln.exact
    assert ln(99.0) == pytest.approx(10.0)
    ok = Lines(lambda x: max(1.0 + 0.5 * x, 3.0 + 0.1 * x))
    assert ok.exact and ok.cross == pytest.approx(5.0)
    assert ok(np.float64(2.0)) == pytest.approx(3.2)


@pytest.mark.parametrize("model,gpu,tp", [("opt-13b", "a100", 2), ("llama-2-7b", "a100", 1), ("llama-3.1-70b", "h100", 8)])
def test_mixed_cost_is_the_perf_models_sarathi_iteration(model, gpu, tp):
    from planner.sim.costs import MixedCost
    perf = _perf(model, gpu, tp)
    mc = MixedCost(perf)
    for args in ((511, 0, 1, 101), (189, 511, 1, 102), (0, 0, 64, 9000), (300, 20, 0, 0), (0, 0, 0, 0)):
        assert mc.time_s(*args) == pytest.approx(float(perf.mixed_time_s(*args)), rel=1e-12, abs=0)


def test_costs_match_a_perf_model_with_piecewise_corrections():
    """Per-batch and per-chunk offsets keep decode/prefill piecewise linear in the context:
    the closed forms stay exact."""
    from dataclasses import replace
    from profile_eff import profile_eff
    perf = _perf("llama-2-7b", "a100")
    perf = replace(perf, eff=profile_eff(decode_batch_offsets_s=((1, 2e-3), (2, -1e-3), (8, 4e-3)),
                                        prefill_chunk_offsets_s=((16, -1e-3), (512, 3e-3))))
    pc, dc = PrefillCost(perf), DecodeCost(perf)
    for c in (1, 16, 100, 512, 2048):
        for k in (0, 512, 4000):
            assert pc.time_s(c, k) == pytest.approx(perf.prefill_time_s(c, k), rel=1e-12)
    for b in (1, 2, 3, 8, 100):
        assert dc.lines(b).exact
        assert dc.time_s(b, 5000) == pytest.approx(perf.decode_time_s(b, 5000), rel=1e-12)
        assert dc.run_time_s(b, 5000, 7) == pytest.approx(sum(perf.decode_time_s(b, 5000 + i * b) for i in range(7)))


def test_prefill_cost_charges_each_request_slice_beyond_the_first():
    from dataclasses import replace
    from profile_eff import profile_eff
    from planner.analytic.prefill import chunked_work_s
    perf = _perf("llama-2-7b", "a100")
    perf = replace(perf, eff=profile_eff(prefill_request_s=2e-3))
    pc = PrefillCost(perf)
    assert pc.time_s(512, 100, 3) == pytest.approx(perf.prefill_time_s(512, 100) + 4e-3, rel=1e-12)
    assert perf.prefill_time_s(512, 100, 3) == pytest.approx(perf.prefill_time_s(512, 100) + 4e-3, rel=1e-12)
    assert pc.time_s(0, 0, 3) == 0.0
    # the analytical model: a prompt riding in merged chunks pays its slice in each of them
    plain = replace(perf, eff=profile_eff())
    got = chunked_work_s(perf, [100, 1000], 512)
    want = chunked_work_s(plain, [100, 1000], 512) + np.array([1, 2]) * 2e-3
    assert got == pytest.approx(want)


def test_a_chunk_that_starts_an_idle_prefill_instance_costs_the_idle_factor():
    from dataclasses import replace
    from profile_eff import profile_eff
    from planner.analytic.prefill import chunked_alone_s
    from planner.sim import simulate
    from traces import Trace
    dep = Deployment(mode="disaggregated", model="llama-2-7b", chunk_tokens=512, prefill=Role("a100", 1),
                     decode=Role("a100", 1), efficiency=profile_eff())
    cold = replace(dep, efficiency=profile_eff(prefill_idle_factor=1.5))
    # one 1000-token prompt alone: chunk 1 (512, cold) then chunk 2 (488 on 512 cached, warm)
    trace = Trace(arrival_s=np.array([0.0]), prompt_tokens=np.array([1000]), output_tokens=np.array([2]))
    p = dep.perf("prefill")
    want = 1.5 * p.prefill_time_s(512, 0) + p.prefill_time_s(488, 512)
    assert simulate(cold, trace).records["first_token_s"].iloc[0] == pytest.approx(want, rel=1e-9)
    assert float(chunked_alone_s(cold.perf("prefill"), [1000], 512)[0]) == pytest.approx(
        float(chunked_alone_s(p, [1000], 512)[0]) + 0.5 * p.prefill_time_s(512, 0), rel=1e-12)
