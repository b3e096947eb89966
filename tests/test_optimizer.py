import numpy as np
import pulp
import pytest

from planner import catalog
from planner.search.candidates import SLO, Option, _search_min, _search_up
from planner.errors import InfeasibleError
from planner.search.optimizer import solve


def opt(role, cost, gpus=1, link=100.0, gpu="a100-80gb", n=1, chunk=512):
    return Option(role, gpu, gpus, n, chunk, cost, ttft_s=0.5, tpot_s=0.05, link_gb_s=link)


SLO_ = SLO()


@pytest.mark.parametrize("solver", ["highs", "cbc"])
def test_ilp_picks_cheapest_pair_and_runners_up_in_cost_order(solver):
    pre = [opt("prefill", 3.0), opt("prefill", 2.0)]
    dec = [opt("decode", 5.0), opt("decode", 4.0)]
    cpl = [opt("coupled", 10.0)]
    sol = solve(pre, dec, cpl, kv_rate_gb_s=1.0, slo=SLO_, runners_up=3, solver=solver)
    assert sol.best.mode == "disaggregated"
    assert sol.best.prefill is pre[1] and sol.best.decode is dec[1]
    costs = [c.usd_per_hour for c in [sol.best] + sol.runners_up]
    assert costs == pytest.approx([6.0, 7.0, 7.0, 8.0])
    assert sol.best_per_mode["coupled"].usd_per_hour == 10.0


def test_kv_link_constraint_excludes_thin_pools():
    pre = [opt("prefill", 1.0, link=0.5), opt("prefill", 2.0, link=5.0)]
    dec = [opt("decode", 1.0, link=5.0)]
    sol = solve(pre, dec, [], kv_rate_gb_s=1.0, slo=SLO_, runners_up=0)
    assert sol.best.prefill is pre[1]


def test_jct_pairs_and_gpu_budget_are_constraints():
    pre = [opt("prefill", 1.0, gpus=4), opt("prefill", 2.0, gpus=1)]
    dec = [opt("decode", 1.0, gpus=4), opt("decode", 3.0, gpus=1)]
    sol = solve(pre, dec, [], kv_rate_gb_s=0.0, slo=SLO_, bad_pairs=[(0, 0)], runners_up=0)
    assert sol.best.usd_per_hour == pytest.approx(3.0)       # (1,0): (0,0) at 2.0 is cut
    sol = solve(pre, dec, [opt("coupled", 9.0, gpus=8)], kv_rate_gb_s=0.0, slo=SLO_, max_gpus=2, runners_up=0)
    assert (sol.best.prefill, sol.best.decode) == (pre[1], dec[1])


def test_coupled_wins_when_cheaper_and_modes_can_be_forced():
    pre, dec = [opt("prefill", 2.0)], [opt("decode", 2.0)]
    cpl = [opt("coupled", 3.0), opt("chunked_coupled", 3.5)]
    assert solve(pre, dec, cpl, kv_rate_gb_s=0, slo=SLO_).best.mode == "coupled"
    assert solve(pre, dec, cpl, kv_rate_gb_s=0, slo=SLO_, mode="disaggregated").best.mode == "disaggregated"
    assert solve(pre, dec, cpl, kv_rate_gb_s=0, slo=SLO_, mode="chunked_coupled").best.mode == "chunked_coupled"


def test_nothing_feasible_raises():
    with pytest.raises(InfeasibleError):
        solve([opt("prefill", 1.0, link=0.1)], [opt("decode", 1.0)], [], kv_rate_gb_s=1.0, slo=SLO_)


def test_search_min_finds_threshold():
    assert _search_min(lambda n: n >= 37, 1) == 37
    assert _search_min(lambda n: n >= 5, 8) == 8
    assert _search_min(lambda n: False, 1, hi=64) is None


def test_search_up_gallops_from_the_bound_and_counts_its_probes():
    probes = []

    def ok(n):
        probes.append(n)
        return n >= 37
    assert _search_up(ok, 37) == 37 and probes == [37]          # a tight bound: one probe
    probes.clear()
    assert _search_up(ok, 30) == 37
    assert probes[:4] == [30, 31, 33, 37] and len(probes) <= 6  # lo, lo+1, lo+3, lo+7, then bisect
    assert _search_up(lambda n: n >= 100, 1, hi=64) is None
    assert _search_up(lambda n: n >= 64, 60, hi=64) == 64


