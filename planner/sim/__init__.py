"""Discrete-event simulator: replays a trace against a deployment with TetriInfer's policies.

    from planner.sim import simulate
    result = simulate(plan.deployment, trace, seed=0)
    result.records   # one row per request, the shared record schema
    result.summary   # percentiles, SLO attainment, throughput, busy instance-seconds, cost

One file per concept: engine (event loop), costs (the PerfModel made cheap), prefill,
predictor, kvlink, dispatch, decode, coupled (vLLM- and Sarathi-style baselines), flip,
scale (plans over time: per-window instance counts, drains, flips, starts, billing),
cluster (wiring), run (open and closed loop), result (summary).
"""
from planner.sim.predictor import LengthPredictor, read_confusion
from planner.sim.result import SimResult
from planner.sim.run import simulate, simulate_closed_loop
from planner.sim.verify import relative_errors, replay, verify_plan

__all__ = ["simulate", "simulate_closed_loop", "verify_plan", "relative_errors", "SimResult", "LengthPredictor",
           "read_confusion", "replay"]
