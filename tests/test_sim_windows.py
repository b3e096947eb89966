"""Plans over time in the simulator: instance counts change at each window's start
(drains, flips, starts after a latency), billed per window. Times checked by hand."""
import numpy as np
import pandas as pd
import pytest

from planner.catalog import price_usd_per_gpu_hour
from planner.errors import InputError
from planner.plan import Deployment, Policies, Role, Window, replace
from planner.sim import simulate
from traces.trace import Trace


def trace(rows):
    a, p, o = zip(*rows)
    return Trace(np.array(a, float), np.array(p), np.array(o))


def dep(windows, P=1, D=1, **pol):
    pol.setdefault("predictor_accuracy", 1.0)
    return Deployment(mode="disaggregated", model="llama-2-7b", chunk_tokens=512, prefill=Role("a100", P),
                      decode=Role("a100", D), policies=Policies(**pol), windows=tuple(windows))


def coupled(windows, N=1):
    return Deployment(mode="coupled", model="llama-2-7b", chunk_tokens=512, coupled=Role("a100", N),
                      windows=tuple(windows))


def test_constant_windows_run_exactly_like_no_windows():
    t = trace([(0.1 * i, 200 + 37 * i, 5 + 11 * i) for i in range(30)])
    plain = simulate(dep([], P=2, D=2), t, seed=3)
    timed = simulate(dep([Window(0.0, 2, 2), Window(1.0, 2, 2)]), t, seed=3)
    pd.testing.assert_frame_equal(plain.records, timed.records)
    assert len(timed.scale) == 0 and len(timed.summary["windows"]) == 2


def test_two_windows_one_request_each_billed_per_window():
    # window 0: 1P+1D; window 1 (from 50 s): 1P+2D, the new decode instance up 5 s later
    d = dep([Window(0.0, 1, 1), Window(50.0, 1, 2)])
    res = simulate(d, trace([(0.0, 300, 20), (60.0, 300, 20)]), start_latency_s=5.0)
    ref = simulate(dep([]), trace([(0.0, 300, 20)])).records.iloc[0]
    r0, r1 = res.records.iloc[0], res.records.iloc[1]
    jct = ref.finish_s - ref.arrival_s
    assert r0.finish_s - r0.arrival_s == pytest.approx(jct, rel=1e-12)   # each alone in the cluster
    assert r1.finish_s - r1.arrival_s == pytest.approx(jct, rel=1e-12)
    log = res.scale[["time_s", "instance", "action", "to_role", "ready_s"]].values.tolist()
    assert log == [[50.0, 2, "start", "decode", 55.0], [55.0, 2, "ready", "decode", pytest.approx(np.nan, nan_ok=True)]]
    end = r1.finish_s
    assert res.summary["billed_instance_s"] == pytest.approx({"prefill": end, "decode": 50.0 + 2 * (end - 50.0)})
    w0, w1 = res.summary["windows"]
    assert w0["billed_instance_s"] == pytest.approx({"prefill": 50.0, "decode": 50.0})
    assert w1["billed_instance_s"] == pytest.approx({"prefill": end - 50.0, "decode": 2 * (end - 50.0)})
    assert (w0["requests"], w1["requests"], w1["instances"]) == (1, 1, {"prefill": 1, "decode": 2})
    usd = price_usd_per_gpu_hour("a100", "on_demand")[0]
    assert res.summary["run_cost_usd"] == pytest.approx(usd * (end + 50.0 + 2 * (end - 50.0)) / 3600)
    assert w0["cost_usd"] + w1["cost_usd"] == pytest.approx(res.summary["run_cost_usd"])


def test_a_scale_up_instance_takes_work_only_after_its_start_latency():
    d = dep([Window(0.0, 1, 1), Window(100.0, 2, 1)])
    rows = [(0.0, 100, 2), (105.0, 300, 2), (105.0, 300, 2), (111.0, 300, 2), (111.0, 300, 2)]
    res = simulate(d, trace(rows), start_latency_s=10.0)
    rec = res.records
    # instance 2 starts at 100 and serves from 110: at 105 both requests go to instance 0,
    # at 111 the second goes to the new instance (the least loaded)
    assert rec.prefill_instance.tolist() == [0, 0, 0, 0, 2]
    assert rec.prefill_start_s[4] == 111.0
    assert res.scale.action.tolist() == ["start", "ready"] and res.scale.time_s.tolist() == [100.0, 110.0]