def lat(role, cost, ttft=float("nan"), tpot=float("nan"), gpus=1, n=1):
    return Option(role, "a100-80gb", gpus, n, 512, cost, ttft_s=ttft, tpot_s=tpot, link_gb_s=100.0)


@pytest.mark.parametrize("solver", ["highs", "cbc"])
def test_equal_cost_ties_go_to_the_most_slo_headroom(solver):
    # SLO 1 s / 0.1 s. All three plans cost 4.0; headroom = max(TTFT/1, TPOT/0.1):
    #   disaggregated 0.30 s + 0.050 s -> max(0.30, 0.50) = 0.50
    #   vLLM coupled  0.10 s + 0.045 s -> max(0.10, 0.45) = 0.45   <- best
    #   Sarathi       0.60 s + 0.020 s -> max(0.60, 0.20) = 0.60
    pre = [lat("prefill", 2.0, ttft=0.3)]
    dec = [lat("decode", 2.0, tpot=0.05)]
    cpl = [lat("coupled", 4.0, 0.10, 0.045), lat("chunked_coupled", 4.0, 0.60, 0.02)]
    sol = solve(pre, dec, cpl, kv_rate_gb_s=0.0, slo=SLO_, runners_up=2, solver=solver)
    assert sol.best.coupled is cpl[0]
    assert [c.mode for c in sol.runners_up] == ["disaggregated", "chunked_coupled"]
    assert sol.solves == 9                                # three levels per solution
    # listed order in the input does not matter
    sol = solve(pre, dec, cpl[::-1], kv_rate_gb_s=0.0, slo=SLO_, runners_up=0, solver=solver)
    assert sol.best.coupled is cpl[0]


def test_cost_is_never_traded_for_headroom():
    # 1e-4 $/h cheaper (relative 2.5e-5, above EQUAL_COST_REL) wins though 9x slower
    cpl = [lat("coupled", 4.0, 0.10, 0.01), lat("chunked_coupled", 3.9999, 0.90, 0.09)]
    assert solve([], [], cpl, kv_rate_gb_s=0.0, slo=SLO_, runners_up=0).best.coupled is cpl[1]
    # within one part in a million of each other they are equal: headroom decides
    cpl = [lat("coupled", 4.0, 0.10, 0.01), lat("chunked_coupled", 4.0 - 1e-7, 0.90, 0.09)]
    assert solve([], [], cpl, kv_rate_gb_s=0.0, slo=SLO_, runners_up=0).best.coupled is cpl[0]


def test_third_level_sum_of_ratios_breaks_equal_headroom():
    # both have max ratio 0.5 (TPOT); the first also has the lower TTFT ratio
    cpl = [lat("chunked_coupled", 4.0, 0.40, 0.05), lat("coupled", 4.0, 0.20, 0.05)]
    sol = solve([], [], cpl, kv_rate_gb_s=0.0, slo=SLO_, runners_up=1)
    assert sol.best.coupled is cpl[1] and sol.runners_up[0].coupled is cpl[0]


def test_best_per_mode_breaks_ties_by_headroom():
    pre = [lat("prefill", 2.0, ttft=0.8), lat("prefill", 2.0, ttft=0.2)]
    dec = [lat("decode", 2.0, tpot=0.03), lat("decode", 2.0, tpot=0.09)]
    sol = solve(pre, dec, [lat("coupled", 9.0, 0.1, 0.01)], kv_rate_gb_s=0.0, slo=SLO_, runners_up=0)
    d = sol.best_per_mode["disaggregated"]
    assert d.prefill is pre[1] and d.decode is dec[0]
    assert d.headroom_key(SLO_) == pytest.approx((0.3, 0.5))


class _TolerantHiGHS(pulp.HiGHS):
    """HiGHS reporting its solution as a MIP solver with an integrality tolerance of 1e-5
    may: each binary at 1 reads 1 - 1e-5 and the continuous variables (h, cost) take the
    smallest values those binaries allow. (Real HiGHS returned h 1e-6 below the ratio on
    the crashing case, and then declared the next level infeasible.)"""

    def actualSolve(self, lp, **kw):
        status = super().actualSolve(lp, **kw)
        if lp.status == pulp.LpStatusOptimal:
            for v in lp.variables():
                if v.cat == pulp.LpInteger and (v.varValue or 0) > 0.5:
                    v.varValue = 1 - 1e-5
            for v in lp.variables():
                if v.name in ("h", "cost"):
                    v.varValue *= 1 - 1e-5
        return status


