"""Predicted next to simulated: run a plan's deployment and its baselines through the
simulator and line the numbers up (what `planner recommend --verify` and
`planner simulate --baselines` print)."""
from __future__ import annotations

import math

from planner.plan import Plan, deployment_from_dict
from planner.sim.run import simulate

METRICS = ("ttft_s", "tpot_s", "jct_s")


def verify_plan(plan: Plan, trace, *, seed: int = 0, progress: bool = False, baselines: bool = True,
                **sim_kw) -> list[dict]:
    """One row per deployment (the plan's, then each baseline's): label, deployment,
    `predicted` (the plan's own percentiles), `simulated` (the simulator's summary) and
    `error` (predicted / simulated - 1 for each metric's p50/p90/p99: the prediction's
    error, the simulation taken as the truth)."""
    slo = plan.inputs.get("slo") or {}
    sim_kw.setdefault("slo_ttft_s", slo.get("ttft_s"))
    sim_kw.setdefault("slo_tpot_s", slo.get("tpot_s"))
    rows = [("plan", plan.deployment, plan.predictions)]
    if baselines:
        for i, b in enumerate(plan.baselines):
            if "deployment" in b:
                label = b.get("label") or b["deployment"].get("mode", f"baseline{i}")
                rows.append((label, deployment_from_dict(b["deployment"], f"plan.baselines[{i}]"),
                             b.get("predictions", {})))
    out = []
    for label, dep, pred in rows:
        res = simulate(dep, trace, seed=seed, progress=progress, **sim_kw)
        out.append({"label": label, "deployment": dep, "predicted": pred, "simulated": res.summary,
                    "error": relative_errors(pred, res.summary), "stats": res.stats})
    return out


def relative_errors(predicted: dict, simulated: dict) -> dict:
    """predicted / simulated - 1 per metric and percentile (None where either is missing
    or not finite)."""
    out = {}
    for m in METRICS:
        p, s = predicted.get(m) or {}, simulated.get(m) or {}
        out[m] = {}
        for q in ("p50", "p90", "p99"):
            a, b = p.get(q), s.get(q)
            ok = (a is not None and b is not None and math.isfinite(a) and math.isfinite(b) and b > 0)
            out[m][q] = (a / b - 1.0) if ok else None
    return out
