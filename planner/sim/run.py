"""`simulate` (open-loop trace replay) and `simulate_closed_loop` (N concurrent clients)."""
from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd

from planner.errors import InputError
from planner.plan import Deployment, Plan
from planner.sim.cluster import Cluster
from planner.sim.decode import GREEDY, RESERVE_STATIC
from planner.sim.engine import ARRIVAL, EventLoop
from planner.sim.flip import FLIP_LOG_COLUMNS
from planner.sim.predictor import LengthPredictor, predictor_from_policies
from planner.sim.requests import Requests
from planner.sim.result import SimResult, build_summary, window_summaries
from planner.sim.scale import SCALE_LOG_COLUMNS, check_windows

PROGRESS_MIN_REQUESTS = 50_000   # below this a run takes well under a few seconds
# Simulated times stay below this (about 300 years): beyond it a step time of a few
# microseconds no longer moves a float clock. Scaled arrivals and think times are checked.
MAX_SIM_TIME_S = 1e10
EVENTS_BASE = 2_000_000          # event budget: this plus per request and per token (_event_budget)
PACKED, PADDED = "packed", "padded"
VLLM_MAX_PADDINGS = 256          # vLLM <= 0.2 SchedulerConfig.max_paddings default


def _paddings(coupled_prefill: str) -> int | None:
    if coupled_prefill not in (PACKED, PADDED):
        raise InputError(f"coupled_prefill must be {PACKED!r} or {PADDED!r}, got {coupled_prefill!r}")
    return VLLM_MAX_PADDINGS if coupled_prefill == PADDED else None


def _deployment(plan_or_deployment) -> Deployment:
    if isinstance(plan_or_deployment, Plan):
        return plan_or_deployment.deployment
    if isinstance(plan_or_deployment, Deployment):
        return plan_or_deployment
    raise InputError(f"simulate needs a Deployment or a Plan, got {type(plan_or_deployment).__name__}")


def _slo(plan_or_deployment, slo_ttft_s, slo_tpot_s):
    if isinstance(plan_or_deployment, Plan):
        slo = plan_or_deployment.inputs.get("slo") or {}
        if slo_ttft_s is None:
            slo_ttft_s = slo.get("ttft_s")
        if slo_tpot_s is None:
            slo_tpot_s = slo.get("tpot_s")
    return slo_ttft_s, slo_tpot_s


def _check(dep: Deployment) -> None:
    for role in dep.roles():
        perf = dep.perf(role)
        if not perf.fits:
            raise InputError(f"{dep.model} does not fit on one {role} instance of {dep.roles()[role].gpu} "
                             f"with tp={dep.roles()[role].tp}; raise tp or pick a larger GPU")
    if dep.windows:
        check_windows(dep)


def _check_scales(time_scale, rate_scale, arrival_s) -> None:
    for name, v in (("time scale", time_scale), ("rate scale", rate_scale)):
        if not (math.isfinite(v) and v > 0):
            raise InputError(f"{name} must be a finite number > 0, got {v}")
    factor = time_scale / rate_scale
    if not (math.isfinite(factor) and factor > 0):
        raise InputError(f"time scale / rate scale = {time_scale:g} / {rate_scale:g} is not a usable factor")
    if len(arrival_s):
        last = float(np.max(np.abs(arrival_s))) * factor
        if not last <= MAX_SIM_TIME_S:
            raise InputError(f"arrival times reach {last:.3g} s after scaling (x{factor:.3g}); the simulator "
                             f"handles up to {MAX_SIM_TIME_S:.0e} s (about 300 years): check --time-scale, "
                             "--rate-scale and the trace's time unit")


