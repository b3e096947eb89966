"""With several GPU types: the best plan on each type alone, and why it lost to the chosen plan."""
from __future__ import annotations

from planner.errors import InfeasibleError
from planner.search.verdict import describe


def per_gpu(trace, gpus: list[str], chosen, plan_for, **kw) -> list[dict]:
    """One row per GPU type: its best plan's $/hour and deployment, or why it has none.
    `plan_for` is planner.search.recommend.recommend; `kw` its arguments besides gpus."""
    from dataclasses import asdict
    best = chosen.cost["usd_per_hour"]
    used = {r.gpu for r in (chosen.deployment.prefill, chosen.deployment.decode, chosen.deployment.coupled) if r}
    rows = []
    for g in gpus:
        try:
            p = plan_for(trace, gpus=[g], **{**kw, "runners_up": 0})
        except InfeasibleError as e:
            rows.append({"gpu": g, "usd_per_hour": None, "deployment": None,
                         "why": f"no plan meets the SLO: {str(e).split(';')[0][:160]}"})
            continue
        name = next(iter({r.gpu for r in (p.deployment.prefill, p.deployment.decode, p.deployment.coupled) if r}))
        cost = p.cost["usd_per_hour"]
        if used == {name} and abs(cost - best) < 1e-6:
            why = "the chosen plan"
        elif cost <= best + 1e-6:
            why = f"as cheap (${cost:.2f}/h); the chosen plan has more SLO headroom"
        else:
            why = f"${cost - best:.2f}/h more than the chosen plan ({(cost / best - 1):.0%})"
        rows.append({"gpu": name, "usd_per_hour": cost, "deployment": describe(asdict(p.deployment)), "why": why})
    return rows


def render_per_gpu(rows: list[dict]) -> list[str]:
    lines = ["best plan on each GPU type alone:"]
    for r in rows:
        cost = f"${r['usd_per_hour']:.2f}/h" if r["usd_per_hour"] is not None else "-"
        lines.append(f"  {r['gpu']:<12} {cost:>10}  {r['why']}" + (f"  [{r['deployment']}]" if r["deployment"] else ""))
    return lines
