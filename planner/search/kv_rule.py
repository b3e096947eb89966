"""How the candidate search treats KV memory.

- "gaussian" (the analytical rule, used when plans are not verified in simulation): the
  mean tokens held plus 2.33 standard deviations (M/G/inf occupancy) must fit one
  instance's KV capacity in every window, with no preemption.
- "simulated" (the default, verified plans): memory is left to the simulator, which runs
  the engine's admission and preemption (`planner.sim.run.engine_admission`): a plan that
  preempts some requests but meets the SLO is a plan. The analytical pass then sees an
  unbounded KV capacity (`unbounded`), and the search keeps only counts passing a necessary
  condition, `mean_fits`: the mean tokens held in the busiest window, at a decode step no
  slower than a decode-only one (a lower bound on the step, so on the occupancy), fits the
  instance's real capacity. Below that the instance would be preempting all the time.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from planner.analytic.queueing import decode_load, decode_tpot_fixed_point
from planner.perf.model import PerfModel
from planner.plan import Deployment

KV_RULES = ("simulated", "gaussian")
UNBOUNDED_TOKENS = 1 << 50


@dataclass(frozen=True)
class _UnboundedKv(PerfModel):
    """A PerfModel whose KV capacity is unbounded: step times as the model's, memory left to
    the simulator (the analytical pass of the "simulated" rule)."""

    @property
    def kv_capacity_tokens(self) -> int:
        return UNBOUNDED_TOKENS


def unbounded(perf: PerfModel) -> PerfModel:
    if isinstance(perf, _UnboundedKv):
        return perf
    return _UnboundedKv(**{f.name: getattr(perf, f.name) for f in fields(PerfModel)})


@dataclass(frozen=True)
class UnboundedKvDeployment(Deployment):
    """A Deployment whose pools the analytical model sees with unbounded KV memory (the
    coupled candidates' predictions); never simulated or returned."""

    def perf(self, role: str) -> PerfModel:
        return unbounded(Deployment.perf(self, role))


def mean_tokens_peak(perf: PerfModel, wl, instances: int, tau_w=None) -> float:
    """Mean KV tokens one instance holds in the busiest window: rate x step x (E[(O-1)(P+O/2)]
    + E[O-1]) per instance (Little's law), at the per-window step `tau_w` or, if not given,
    at the decode-only fixed point (a lower bound on a coupled instance's step)."""
    load = decode_load(wl, instances)
    if tau_w is None:
        tau_w = decode_tpot_fixed_point(perf, load)
    tau = np.where(np.isfinite(tau_w), tau_w, np.inf)
    with np.errstate(invalid="ignore"):
        mean = load.rate_per_s * tau * (load.context + load.steps)
    mean = np.where(load.rate_per_s > 0, mean, 0.0)
    return float(np.max(mean)) if len(mean) else 0.0


def mean_fits(perf: PerfModel, wl, instances: int, tau_w=None) -> bool:
    """The necessary condition of the "simulated" rule (see the module docstring); the
    longest request must fit one instance too."""
    cap = perf.kv_capacity_tokens
    if wl.max_request_tokens > cap:
        return False
    return mean_tokens_peak(perf, wl, instances, tau_w) <= cap


def real_memory(pred: dict, perf: PerfModel) -> dict:
    """A prediction made with unbounded KV memory, its KV figures restated against the
    instance's real capacity (`kv_peak_fraction` = the Gaussian rule's need / capacity),
    with a note in `limits` where that rule would not have admitted it."""
    if not pred or pred.get("kv_peak_fraction") is None:
        return pred
    cap = perf.kv_capacity_tokens
    peak = float(pred["kv_peak_fraction"]) * UNBOUNDED_TOKENS / cap if cap > 0 else float("inf")
    out = {**pred, "kv_peak_fraction": peak}
    if isinstance(out.get("utilisation"), dict):
        out["utilisation"] = {**out["utilisation"], "decode_kv_peak": peak}
    if peak > 1.0:
        out["limits"] = list(out.get("limits") or []) + [
            f"KV memory: the busiest window's mean + 2.33 sd of tokens held is {peak:.2f}x the {cap} tokens one "
            f"instance holds; sized in simulation, with the engine's preemption"]
    return out
