"""`planner recommend --verify`: the plan's and its baselines' predicted percentiles next to
the simulator's, as rows for JSON and as a table for the terminal."""
from __future__ import annotations

import math

from .verdict import describe

METRICS = (("TTFT", "ttft_s", "s", 1.0, 3), ("TPOT", "tpot_s", "ms", 1e3, 1), ("JCT", "jct_s", "s", 1.0, 3))
QS = ("p50", "p90", "p99")


def _num(v):
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def verification_rows(plan, trace, *, seed: int = 0, progress: bool = False) -> list[dict]:
    """Simulate the plan's deployment and each baseline on `trace` (`planner.sim.verify_plan`);
    one JSON-ready row each: predicted and simulated p50/p90/p99 TTFT, TPOT, JCT and SLO
    attainment, and the relative error predicted / simulated - 1."""
    from .sim import verify_plan
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
