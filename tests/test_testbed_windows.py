"""Plans over time on the testbed: the schedule's decisions by hand (slots, drains, flips
after the slot's drain + flip latency, time scale), the global scheduler's draining
instances, the give-back glue, and one real multi-process run that flips a slot."""
from __future__ import annotations

import math

import numpy as np
import pytest

from planner.plan import Deployment, Policies, Role, Window
from testbed.follow import FollowWindows
from testbed.global_scheduler import GlobalScheduler
from testbed.windows import Layout, Schedule, layout, summary
from testbed.workers.chunks import ChunkScheduler

NAN = pytest.approx(math.nan, nan_ok=True)


def W(*rows):
    return [Window(float(t), p, d) for t, p, d in rows]


def rows(s: Schedule):
    return [[t, w, inst, a, fr, to, r, name] for t, w, inst, a, fr, to, r, name in s.log]


# ---- windows.py: pure decisions --------------------------------------------------------
def test_layout_slots_and_partners():
    lay = layout(W((0, 2, 1), (10, 1, 2)))
    assert lay == Layout(prefill=2, decode=2, slots=3)
    assert [lay.slot("prefill", 0), lay.slot("prefill", 1), lay.slot("decode", 0), lay.slot("decode", 1)] == [0, 1, 2, 1]
    assert lay.partner("prefill", 1) == ("decode", 1) and lay.partner("decode", 1) == ("prefill", 1)
    assert lay.partner("prefill", 0) is None and lay.partner("decode", 0) is None
    assert [lay.cpu_rank(s) for s in range(3)] == [0, 2, 1]         # p0 and d0 (slots 0, 2) apart first
    assert [Layout(3, 3, 4).cpu_rank(s) for s in range(4)] == [0, 2, 3, 1]
    assert layout(W((0, 1, 3), (5, 3, 1))) == Layout(3, 3, 4)     # 3 + 1 = 4 slots: p2 and d1 share slot 2
    assert summary(W((0, 2, 1), (10, 1, 2))) == "following 2 windows: prefill 1-2, decode 1-2 instances, 3 slots"


def test_flip_waits_for_the_slots_drain_plus_flip_latency_all_scaled():
    # time_scale 2: window 1 starts at 0.5 + 1.0 x 2 = 2.5 s; flip latency 0.25 x 2 = 0.5 s
    s = Schedule(W((0, 2, 1), (1.0, 1, 2)), time_scale=2.0, origin_s=0.5, flip_latency_s=0.25)
    assert (s.active("prefill"), s.active("decode"), s.next_event_s()) == ([0, 1], [0], 2.5)
    assert s.advance(2.49) == []
    ch = s.advance(2.5)
    assert [(c.role, c.index, c.action) for c in ch] == [("prefill", 1, "drain")]
    assert s.active("prefill") == [0] and s.active("decode") == [0]   # d1 waits for slot 1
    assert s.draining() == [("prefill", 1)] and s.next_event_s() == math.inf
    ch = s.drained("prefill", 1, 3.0)
    assert [(c.role, c.index, c.action) for c in ch] == [("decode", 1, "flip")]
    assert s.next_event_s() == 3.5 and s.advance(3.4) == []
    assert [(c.role, c.index, c.action) for c in s.advance(3.5)] == [("decode", 1, "ready")]
    assert s.active("decode") == [0, 1]
    assert rows(s) == [[2.0, 1, 1, "drain", "prefill", "", NAN, "p1"],
                       [2.5, 1, 1, "flip", "prefill", "decode", 3.0, "d1"],
                       [3.0, 1, 1, "ready", "", "decode", NAN, "d1"]]


def test_waiting_is_cancelled_and_a_draining_process_resumes():
    # slot 1: d1 drains at 10; p1 waits; at 20 p1 is not wanted (cancel); at 30 d1 resumes
    s = Schedule(W((0, 1, 2), (10, 2, 1), (20, 1, 1), (30, 1, 2)), flip_latency_s=1.0)
    s.advance(10)
    s.advance(20)
    assert s.state[("prefill", 1)] == "idle" and s.draining() == [("decode", 1)]
    s.advance(30)
    assert s.active("decode") == [0, 1]
    assert [r[:6] for r in rows(s)] == [[10, 1, 1, "drain", "decode", ""],
                                        [20, 2, 1, "cancel", "prefill", ""],
                                        [30, 3, 1, "resume", "", "decode"]]


