"""What a simulation returns: the request records, a summary, the flip log, run statistics.

Summary = `planner.records.summarize` (p50/p90/p99 TTFT, TPOT, JCT, SLO attainment,
throughput) plus means, busy instance-seconds and cost:
- `usd_per_hour`: every GPU of the deployment at the catalog price (on-demand by default);
- `run_cost_usd`: that over the run (first arrival to last finish);
- `busy_cost_usd`: only the instance-seconds an instance was busy (TetriInfer's "resource
  usage": an idle instance could be released or given other work);
- `perf_per_usd`: (1 / mean JCT) / busy_cost_usd, TetriInfer's performance per dollar
  (higher is better; the ratio between two deployments on one trace is what means something);
- `requests_per_usd`, `output_tokens_per_usd`: finished work over run_cost_usd.
With time windows (plans over time) the bill follows the schedule: `run_cost_usd` is the
billed GPU-seconds (instances from start to stop, scale.py) at each role's price,
`usd_per_hour` that averaged over the billed span, `billed_instance_s` per role, and
`windows` one summary per window (counts, requests arriving in it and their percentiles,
billed and busy instance-seconds, cost).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from planner import catalog
from planner.errors import InputError
from planner.records import latencies, summarize
from planner.sim.flip import FLIP_LOG_COLUMNS
from planner.sim.scale import SCALE_LOG_COLUMNS


@dataclass(frozen=True, eq=False)
class SimResult:
    records: pd.DataFrame
    summary: dict
    flips: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(FLIP_LOG_COLUMNS)))
    stats: dict = field(default_factory=dict)   # events, wall_s, requests_per_wall_s, preemptions, aborted
    scale: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(SCALE_LOG_COLUMNS)))


def role_prices(deployment, price_kind: str = "on_demand", prices: dict | None = None) -> dict:
    """USD per GPU-hour per role, and where each price comes from."""
    out = {}
    for role, r in deployment.roles().items():
        try:
            usd, src = catalog.price_usd_per_gpu_hour(r.gpu, price_kind, overrides=prices)
        except InputError as e:
            usd, src = float("nan"), str(e)
        out[role] = (usd, src)
    return out


def build_summary(deployment, records: pd.DataFrame, busy_s: dict, *, slo_ttft_s=None,
                  slo_tpot_s=None, price_kind: str = "on_demand", prices: dict | None = None,
                  role_busy_gpu_s: dict | None = None, billed_gpu_s: dict | None = None,
                  billed_span_s: float | None = None) -> dict:
    s = summarize(records, slo_ttft_s=slo_ttft_s, slo_tpot_s=slo_tpot_s)
    lat = latencies(records)
    for k, v in lat.items():
        s[k]["mean"] = float(np.mean(v)) if len(v) else float("nan")
    s["aborted"] = int(len(records) - s["finished"])
    s["busy_instance_s"] = dict(busy_s)
    rp = role_prices(deployment, price_kind, prices)
    usd_h = sum(deployment.roles()[role].gpus * usd for role, (usd, _) in rp.items())
    s["price_kind"] = price_kind
    s["price_sources"] = {role: src for role, (_, src) in rp.items()}
    s["usd_per_hour"] = float(usd_h)
    dur = s.get("duration_s", 0.0)
    s["run_cost_usd"] = float(usd_h * dur / 3600.0)
    if billed_gpu_s is not None:     # plans over time: what the schedule billed
        s["run_cost_usd"] = float(sum(g * rp[role][0] for role, g in billed_gpu_s.items()) / 3600.0)
        span = billed_span_s if billed_span_s and billed_span_s > 0 else dur
        s["usd_per_hour"] = float(s["run_cost_usd"] / (span / 3600.0)) if span > 0 else float("nan")
    # busy GPU-seconds at each role's price (flip time at the decode price)
    busy_usd = 0.0
    for role, gpu_s in (role_busy_gpu_s or {}).items():
        usd = rp.get(role, rp.get("coupled", rp.get("decode", (float("nan"), ""))))[0]
        busy_usd += gpu_s * usd / 3600.0
    s["busy_cost_usd"] = float(busy_usd)
    mean_jct = s["jct_s"]["mean"]
    s["perf_per_usd"] = float(1.0 / (mean_jct * busy_usd)) if busy_usd > 0 and mean_jct > 0 else float("nan")
    fin = s["finished"]
    run_cost = s["run_cost_usd"]
    s["requests_per_usd"] = float(fin / run_cost) if run_cost > 0 else float("nan")
    if run_cost > 0 and "output_tokens_per_s" in s:
        s["output_tokens_per_usd"] = float(s["output_tokens_per_s"] * dur / run_cost)
    return s


def window_summaries(deployment, records: pd.DataFrame, scaler, *, slo_ttft_s=None, slo_tpot_s=None,
                     price_kind: str = "on_demand", prices: dict | None = None) -> list[dict]:
    """One row per window: its instance counts, the requests arriving in it (percentiles,
    SLO attainment), billed and busy instance-seconds per role and the billed cost."""
    rp = role_prices(deployment, price_kind, prices)
    tp = {r: x.tp for r, x in deployment.roles().items()}
    arrival = records["arrival_s"].to_numpy(dtype=float)
    rows = scaler.window_table()
    bounds = scaler.bounds
    for k, row in enumerate(rows):
        lo = bounds[k] if k else -np.inf
        hi = bounds[k + 1] if k + 1 < len(bounds) else np.inf
        sub = records[(arrival >= lo) & (arrival < hi)]
        row["requests"] = int(len(sub))
        if len(sub):
            sm = summarize(sub, slo_ttft_s=slo_ttft_s, slo_tpot_s=slo_tpot_s)
            row["finished"] = sm["finished"]
            for key in ("ttft_s", "tpot_s", "jct_s", "slo_attainment"):
                if key in sm:
                    row[key] = sm[key]
        row["cost_usd"] = float(sum(sec * tp[r] * rp[r][0] for r, sec in row["billed_instance_s"].items()) / 3600.0)
    return rows