def _event_budget(dep: Deployment, prompt, output) -> int:
    """Events a run may take before it counts as stuck: far above what any run needs
    (a few per request, one per decode step at worst, one per prefill chunk)."""
    prompt = np.asarray(prompt, dtype=np.int64)
    output = np.asarray(output, dtype=np.int64)
    chunks = int(np.sum(prompt // max(dep.chunk_tokens, 1) + 1))
    windows = len(dep.windows) * 64 * max(sum(r.instances for r in dep.roles().values()), 1)
    return EVENTS_BASE + 1000 * len(prompt) + 4 * int(np.sum(output)) + 4 * chunks + windows


def engine_admission(engine) -> str:
    """How a coupled instance of `engine` admits requests, and so whether it preempts:
    vLLM allocates KV blocks on demand and preempts the newest request by recompute when a
    batch outgrows memory; SGLang reserves part of each request's remaining output and
    retracts (recomputes) decodes when it runs out, which the simulator runs as the same
    greedy admission with recompute; TensorRT-LLM's guaranteed-no-evict admission reserves a
    request's whole prompt and (predicted) output up front, so nothing is preempted."""
    return RESERVE_STATIC if getattr(engine, "admission", "on_demand") == "no_evict" else GREEDY


def preemption_mode(engine) -> str:
    """What a preempted request costs on `engine` (EngineConfig.preemption): 'recompute'
    (vLLM; SGLang's 'retract' is the same in the simulator: the KV is dropped and rebuilt by a
    prefill of prompt + generated tokens on readmission) or 'none' (no-evict admission)."""
    mode = getattr(engine, "preemption", "recompute")
    return "none" if mode == "none" else "recompute"


def _make_predictor(dep, predictor, confusion, perfect) -> LengthPredictor:
    if predictor is not None:
        return predictor
    return predictor_from_policies(dep.policies, confusion=confusion, perfect=perfect)


class _Progress:
    def __init__(self, total: int, enabled: bool, desc: str):
        self.bar = None
        self.step = max(total // 200, 1)
        self.pending = 0
        if enabled:
            from planner.progress import progress_bar
            self.bar = progress_bar(total, desc, "req", mininterval=0.5)

    def tick(self) -> None:
        if self.bar is not None:
            self.pending += 1
            if self.pending >= self.step:
                self.bar.update(self.pending)
                self.pending = 0

    def close(self) -> None:
        if self.bar is not None:
            self.bar.update(self.pending)
            self.bar.close()


def _finish(dep, cluster, reqs, loop, wall0, *, slo, price_kind, prices, extra_stats) -> SimResult:
    end = loop.now
    cluster.close(end)
    records = reqs.to_frame()
    busy = cluster.busy_instance_s()
    scaler = cluster.scaler
    billed = None
    if scaler is not None:
        billed = {r: s * dep.roles()[r].tp for r, s in scaler.billed_instance_s().items()}
    summary = build_summary(dep, records, busy, slo_ttft_s=slo[0], slo_tpot_s=slo[1],
                            price_kind=price_kind, prices=prices, role_busy_gpu_s=cluster.role_busy_gpu_s(),
                            billed_gpu_s=billed, billed_span_s=(end - scaler.origin) if scaler else None)
    wall = time.perf_counter() - wall0
    preempt = sum(getattr(i, "preemptions", 0) for i in cluster.instances())
    preempted = int(np.count_nonzero(np.frombuffer(reqs.preemptions, dtype=np.int64))) if len(reqs) else 0
    kv_pools = cluster.decode + cluster.coupled
    kv_peak = max((d.peak_kv_tokens / d.kv_capacity_tokens for d in kv_pools if d.kv_capacity_tokens > 0),
                  default=0.0)
    stats = {"events": loop.events, "wall_s": wall,
             "requests_per_wall_s": len(reqs) / wall if wall > 0 else float("inf"),
             "preemptions": int(preempt), "preempted_requests": preempted, "aborted": int(cluster.aborted),
             "kv_peak_fraction": float(kv_peak), "step_scale": cluster.step_scale,
             "flips": len(cluster.flipper.log), "simulated_s": end,
             "step_costs": {role: dep.perf(role).source_name for role in dep.roles()}}
    stats.update(extra_stats)
    summary["preemptions"] = int(preempt)
    summary["preempted_requests"] = preempted
    summary["kv_peak_fraction"] = float(kv_peak)
    summary["flips"] = len(cluster.flipper.log)
    flips = pd.DataFrame(cluster.flipper.log, columns=list(FLIP_LOG_COLUMNS))
    scale = pd.DataFrame(scaler.log if scaler else [], columns=list(SCALE_LOG_COLUMNS))
    if scaler is not None:
        summary["billed_instance_s"] = scaler.billed_instance_s()
        summary["windows"] = window_summaries(dep, records, scaler, slo_ttft_s=slo[0], slo_tpot_s=slo[1],
                                              price_kind=price_kind, prices=prices)
        stats["scale_events"] = len(scaler.log)
    return SimResult(records=records, summary=summary, flips=flips, stats=stats, scale=scale)


def simulate(plan_or_deployment, trace, *, seed: int = 0, progress: bool = False,
             time_scale: float = 1.0, rate_scale: float = 1.0, slo_ttft_s: float | None = None,
             slo_tpot_s: float | None = None, block_tokens: int = 16, decode_batch_limit: int = 256,
             predictor: LengthPredictor | None = None, confusion=None, perfect_predictor: bool = False,
             coupled_admission: str | None = None, max_prefill_tokens: int | None = None,
             price_kind: str = "on_demand", prices: dict | None = None,
             start_latency_s: float | None = None, start_ahead: bool = False,
             coupled_prefill: str = PACKED, pad_prefill_chunks: bool = False,
             step_scale: float = 1.0) -> SimResult:
    """Replay `trace` (a traces.Trace) open-loop through the deployment of a Plan or a
    Deployment. Arrivals are multiplied by `time_scale` and divided by `rate_scale`.
    A deployment with `windows` changes its instance counts at each window's start
    (planner.sim.scale: drains, flips, starts after `start_latency_s`, default
    DEFAULT_START_LATENCY_S; `start_ahead` starts them that much before the window).
    Returns records in the shared schema, a summary, the flip log, the scale log (plans
    over time) and run statistics. `coupled_prefill`: how a vLLM-style coupled instance
    batches prompts - "packed" (current vLLM: the sum of the prompt lengths) or "padded"
    (vLLM <= 0.2: padded to the longest, at most 256 padding tokens). `pad_prefill_chunks`:
    a prefill chunk short of ChunkSize costs a full chunk (TetriInfer's implementation).
    `coupled_admission`: None for the engine's (`engine_admission`). `step_scale`: every
    engine step costs this many times the step-cost model's time (the margin search's
    slower kernels)."""
    dep = _deployment(plan_or_deployment)
    _check(dep)
    _check_scales(time_scale, rate_scale, trace.arrival_s)
    if not (math.isfinite(step_scale) and step_scale > 0):
        raise InputError(f"step scale must be a finite number > 0, got {step_scale}")
    coupled_admission = coupled_admission or engine_admission(dep.engine)
    if block_tokens < 1 or decode_batch_limit < 1:
        raise InputError("block_tokens and decode_batch_limit must be >= 1")
    wall0 = time.perf_counter()
    pred = _make_predictor(dep, predictor, confusion, perfect_predictor)
    buckets = pred.predict(trace.output_tokens, seed=seed)
    arrival = np.asarray(trace.arrival_s, dtype=float) * (time_scale / rate_scale)
    reqs = Requests(arrival, trace.prompt_tokens, trace.output_tokens, buckets,
                    pred.lower_bound_tokens(buckets))
    loop = EventLoop()
    n = len(reqs)
    bar = _Progress(n, progress and n >= PROGRESS_MIN_REQUESTS, "simulate")
    cluster = Cluster(dep, reqs, loop, seed=seed, block_tokens=block_tokens,
                      decode_batch_limit=decode_batch_limit, on_finish=lambda t, rid: bar.tick(),
                      coupled_admission=coupled_admission, max_prefill_tokens=max_prefill_tokens,
                      origin_s=float(arrival[0]) if n else 0.0, time_factor=time_scale / rate_scale,
                      start_latency_s=start_latency_s, start_ahead=start_ahead,
                      coupled_max_paddings=_paddings(coupled_prefill), pad_prefill_chunks=pad_prefill_chunks,
                      step_scale=step_scale)
    try:
        loop.run(reqs.arrival, cluster.on_arrival,
                 max_events=_event_budget(dep, trace.prompt_tokens, trace.output_tokens))
    finally:
        bar.close()
    return _finish(dep, cluster, reqs, loop, wall0, slo=_slo(plan_or_deployment, slo_ttft_s, slo_tpot_s),
                   price_kind=price_kind, prices=prices, extra_stats={"mode": "open_loop"})


def simulate_closed_loop(plan_or_deployment, *, clients: int, requests: int, trace=None,
                         prompt_tokens: int | None = None, output_tokens: int | None = None,
                         think_s: float = 0.0, seed: int = 0, progress: bool = False,
                         slo_ttft_s: float | None = None, slo_tpot_s: float | None = None,
                         block_tokens: int = 16, decode_batch_limit: int = 256,
                         predictor: LengthPredictor | None = None, confusion=None,
                         perfect_predictor: bool = False, coupled_admission: str | None = None,
                         max_prefill_tokens: int | None = None, price_kind: str = "on_demand",
                         prices: dict | None = None, start_latency_s: float | None = None,
                         start_ahead: bool = False, coupled_prefill: str = PACKED,
                         pad_prefill_chunks: bool = False) -> SimResult:
    """Closed loop, as benchmark clients measure a deployment: `clients` send a request each
    at once, wait for its last token, think `think_s`, and send the next, until `requests`
    have been sent. Lengths are given (`prompt_tokens`, `output_tokens`: one for all, or one
    per request in the order sent) or drawn with replacement from `trace`'s (prompt, output)
    pairs; a given value overrides the drawn one."""
    dep = _deployment(plan_or_deployment)
    _check(dep)
    coupled_admission = coupled_admission or engine_admission(dep.engine)
    if clients < 1 or requests < 1:
        raise InputError(f"closed loop needs clients >= 1 and requests >= 1, got {clients} and {requests}")
    if not 0 <= think_s <= MAX_SIM_TIME_S / requests:
        raise InputError(f"think time must be finite, >= 0 and at most {MAX_SIM_TIME_S:.0e} s over the run, "
                         f"got {think_s}")
    rng = np.random.default_rng(seed)
    if trace is not None and len(trace):
        pick = rng.integers(0, len(trace), size=requests)
        prompt = trace.prompt_tokens[pick].copy()
        output = trace.output_tokens[pick].copy()
    elif prompt_tokens is None or output_tokens is None:
        raise InputError("closed loop needs a trace to draw lengths from, or both --prompt-tokens and --output-tokens")
    else:
        prompt = np.zeros(requests, dtype=np.int64)
        output = np.zeros(requests, dtype=np.int64)
    if prompt_tokens is not None:
        prompt[:] = prompt_tokens
    if output_tokens is not None:
        output[:] = output_tokens
    if prompt.min() < 1 or output.min() < 1:
        raise InputError("prompt and output lengths must be >= 1 token")
    wall0 = time.perf_counter()
    pred = _make_predictor(dep, predictor, confusion, perfect_predictor)
    buckets = pred.predict(output, seed=seed)
    reqs = Requests(np.full(requests, np.nan), prompt, output, buckets, pred.lower_bound_tokens(buckets))
    loop = EventLoop()
    bar = _Progress(requests, progress and requests >= PROGRESS_MIN_REQUESTS, "simulate (closed loop)")
    state = {"sent": 0}

    def send(now, _arg=None):
        rid = state["sent"]
        if rid >= requests:
            return
        state["sent"] = rid + 1
        reqs.arrival[rid] = now
        cluster.on_arrival(now, rid)

    def on_finish(now, rid):
        bar.tick()
        # the client has the last token when the engine's front end streamed it (finish_s)
        seen = reqs.finish[rid]
        loop.at((seen if seen > now else now) + think_s, send, None, ARRIVAL)

    cluster = Cluster(dep, reqs, loop, seed=seed, block_tokens=block_tokens,
                      decode_batch_limit=decode_batch_limit, on_finish=on_finish,
                      coupled_admission=coupled_admission, max_prefill_tokens=max_prefill_tokens,
                      start_latency_s=start_latency_s, start_ahead=start_ahead,
                      coupled_max_paddings=_paddings(coupled_prefill), pad_prefill_chunks=pad_prefill_chunks)
    for _ in range(min(clients, requests)):
        loop.at(0.0, send, None, ARRIVAL)
    try:
        loop.run(max_events=_event_budget(dep, prompt, output))
    finally:
        bar.close()
    return _finish(dep, cluster, reqs, loop, wall0, slo=_slo(plan_or_deployment, slo_ttft_s, slo_tpot_s),
                   price_kind=price_kind, prices=prices,
                   extra_stats={"mode": "closed_loop", "clients": clients, "think_s": think_s})
