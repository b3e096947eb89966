"""Plans checked in simulation before they are returned.

`verified_recommend` builds the candidate pools with KV memory left to the simulator
(`planner.search.kv_rule`, "simulated"), takes the integer program's plan and then every
plan the pools make in the program's order (least $/hour, then SLO headroom), and replays
them against the trace (or a stated stratified sample of it, `planner.sim.sample`, with the
plan's saturated throughput checked against the whole trace's load) in that order
(`Walker`):
- a plan meeting the SLO in simulation (every counted request finished, each target's
  simulated percentile within it; with `spare`, also with one instance of each role
  removed; with `headroom` h, also at (1 + h)x load and at (1 + h)x slower steps) is
  accepted: the first is the recommendation, the next ones its runners-up, the first of
  each mode that mode's baseline;
- a plan missing it is rejected, with why, and its pool that missed grows by one
  instance (prefill for TTFT, decode for TPOT or JCT, the pool of a coupled plan), the
  grown plan joining the queue at its cost.
The recommendation then gets its margin (`planner.search.margin`), its KV headroom and
preempted requests, and the next size up where it preempts more than 0.5% of requests.
docs/model.md, "Verified plans", has the rules and their limits.
"""
from __future__ import annotations

import heapq
import math
import time
from dataclasses import asdict, replace

from planner import catalog
from planner.engines.config import EngineConfig
from planner.errors import InfeasibleError, InputError
from planner.plan import Policies
from planner.search.candidates import DEFAULT_SARATHI_BUDGETS, DEFAULT_TPS, SLO
from planner.search.margin import margin_job, margin_text
from planner.search.optimizer import Choice
from planner.search.recommend import Summaries, assemble
from planner.search.space import build_space, check_inputs, key_of, solve_space
from planner.search.verdict import describe
from planner.sim.run import preemption_mode
from planner.sim.parallel import Replayer, default_workers
from planner.sim.sample import verification_trace
from planner.sim.verify import PREEMPT_FLAG_SHARE, capacity_job, long_run
from planner.workload import DEFAULT_OVERLONG, DEFAULT_WINDOW_S, apply_overlong, build_workload

DEFAULT_VERIFY_BUDGET_S = 6.0
NOMINAL_SIM_REQUESTS_PER_S = 40_000   # the simulator's speed on this project's 2-core machine (docs/benchmarks.md)
EXPECTED_SIMS = 12                    # replays a verified recommendation typically takes
MIN_SAMPLE_REQUESTS = 2_000
MAX_SIMS = 40                         # replays of candidates before giving up
MAX_HEADROOM = 3.0
OBJECTIVES = ("cost", "latency", "tokens-per-dollar")


