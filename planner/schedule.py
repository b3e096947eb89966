"""Plans over time: instances per role per time window, chosen by an integer program.

The trace's load changes (the Azure code trace has inter-arrival CV 13), so a plan sized
for the whole trace's peak pays for idle GPUs most of the time. Here the trace is cut into
windows, the queueing model gives each window's minimum prefill and decode instances
(`Demand`), and a small ILP (PuLP) chooses per-window counts under one of four strategies:

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
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import pulp

from .errors import InfeasibleError, InputError
from .plan import Window

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
        p = self.counts.get("prefill", self.counts.get("coupled", zeros))
        d = self.counts.get("decode", zeros)
        return tuple(Window(float(s), int(a), int(b)) for s, a, b in zip(self.start_s, p, d))

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