def test_free_slot_serves_at_once_and_a_cancelled_flip_flips_back():
    s = Schedule(W((0, 2, 1), (10, 1, 1), (20, 1, 2)), flip_latency_s=1.0)
    s.advance(10)
    assert [c.action for c in s.drained("prefill", 1, 10.5)] == ["stop"]
    assert [(c.role, c.index, c.action) for c in s.advance(20)] == [("decode", 1, "ready")]   # no VM start modelled
    t = Schedule(W((0, 2, 1), (10, 1, 2), (11.5, 2, 1)), flip_latency_s=1.0)
    t.advance(10)
    t.drained("prefill", 1, 11.0)                         # d1 flips in, ready at 12
    ch = t.advance(11.5)                                  # window 2 wants p1 back: flip again
    assert [(c.role, c.index, c.action) for c in ch] == [("decode", 1, "cancel"), ("prefill", 1, "flip")]
    assert t.next_event_s() == 12.5
    assert [(c.role, c.action) for c in t.advance(12.5)] == [("prefill", "ready")]
    assert [r[3:7] for r in rows(t)][-3:] == [["cancel", "decode", "", NAN], ["flip", "decode", "prefill", 12.5],
                                              ["ready", "", "prefill", NAN]]


def test_zero_flip_latency_is_ready_at_the_drain():
    s = Schedule(W((0, 2, 1), (1, 1, 2)))
    s.advance(1)
    assert [c.action for c in s.drained("prefill", 1, 1.2)] == ["flip", "ready"]
    assert s.active("decode") == [0, 1]


# ---- the global scheduler with draining instances --------------------------------------
def test_draining_instances_get_no_routes_or_dispatches_and_reroutes_go_least_loaded():
    g = GlobalScheduler(3, 2, dispatcher="power_of_two", decode_capacity_tokens=10_000)
    assert [g.route(0, 100), g.route(1, 50), g.route(2, 10), g.route(3, 30)] == [0, 1, 2, 2]
    g.set_accepting("prefill", 2, False)
    assert [g.route(4, 1), g.route(5, 1)] == [1, 1]       # never 2, though it is the least loaded
    g.started(2)                                           # 2 started on p2: it stays; 3 comes back
    assert g.reroute(3) == 1 and g.prefill[1].load_tokens == 82 and not g.drained("prefill", 2)
    assert g.prefilled(2) == 2 and not g.drained("prefill", 2)   # its KV is still to leave
    g.kv_sent(2)
    assert g.drained("prefill", 2)
    g.set_accepting("decode", 1, False)
    assert {g.dispatch(r, 10, 0) for r in (0, 1, 4)} == {0}
    assert g.drained("decode", 1) and not g.drained("decode", 0)
    g.set_accepting("prefill", 2, True)
    assert g.reroute(5, to=2) == 2                         # a new instance takes over a queued request
    assert g.donor_for(2) == (1, 1)                        # p1: rids 1, 3, 4 unstarted -> half of 3


def test_follow_gives_back_unstarted_work_and_reports_the_drain():
    sent = []
    placed = {}
    g = GlobalScheduler(2, 1, dispatcher="least_loaded")
    s = Schedule(W((0, 2, 1), (1.0, 1, 1)))
    f = FollowWindows(s, g, lambda name, msg: sent.append((name, msg)), lambda rid, p: placed.update({rid: p}))
    for rid in range(4):
        g.route(rid, 10)                                  # 0, 2 on p0; 1, 3 on p1
    g.started(1)
    f.tick(1.0)
    assert sent == [("p1", {"op": "give_back", "count": None, "tag": 0})]
    f.check(1.01)
    assert s.draining() == [("prefill", 1)]               # the answer is not in yet
    f.on_given_back({"tag": 0, "rids": [3]})
    assert placed == {3: 0} and g.prefill[0].held == 3
    g.prefilled(1)
    d = g.dispatch(1, 10, 0)
    g.kv_sent(1)
    f.check(1.2)
    assert s.state[("prefill", 1)] == "idle" and [r[3] for r in s.log] == ["drain", "stop"]
    g.finished(1)
    assert d == 0


def test_chunks_give_back_only_unstarted_requests_in_start_order():
    c = ChunkScheduler(chunk_tokens=8, order="sjf")
    for rid, n in ((0, 12), (1, 9), (2, 3), (3, 5)):
        c.add(rid, n)
    c.next_chunk()                                         # 2 (3 tokens) and 3 (5 tokens)
    c.next_chunk()                                         # 1 started: 8 of 9
    assert c.take_waiting() == [0] and c.take_waiting() == []
    assert [(s.rid, s.tokens) for s in c.next_chunk()] == [(1, 1)]
    for rid, n in ((4, 7), (5, 2), (6, 4)):
        c.add(rid, n)
    assert c.take_waiting(2) == [5, 6] and len(c) == 1


# ---- one real run: a flip on slot 1 ----------------------------------------------------
MODEL = dict(layers=2, hidden=64, classifier_layers=1, classifier_hidden=64)