def test_levels_bound_by_the_selection_not_the_solver_value(monkeypatch):
    """Regression (azure conv, l4, --mode disaggregated crashed with a TypeError): the
    headroom level's h came back below the chosen pool's own ratio, the bound taken from
    it excluded that pool, level 3 was infeasible and no deployment was read off."""
    import planner.search.optimizer as optimizer
    monkeypatch.setattr(optimizer, "_solver", lambda name: _TolerantHiGHS(msg=False, gapRel=1e-9))
    pre = [Option("prefill", "l4", 8, 2, c, 11.36, ttft_s=t, link_gb_s=12.5)
           for c, t in ((512, 0.40), (1024, 0.39), (2048, 0.3666))]
    dec = [Option("decode", "l4", 8, 2, 0, 11.36, tpot_s=0.027, link_gb_s=12.5),
           Option("decode", "l4", 4, 4, 0, 11.36, tpot_s=0.050, link_gb_s=12.5)]
    sol = solve(pre, dec, [], kv_rate_gb_s=1.0, slo=SLO_, mode="disaggregated", runners_up=3)
    got = [(c.prefill.chunk_tokens, c.decode.tp) for c in [sol.best] + sol.runners_up]
    # all cost $22.72/h: by headroom max(TTFT/1 s, TPOT/0.1 s), then by the ratio sum
    assert got == [(2048, 8), (1024, 8), (512, 8), (2048, 4)]


def test_pair_transfer_is_computed_at_the_pairs_slower_link_not_rescaled():
    """A TP8 prefill pool paired with a TP4 decode pool sends KV at the TP4 link (half the
    speed). The pair's TPOT must be the deployment's own prediction at that link: transfers
    queue, so halving the speed is not doubling the time (the old linear rescaling let a
    pair through whose p90 TPOT was 27x the target)."""
    from planner.search.candidates import decode_options, kv_link_gb_s, perf_models, prefill_options
    from profile_eff import profile_eff
    from planner.plan import Deployment, Role
    from planner.analytic.queueing import predict_disaggregated
    from planner.workload import build_workload
    from traces.trace import Trace
    from planner.search.optimizer import pair_samples

    n = 400
    a = np.arange(n) * 0.2               # 5 req/s of 1,000-token prompts: 4.1 GB/s of KV (819 kB/token)
    wl = build_workload(Trace(a, np.full(n, 1000), np.full(n, 50), name="t"))
    perfs = perf_models(["l4"], "opt-13b", (4, 8), profile_eff())
    slo = SLO(ttft_s=5.0, tpot_s=1.0)
    pre = [o for o in prefill_options(wl, perfs, slo, {"l4": 1.0}, [2048], 16, []) if o.tp == 8]
    dec = [o for o in decode_options(wl, perfs, slo, {"l4": 1.0}, [], 0) if o.tp == 4]
    p, d = pre[0], dec[0]
    own, link = kv_link_gb_s(catalog.gpu("l4"), 8), kv_link_gb_s(catalog.gpu("l4"), 4)
    assert p.link_gb_s / p.instances == own and d.link_gb_s / d.instances == link == own / 2
    dep = Deployment("disaggregated", "opt-13b", 2048, prefill=Role("l4", p.instances, 8),
                     decode=Role("l4", d.instances, 4), kv_link_gb_s=link, efficiency=profile_eff())
    want = predict_disaggregated(dep, wl, 0, slo)
    _, tpot, _ = pair_samples(p, d, wl, catalog.model("opt-13b").kv_bytes_per_token("fp16"), 1e-4)
    assert np.percentile(tpot, 90) == pytest.approx(want["tpot_s"]["p90"], rel=1e-9)
    # one prefill instance: 66% of its own 6.25 GB/s link, 131% of the pair's 3.125 GB/s - the
    # queue grows all trace long, where the old rescaling said "twice 0.13 s"
    assert p.instances == 1
    assert np.percentile(p.transfer_fn(), 90) == pytest.approx(1e-4 + 1000 * 819200 / 6.25e9, rel=1e-6)
    assert np.percentile(p.transfer_fn(link), 90) > 20.0