def sample_requests(budget_s: float) -> tuple[int, int]:
    """(the most requests a trace may have to be replayed whole, the size of the sample of a
    larger one) for `budget_s` seconds of replays: whole traces take about EXPECTED_SIMS
    replays of the budget's share; a trace larger than that is one whose analytical
    planning already takes seconds (it is O(N)), so its sample gets a third of the budget."""
    whole = max(MIN_SAMPLE_REQUESTS, int(budget_s * NOMINAL_SIM_REQUESTS_PER_S / EXPECTED_SIMS))
    return whole, max(MIN_SAMPLE_REQUESTS, whole // 3)


def _ckey(c: Choice) -> tuple:
    return tuple(None if o is None else key_of(o) for o in (c.prefill, c.decode, c.coupled))


def _minus_one(dep, role: str):
    r = dep.roles()[role]
    return replace(dep, **{role: replace(r, instances=r.instances - 1)})


def _ms(v) -> str:
    return "inf" if v is None or v != v or v == float("inf") else f"{v * 1e3:.1f} ms"


def _s(v) -> str:
    return "inf" if v is None or v != v or v == float("inf") else f"{v:.3f} s"


def miss_text(r: dict, slo: SLO) -> str:
    """Why a replay missed: 'p90 TTFT 1.043 s > 1 s' and alike."""
    q = r["percentile"]
    out = []
    if r["ratios"].get("ttft", 0) > 1:
        out.append(f"{q} TTFT {_s(r['ttft_s'][q])} > {slo.ttft_s:g} s")
    if r["ratios"].get("tpot", 0) > 1:
        out.append(f"{q} TPOT {_ms(r['tpot_s'][q])} > {slo.tpot_s * 1e3:g} ms")
    if r["ratios"].get("jct", 0) > 1:
        out.append(f"{q} JCT {_s(r['jct_s'][q])} > {slo.jct_s:g} s")
    if r["unfinished"]:
        out.append(f"{r['unfinished']:,} requests never finished (aborted or stuck)")
    return "; ".join(out) or "missed"


class Walker:
    """Replays candidates in the optimizer's order until the recommendation, its runners-up
    and each mode's best are found (or the limits are reached)."""

    def __init__(self, space, summaries: Summaries, replayer, *, runners_up: int, headroom: float,
                 deadline, progress=None, windows=None):
        self.space, self.summaries, self.rp = space, summaries, replayer
        # (requests, seconds) per window of the whole trace: with a sampled verification trace,
        # each plan's saturated throughput is checked against the whole trace's load (long_run)
        self.windows = windows
        self.capacity: dict = {}
        self.slo = space.slo
        self.runners_up, self.headroom = runners_up, headroom
        self.deadline, self.progress = deadline, progress
        self.heap: list = []
        self.queued: set = set()
        self.records: dict = {}
        self.pending: dict = {}
        self.sims = 0
        self.seq = 0
        self.sol = None
        self.pair_floor = None
        self.grown: set = set()
        self.allowed: dict = {}
        self.best = None
        self.runners: list = []
        self.mode_best: dict = {}
        self.rejected: list = []
        self.notes: list = []

    # ---- the queue -------------------------------------------------------------------
    def _order(self, c: Choice) -> tuple:
        return round(c.usd_per_hour, 9), c.headroom_key(self.slo)

    def pair_allowed(self, c: Choice) -> bool:
        """A (prefill, decode) pair may be replayed: a grown pair (the simulator decides), or
        one of the pools' pairs meeting the program's pair constraint."""
        k = _ckey(c)
        if k in self.grown:
            return True
        if k not in self.allowed:
            ok = (self.pair_floor is not None and self._order(c) >= self.pair_floor
                  and self.space.pair_ok(c.prefill, c.decode))
            self.allowed[k] = ok
        return self.allowed[k]

    def push(self, c: Choice | None) -> None:
        if c is None:
            return
        k = _ckey(c)
        if k in self.queued:
            return
        if self.space.max_gpus is not None and c.gpus > self.space.max_gpus:
            return
        self.queued.add(k)
        self.seq += 1
        heapq.heappush(self.heap, (*self._order(c), self.seq, c))

    def start(self) -> None:
        """The integer program's plan (its order's first: least $/hour, then headroom), with
        every plan of any count at exactly its cost joining the pools, then every plan the
        pools make in the queue, in the same order. A (prefill, decode) pair is checked
        against the program's pair constraint (TPOT with the KV transfer, JCT) when its turn
        comes (`run`), as the program checks the pairs it picks."""
        sp = self.space
        self.sol = solve_space(sp, 0)
        dis = self.sol.best_per_mode.get("disaggregated")
        # pairs before the program's best pair in its order failed its constraints (it found none
        # cheaper meeting them): they are not checked again
        self.pair_floor = None if dis is None else self._order(dis)
        self.push(self.sol.best)
        for c in self.sol.best_per_mode.values():
            self.push(c)
        modes = ("coupled", "chunked_coupled") if sp.mode == "auto" else (sp.mode,)
        for o in sp.cpl:
            if o.role in modes:
                self.push(Choice(o.usd_per_hour, coupled=o))
        if sp.mode in ("auto", "disaggregated"):
            pre = [o for o in sp.pre if o.link_gb_s >= sp.kv_rate_options]
            dec = [o for o in sp.dec if o.link_gb_s >= sp.kv_rate_options]
            for p in pre:
                for d in dec:
                    self.push(Choice(p.usd_per_hour + d.usd_per_hour, p, d))

    # ---- one candidate -----------------------------------------------------------------
    def replay(self, dep, **kw) -> dict:
        return self.submit(dep, **kw).get()

    def submit(self, dep, **kw):
        self.sims += 1
        if self.progress is not None:
            self.progress(f"simulate {self.sims}")
        return self.rp.submit(dep, **kw)

    def _handle(self, c: Choice):
        """The replay of candidate `c` as planned, submitted once (maybe ahead of its turn)."""
        k = _ckey(c)
        if k not in self.pending:
            self.pending[k] = self.submit(self.summaries.deployment(c))
        return self.pending[k]

    def prefetch(self) -> None:
        """Start the replays of the next candidates in line (one per spare worker): each
        replay is deterministic, so one run ahead of its turn is the same one in turn."""
        if self.rp.workers <= 1:
            return
        want = (self.best is None) + max(self.runners_up - len(self.runners), 0) + len(
            set(self.sol.best_per_mode) - set(self.mode_best))
        for _, _, _, c in heapq.nsmallest(min(self.rp.workers - 1, want), self.heap):
            if c.prefill is not None and not self.pair_allowed(c):
                continue
            if self.needed(c) and self.sims < MAX_SIMS:
                self._handle(c)

    def check(self, c: Choice) -> dict:
        dep = self.summaries.deployment(c)
        rec = {"deployment": describe(asdict(dep)), "mode": c.mode, "usd_per_hour": c.usd_per_hour, "gpus": dep.gpus}
        lr = self.long_run_check(dep)
        if lr is not None and not lr["meets"]:
            # the whole trace's load is over what the plan serves saturated: no replay of the sample needed
            q = f"p{self.slo.percentile}"
            rec.update(long_run=lr, meets=False, checks=[],
                       why=(f"over the whole trace it falls behind: {lr['mean_rate_per_s']:.1f} req/s arriving is "
                            f"{lr['utilisation']:.0%} of the {lr['capacity_per_s']:.1f} req/s it serves saturated "
                            f"(at most {lr['max_utilisation']:.0%}); {lr['late_share']:.0%} of requests would "
                            f"queue longer than the {q} TTFT target in a fluid queue of the whole trace"),
                       failed={"meets": False, "worst_ratio": float("inf"), "ratios": {"ttft": float("inf")},
                               "unfinished": 1, "percentile": q, "long_run_miss": True,
                               **{m: {x: float("inf") for x in ("p50", "p90", "p99")}
                                  for m in ("ttft_s", "tpot_s", "jct_s")}})
            rec["simulated"] = rec["failed"]
            self.records[_ckey(c)] = rec
            return rec
        self.prefetch()
        r = self._handle(c).get()
        rec["simulated"] = r
        if lr is not None:
            rec["long_run"] = lr
        variants = []
        if r["meets"] and self.space.spare:
            variants += [(f"without one {role} instance", _minus_one(dep, role), {}) for role in dep.roles()]
        if r["meets"] and self.headroom:
            f = 1.0 + self.headroom
            variants += [(f"at {f:.2f}x load", dep, {"rate_scale": f}),
                         (f"with steps {self.headroom:.0%} slower", dep, {"step_scale": f})]
        handles = [(what, self.submit(d, **kw)) for what, d, kw in variants]
        checks = []
        for what, h in handles:
            rr = h.get()
            checks.append({"check": what, "simulated": rr})
            if not rr["meets"]:
                break
        rec["checks"] = checks
        failed = next(([x["check"], x["simulated"]] for x in [{"check": "as planned", "simulated": r}, *checks]
                       if not x["simulated"]["meets"]), None)
        rec["meets"] = failed is None
        if failed:
            rec["why"] = miss_text(failed[1], self.slo) + ("" if failed[0] == "as planned" else f" ({failed[0]})")
            rec["failed"] = failed[1]
        self.records[_ckey(c)] = rec
        return rec

    def long_run_check(self, dep) -> dict | None:
        """With a sampled verification trace: the plan's saturated throughput
        (`planner.sim.verify.capacity_per_s`; a coupled pool's per-instance rate measured once
        per GPU, TP, mode and chunk, times its count) against the whole trace's load, window
        by window (`long_run`). None with the whole trace replayed (it shows the long run)."""
        if self.windows is None or not getattr(getattr(self.rp, "vt", None), "sampled", False):
            return None
        if dep.coupled is not None:
            r = dep.coupled
            key = (dep.mode, r.gpu, r.tp, dep.chunk_tokens)
            if key not in self.capacity:
                self.sims += 1
                one = replace(dep, coupled=replace(r, instances=1))
                self.capacity[key] = self.rp.call(capacity_job, one).get()
            cap = self.capacity[key] * r.instances
        else:
            self.sims += 1
            cap = self.rp.call(capacity_job, dep).get()
        return long_run(cap, *self.windows, self.slo)

    def bumps(self, c: Choice, r: dict) -> list[Choice]:
        """The candidate grown where the replay `r` missed: its pool (coupled), its prefill
        pool for TTFT, its decode pool for TPOT or JCT, both when requests never finished."""
        sp = self.space
        if c.coupled is not None:
            f = sp.family_of(c.coupled)
            o = sp.option(f, c.coupled.instances + 1) if f else None
            return [Choice(o.usd_per_hour, coupled=o)] if o else []
        grow_p = r["ratios"].get("ttft", 0) > 1 or r["unfinished"] > 0
        grow_d = r["ratios"].get("tpot", 0) > 1 or r["ratios"].get("jct", 0) > 1 or r["unfinished"] > 0
        if not (grow_p or grow_d):
            grow_p = grow_d = True
        p, d = c.prefill, c.decode
        if grow_p:
            f = sp.family_of(p)
            p = sp.option(f, p.instances + 1) if f else None
        if grow_d:
            f = sp.family_of(d)
            d = sp.option(f, d.instances + 1) if f else None
        if p is None or d is None or p.link_gb_s < sp.kv_rate_options or d.link_gb_s < sp.kv_rate_options:
            return []
        return [Choice(p.usd_per_hour + d.usd_per_hour, p, d)]

    # ---- the walk ----------------------------------------------------------------------
    def done(self) -> bool:
        return (self.best is not None and len(self.runners) >= self.runners_up
                and set(self.sol.best_per_mode) <= set(self.mode_best))

    def needed(self, c: Choice) -> bool:
        """Whether replaying `c` can still change the answer: before the recommendation is
        found every candidate is; after it, one filling a runner-up place or a mode's baseline."""
        return self.best is None or len(self.runners) < self.runners_up or c.mode not in self.mode_best

    def run(self) -> None:
        self.start()
        while self.heap and not self.done():
            c = heapq.heappop(self.heap)[3]
            if not self.needed(c):
                continue
            if c.prefill is not None and not self.pair_allowed(c):
                continue                 # the program's pair constraint: TPOT (transfer included) or JCT missed
            if self.best is not None and self.deadline():
                self.notes.append("the time budget ran out before every runner-up and baseline was simulated "
                                  "(--verify-budget)")
                break
            if self.sims >= MAX_SIMS and _ckey(c) not in self.pending:
                self.notes.append(f"stopped after {self.sims} simulations")
                break
            rec = self.check(c)
            if rec["meets"]:
                if self.best is None:
                    self.best = c
                elif len(self.runners) < self.runners_up:
                    self.runners.append(c)
                self.mode_best.setdefault(c.mode, c)
            else:
                self.rejected.append(c)
                for b in self.bumps(c, rec["failed"]):
                    self.grown.add(_ckey(b))
                    self.push(b)

    def record(self, c: Choice) -> dict | None:
        return self.records.get(_ckey(c))


def verified_recommend(trace, gpus=("a100",), model: str = "opt-13b", slo: SLO = SLO(), *,
                       verify: bool = True, headroom: float = 0.0, spare: int = 0, objective: str = "cost",
                       frontier: bool = False, overlong: str = DEFAULT_OVERLONG, runners_up: int = 3,
                       verify_budget_s: float = DEFAULT_VERIFY_BUDGET_S, margins: bool = True,
                       progress=None, price_kind: str = "on_demand", provider: str | None = None,
                       price_overrides: dict | None = None, tps=DEFAULT_TPS, chunks=None,
                       sarathi_budgets=DEFAULT_SARATHI_BUDGETS, mode: str = "auto", max_gpus: int | None = None,
                       window_s: float = DEFAULT_WINDOW_S, efficiency=None, kv_link_override_gb_s: float | None = None,
                       policies: Policies = Policies(), solver: str = "highs", dtype: str | None = None, seed: int = 0,
                       engine: EngineConfig = EngineConfig(), workers: int | None = None):
    """The cheapest plan (or the best for `objective`) that meets `slo` in the simulator,
    with its runners-up, baselines, margin and, if asked, the cost-latency frontier. With
    `verify=False`, the analytical plan (KV memory by the Gaussian rule), said so."""
    t0 = time.perf_counter()
    if objective not in OBJECTIVES:
        raise InputError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if not 0 <= headroom <= MAX_HEADROOM:
        raise InputError(f"--headroom must be between 0% and {MAX_HEADROOM:.0%}, got {headroom:.0%}")
    if not verify_budget_s > 0:
        raise InputError(f"--verify-budget must be > 0 s, got {verify_budget_s}")
    check_inputs(slo, mode, runners_up, max_gpus, "simulated", spare)
    dtype = catalog.model(model).formats(dtype)[0]
    kw = dict(price_kind=price_kind, provider=provider, price_overrides=price_overrides, tps=tps, chunks=chunks,
              sarathi_budgets=sarathi_budgets, mode=mode, max_gpus=max_gpus, window_s=window_s, efficiency=efficiency,
              kv_link_override_gb_s=kv_link_override_gb_s, policies=policies, solver=solver, dtype=dtype, seed=seed,
              engine=engine)
    spec = catalog.model(model)
    trace, overlong_info = apply_overlong(trace, spec.max_context, overlong, spec.name)
    if not verify:
        if headroom or objective != "cost":
            raise InputError("--headroom and --objective latency|tokens-per-dollar are judged in simulation; "
                             "drop --no-verify")
        space = build_space(trace, gpus, model, slo, kv_rule="gaussian", spare=spare, **kw)
        summaries = Summaries(space, policies=policies, efficiency=efficiency, dtype=dtype, seed=seed, engine=engine)
        sol = solve_space(space, runners_up)
        plan = assemble(space, sol, sol.best, sol.runners_up, sol.best_per_mode, t0=t0, policies=policies,
                        efficiency=efficiency, dtype=dtype, seed=seed, engine=engine, price_kind=price_kind,
                        sarathi_budgets=sarathi_budgets, overlong_info=overlong_info, summaries=summaries)
        ver = {"verified": False, "kv_rule": "gaussian",
               "note": "not verified in simulation (--no-verify): predicted percentiles only, KV memory sized by "
                       "the Gaussian rule (mean + 2.33 sd of tokens held, no preemption)"}
        if frontier:
            from planner.search.frontier import frontier_predicted
            plan = replace(plan, frontier=tuple(frontier_predicted(space, summaries)))
        return replace(plan, verification=ver)
    sized = trace.time_scaled(1.0 / (1.0 + headroom)) if headroom else trace
    space = build_space(sized, gpus, model, slo, kv_rule="simulated", spare=spare, **kw)
    if headroom:   # the plan's predictions and cost per token are at the trace's own load
        space_now = replace(space, wl=build_workload(trace, window_s=window_s, seed=seed), pair_cache={})
    else:
        space_now = space
    summaries = Summaries(space_now, policies=policies, efficiency=efficiency, dtype=dtype, seed=seed, engine=engine)
    vt = verification_trace(trace, *sample_requests(verify_budget_s))
    t_verify = time.perf_counter()

    # a sampled trace is one whose analytical planning already took seconds: its runners-up and
    # baselines get a third of the budget (as its sample does)
    secondary_s = verify_budget_s / 3 if vt.sampled else verify_budget_s

    def deadline() -> bool:
        return time.perf_counter() - t_verify > secondary_s

    with Replayer(vt, slo, seed, workers if workers is not None else default_workers()) as rp:
        wl_now = space_now.wl
        walker = Walker(space, summaries, rp, runners_up=runners_up, headroom=headroom, deadline=deadline,
                        progress=progress, windows=(wl_now.window_requests, wl_now.window_duration_s))
        walker.run()
        if walker.best is None:
            raise InfeasibleError(_none_met(walker, slo))
        best = walker.best
        extra = {}
        if objective != "cost" or frontier:
            from planner.search.frontier import verified_frontier
            extra = verified_frontier(walker, objective, deadline)
            best = extra.pop("chosen", best)
        plan = assemble(space_now, walker.sol, best, [c for c in walker.runners if c is not best], walker.mode_best,
                        t0=t0, policies=policies, efficiency=efficiency, dtype=dtype, seed=seed, engine=engine,
                        price_kind=price_kind, sarathi_budgets=sarathi_budgets, overlong_info=overlong_info,
                        summaries=summaries)
        ver = _verification(walker, plan, best, vt, engine, headroom, margins, t_verify, objective)
    if extra.get("frontier") is not None:
        plan = replace(plan, frontier=tuple(extra["frontier"]))
    plan.inputs["planning_s"] = time.perf_counter() - t0
    return replace(plan, verification=ver)


def _none_met(walker: Walker, slo: SLO) -> str:
    recs = [walker.record(c) for c in walker.rejected]
    recs = [r for r in recs if r]
    if not recs:
        return "no candidate plan could be simulated; try --no-verify for the analytical plan"
    closest = min(recs, key=lambda r: r["failed"]["worst_ratio"])
    return (f"no plan meets the SLO in simulation: {len(recs)} candidates replayed, the closest "
            f"({closest['deployment']}, ${closest['usd_per_hour']:.2f}/h) has {closest['why']}; relax the SLO, allow "
            f"more GPUs (--max-gpus) or types, or --no-verify for the analytical plan (not checked)")


def _verification(walker: Walker, plan, best: Choice, vt, engine, headroom: float, margins: bool,
                  t_verify: float, objective: str) -> dict:
    rec = walker.record(best)
    ver = {"verified": True, "kv_rule": "simulated", "trace": vt.as_dict(), "objective": objective,
           "long_run": rec.get("long_run"),
           "preemption": {"mode": preemption_mode(engine), "flag_share": PREEMPT_FLAG_SHARE},
           "plan": rec["simulated"], "checks": rec["checks"], "headroom": headroom,
           "runners_up": [], "baselines": [],
           "rejected": [{"deployment": r["deployment"], "usd_per_hour": r["usd_per_hour"], "mode": r["mode"],
                         "why": r["why"], "simulated": r["failed"]}
                        for r in (walker.record(c) for c in walker.rejected) if r]}
    by_dep = {r["deployment"]: r for r in walker.records.values()}
    for key, items in (("runners_up", plan.runners_up), ("baselines", plan.baselines)):
        for s in items:
            r = by_dep.get(describe(s["deployment"]))
            ver[key].append(None if r is None else r["simulated"])
    # the margin searches (one worker each) and, for a plan preempting more than the
    # threshold, the next size up, all at once
    sim = rec["simulated"]
    dep = plan.deployment
    jobs = {}
    if margins:
        start, ratio = 1.0 + headroom, (None if headroom else sim["worst_ratio"])
        for name, kind in (("load", "rate_scale"), ("step_slowdown", "step_scale")):
            jobs[name] = walker.rp.call(margin_job, dep, kind, start, ratio)
    nxt = walker.bumps(best, {"ratios": {"tpot": 2.0}, "unfinished": 0}) if sim["preemption_flag"] else []
    if nxt:
        r2 = walker.record(nxt[0]) or walker.check(nxt[0])
        ver["next_size_up"] = {"deployment": r2["deployment"], "usd_per_hour": r2["usd_per_hour"],
                               "simulated": r2["simulated"], "meets": r2["meets"]}
    if jobs:
        ver["margin"] = {name: h.get() for name, h in jobs.items()}
        walker.sims += sum(m["sims"] for m in ver["margin"].values())
        lr = rec.get("long_run")
        if lr and lr["mean_rate_per_s"] > 0:   # a sample's windows cannot show the long run: its throughput can
            limit = math.floor(lr["max_utilisation"] * lr["capacity_per_s"] / lr["mean_rate_per_s"] * 100) / 100
            load = ver["margin"]["load"]
            if limit < load["holds_to"]:
                load.update(holds_to=max(limit, 1.0), fails_at=None if limit >= load["holds_to"] else load["fails_at"],
                            limited_by="long-run throughput")
            load["long_run_limit"] = limit
        ver["margin"]["text"] = margin_text(ver["margin"]["step_slowdown"], ver["margin"]["load"])
    ver["sims"] = walker.sims
    ver["wall_s"] = time.perf_counter() - t_verify
    ver["notes"] = walker.notes
    return ver