@pytest.mark.slow
def test_real_run_follows_two_windows_with_a_flip():
    pytest.importorskip("torch")
    from testbed.run import RunOptions, run_trace
    from traces import Trace
    # window 0: 2 prefill + 1 decode; from 1.0 s: 1 prefill + 2 decode (p1 drains, d1 flips in)
    dep = Deployment(mode="disaggregated", model="opt-125m", chunk_tokens=16,
                     prefill=Role("a100-80gb", 2), decode=Role("a100-80gb", 2),
                     policies=Policies(flip_latency_s=0.2, dispatcher="least_loaded"),
                     windows=tuple(W((0, 2, 1), (1.0, 1, 2))))
    rng = np.random.default_rng(5)
    n = 60
    # a burst of long prompts just before the boundary leaves p1 a queue to give back
    arr = np.sort(np.r_[0.0, rng.uniform(0, 2.0, n - 26), rng.uniform(0.9, 0.98, 25)])
    prompts = np.where((arr > 0.9) & (arr < 0.98), 60, rng.integers(20, 60, n))
    trace = Trace(arr, prompts, rng.integers(4, 12, n))          # first arrival 0: run clock = log clock
    res = run_trace(dep, trace, RunOptions(**MODEL, return_tokens=True), progress=False)
    rec = res.records
    assert all(len(res.tokens[i]) == int(trace.output_tokens[i]) for i in range(n))
    assert np.isfinite(rec["finish_s"].to_numpy(float)).all()
    late = rec["arrival_s"] > 1.0 + 0.05
    assert late.sum() > 10 and (rec.loc[late, "prefill_instance"] == 0).all()
    assert (rec.loc[rec["arrival_s"] < 1.0, "prefill_instance"] == 1).any()
    assert res.rerouted > 0                               # p1's unstarted requests moved to p0
    log = res.scale
    assert list(log["action"]) == ["drain", "flip", "ready"] and list(log["worker"]) == ["p1", "d1", "d1"]
    assert list(log["instance"]) == [1, 1, 1]
    drain_t, flip_t, ready_t = log["time_s"]
    assert 1.0 <= drain_t < 1.05 and flip_t >= drain_t
    assert log["ready_s"].iloc[1] == pytest.approx(flip_t + 0.2) and ready_t >= flip_t + 0.2 - 1e-3
    # p1's last prefill ends before the flip; d1 gets nothing before it is ready
    on_p1 = rec["prefill_instance"] == 1
    assert rec.loc[on_p1, "prefill_start_s"].max() <= drain_t + 0.05   # nothing new starts on p1
    assert rec.loc[on_p1, "first_token_s"].max() <= flip_t + 0.01
    on_d1 = rec["decode_instance"] == 1
    assert on_d1.any() and (rec.loc[on_d1, "first_token_s"] >= ready_t - 0.01).all()


# ---- validate and the CLI --------------------------------------------------------------
def windowed(flip_latency_s=0.5):
    return Deployment(mode="disaggregated", model="opt-125m", chunk_tokens=64, prefill=Role("a100-80gb", 2),
                      decode=Role("a100-80gb", 2), policies=Policies(flip_latency_s=flip_latency_s),
                      windows=tuple(W((0, 2, 1), (2.0, 1, 2))))


def test_validate_simulates_the_same_windows_on_the_run_clock():
    from planner.plan import Plan
    from planner.sim import simulate
    from testbed.run import RunOptions
    from testbed.validate import compare, deployment_for, render
    from traces import Trace
    rng = np.random.default_rng(1)
    trace = Trace(np.sort(rng.uniform(0, 3.0, 40)), rng.integers(50, 400, 40), rng.integers(5, 50, 40))
    plan = Plan(windowed())
    opts = RunOptions(time_scale=2.0)
    dep = deployment_for(plan, opts)
    assert dep.windows == plan.deployment.windows
    ref = simulate(dep, trace, time_scale=2.0, start_latency_s=0.0)
    assert ref.scale["time_s"].iloc[0] == pytest.approx(4.0)          # window 1 at 2.0 s x 2
    table = compare(plan, trace, opts, ref.records, dep=dep, scale=ref.scale)
    p90 = table["metrics"]["ttft_s"]["p90"]
    assert p90["predicted"] is None and p90["simulated_error"] == pytest.approx(0.0)
    assert table["scale"]["simulated"] == table["scale"]["measured"] and table["scale"]["simulated"]["drain"] == 1
    text = render(table)
    assert "scale log: simulated" in text and "predicted: -" in text
    static = deployment_for(plan, RunOptions(follow_windows=False))
    assert static.windows == () and (static.prefill.instances, static.decode.instances) == (2, 2)
    assert deployment_for(plan, RunOptions(instances=(1, 1))).windows == ()


def test_cli_static_counts_on_a_plan_over_time_need_no_windows(tmp_path):
    from click.testing import CliRunner

    from planner.plan import Plan
    from testbed.cli import main
    Plan(windowed()).write(tmp_path / "plan.json")
    (tmp_path / "t.csv").write_text("arrival_s,prompt_tokens,output_tokens\n0,10,3\n")
    r = CliRunner().invoke(main, ["run", "--plan", str(tmp_path / "plan.json"), "--trace", str(tmp_path / "t.csv"),
                                  "--prefill", "1"])
    assert r.exit_code == 2 and "--no-windows" in r.output and "Traceback" not in r.output
