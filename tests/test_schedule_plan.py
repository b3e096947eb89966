"""Per-window demand and `plan_over_time`, with a hand-computable stand-in for the queueing
model and once with the real one."""
import numpy as np
import pytest

from planner.plan import Deployment, Plan, Role
from planner.search.schedule import STRATEGIES, plan_over_time, slo_of, window_demand
from traces import Trace


def fake_predict(dep, trace):
    """TTFT p90 = requests / prefill instances (s); TPOT p90 = 0.01 x requests / decode."""
    n = len(trace)
    return {"ttft_s": {"p90": n / dep.prefill.instances}, "tpot_s": {"p90": 0.01 * n / dep.decode.instances},
            "utilisation": {"prefill": {"peak_window": 0.5}}, "kv_peak_fraction": 0.5}


def small_trace():
    # window 0 (0-10 s): 4 requests; window 1 (10-19 s): 2 requests
    return Trace(np.array([0.0, 1.0, 2.0, 3.0, 10.0, 19.0]), np.full(6, 100), np.full(6, 11), name="small")


def dep(n_p=1, n_d=1):
    return Deployment("disaggregated", "opt-13b", 512, prefill=Role("a100", n_p), decode=Role("a100", n_d))


def test_window_demand_by_hand():
    slo = {"ttft_s": ("p90", 1.5), "tpot_s": ("p90", 0.02)}
    d = window_demand(small_trace(), dep(), 10.0, slo, predict_fn=fake_predict)
    assert d.start_s == (0.0, 10.0) and d.duration_s == (10.0, 9.0) and d.requests == (4, 2)
    # window 0, prefill: 3 instances meet 4/3 <= 1.5; 2 miss by 2/1.5 = 1.333 against 0.889
    # at 3, so need = 2 + (1.333 - 1) / (1.333 - 0.889) = 2.75
    assert d.need["prefill"][0] == pytest.approx(2.75)
    # window 1: 2 requests; 2 instances meet 1 <= 1.5, 1 misses (2 / 1.5 = 1.333 vs 0.667)
    assert d.need["prefill"][1] == pytest.approx(1 + (4 / 3 - 1) / (4 / 3 - 2 / 3))
    # decode: 0.04 / n <= 0.02 needs 2 (1 misses 2x, 2 meets exactly: need 2.0)
    assert d.need["decode"] == pytest.approx((2.0, 1.0))


def test_plan_over_time_fills_windows_and_costs():
    plan = Plan(dep(3, 2), inputs={"slo": {"ttft_s": {"p90": 1.5}, "tpot_s": {"p90": 0.02}}},
                cost={"usd_per_hour": 10.0, "usd_per_million_tokens": 1.0})
    out = plan_over_time(small_trace(), plan, 10.0, strategy="autoscale", overrides={"a100-80gb": 2.0},
                         predict_fn=fake_predict, startup_s=0.0)
    w = out.deployment.windows
    assert [(x.start_s, x.prefill_instances, x.decode_instances) for x in w] == [(0.0, 3, 2), (10.0, 2, 1)]
    assert out.deployment.prefill.instances == 3 and out.deployment.decode.instances == 2  # peaks
    sch = out.cost["schedule"]
    assert sch["strategy"] == "autoscale" and set(sch["strategies"]) == set(STRATEGIES)
    # $2 per instance-hour: (3 + 2) x 10 s + (2 + 1) x 9 s = 77 instance-seconds
    assert out.cost["usd_per_hour"] == pytest.approx(2.0 * 77 / 19)
    assert sch["strategies"]["static_peak"]["usd_per_hour"] == pytest.approx(2.0 * 5)
    assert out.cost["usd_per_million_tokens"] == pytest.approx(out.cost["usd_per_hour"] / 10.0)
    assert out.cost["usd_per_hour_without_schedule"] == 10.0


def test_slo_shapes():
    for raw in ({"ttft_s": {"p90": 2.0}}, {"ttft_s": ["p90", 2.0]}, {"ttft_p90_s": 2.0}):
        assert slo_of(Plan(dep(), inputs={"slo": raw})) == {"ttft_s": ("p90", 2.0)}
    raw = {"ttft_s": 1.0, "tpot_s": 0.1, "percentile": 99, "jct_s": None}
    assert slo_of(Plan(dep(), inputs={"slo": raw})) == {"ttft_s": ("p99", 1.0), "tpot_s": ("p99", 0.1)}


def test_real_queueing_model_orders_costs():
    rng = np.random.default_rng(1)
    # a quiet minute at 4 req/s, 30 s of burst at 40 req/s, a quiet minute
    gaps = np.concatenate([rng.exponential(1 / 4, 240), rng.exponential(1 / 40, 1200), rng.exponential(1 / 4, 240)])
    t = Trace(np.cumsum(gaps) - gaps[0], rng.integers(100, 1500, len(gaps)), rng.integers(10, 300, len(gaps)))
    plan = Plan(dep(2, 2), inputs={"slo": {"ttft_s": {"p90": 1.0}, "tpot_s": {"p90": 0.1}}},
                predictions={"ttft_s": {"p50": 0.2}, "tpot_s": {"p50": 0.05}})
    out = plan_over_time(t, plan, 30.0)
    s = out.cost["schedule"]["strategies"]
    usd = [s[k]["usd_total"] for k in STRATEGIES if k in s]
    assert all(a >= b - 1e-6 for a, b in zip(usd, usd[1:]))
    need = out.cost["schedule"]["need"]["prefill"]
    assert max(need) > min(need) + 1       # the burst needs more prefill than the quiet part
    assert s["autoscale"]["usd_total"] < s["static_peak"]["usd_total"]
