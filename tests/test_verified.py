"""Plans checked in simulation before they are returned (issue 13): never a plan that misses
the SLO there, KV memory sized with preemption, over-long requests, margin, headroom,
spares, the frontier and the objective, the SLO percentile on every figure."""
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.errors import InputError
from planner.search.candidates import SLO
from planner.search.frontier import pareto
from planner.search.margin import search
from planner.search.verified import verified_recommend
from planner.sim import replay
from planner.sim.sample import verification_trace
from planner.workload import apply_overlong
from traces import read_trace, write_trace
from traces.trace import Trace


MODEL = "opt-13b"     # the figures below (context 2,048 tokens, memory per GPU) are OPT-13B's


def trace(rate=6.0, n=400, prompt=(200, 1500), output=(50, 400), seed=0):
    rng = np.random.default_rng(seed)
    a = np.cumsum(rng.exponential(1.0 / rate, n))
    return Trace(a - a[0], rng.integers(*prompt, n), rng.integers(*output, n), name="synthetic")


def check_again(plan, tr, slo=SLO()):
    """The returned plan replayed again, independently, on the whole trace."""
    return replay(plan.deployment, verification_trace(tr, len(tr)), slo)


# ---- the walk ----------------------------------------------------------------------------
def test_returned_plan_meets_the_slo_in_simulation_and_rejects_are_cheaper_and_miss():
    tr = trace(rate=8, n=600)
    plan = verified_recommend(tr, ["a100"], MODEL, runners_up=2, margins=False)
    v = plan.verification
    again = check_again(plan, tr)
    assert again["meets"] and again["ttft_s"]["p90"] == pytest.approx(v["plan"]["ttft_s"]["p90"], rel=1e-12)
    for r in v["rejected"]:
        assert not r["simulated"]["meets"] and r["usd_per_hour"] <= plan.cost["usd_per_hour"] * (1 + 1e-9)
        assert "p90" in r["why"] or "never finished" in r["why"]
    # runners-up: each replayed, each meeting the SLO, none cheaper than the plan
    assert len(plan.runners_up) == len(v["runners_up"]) == 2
    for s, sim in zip(plan.runners_up, v["runners_up"]):
        assert sim["meets"] and s["usd_per_hour"] >= plan.cost["usd_per_hour"] * (1 - 1e-9)


class FakeReplayer:
    """A simulator that accepts a deployment only from `need` GPUs up, with TTFT over the
    target below that (the walk's logic, independent of the step-cost model)."""

    def __init__(self, need):
        self.need, self.workers, self.seen = need, 1, []

    def submit(self, dep, **kw):
        self.seen.append(dep)
        ok = dep.gpus >= self.need
        r = {"meets": ok, "worst_ratio": 0.5 if ok else 2.0, "ratios": {"ttft": 0.5 if ok else 2.0, "tpot": 0.5},
             "limited_by": "ttft", "unfinished": 0, "percentile": "p90", "ttft_s": {"p90": 0.5 if ok else 2.0},
             "tpot_s": {"p90": 0.05}, "jct_s": {"p90": 1.0}, "preemption_flag": False, "preempted_share": 0.0}

        class H:
            def get(self):
                return r
        return H()

    def call(self, fn, *args):
        raise AssertionError("no margin search here")


def test_plans_missing_in_simulation_are_passed_over_in_cost_order():
    from planner.search import verified as ver
    from planner.search.recommend import Summaries
    from planner.search.space import build_space
    tr = trace(rate=8, n=600)
    space = build_space(tr, ["a100"], MODEL, kv_rule="simulated")
    fake = FakeReplayer(need=4)
    walker = ver.Walker(space, Summaries(space, policies=ver.Policies(), efficiency=None, dtype="fp16", seed=0,
                                         engine=ver.EngineConfig()),
                        fake, runners_up=1, headroom=0.0, deadline=lambda: False)
    walker.run()
    best = walker.best
    assert best is not None and best.gpus >= 4
    rejected = [walker.record(c) for c in walker.rejected]
    assert rejected and all(not r["meets"] and r["gpus"] < 4 and r["why"].startswith("p90 TTFT 2.000 s > 1 s")
                            for r in rejected)
    # replayed in cost order: nothing cheaper than the best was accepted, the best was the
    # first candidate meeting the SLO, and every rejected coupled pool grew by one instance
    costs = [walker.record(c)["usd_per_hour"] for c in walker.rejected]
    assert costs == sorted(costs) and max(costs) <= best.usd_per_hour + 1e-9
    for c in walker.rejected:            # TTFT missed: the coupled pool, or the prefill pool, grew by one
        o = c.coupled if c.coupled is not None else c.prefill
        grown = (o.role, o.gpu, o.tp, o.instances + 1, o.chunk_tokens)
        assert any(grown in k for k in walker.queued), (c, grown)
        if c.prefill is not None:        # the decode pool (TPOT met) kept its size
            assert any(grown in k and ver.key_of(c.decode) in k for k in walker.queued)


