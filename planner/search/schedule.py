"""Plans over time: instances per role per time window, chosen by an integer program.

The trace's load changes (the Azure code trace has inter-arrival CV 13), so a plan sized
for the whole trace's peak pays for idle GPUs most of the time. Here the trace is cut into
windows, the queueing model gives each window's minimum prefill and decode instances
(`Demand`; planner.analytic.window_need says what each role's count controls), and a small ILP (PuLP) chooses per-window counts under one of four strategies:

- `static_peak`    one plan for the whole trace, each role sized for its own peak window;
- `fixed_fleet`    a fixed number of instances whose roles flip between windows (TetriInfer's
                   instance flip, planned ahead from the trace instead of reacted to);
- `autoscale`      instances started and stopped per window (on-demand), flips allowed;
- `reserved_burst` a reserved base billed all the time plus on-demand instances per window.

Instances of the same GPU type and TP form a *pool*; only instances of one pool can flip
between roles. Role changes are planned ahead: an instance leaving a role stops taking new
work `lead_s` before the window boundary (drain, plus the flip latency for a flip), so
the window it leaves must meet its demand without that share of the instance:
`count[r, w-1] - lead_s / duration[w-1] * leaving[r, w] >= need[r, w-1]`. A started
instance boots during the previous window and is billed for `startup_s` before serving.

`simulate_schedule` checks a schedule in the simulator, which runs the windows natively
(planner.sim.scale): one replay of the whole trace, instances started ahead as planned,
drains and flips taking the time they take, backlog carried from window to window, and
the bill following the instances actually running.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace

import pulp

from planner.errors import InfeasibleError, InputError
from planner.plan import Plan, Window
from planner.sim.scale import DEFAULT_START_LATENCY_S
from planner.analytic.window_need import disaggregated_need, role_need  # noqa: F401 (role_need: public here too)

STRATEGIES = ("static_peak", "fixed_fleet", "autoscale", "reserved_burst")
ROLE_ORDER = ("prefill", "decode", "coupled")


@dataclass(frozen=True, eq=False)
class Demand:
    """Instances each role needs in each window (from the queueing model). Fractional:
    `2.4` means 3 instances meet the SLO and 2 miss it, 2.4 saying how close 2 came; the
    fraction is the slack a role change may use while an instance drains or flips."""
    start_s: tuple[float, ...]
    duration_s: tuple[float, ...]
    need: dict[str, tuple[float, ...]]        # role -> per-window instances needed (may be fractional)
    requests: tuple[int, ...] = ()            # requests arriving per window (for display)
    notes: tuple[str, ...] = ()               # targets a window cannot meet by instance counts, and why

    def __post_init__(self):
        n = len(self.start_s)
        if n == 0:
            raise InputError("a schedule needs at least one window")
        if len(self.duration_s) != n or any(d <= 0 for d in self.duration_s):
            raise InputError("window durations must be > 0, one per window")
        for role, v in self.need.items():
            if role not in ROLE_ORDER:
                raise InputError(f"unknown role {role!r} in demand")
            if len(v) != n or any(not x >= 0 for x in v):
                raise InputError(f"demand for {role}: expected {n} non-negative numbers")

    @property
    def windows(self) -> int:
        return len(self.start_s)

    @property
    def span_s(self) -> float:
        return float(sum(self.duration_s))


@dataclass(frozen=True)
class Pool:
    """Instances of one GPU type and TP: roles in the same pool can flip into each other."""
    roles: tuple[str, ...]
    usd_per_instance_hour: float               # on-demand
    reserved_usd_per_instance_hour: float | None = None


@dataclass(frozen=True)
class Costs:
    pools: tuple[Pool, ...]
    drain_s: dict[str, float] = field(default_factory=dict)   # role -> time to drain before leaving it
    flip_latency_s: float = 1.0
    startup_s: float = 120.0                   # cold start of a new instance (boot, load weights), billed
    min_instances: int = 1                     # per role per window (keeps the role reachable)

    def lead_s(self, role: str, flip: bool) -> float:
        return self.drain_s.get(role, 0.0) + (self.flip_latency_s if flip else 0.0)


@dataclass(frozen=True, eq=False)
class Schedule:
    """Per-window instances of one strategy and what it costs."""
    strategy: str
    start_s: tuple[float, ...]
    duration_s: tuple[float, ...]
    counts: dict[str, tuple[int, ...]]        # role -> instances per window
    flips: tuple[int, ...]                    # instances changing role at the start of each window
    starts: tuple[int, ...]                   # instances started at the start of each window
    reserved: tuple[int, ...]                 # reserved instances per pool (reserved_burst)
    usd_total: float                          # the bill over the trace's span
    usd_flip_lost: float                      # instance time lost to flips (already in the bill)

    @property
    def span_s(self) -> float:
        return float(sum(self.duration_s))

    @property
    def usd_per_hour(self) -> float:
        return self.usd_total / (self.span_s / 3600.0)

    @property
    def peak_instances(self) -> dict[str, int]:
        return {r: int(max(v)) for r, v in self.counts.items()}

    def instance_hours(self) -> float:
        return sum(c * d for v in self.counts.values() for c, d in zip(v, self.duration_s)) / 3600.0

    def windows(self) -> tuple[Window, ...]:
        zeros = (0,) * len(self.start_s)
        p, d, c = (self.counts.get(r, zeros) for r in ("prefill", "decode", "coupled"))
        return tuple(Window(float(s), int(a), int(b), int(x)) for s, a, b, x in zip(self.start_s, p, d, c))

    def to_dict(self) -> dict:
        return {"strategy": self.strategy, "windows": len(self.start_s),
                "usd_total": self.usd_total, "usd_per_hour": self.usd_per_hour,
                "instance_hours": self.instance_hours(), "flips": int(sum(self.flips)),
                "starts": int(sum(self.starts)), "reserved": list(self.reserved),
                "peak_instances": self.peak_instances, "usd_flip_lost": self.usd_flip_lost,
                "start_s": list(self.start_s),
                "counts": {r: list(v) for r, v in self.counts.items()}}


def _check(demand: Demand, costs: Costs) -> None:
    roles = [r for p in costs.pools for r in p.roles]
    if sorted(roles) != sorted(demand.need):
        raise InputError(f"pools cover roles {sorted(roles)} but demand has {sorted(demand.need)}")
    for p in costs.pools:
        if not p.usd_per_instance_hour > 0:
            raise InputError("instance prices must be > 0")


def solve_schedule(demand: Demand, costs: Costs, strategy: str) -> Schedule:
    """Cheapest per-window instance counts under `strategy` (see the module docstring)."""
    if strategy not in STRATEGIES:
        raise InputError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    _check(demand, costs)
    need = {r: [max(float(x), costs.min_instances) for x in v] for r, v in demand.need.items()}
    if strategy == "static_peak":
        return _static(demand, costs, need)
    with warnings.catch_warnings():   # PuLP 3.x announces its 4.0 API on every variable
        warnings.simplefilter("ignore", DeprecationWarning)
        return _ilp(demand, costs, need, strategy)


def _static(demand: Demand, costs: Costs, need: dict[str, list[int]]) -> Schedule:
    n = demand.windows
    counts = {r: (int(math.ceil(max(v) - 1e-9)),) * n for r, v in need.items()}
    hours = demand.span_s / 3600.0
    usd = sum(counts[r][0] * p.usd_per_instance_hour * hours for p in costs.pools for r in p.roles)
    return Schedule("static_peak", demand.start_s, demand.duration_s, counts, (0,) * n, (0,) * n,
                    (), usd, 0.0)


def _solver():
    # CBC first: these programs are tiny, and HiGHS prints a banner on stdout (breaks --json)
    for make in (lambda: pulp.PULP_CBC_CMD(msg=False), lambda: pulp.HiGHS(msg=False)):
        try:
            s = make()
            if s.available():
                return s
        except Exception:  # noqa: BLE001 - a solver that cannot start is simply skipped
            continue
    raise RuntimeError("no MILP solver available to PuLP (HiGHS or CBC)")


def _ilp(demand: Demand, costs: Costs, need: dict[str, list[int]], strategy: str) -> Schedule:
    W, dur = demand.windows, demand.duration_s
    span_h = demand.span_s / 3600.0
    prob = pulp.LpProblem(f"schedule_{strategy}", pulp.LpMinimize)
    I = lambda name: pulp.LpVariable(name, lowBound=0, cat="Integer")  # noqa: E731
    c = {(r, w): I(f"c_{r}_{w}") for r in need for w in range(W)}
    bill, flip_penalty, flip_lost, flip_terms, start_terms, reserved = [], [], [], [], [], []
    for gi, pool in enumerate(costs.pools):
        od = pool.usd_per_instance_hour
        total = {w: pulp.lpSum(c[r, w] for r in pool.roles) for w in range(W)}
        moves = {}                                            # (from, to, w) -> flips
        if len(pool.roles) == 2:
            a, b = pool.roles
            for w in range(1, W):
                moves[a, b, w], moves[b, a, w] = I(f"f_{a}_{b}_{w}"), I(f"f_{b}_{a}_{w}")
        started = {w: [] for w in range(1, W)}
        for r in pool.roles:
            for w in range(W):
                prob += c[r, w] >= need[r][w]
            for w in range(1, W):
                inflow = pulp.lpSum(v for (f, t, ww), v in moves.items() if t == r and ww == w)
                outflow = pulp.lpSum(v for (f, t, ww), v in moves.items() if f == r and ww == w)
                rs, rx = I(f"rs_{r}_{w}"), I(f"rx_{r}_{w}")   # starts into / stops out of r
                prob += c[r, w] == c[r, w - 1] + inflow - outflow + rs - rx
                if strategy == "fixed_fleet":
                    prob += rs == 0
                    prob += rx == 0
                # leaving instances are lost to the old role for their lead time in w-1
                lost = (costs.lead_s(r, True) * outflow + costs.lead_s(r, False) * rx) / dur[w - 1]
                prob += c[r, w - 1] - lost >= need[r][w - 1]
                started[w].append(rs)
            flip_lost.extend(costs.lead_s(r, True) / 3600.0 * od * v
                             for (f, t, w), v in moves.items() if f == r)
        flip_terms.extend(moves.values())
        flip_penalty.extend(costs.flip_latency_s / 3600.0 * od * v for v in moves.values())
        start_count = {w: pulp.lpSum(v) for w, v in started.items()}
        start_terms.append(start_count)
        # a started instance is billed for its boot time before it serves
        bill.extend(od * costs.startup_s / 3600.0 * s for s in start_count.values())
        if strategy == "fixed_fleet":
            n = I(f"fleet_{gi}")
            for w in range(W):
                prob += total[w] == n
            bill.append(od * span_h * n)
        elif strategy == "autoscale":
            bill.extend(od * dur[w] / 3600.0 * total[w] for w in range(W))
        else:  # reserved_burst
            res = pool.reserved_usd_per_instance_hour
            if res is None:
                raise InputError("reserved_burst needs a reserved price for every GPU type in the plan "
                                 "(the catalog has none for this one; give it with --prices FILE)")
            base = I(f"reserved_{gi}")
            for w in range(W):
                burst = I(f"burst_{gi}_{w}")
                prob += total[w] == base + burst
                bill.append(od * dur[w] / 3600.0 * burst)
            bill.append(res * span_h * base)
            reserved.append(base)
    prob += pulp.lpSum(bill) + pulp.lpSum(flip_penalty)
    status = prob.solve(_solver())
    if pulp.LpStatus[status] != "Optimal":
        raise InfeasibleError(f"schedule ILP ({strategy}) is {pulp.LpStatus[status].lower()}: "
                              "the lead times leave too little capacity; use longer windows")
    val = lambda v: int(round(pulp.value(v) or 0))  # noqa: E731
    counts = {r: tuple(val(c[r, w]) for w in range(W)) for r in need}
    flips = [0] * W
    for v in flip_terms:
        flips[int(v.name.rsplit("_", 1)[1])] += val(v)
    starts = [0] * W
    for start_count in start_terms:
        for w, e in start_count.items():
            starts[w] += int(round(pulp.value(e) or 0))
    usd = float(pulp.value(pulp.lpSum(bill)) or 0.0)
    lost = float(pulp.value(pulp.lpSum(flip_lost)) or 0.0)
    return Schedule(strategy, demand.start_s, demand.duration_s, counts, tuple(flips),
                    tuple(starts), tuple(val(b) for b in reserved), usd, lost)


# ---- per-window demand from the queueing model (planner.analytic.window_need) ---------------------------
# SLO: {metric: (percentile, limit_s)}, metric in ttft_s / tpot_s / jct_s, percentile "p50" etc.


def window_demand(trace, deployment, window_s: float, slo: dict, predict_fn=None,
                  max_instances: int = 512, usd_per_instance_hour: dict | None = None) -> Demand:
    """Instances each role needs in each `window_s` window of `trace`, for `deployment`'s
    GPU types, TP, chunk and policies (only the counts change). Each window is predicted
    on its own requests (the queue starts empty at each window's start); a disaggregated
    window's prefill and decode counts each cover what that count controls
    (planner.analytic.window_need: TPOT includes the KV transfer, which decode instances cannot
    shorten; `usd_per_instance_hour` per role prices the prefill/decode trade), and
    `notes` name the windows whose targets no count meets."""
    if predict_fn is None:
        from planner.analytic.predict import predict as predict_fn
    if not window_s > 0:
        raise InputError(f"--windows must be > 0 s, got {window_s}")
    span = float(trace.arrival_s[-1] - trace.arrival_s[0]) if len(trace) else 0.0
    n_win = max(1, int(math.ceil(span / window_s)))
    t0 = float(trace.arrival_s[0]) if len(trace) else 0.0
    roles = [r for r in ROLE_ORDER if getattr(deployment, r) is not None]
    need = {r: [] for r in roles}
    starts, durs, reqs, notes = [], [], [], []
    for k in range(n_win):
        lo, hi = t0 + k * window_s, t0 + (k + 1) * window_s
        sub = trace.window(lo, hi if k < n_win - 1 else math.inf)
        starts.append(k * window_s)
        durs.append(window_s if k < n_win - 1 else max(span - k * window_s, 0.1 * window_s))
        reqs.append(len(sub))
        if len(sub) == 0:
            for r in roles:
                need[r].append(0.0)
            continue
        if deployment.mode == "disaggregated":
            x = disaggregated_need(predict_fn, deployment, sub, slo, max_instances, usd_per_instance_hour)
            notes.extend(f"window {k} ({k * window_s:g} s): {n}" for n in x.notes)
            for r in roles:
                need[r].append(x.need[r])
        else:
            need["coupled"].append(role_need(predict_fn, deployment, sub, "coupled", slo,
                                             deployment.coupled.instances, max_instances))
    return Demand(tuple(starts), tuple(durs), {r: tuple(v) for r, v in need.items()}, tuple(reqs),
                  tuple(notes))


# ---- from a plan: pools, prices, lead times; every strategy; the plan with its windows --------
DEFAULT_STARTUP_S = DEFAULT_START_LATENCY_S   # boot a VM and load the weights (minutes on clouds)


def pools_for(deployment, price_kind: str = "on_demand", provider: str | None = None,
              overrides: dict | None = None) -> tuple[Pool, ...]:
    """Roles on the same GPU type and TP share a pool (they can flip). Prices per instance:
    GPU-hour price x TP, on-demand (or `price_kind`) and reserved where the catalog has one."""
    from planner.catalog import price_usd_per_gpu_hour
    groups: dict[tuple[str, int], list[str]] = {}
    for role, r in deployment.roles().items():
        groups.setdefault((r.gpu, r.tp), []).append(role)
    pools = []
    for (gpu, tp), roles in groups.items():
        od, _ = price_usd_per_gpu_hour(gpu, price_kind, provider, overrides)
        try:
            res, _ = price_usd_per_gpu_hour(gpu, "reserved", provider, overrides)
        except InputError:
            res = None
        pools.append(Pool(tuple(sorted(roles, key=ROLE_ORDER.index)), od * tp,
                          None if res is None else res * tp))
    return tuple(pools)


def lead_times(trace, predictions: dict) -> dict[str, float]:
    """How long an instance leaving a role stays busy with work it already holds: a decode
    instance, the mean residual decode time of the requests it runs (E[S^2] / 2E[S], S the
    decode steps, times the predicted median decode step - `tpot_decode_s`, without the KV
    transfer that the record TPOT spreads over the steps; `tpot_s` for coupled plans); a
    prefill instance, its predicted median TTFT."""
    import numpy as np
    steps = np.maximum(np.asarray(trace.output_tokens, dtype=float) - 1, 0)
    pred = predictions or {}
    tpot = float((pred.get("tpot_decode_s") or pred.get("tpot_s") or {}).get("p50") or 0.0)
    ttft = float(((predictions or {}).get("ttft_s") or {}).get("p50") or 0.0)
    resid = float((steps ** 2).mean() / (2 * steps.mean())) if steps.mean() > 0 else 0.0
    out = {"decode": resid * tpot if math.isfinite(tpot) else 0.0,
           "prefill": ttft if math.isfinite(ttft) else 0.0}
    out["coupled"] = max(out.values())
    return out


def compare_strategies(demand: Demand, costs: Costs,
                       strategies: tuple[str, ...] = STRATEGIES) -> dict[str, Schedule]:
    """Every strategy that can be priced (reserved_burst needs reserved prices)."""
    out = {}
    for s in strategies:
        if s == "reserved_burst" and any(p.reserved_usd_per_instance_hour is None for p in costs.pools):
            continue
        out[s] = solve_schedule(demand, costs, s)
    return out


def slo_of(plan) -> dict:
    """The plan's SLO as {metric: (percentile, limit_s)}."""
    raw = (plan.inputs or {}).get("slo") or {}
    out = {}
    if "percentile" in raw:   # planner.search.candidates.SLO.as_dict(): one percentile for all metrics
        pct = f"p{int(raw['percentile'])}"
        out = {m: (pct, float(raw[m])) for m in ("ttft_s", "tpot_s", "jct_s") if raw.get(m) is not None}
        raw = {}
    for key, value in raw.items():
        # accepted shapes: {"ttft_p90_s": 2.0}, {"ttft_s": {"p90": 2.0}}, {"ttft_s": ["p90", 2.0]}
        if isinstance(value, dict):
            for pct, lim in value.items():
                out[key] = (pct, float(lim))
        elif isinstance(value, (list, tuple)) and len(value) == 2:
            out[key] = (str(value[0]), float(value[1]))
        elif value is not None and key.count("_") == 2 and key.endswith("_s"):
            metric, pct, _ = key.split("_")
            out[f"{metric}_s"] = (pct, float(value))
    if not out:
        raise InputError("the plan states no SLO (inputs.slo); re-run `planner recommend` to make it")
    return out


def plan_over_time(trace, plan, window_s: float, *, strategy: str = "best", slo: dict | None = None,
                   price_kind: str = "on_demand", provider: str | None = None,
                   overrides: dict | None = None, startup_s: float = DEFAULT_STARTUP_S,
                   predict_fn=None) -> Plan:
    """`plan` with a schedule: per-window instances (`deployment.windows`) of `strategy`
    ("best": the cheapest of fixed_fleet, autoscale and reserved_burst), the role counts set
    to each role's peak (the instances the simulator must be able to address), and the cost
    of every strategy in `cost["schedule"]`."""
    dep = plan.deployment
    slo = slo or slo_of(plan)
    pools = pools_for(dep, price_kind, provider, overrides)
    demand = window_demand(trace, dep, window_s, slo, predict_fn,
                           usd_per_instance_hour={r: p.usd_per_instance_hour for p in pools for r in p.roles})
    costs = Costs(pools, lead_times(trace, plan.predictions),
                  flip_latency_s=dep.policies.flip_latency_s, startup_s=startup_s)
    schedules = compare_strategies(demand, costs)
    if strategy == "best":
        # the cheapest; on a tie (within a cent in a million) the simpler strategy
        dynamic = [s for s in schedules if s != "static_peak"]
        least = min(schedules[s].usd_total for s in dynamic)
        strategy = next(s for s in dynamic if schedules[s].usd_total <= least * (1 + 1e-6) + 1e-9)
    if strategy not in schedules:
        raise InputError(f"strategy {strategy!r} cannot be planned here (known: {', '.join(schedules)}; "
                         "reserved_burst needs reserved prices)")
    chosen = schedules[strategy]
    peak = chosen.peak_instances
    roles = {r: replace(getattr(dep, r), instances=n) for r, n in peak.items()}
    new_dep = replace(dep, windows=chosen.windows(), **roles)
    static = schedules["static_peak"]
    cost = dict(plan.cost)
    cost["schedule"] = {
        "window_s": float(window_s), "strategy": strategy, "price_kind": price_kind,
        "startup_s": startup_s, "flip_latency_s": costs.flip_latency_s, "lead_s": costs.drain_s,
        "need": {r: list(v) for r, v in demand.need.items()}, "requests": list(demand.requests),
        "notes": list(demand.notes),
        "strategies": {s: dict(v.to_dict(), saved_vs_static=1 - v.usd_total / static.usd_total)
                       for s, v in schedules.items()},
    }
    base = plan.cost.get("usd_per_hour")
    cost["usd_per_hour_without_schedule"] = base
    cost["usd_per_hour"] = chosen.usd_per_hour
    if base and plan.cost.get("usd_per_million_tokens"):
        cost["usd_per_million_tokens"] = plan.cost["usd_per_million_tokens"] * chosen.usd_per_hour / base
    return replace(plan, deployment=new_dep, cost=cost)


# ---- checking a schedule in the simulator ------------------------------------------------------
SIM_WARMUP_S = 60.0   # unused since the simulator runs windows natively; kept for callers


def window_deployments(deployment):
    """(start_s, deployment with that window's counts and no windows) per window."""
    out = []
    for w in deployment.windows:
        counts = {"prefill": w.prefill_instances, "decode": w.decode_instances, "coupled": w.coupled_instances}
        roles = {r: replace(role, instances=counts[r]) for r, role in deployment.roles().items()}
        out.append((float(w.start_s), replace(deployment, windows=(), **roles)))
    return out


def simulate_schedule(deployment, trace, *, slo_ttft_s: float | None = None, slo_tpot_s: float | None = None,
                      warmup_s: float = SIM_WARMUP_S, seed: int = 0, sim_fn=None, **sim_kw) -> dict:
    """Replay the whole `trace` against a deployment with windows in one simulation: at
    each window's start the instance counts change as planned (planner.sim.scale):
    instances leaving a role drain their work and then flip or stop, new instances are
    started `start_latency_s` (default DEFAULT_STARTUP_S, what the ILP bills) ahead of
    their window (`start_ahead`, as the ILP plans them), and backlog, drains and flips
    carry over from window to window. Extra keyword arguments go to the simulator
    (override `start_latency_s` / `start_ahead` there). `warmup_s` is ignored (the
    window-by-window replay it served is gone). Returns {"records": all requests,
    "summary": the simulator's summary (its cost follows the schedule), "windows":
    per-window summaries (start_s, requests, ttft_s, tpot_s, jct_s, slo_attainment,
    instances, billed and busy instance-seconds, cost_usd)}."""
    if sim_fn is None:
        from planner.sim import simulate as sim_fn
    if not deployment.windows:
        raise InputError("the deployment has no windows; simulate it directly")
    sim_kw.setdefault("start_latency_s", DEFAULT_STARTUP_S)
    sim_kw.setdefault("start_ahead", True)
    res = sim_fn(deployment, trace, seed=seed, slo_ttft_s=slo_ttft_s, slo_tpot_s=slo_tpot_s, **sim_kw)
    windows = [w for w in res.summary.get("windows", []) if w.get("requests")]
    return {"records": res.records, "summary": res.summary, "windows": windows, "scale": res.scale}
