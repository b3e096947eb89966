import numpy as np
import pytest

from planner.candidates import SLO, Option, _search_min
from planner.errors import InfeasibleError
from planner.optimizer import solve


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
    sol = solve(pre, dec, [], kv_rate_gb_s=0.0, slo=SLO_, jct_bad_pairs=[(0, 0)], runners_up=0)
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