def test_azure_conversation_on_h100_is_verified(shared_traces):
    raw = read_trace(shared_traces / "azure2023_conv.csv")
    plan = verified_recommend(raw, ["h100"], MODEL, runners_up=0, margins=False)
    tr, _ = apply_overlong(raw, 2048, "reject", "opt-13b")
    assert check_again(plan, tr)["meets"]
    for r in plan.verification["rejected"]:
        assert not r["simulated"]["meets"] and r["usd_per_hour"] <= plan.cost["usd_per_hour"] + 1e-9


def test_kv_sized_in_simulation_admits_what_the_gaussian_rule_rejects(shared_traces):
    """The Gaussian KV rule (no preemption) needs two H100s for Azure conversation; the
    simulator serves it on one with some requests preempted (recompute): flagged above 0.5%,
    with the next size up simulated next to it."""
    raw = read_trace(shared_traces / "azure2023_conv.csv")
    verified = verified_recommend(raw, ["h100"], MODEL, runners_up=0, margins=False)
    analytic = verified_recommend(raw, ["h100"], MODEL, runners_up=0, verify=False)
    assert verified.deployment.gpus == 1 and analytic.deployment.gpus >= 2
    assert verified.cost["usd_per_hour"] <= analytic.cost["usd_per_hour"] / 2 + 1e-9
    sim = verified.verification["plan"]
    assert sim["preempted_share"] > 0.005 and sim["preemption_flag"]
    assert sim["kv_peak_fraction"] > 0.95 and sim["kv_headroom"] == pytest.approx(1 - sim["kv_peak_fraction"])
    nxt = verified.verification["next_size_up"]
    assert nxt["usd_per_hour"] > verified.cost["usd_per_hour"]
    assert nxt["simulated"]["preempted_share"] < sim["preempted_share"]
    assert verified.verification["preemption"]["mode"] == "recompute"
    # the predictions still say what the Gaussian rule thinks of the plan
    assert verified.predictions["kv_peak_fraction"] > 1.0


def test_no_plan_meets_in_simulation_exits_3_with_the_closest(tmp_path):
    """A TTFT target the queueing model meets on paper but no candidate meets in simulation
    within the search: exit 3, the closest candidate and what would help."""
    from planner.errors import InfeasibleError
    from planner.search import verified as ver
    tr = trace(rate=8, n=600)
    old = ver.MAX_SIMS
    ver.MAX_SIMS = 1
    try:
        plan = verified_recommend(tr, ["a100"], MODEL, runners_up=0, margins=False)
        # with one replay allowed, either the first candidate met the SLO or it raised
        assert plan.verification["sims"] >= 1 and check_again(plan, tr)["meets"]
    except InfeasibleError as e:
        assert "no plan meets the SLO in simulation" in str(e) and "--no-verify" in str(e)
    finally:
        ver.MAX_SIMS = old


# ---- over-long requests -------------------------------------------------------------------
def long_trace():
    tr = trace(n=300, rate=4)
    p = tr.prompt_tokens.copy()
    p[::10] = 3000                                    # 30 requests longer than OPT-13B's 2048 tokens
    return Trace(tr.arrival_s, p, tr.output_tokens, name="long")


