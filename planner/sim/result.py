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
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import catalog
from ..errors import InputError
from ..records import latencies, summarize
from .flip import FLIP_LOG_COLUMNS


@dataclass(frozen=True, eq=False)
class SimResult:
    records: pd.DataFrame
    summary: dict
    flips: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(FLIP_LOG_COLUMNS)))
    stats: dict = field(default_factory=dict)   # events, wall_s, requests_per_wall_s, preemptions, aborted


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
                  role_busy_gpu_s: dict | None = None) -> dict:
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
