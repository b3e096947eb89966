"""The analytical model's entry point: predicted percentiles of a deployment on a trace,
disaggregated (queueing.predict_disaggregated) or coupled (coupled.predict_coupled)."""
from __future__ import annotations

from planner.analytic.coupled import predict_coupled
from planner.analytic.queueing import predict_disaggregated
from planner.workload import Workload, build_workload


def as_workload(trace_or_workload, window_s: float | None = None) -> Workload:
    if isinstance(trace_or_workload, Workload):
        return trace_or_workload
    return build_workload(trace_or_workload, **({} if window_s is None else {"window_s": window_s}))


def predict(deployment, trace_or_workload, window_s: float | None = None, seed: int = 0, slo=None) -> dict:
    """Predicted latency percentiles of `deployment` (planner.plan.Deployment) serving a
    trace (traces.Trace) or a prebuilt Workload.

    Returns {"ttft_s": {p50,p90,p99}, "tpot_s": {...}, "jct_s": {...}, "kv_transfer_s":
    {...} (disaggregated), "utilisation": {...}, "decode_batch": {...}, "kv_peak_fraction",
    "feasible": bool, "limits": [reasons], "mode", "model": "queueing"}, and with `slo`
    (an SLO: ttft_s, tpot_s) "slo_attainment", the predicted share of requests meeting both
    targets. Infinite values mean the deployment cannot keep up (the reason is in "limits")."""
    wl = as_workload(trace_or_workload, window_s)
    if deployment.mode == "disaggregated":
        return predict_disaggregated(deployment, wl, seed, slo)
    return predict_coupled(deployment, wl, seed, slo)