def test_overlong_policies_apply_the_same_way_everywhere(tmp_path):
    tr = long_trace()
    path = tmp_path / "long.csv"
    write_trace(tr, path)
    out = {}
    for policy in ("reject", "truncate", "keep"):
        r = CliRunner().invoke(main, ["recommend", "--model", MODEL, "--trace", str(path), "--overlong", policy, "--runners-up", "0",
                                      "--json", "-o", str(tmp_path / f"{policy}.json")])
        assert r.exit_code == 0, r.output
        out[policy] = json.loads(r.stdout)
        info = out[policy]["inputs"]["overlong"]
        assert info["requests"] == 30 and info["share"] == pytest.approx(0.1) and info["policy"] == policy
    assert out["reject"]["inputs"]["trace"]["requests"] == 270
    assert out["truncate"]["inputs"]["trace"]["requests"] == 300
    assert out["truncate"]["inputs"]["trace"]["prompt_tokens"]["max"] <= 2048
    assert out["keep"]["inputs"]["trace"]["prompt_tokens"]["max"] == 3000
    assert out["reject"]["verification"]["plan"]["requests"] == 270
    text = CliRunner().invoke(main, ["recommend", "--model", MODEL, "--trace", str(path), "--runners-up", "0"]).stdout
    assert "context   30 requests (10.0%) exceed opt-13b's 2,048-token context (prompt + output): rejected" in text
    # trace stats counts them when given the model; the statistics are of the trace so treated
    r = CliRunner().invoke(main, ["trace", "stats", str(path), "--model", MODEL, "--json"])
    s = json.loads(r.stdout)
    assert s["requests"] == 270 and s["overlong"]["requests"] == 30
    r = CliRunner().invoke(main, ["trace", "stats", str(path), "--model", MODEL, "--overlong", "keep"])
    assert "requests       300" in r.stdout and "30 requests (10.0%) exceed" in r.stdout and ": kept" in r.stdout
    # planner simulate treats the trace as the plan was made
    r = CliRunner().invoke(main, ["simulate", "--plan", str(tmp_path / "reject.json"), "--trace", str(path), "--json"])
    assert json.loads(r.stdout)["summary"]["requests"] == 270
    r = CliRunner().invoke(main, ["simulate", "--plan", str(tmp_path / "keep.json"), "--trace", str(path), "--json"])
    assert json.loads(r.stdout)["summary"]["requests"] == 300


def test_truncate_keeps_every_request_within_the_context():
    tr = long_trace()
    t2, info = apply_overlong(tr, 2048, "truncate", "opt-13b")
    assert len(t2) == len(tr) and ((t2.prompt_tokens + t2.output_tokens) <= 2048).all()
    long = tr.prompt_tokens + tr.output_tokens > 2048
    assert (t2.output_tokens == tr.output_tokens).all()            # outputs < 2047 kept whole
    assert (t2.prompt_tokens[long] == 2048 - tr.output_tokens[long]).all()
    with pytest.raises(InputError, match="--overlong"):
        apply_overlong(tr, 2048, "drop")


# ---- margin, headroom, spares -----------------------------------------------------------
def test_margin_search_reports_a_tested_passing_factor():
    calls = []

    def check(f):                         # worst ratio 0.5 f^2: meets up to sqrt(2)
        calls.append(f)
        r = 0.5 * f * f
        return {"meets": r <= 1.0, "worst_ratio": r, "limited_by": "ttft"}
    m = search(check, 1.0, 0.5, max_sims=6, tol=0.01)
    assert m.holds_to in calls and m.holds_to <= math.sqrt(2) < m.fails_at
    assert m.fails_at in calls and (m.fails_at - m.holds_to) / m.holds_to <= 0.05
    assert m.limited_by == "ttft" and m.sims == len(calls) <= 6
    capped = search(lambda f: {"meets": True, "worst_ratio": 0.01}, 1.0, 0.01, max_sims=10)
    assert capped.fails_at is None and capped.holds_to == 4.0 and capped.as_dict()["capped"]


