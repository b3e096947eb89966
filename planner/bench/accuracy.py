"""Accuracy of predictions against measured benchmark rows: absolute and signed % errors
per group (system, engine, model, mode), the way docs/validation-silicon.md reports them."""
from __future__ import annotations

import numpy as np
import pandas as pd

PAIRS = (("ttft", "silicon_ttft_ms", "pred_ttft_ms"), ("tpot", "silicon_tpot_ms", "pred_tpot_ms"))
GROUPS = ("system", "backend", "model_path", "mode")


def errors(df: pd.DataFrame) -> pd.DataFrame:
    """Signed relative errors (pred / measured - 1) of the rows predicted `ok`."""
    ok = df[(df["status"] == "ok")].copy()
    for name, meas, pred in PAIRS:
        if meas in ok:
            ok[f"err_{name}"] = ok[pred] / ok[meas] - 1.0
    return ok


def summarize(errs: pd.Series) -> dict:
    e = errs.dropna().to_numpy(float)
    if not len(e):
        return {"rows": 0}
    a = np.abs(e)
    return {"rows": int(len(e)), "median_abs_pct": float(np.median(a) * 100), "p90_abs_pct": float(np.percentile(a, 90) * 100),
            "median_signed_pct": float(np.median(e) * 100)}


def table(df: pd.DataFrame, by=GROUPS) -> list[dict]:
    """One row per group value of each grouping column, and one for all rows."""
    errs = errors(df)
    if not any(f"err_{n}" in errs for n, _, _ in PAIRS):
        return []
    out = [{"group": "all", "value": "all", **_both(errs)}]
    for col in by:
        if col not in errs:
            continue
        for value, g in errs.groupby(col, dropna=False):
            out.append({"group": col, "value": str(value), **_both(g)})
    return out


def _both(g: pd.DataFrame) -> dict:
    row = {}
    for name, _, _ in PAIRS:
        if f"err_{name}" in g:
            s = summarize(g[f"err_{name}"])
            row["rows"] = s["rows"]
            for k, v in s.items():
                if k != "rows":
                    row[f"{name}_{k}"] = v
    return row


def render(rows: list[dict]) -> str:
    if not rows:
        return "no measured columns: nothing to compare"
    head = f"{'group':<10} {'value':<40} {'rows':>5}  {'TTFT med|e|':>11} {'p90':>6} {'signed':>7}  {'TPOT med|e|':>11} {'p90':>6} {'signed':>7}"
    lines = [head]
    for r in rows:
        lines.append(f"{r['group']:<10} {r['value'][:40]:<40} {r.get('rows', 0):>5}  "
                     f"{r.get('ttft_median_abs_pct', float('nan')):>10.1f}% {r.get('ttft_p90_abs_pct', float('nan')):>5.1f}% "
                     f"{r.get('ttft_median_signed_pct', float('nan')):>+6.1f}%  "
                     f"{r.get('tpot_median_abs_pct', float('nan')):>10.1f}% {r.get('tpot_p90_abs_pct', float('nan')):>5.1f}% "
                     f"{r.get('tpot_median_signed_pct', float('nan')):>+6.1f}%")
    return "\n".join(lines)
