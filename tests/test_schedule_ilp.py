"""The per-window schedule ILP on hand-checkable demands (no queueing model involved)."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.errors import InputError
from planner.plan import Window
from planner.search.schedule import STRATEGIES, Costs, Demand, Pool, solve_schedule

HALF_HOUR = 1800.0


def two_windows(prefill, decode):
    return Demand((0.0, HALF_HOUR), (HALF_HOUR, HALF_HOUR), {"prefill": prefill, "decode": decode})


def shared_pool(**kw):
    return Costs((Pool(("prefill", "decode"), 1.0, 0.6),), **kw)


def test_opposite_peaks_zero_lead_time():
    # prefill peaks in window 0, decode in window 1; $1 per instance-hour, one hour in all
    d = two_windows((3, 1), (1, 3))
    c = shared_pool(flip_latency_s=0.0)
    static = solve_schedule(d, c, "static_peak")
    assert static.counts == {"prefill": (3, 3), "decode": (3, 3)}
    assert static.usd_total == pytest.approx(6.0)
    fixed = solve_schedule(d, c, "fixed_fleet")
    assert fixed.counts == {"prefill": (3, 1), "decode": (1, 3)}
    assert fixed.flips == (0, 2) and fixed.starts == (0, 0)
    assert fixed.usd_total == pytest.approx(4.0) and fixed.usd_per_hour == pytest.approx(4.0)
    auto = solve_schedule(d, c, "autoscale")     # flipping is free, starting costs boot time
    assert auto.flips == (0, 2) and auto.starts == (0, 0)
    assert auto.usd_total == pytest.approx(4.0)
    res = solve_schedule(d, c, "reserved_burst")  # 4 reserved at $0.6 cover both windows
    assert res.reserved == (4,) and res.usd_total == pytest.approx(2.4)


def test_flip_lead_time_costs_capacity():
    # a 1 s flip takes the leaving instance away for 1 s of window 0, where prefill has no
    # slack (need exactly 3): the fixed fleet needs a fifth instance
    d = two_windows((3, 1), (1, 3))
    c = shared_pool(flip_latency_s=1.0)
    fixed = solve_schedule(d, c, "fixed_fleet")
    assert fixed.usd_total == pytest.approx(5.0)
    assert fixed.counts["prefill"][0] == 4 and sum(fixed.flips) == 2
    # autoscale stops 2 prefill (no drain) and starts 2 decode (2 x 120 s of boot at $1/h)
    auto = solve_schedule(d, c, "autoscale")
    assert auto.counts == {"prefill": (3, 1), "decode": (1, 3)}
    assert auto.flips == (0, 0) and auto.starts == (0, 2)
    assert auto.usd_total == pytest.approx(4.0 + 2 * 120 / 3600)


def test_fractional_need_leaves_slack_for_flips():
    d = two_windows((2.5, 1), (1, 3))
    fixed = solve_schedule(d, shared_pool(flip_latency_s=1.0), "fixed_fleet")
    assert fixed.counts == {"prefill": (3, 1), "decode": (1, 3)}
    assert fixed.usd_total == pytest.approx(4.0)
    assert fixed.usd_flip_lost == pytest.approx(2 * 1.0 / 3600)


def test_drain_time_of_decode_blocks_a_flip_without_slack():
    # decode -> prefill at window 1 takes 900 s of draining: half an instance of window 0
    d = two_windows((1, 3), (2.6, 1))
    c = shared_pool(flip_latency_s=0.0, drain_s={"decode": 900.0})
    fixed = solve_schedule(d, c, "fixed_fleet")
    # decode needs 3 in window 0 and each flip costs it half an instance: 4 decode allow
    # 2 flips (4 - 0.5 x 2 >= 3), so the fleet is 1 + 4 = 5, not the 4 of zero lead time
    assert fixed.counts == {"prefill": (1, 3), "decode": (4, 2)}
    assert fixed.usd_total == pytest.approx(5.0)
    c0 = shared_pool(flip_latency_s=0.0)
    assert solve_schedule(d, c0, "fixed_fleet").usd_total == pytest.approx(4.0)


def test_reserved_base_plus_burst_by_hand():
    # one coupled pool; need 2, 2, 2, 6 over four quarter hours; on-demand $1, reserved $0.5
    d = Demand((0.0, 900.0, 1800.0, 2700.0), (900.0,) * 4, {"coupled": (2, 2, 2, 6)})
    c = Costs((Pool(("coupled",), 1.0, 0.5),), startup_s=120.0)
    res = solve_schedule(d, c, "reserved_burst")
    # base 2: 2 x 0.5 + 4 burst x 0.25 h x $1 + 4 starts x 120 s x $1/h
    assert res.reserved == (2,)
    assert res.usd_total == pytest.approx(1.0 + 1.0 + 4 * 120 / 3600)
    assert res.starts == (0, 0, 0, 4)
    auto = solve_schedule(d, c, "autoscale")
    assert auto.usd_total == pytest.approx((2 + 2 + 2 + 6) * 0.25 + 4 * 120 / 3600)


def test_separate_pools_cannot_flip():
    d = two_windows((3, 1), (1, 3))
    c = Costs((Pool(("prefill",), 2.0), Pool(("decode",), 1.0)), flip_latency_s=0.0)
    fixed = solve_schedule(d, c, "fixed_fleet")
    static = solve_schedule(d, c, "static_peak")
    assert sum(fixed.flips) == 0
    assert fixed.usd_total == pytest.approx(static.usd_total) == pytest.approx(3 * 2.0 + 3 * 1.0)


def test_min_instances_and_windows():
    d = two_windows((0, 2), (0, 1))
    s = solve_schedule(d, shared_pool(), "autoscale")
    assert min(s.counts["prefill"]) >= 1 and min(s.counts["decode"]) >= 1
    assert s.windows() == (Window(0.0, s.counts["prefill"][0], s.counts["decode"][0]),
                           Window(HALF_HOUR, s.counts["prefill"][1], s.counts["decode"][1]))


def test_bad_inputs():
    with pytest.raises(InputError):
        solve_schedule(two_windows((1, 1), (1, 1)), shared_pool(), "sometimes")
    with pytest.raises(InputError):
        Demand((0.0,), (0.0,), {"prefill": (1,)})
    with pytest.raises(InputError):  # no reserved price for this pool
        solve_schedule(two_windows((1, 1), (1, 1)), Costs((Pool(("prefill", "decode"), 1.0),)),
                       "reserved_burst")


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 6), st.floats(0, 6)), min_size=1, max_size=5))
def test_costs_are_ordered(needs):
    # each strategy can copy the one before it: static >= fixed fleet >= autoscale >= reserved
    n = len(needs)
    d = Demand(tuple(600.0 * i for i in range(n)), (600.0,) * n,
               {"prefill": tuple(a for a, _ in needs), "decode": tuple(b for _, b in needs)})
    c = shared_pool(flip_latency_s=2.0, drain_s={"decode": 30.0})
    usd = [solve_schedule(d, c, s).usd_total for s in STRATEGIES]
    assert usd[0] >= usd[1] - 1e-6 >= usd[2] - 2e-6 >= usd[3] - 3e-6