def test_default_plan_states_its_margin_and_it_holds_in_simulation():
    tr = trace(rate=8, n=500)
    plan = verified_recommend(tr, ["a100"], MODEL, runners_up=0)
    m = plan.verification["margin"]
    vt = verification_trace(tr, len(tr))
    for kind, key in (("rate_scale", "load"), ("step_scale", "step_slowdown")):
        h = m[key]
        assert h["holds_to"] >= 1.0
        assert replay(plan.deployment, vt, SLO(), **{kind: h["holds_to"]})["meets"]
        if h["fails_at"] is not None:
            assert not replay(plan.deployment, vt, SLO(), **{kind: h["fails_at"]})["meets"]
    assert m["text"].startswith("holds to +") and "slower kernels" in m["text"] and "x load" in m["text"]


def test_headroom_sizes_for_a_margin_checked_in_simulation():
    tr = trace(rate=8, n=500)
    base = verified_recommend(tr, ["a100"], MODEL, runners_up=0, margins=False)
    plan = verified_recommend(tr, ["a100"], MODEL, runners_up=0, headroom=0.3)
    checks = {c["check"]: c["simulated"] for c in plan.verification["checks"]}
    assert checks["at 1.30x load"]["meets"] and checks["with steps 30% slower"]["meets"]
    assert plan.cost["usd_per_hour"] >= base.cost["usd_per_hour"]
    assert plan.verification["margin"]["load"]["holds_to"] >= 1.3
    assert plan.verification["margin"]["step_slowdown"]["holds_to"] >= 1.3
    # predictions and cost per token at the trace's own load, not the sized-for one
    assert plan.inputs["trace"]["requests"] == 500
    assert plan.inputs["trace"]["span_s"] == pytest.approx(float(tr.arrival_s[-1]))


def test_spare_adds_one_instance_per_role_costed_and_survives_one_failure():
    tr = trace(rate=8, n=500)
    plan = verified_recommend(tr, ["a100"], MODEL, runners_up=0, margins=False, spare=1)
    dep = plan.deployment
    price = plan.inputs["prices"]["a100-80gb"]["usd_per_gpu_hour"]
    assert plan.cost["usd_per_hour"] == pytest.approx(dep.gpus * price)
    checks = plan.verification["checks"]
    assert [c["check"] for c in checks] == [f"without one {r} instance" for r in dep.roles()]
    assert all(c["simulated"]["meets"] for c in checks) and plan.inputs["spare_per_role"] == 1
    # the plan without one instance is what the check replayed
    from dataclasses import replace
    from planner.plan import Role
    role = next(iter(dep.roles()))
    r = dep.roles()[role]
    fewer = replace(dep, **{role: Role(r.gpu, r.instances - 1, r.tp)})
    again = replay(fewer, verification_trace(tr, len(tr)), SLO())
    assert again["ttft_s"]["p90"] == pytest.approx(checks[0]["simulated"]["ttft_s"]["p90"], rel=1e-12)
    assert all(x.instances >= 2 for x in dep.roles().values())


# ---- frontier and objective ---------------------------------------------------------------
def test_pareto():
    pts = [(1, 5, 5), (2, 4, 6), (2, 6, 6), (3, 1, 1), (3, 1, 1), (4, 2, 2)]
    assert pareto(pts) == [0, 1, 3]


