"""A plan's margin, in simulation: the largest slowdown of every engine step and the
largest load increase (arrival rate x) at which it still meets the SLO.

Each is a one-dimensional search over a factor f >= 1 of `check(f)` (a replay returning
`meets` and `worst_ratio`, the largest simulated percentile / target). The SLO ratio grows
with f, faster near saturation, so the search extrapolates conservatively from the last
passing point while it has no failing one (f = lo + 0.5 (lo / r_lo - lo): half the step
at which the ratio would reach 1 if it grew in proportion to f, and at most +50%), then
regula falsi between the bracket's ends (the geometric midpoint where the failing end
never finished), each new point kept in the bracket's middle 60%. It stops when
the bracket is narrower than `tol` (relative) or after `max_sims` replays. The margin
reported is the largest factor *tested* passing, never an interpolation: "holds to +18%
slower kernels" was simulated at +18%.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

MAX_FACTOR = 4.0
TOL = 0.05
MAX_SIMS = 3
EXTRAPOLATE = 0.5
FIRST_STEP_MAX = 0.5        # the first probe goes at most 50% past the last passing point


@dataclass
class Margin:
    holds_to: float                 # the largest factor tested that meets the SLO (>= 1)
    fails_at: float | None          # the smallest tested that misses it (None: none did up to the cap)
    limited_by: str | None          # the target that failed first ('ttft', 'tpot', 'jct')
    sims: int
    points: list                    # (factor, worst ratio, meets) tested

    def as_dict(self) -> dict:
        return {"holds_to": self.holds_to, "fails_at": self.fails_at, "limited_by": self.limited_by,
                "capped": self.fails_at is None and self.holds_to >= MAX_FACTOR, "sims": self.sims,
                "points": [{"factor": f, "worst_ratio": r, "meets": m} for f, r, m in self.points]}


def search(check, start: float = 1.0, start_ratio: float | None = None, *, max_sims: int = MAX_SIMS,
           tol: float = TOL, cap: float = MAX_FACTOR, deadline=None) -> Margin:
    """The largest f in [start, cap] with check(f)["meets"], given that `start` meets it with
    worst ratio `start_ratio` (checked first when None). `deadline()`: True when the time
    budget is spent (the search stops with what it has)."""
    points = []
    sims = 0
    if start_ratio is None:
        r = check(start)
        sims += 1
        points.append((start, r["worst_ratio"], r["meets"]))
        if not r["meets"]:
            return Margin(start, start, r.get("limited_by"), sims, points)
        start_ratio = r["worst_ratio"]
    lo, r_lo = start, float(start_ratio)
    hi, r_hi, why = None, None, None
    while sims < max_sims and lo < cap and (deadline is None or not deadline()):
        if hi is not None and (hi - lo) / lo <= tol:
            break
        if hi is None:
            f = lo + EXTRAPOLATE * (lo / max(r_lo, 1e-6) - lo)
            f = min(cap, lo * (1 + FIRST_STEP_MAX), max(f, lo * (1 + 2 * tol)))
        else:
            if math.isfinite(r_hi) and r_hi > r_lo:
                f = lo + (1.0 - r_lo) / (r_hi - r_lo) * (hi - lo)
            else:
                f = math.sqrt(lo * hi)
            f = min(max(f, lo + 0.2 * (hi - lo)), hi - 0.2 * (hi - lo))
        f = round(f, 3)
        if f <= lo:
            break
        r = check(f)
        sims += 1
        ratio = r["worst_ratio"] if math.isfinite(r["worst_ratio"]) else float("inf")
        points.append((f, ratio, r["meets"]))
        if r["meets"]:
            lo, r_lo = f, ratio
        else:
            hi, r_hi, why = f, ratio, r.get("limited_by")
    return Margin(lo, hi, why, sims, points)


def margin_text(step: dict | None, load: dict | None) -> str:
    """'holds to +18% slower kernels and 1.30x load (simulated)' or what is known."""
    parts = []
    if step:
        parts.append(f"{'at least ' if step['fails_at'] is None else ''}+{(step['holds_to'] - 1) * 100:.0f}% "
                     f"slower kernels")
    if load:
        parts.append(f"{'at least ' if load['fails_at'] is None else ''}{load['holds_to']:.2f}x load")
    if not parts:
        return ""
    text = "holds to " + " and ".join(parts)
    fails = [f"+{(step['fails_at'] - 1) * 100:.0f}% slower" for _ in [0] if step and step["fails_at"]]
    fails += [f"{load['fails_at']:.2f}x load" for _ in [0] if load and load["fails_at"]]
    return text + (f" (misses at {', '.join(fails)})" if fails else "")


def margin_job(vt, slo, seed, dep, kind: str, start: float, start_ratio):
    """One margin search run where the trace is (a `planner.sim.parallel.Replayer` worker):
    `kind` is 'step_scale' or 'rate_scale'."""
    from planner.sim.verify import replay

    def check(f):
        return replay(dep, vt, slo, seed=seed, **{kind: f})
    return search(check, start, start_ratio).as_dict()