def test_start_ahead_has_the_instance_up_at_the_window_start_and_bills_the_boot():
    d = dep([Window(0.0, 1, 1), Window(100.0, 2, 1)])
    res = simulate(d, trace([(0.0, 100, 2), (100.5, 300, 2), (100.5, 300, 2)]), start_latency_s=10.0,
                   start_ahead=True)
    assert res.scale.time_s.tolist() == [90.0, 100.0]
    assert res.records.prefill_instance.tolist() == [0, 0, 2]
    end = res.records.finish_s.max()
    assert res.summary["billed_instance_s"]["prefill"] == pytest.approx(end + end - 90.0)
    assert res.summary["windows"][0]["billed_instance_s"]["prefill"] == pytest.approx(100.0 + 10.0)


def test_a_drain_delays_the_flip():
    # window 0: 1P+2D; from 1 s: 2P+1D. Both decode instances hold a request at 1 s; the
    # one with less routed work (r0: 100 + 200 predicted tokens) drains, and flips to
    # prefill only when r0 has finished, serving 0.5 s (flip latency) later
    d = dep([Window(0.0, 1, 2), Window(1.0, 2, 1)], flip_latency_s=0.5)
    res = simulate(d, trace([(0.0, 100, 300), (0.0, 100, 1000), (1.5, 100, 20)]))
    rec = res.records
    r0, r1, r2 = rec.iloc[0], rec.iloc[1], rec.iloc[2]
    drained = int(r0.decode_instance)
    assert r1.decode_instance != drained and r2.decode_instance == r1.decode_instance  # no new work to it
    assert r0.finish_s > 1.5
    assert res.flips.values.tolist() == [[pytest.approx(r0.finish_s), drained, "decode", "prefill",
                                          pytest.approx(r0.finish_s + 0.5)]]
    acts = res.scale[["instance", "action", "from_role", "to_role"]].values.tolist()
    assert acts == [[drained, "drain", "decode", ""], [drained, "flip", "decode", "prefill"],
                    [drained, "ready", "", "prefill"]]
    assert res.scale.time_s.tolist() == pytest.approx([1.0, r0.finish_s, r0.finish_s + 0.5])


def test_a_role_that_grows_again_resumes_a_draining_instance():
    d = dep([Window(0.0, 1, 2), Window(1.0, 1, 1), Window(2.0, 1, 2)])
    res = simulate(d, trace([(0.0, 100, 300), (0.0, 100, 1000)]), start_latency_s=60.0)
    assert res.scale.action.tolist() == ["drain", "resume"]
    assert res.summary["billed_instance_s"]["decode"] == pytest.approx(2 * res.records.finish_s.max())


def test_coupled_scale_down_moves_unstarted_requests_and_stops_when_drained():
    d = coupled([Window(0.0, 0, 0, 2), Window(0.5, 0, 0, 1)])
    rows = [(0.0, 500, 400), (0.0, 500, 400)] + [(0.4, 50, 5)] * 6
    res = simulate(d, trace(rows))
    rec = res.records
    stop = res.scale[res.scale.action == "stop"]
    assert res.scale.action.tolist() == ["drain", "stop"]
    gone = int(stop.instance.iloc[0])
    assert stop.time_s.iloc[0] == pytest.approx(rec.finish_s[rec.decode_instance == gone].max())
    end = rec.finish_s.max()
    assert res.summary["billed_instance_s"]["coupled"] == pytest.approx(end + stop.time_s.iloc[0])
    assert res.summary["finished"] == 8


def test_windows_are_checked():
    with pytest.raises(InputError, match="at least one"):
        simulate(dep([Window(0.0, 1, 0)]), trace([(0.0, 10, 2)]))
    with pytest.raises(InputError, match="non-decreasing"):
        simulate(dep([Window(5.0, 1, 1), Window(1.0, 1, 1)]), trace([(0.0, 10, 2)]))
    with pytest.raises(InputError, match="start latency"):
        simulate(dep([Window(0.0, 1, 1)]), trace([(0.0, 10, 2)]), start_latency_s=-1.0)


