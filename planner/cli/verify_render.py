"""`planner recommend --verify`: the plan's and its baselines' predicted percentiles next to
the simulator's, as rows for JSON and as a table for the terminal."""
from __future__ import annotations

import math

from planner.search.verdict import describe

METRICS = (("TTFT", "ttft_s", "s", 1.0, 3), ("TPOT", "tpot_s", "ms", 1e3, 1), ("JCT", "jct_s", "s", 1.0, 3))
QS = ("p50", "p90", "p99")


def _num(v):
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def verification_rows(plan, trace, *, seed: int = 0, progress: bool = False) -> list[dict]:
    """Simulate the plan's deployment and each baseline on `trace` (`planner.sim.verify_plan`);
    one JSON-ready row each: predicted and simulated p50/p90/p99 TTFT, TPOT, JCT and SLO
    attainment, and the relative error predicted / simulated - 1."""
    from planner.sim import verify_plan
    out = []
    for r in verify_plan(plan, trace, seed=seed, progress=progress):
        pred, sim = r["predicted"], r["simulated"]
        row = {"label": r["label"], "deployment": describe(_dep_dict(r["deployment"])),
               "predicted": {m: {q: _num((pred.get(m) or {}).get(q)) for q in QS} for _, m, *_ in METRICS},
               "simulated": {m: {q: _num((sim.get(m) or {}).get(q)) for q in QS} for _, m, *_ in METRICS},
               "error": {m: {q: _num(v) for q, v in e.items()} for m, e in r["error"].items()}}
        row["predicted"]["slo_attainment"] = _num(pred.get("slo_attainment"))
        row["simulated"]["slo_attainment"] = _num(sim.get("slo_attainment"))
        a, b = row["predicted"]["slo_attainment"], row["simulated"]["slo_attainment"]
        row["error"]["slo_attainment"] = (a - b) if a is not None and b is not None else None  # points
        row["simulated"].update({"requests": sim.get("requests"), "finished": sim.get("finished"),
                                 "sim_wall_s": _num(r["stats"].get("wall_s"))})
        out.append(row)
    return out


def _dep_dict(dep) -> dict:
    from dataclasses import asdict
    return asdict(dep)


def _v(v, unit, scale, digits):
    return "inf/-" if v is None else f"{v * scale:.{digits}f}{unit}"


def render_verification(rows: list[dict]) -> str:
    lines = ["VERIFY    predicted / simulated (error = predicted / simulated - 1), same trace and seed"]
    for r in rows:
        lines.append(f"{r['label']}: {r['deployment']}")
        for name, key, unit, scale, digits in METRICS:
            cells = []
            for q in QS:
                p, s, e = r["predicted"][key][q], r["simulated"][key][q], r["error"][key][q]
                err = "" if e is None else f" ({e:+.0%})"
                cells.append(f"{q} {_v(p, unit, scale, digits)} / {_v(s, unit, scale, digits)}{err}")
            lines.append(f"          {name:<5} " + "   ".join(cells))
        a, b = r["predicted"]["slo_attainment"], r["simulated"]["slo_attainment"]
        if a is not None or b is not None:
            fmt = lambda x: "-" if x is None else f"{x:.1%}"
            lines.append(f"          SLO attainment {fmt(a)} / {fmt(b)}"
                         + (f" ({(a - b) * 100:+.1f} points)" if a is not None and b is not None else ""))
    return "\n".join(lines)


def schedule_verification(plan, trace, *, seed: int = 0) -> dict:
    """Simulate a plan with windows (`planner.search.schedule.simulate_schedule`): one replay of the
    whole trace in which the instance counts change at each window's start as planned
    (`Deployment.windows`; backlog, drains and flips carry over from window to window).
    Percentiles and SLO attainment over the whole trace and per window."""
    from planner.search.schedule import simulate_schedule
    slo = plan.inputs.get("slo") or {}
    res = simulate_schedule(plan.deployment, trace, slo_ttft_s=slo.get("ttft_s"), slo_tpot_s=slo.get("tpot_s"),
                            seed=seed)
    s = res["summary"]
    out = {m: {q: _num((s.get(m) or {}).get(q)) for q in QS} for _, m, *_ in METRICS}
    out.update({"slo_attainment": _num(s.get("slo_attainment")), "requests": s.get("requests"),
                "finished": s.get("finished"),
                "windows": [{"start_s": w["start_s"], "requests": w["requests"],
                             "slo_attainment": _num(w.get("slo_attainment")),
                             **{m: {q: _num((w.get(m) or {}).get(q)) for q in QS} for m in ("ttft_s", "tpot_s")}}
                            for w in res["windows"]]})
    return out


def render_schedule(plan, simulated: dict | None = None) -> str:
    sched = plan.cost["schedule"]
    strat = sched["strategies"]
    static = strat["static_peak"]
    chosen = strat[sched["strategy"]]
    roles = [r for r in ("prefill", "decode", "coupled") if r in chosen["counts"]]
    lines = [f"SCHEDULE  {sched['window_s']:g} s windows, {sched['strategy']}: ${chosen['usd_per_hour']:.2f}/h "
             f"averaged (static peak ${static['usd_per_hour']:.2f}/h, {chosen['saved_vs_static']:.0%} saved), "
             f"{chosen['flips']} flips, {chosen['starts']} starts",
             "          start_s  requests  " + "  ".join(f"{r:>8}" for r in roles)]
    for k, start in enumerate(chosen["start_s"]):
        lines.append(f"          {start:>7.0f}  {sched['requests'][k]:>8}  "
                     + "  ".join(f"{chosen['counts'][r][k]:>8}" for r in roles))
    lines.append("          strategies: " + ", ".join(
        f"{name} ${v['usd_per_hour']:.2f}/h" for name, v in strat.items()))
    for note in sched.get("notes") or ():
        lines.append(f"note      {note}")
    if simulated is not None:
        t, p = simulated["ttft_s"], simulated["tpot_s"]
        att = simulated["slo_attainment"]
        lines.append("          simulated in one replay of the whole trace (counts change at each window's start; "
                     "backlog, drains and flips carry over):")
        lines.append("          TTFT p50/p90/p99 "
                     + "/".join(_v(t[q], "", 1, 3) for q in QS) + " s, TPOT "
                     + "/".join(_v(p[q], "", 1e3, 1) for q in QS) + " ms"
                     + ("" if att is None else f", SLO attainment {att:.1%}"))
        scored = [w for w in simulated.get("windows") or () if w.get("slo_attainment") is not None]
        if scored:
            w = min(scored, key=lambda w: w["slo_attainment"])
            lines.append(f"          lowest window SLO attainment {w['slo_attainment']:.1%} (window at "
                         f"{w['start_s']:g} s, {w['requests']} requests)")
    return "\n".join(lines)