def test_frontier_is_a_verified_pareto_set_and_objectives_pick_from_it():
    tr = trace(rate=8, n=500)
    cost = verified_recommend(tr, ["a100"], MODEL, runners_up=0, margins=False, frontier=True)
    front = [r for r in cost.frontier if r["on_frontier"]]
    assert len(front) >= 2 and all(r["meets"] for r in front)
    pts = [(r["usd_per_hour"], r["simulated"]["ttft_s"], r["simulated"]["tpot_s"]) for r in front]
    assert sorted(pareto(pts)) == list(range(len(pts)))              # none dominates another
    chosen = [r for r in front if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["usd_per_hour"] == pytest.approx(cost.cost["usd_per_hour"])
    assert chosen[0]["usd_per_hour"] == min(r["usd_per_hour"] for r in front)
    lat = verified_recommend(tr, ["a100"], MODEL, runners_up=0, margins=False, objective="latency")
    lf = [r for r in lat.frontier if r["on_frontier"]]
    best = min(r["simulated"]["worst_ratio"] for r in lf)
    pick = next(r for r in lf if r["chosen"])
    assert pick["simulated"]["worst_ratio"] <= best * 1.02 and lat.cost["usd_per_hour"] == pytest.approx(pick["usd_per_hour"])
    assert lat.cost["usd_per_hour"] >= cost.cost["usd_per_hour"]
    tpd = verified_recommend(tr, ["a100"], MODEL, runners_up=0, margins=False, objective="tokens-per-dollar")
    tf = [r for r in tpd.frontier if r["on_frontier"]]
    top = max(r["capacity_tokens_per_s_per_usd_hour"] for r in tf)
    pick = next(r for r in tf if r["chosen"])
    assert pick["capacity_tokens_per_s_per_usd_hour"] == top
    assert pick["capacity_tokens_per_s_per_usd_hour"] == pytest.approx(
        pick["tokens_per_s_per_usd_hour"] * pick["load_holds_to"])


def test_cli_frontier_table_objective_and_percentile_labels(tmp_path):
    path = tmp_path / "t.csv"
    write_trace(trace(rate=8, n=400), path)
    r = CliRunner().invoke(main, ["recommend", "--model", MODEL, "--trace", str(path), "--frontier", "--slo-percentile", "99",
                                  "--slo-ttft", "2s"])
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "FRONTIER  cost-latency Pareto set at p99 (simulated)" in out
    lines = [line for line in out.splitlines() if line.startswith(("runner-up", "baseline"))]
    assert lines and all("p99 TTFT" in line and "p99 TPOT" in line and "p90" not in line for line in lines)
    assert "p99 (SLO)" in out and out.splitlines()[0].count("p99 TTFT") == 1
    d = json.loads(CliRunner().invoke(main, ["recommend", "--model", MODEL, "--trace", str(path), "--frontier", "--json"]).stdout)
    assert d["frontier"] and sum(r["chosen"] for r in d["frontier"] if r["on_frontier"]) == 1
    r = CliRunner().invoke(main, ["recommend", "--model", MODEL, "--trace", str(path), "--objective", "latency", "--no-verify"])
    assert r.exit_code == 2 and "judged in simulation" in r.output


def test_headroom_flag_takes_percent(tmp_path):
    path = tmp_path / "t.csv"
    write_trace(trace(n=100), path)
    r = CliRunner().invoke(main, ["recommend", "--model", MODEL, "--trace", str(path), "--headroom", "20"])
    assert r.exit_code == 2 and "did you mean 20%?" in r.output
    r = CliRunner().invoke(main, ["recommend", "--model", MODEL, "--trace", str(path), "--headroom", "500%"])
    assert r.exit_code == 2 and "out of range" in r.output
    r = CliRunner().invoke(main, ["recommend", "--model", MODEL, "--trace", str(path), "--spare", "9"])
    assert r.exit_code == 2


# ---- large traces ---------------------------------------------------------------------------
def test_a_trace_larger_than_the_budget_is_checked_on_a_stated_sample(tmp_path):
    tr = trace(rate=20, n=8000)
    plan = verified_recommend(tr, ["a100"], MODEL, runners_up=0, margins=False, verify_budget_s=0.5)
    t = plan.verification["trace"]
    assert t["sampled"] and t["requests_total"] == 8000 and t["requests_replayed"] < 8000
    assert t["note"].startswith("a stratified sample of") and "busiest window included" in t["note"]
    # a sample cannot show the long run: the plan's saturated throughput carries the whole trace
    lr = plan.verification["long_run"]
    assert lr["meets"] and lr["capacity_per_s"] > lr["mean_rate_per_s"] == pytest.approx(8000 / float(tr.arrival_s[-1]),
                                                                                         rel=0.02)
    for r in plan.verification["rejected"]:
        assert "falls behind" in r["why"] or not r["simulated"]["meets"]
    path = tmp_path / "t.csv"
    write_trace(tr, path)
    out = CliRunner().invoke(main, ["recommend", "--model", MODEL, "--trace", str(path), "--verify-budget", "0.5s",
                                    "--runners-up", "0"]).stdout
    assert "Verified in simulation on a stratified sample of" in out.splitlines()[2]