def test_window_times_follow_the_rate_scale():
    d = dep([Window(0.0, 1, 1), Window(100.0, 2, 1)])
    res = simulate(d, trace([(0.0, 10, 2), (300.0, 10, 2)]), rate_scale=2.0, start_latency_s=0.0)
    assert res.scale.time_s.tolist() == [50.0, 50.0]
    assert res.summary["windows"][1]["start_s"] == 50.0 and res.summary["windows"][1]["requests"] == 1


def test_reactive_flips_are_off_while_windows_run():
    d = replace(dep([Window(0.0, 1, 2)]), policies=Policies(flip_idle_s=0.1))
    assert len(simulate(d, trace([(0.0, 4000, 20)] * 40)).flips) == 0


@pytest.mark.parametrize("seed", range(12))
def test_random_schedules_finish_every_request_and_bill_consistently(seed):
    rng = np.random.default_rng(seed)
    n_win = int(rng.integers(2, 6))
    starts = np.sort(rng.uniform(0, 20, n_win))
    starts[0] = 0.0
    mode = ("disaggregated", "coupled", "chunked_coupled")[seed % 3]
    if mode == "disaggregated":
        wins = [Window(float(s), int(rng.integers(1, 4)), int(rng.integers(1, 4))) for s in starts]
        d = dep(wins, flip_latency_s=float(rng.uniform(0, 2)))
    else:
        wins = [Window(float(s), 0, 0, int(rng.integers(1, 4))) for s in starts]
        d = replace(coupled(wins), mode=mode)
    n = 80
    t = trace(list(zip(np.sort(rng.uniform(0, 25, n)), rng.integers(10, 1500, n), rng.integers(1, 300, n))))
    res = simulate(d, t, seed=seed, start_latency_s=float(rng.uniform(0, 6)), start_ahead=bool(seed % 2))
    s = res.summary
    assert s["finished"] + s["aborted"] == n and s["finished"] > 0
    log = res.scale
    for iid, g in log.groupby("instance"):
        acts = g.action.tolist()
        if acts[0] == "start":
            assert acts[1] in ("ready", "cancel", "switch")
    billed = sum(s["billed_instance_s"].values())
    busy = s["busy_instance_s"]["total"] - s["busy_instance_s"]["flipping"]
    assert busy <= billed + 1e-6
    assert sum(w["cost_usd"] for w in s["windows"]) == pytest.approx(s["run_cost_usd"])


def test_an_idle_released_instance_flips_to_the_growing_role_instead_of_stopping():
    # 2P+1D, then 1P+2D from 40 s on a fixed fleet: both prefill instances are idle at
    # 40 s, the newest (1) is released, its drain is over at once, and the growing decode
    # role takes it: it flips and serves decode from 41 s (flip latency 1 s), no stop, no
    # start (a new instance would serve only 120 s later)
    d = dep([Window(0.0, 2, 1), Window(40.0, 1, 2)], flip_latency_s=1.0)
    rows = [(0.0, 300, 20), (0.0, 300, 20), (45.0, 300, 200), (45.0, 300, 200)]
    res = simulate(d, trace(rows))
    log = res.scale[["time_s", "instance", "action", "from_role", "to_role", "ready_s"]].values.tolist()
    nan = pytest.approx(np.nan, nan_ok=True)
    assert log == [[40.0, 1, "drain", "prefill", "", nan], [40.0, 1, "flip", "prefill", "decode", 41.0],
                   [41.0, 1, "ready", "", "decode", nan]]
    assert res.flips.values.tolist() == [[40.0, 1, "prefill", "decode", 41.0]]
    rec = res.records
    assert rec.prefill_instance.tolist()[2:] == [0, 0]
    assert sorted(rec.decode_instance.tolist()[2:]) == [1, 2]       # the flipped instance serves decode
    end = rec.finish_s.max()
    assert res.summary["billed_instance_s"] == pytest.approx({"prefill": end + 40.0, "decode": end + end - 40.0})
