"""Queueing model: predicted TTFT / TPOT / JCT percentiles of a deployment on a workload.

Pure functions over numpy arrays; see docs/model.md for every formula and its limits.

Prefill pool (n instances, chunked prefill, FCFS, least-loaded dispatch):
    work_i  = P_i / F * t_prefill(F, max(P_i - C, 0) / 2)     instance-seconds, F = chunk fill
    U(t)    = fluid backlog of the pool (Lindley recursion of the arriving work against a
              drain rate of n instance-seconds per second, on the trace's own arrivals)
    wait_i  = max(U_i - (n - 1) * mean(work), 0) / n
    TTFT_i  = wait_i + alone_i     alone_i = the prompt's own chunks back to back
Decode pool (n instances, continuous batching), per time window w, per instance rate
lambda = rate_w / n:
    tau     = t_decode(1 + lambda m1 tau, c + lambda m2 tau)   (fixed point: Little's law)
    m1 = E[O - 1], m2 = E[(O - 1)(P + O/2)], c = m2 / m1
    TPOT_i  = t_decode at the batch the request sees over its lifetime
    JCT_i   = TTFT_i + KV transfer_i + (O_i - 1) TPOT_i
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .perf import PerfModel, kv_transfer_time_s
from .workload import Workload, build_workload

PERCENTILES = (50, 90, 99)
KV_HEADROOM_Z = 2.33           # KV memory sized for the 99th percentile of tokens held
FIXED_POINT_MAX_S = 1e3        # TPOT above this reads as saturated


# ---- prefill --------------------------------------------------------------------------
def chunk_fill_tokens(chunk_tokens: int, batch_limit: int, mean_prompt_tokens: float) -> float:
    """Tokens a merged chunk actually carries: at most `batch_limit` request slices."""
    return float(min(chunk_tokens, max(batch_limit * mean_prompt_tokens, 1.0)))


def chunked_work_s(perf: PerfModel, prompt_tokens, chunk_tokens: int, fill_tokens: float | None = None):
    """Instance-seconds a prompt costs when its slices ride in merged chunks of `fill`
    tokens: its share P/F of chunk iterations, attention at its mean cached context."""
    p = np.asarray(prompt_tokens, dtype=float)
    fill = float(chunk_tokens if fill_tokens is None else fill_tokens)
    cached = np.maximum(p - chunk_tokens, 0.0) / 2.0
    return p / fill * perf.prefill_time_s(np.full_like(p, fill), cached)


def chunked_alone_s(perf: PerfModel, prompt_tokens, chunk_tokens: int):
    """Time to prefill one prompt on an idle instance: full chunks then the remainder
    (vectorised `PerfModel.prompt_prefill_time_s`, attention at the mean cached context)."""
    p = np.asarray(prompt_tokens, dtype=float)
    full = np.floor((p - 1) / chunk_tokens)
    rem = p - full * chunk_tokens
    t_full = full * perf.prefill_time_s(np.full_like(p, float(chunk_tokens)),
                                        np.maximum(full - 1, 0) * chunk_tokens / 2.0)
    t_full = np.where(full > 0, t_full, 0.0)
    return t_full + perf.prefill_time_s(rem, full * chunk_tokens)


@dataclass(frozen=True, eq=False)
class ArrivingWork:
    """The prefill work of a trace binned for the fluid backlog model (independent of the
    number of servers, so the optimizer builds it once per candidate and tries many n)."""
    work_before_bin: np.ndarray     # instance-seconds arrived before each bin starts
    work_ahead_in_bin: np.ndarray   # per sample request: work of earlier arrivals in its bin
    mean_work_s: float
    total_work_s: float


def arriving_work(wl: Workload, work_s: np.ndarray) -> ArrivingWork:
    per_bin = np.bincount(wl.bin_index, weights=work_s, minlength=wl.bins)
    before = np.cumsum(per_bin) - per_bin
    s = wl.sample
    cum_before_req = np.cumsum(work_s) - work_s
    ahead = cum_before_req[s] - before[wl.bin_index[s]]
    return ArrivingWork(before, np.maximum(ahead, 0.0), float(work_s.mean()), float(work_s.sum()))


def arriving_linear_work(wl: Workload, seconds_per_token_w: np.ndarray) -> ArrivingWork:
    """`arriving_work` for work linear in the prompt with a per-window rate, in O(bins)
    (no pass over the requests): work_i = P_i * seconds_per_token_w[window of i]."""
    per_bin = wl.bin_prompt_sum * seconds_per_token_w[wl.bin_window]
    before = np.cumsum(per_bin) - per_bin
    s = wl.sample
    ahead = wl.sample_prompt_ahead * seconds_per_token_w[wl.window_index[s]]
    total = float(per_bin.sum())
    return ArrivingWork(before, ahead, total / wl.requests, total)


def fluid_wait_s(wl: Workload, aw: ArrivingWork, servers: int) -> np.ndarray:
    """Queueing wait of each sample request in a pool of `servers` instances."""
    t = np.arange(wl.bins) * wl.bin_width_s
    x = aw.work_before_bin - servers * t
    backlog_bin = x - np.minimum(np.minimum.accumulate(x), 0.0)
    s = wl.sample
    k = wl.bin_index[s]
    elapsed = wl.arrival_s[s] - k * wl.bin_width_s
    u = np.maximum(backlog_bin[k] + aw.work_ahead_in_bin - servers * elapsed, 0.0)
    return np.maximum(u - (servers - 1) * aw.mean_work_s, 0.0) / servers


def pool_utilisation(wl: Workload, work_s: np.ndarray, servers: int) -> dict:
    per_win = np.bincount(wl.window_index, weights=work_s, minlength=wl.windows)
    rho = per_win / (servers * wl.window_duration_s)
    span = max(wl.span_s, float(wl.window_duration_s.sum()) if wl.span_s == 0 else wl.span_s)
    return {"mean": float(work_s.sum() / (servers * span)), "peak_window": float(rho.max())}


# ---- decode ---------------------------------------------------------------------------
def solve_fixed_point(f, lo, hi: float = FIXED_POINT_MAX_S, iters: int = 60):
    """Least tau >= lo with f(tau) = tau for increasing f, vectorised over windows; inf where
    f(hi) > hi (the pool cannot keep up)."""
    with np.errstate(all="ignore"):
        return _bracket_and_bisect(f, np.maximum(np.asarray(lo, dtype=float), 1e-9), hi, iters)


def _bracket_and_bisect(f, lo, hi, iters):
    # bracket: the first tau = lo * 2^j with f(tau) <= tau (f may blow up beyond it again)
    grid = lo[None, :] * (2.0 ** np.arange(0, 64))[:, None]
    grid = np.minimum(grid, hi)
    below = np.vstack([f(g) <= g for g in grid])
    saturated = ~below.any(axis=0)
    j = np.argmax(below, axis=0)
    hi_arr = grid[j, np.arange(len(lo))]
    lo = np.where(j > 0, grid[np.maximum(j - 1, 0), np.arange(len(lo))], lo)
    for _ in range(iters):
        mid = 0.5 * (lo + hi_arr)
        above = f(mid) > mid
        lo = np.where(above, mid, lo)
        hi_arr = np.where(above, hi_arr, mid)
    return np.where(saturated, np.inf, hi_arr)


@dataclass(frozen=True)
class DecodeLoad:
    """Per-window decode demand on one instance."""
    rate_per_s: np.ndarray      # requests/s per instance
    steps: np.ndarray           # m1 = E[O - 1]
    context: np.ndarray         # m2 = E[(O - 1)(P + O/2)]
    context_sq: np.ndarray      # m3 = E[(O - 1)(P + O/2)^2]
    others_rate_per_s: np.ndarray  # rate of the *other* requests a tagged one shares with

    @property
    def mean_context(self) -> np.ndarray:
        return np.where(self.steps > 0, self.context / np.maximum(self.steps, 1e-12), 0.0)


def decode_load(wl: Workload, instances: int) -> DecodeLoad:
    n = np.maximum(wl.window_requests, 1.0)
    others = np.maximum(wl.window_requests - 1.0, 0.0) / wl.window_duration_s / instances
    return DecodeLoad(wl.window_rate_per_s / instances, wl.window_sum_decode_steps / n,
                      wl.window_sum_decode_context / n, wl.window_sum_decode_context_sq / n, others)


def decode_tpot_fixed_point(perf: PerfModel, load: DecodeLoad, stall_fraction=0.0) -> np.ndarray:
    """Mean TPOT per window: tau = t_decode(1 + B, c + T) / (1 - stall), B = lambda m1 tau,
    T = lambda m2 tau. `stall_fraction` is the share of time the instance spends on other
    work (vLLM-style prefill stalls)."""
    lam, m1, m2, c = load.others_rate_per_s, load.steps, load.context, load.mean_context
    stall = np.asarray(stall_fraction, dtype=float) * np.ones_like(lam)

    def f(tau):
        with np.errstate(invalid="ignore", divide="ignore"):
            t = perf.decode_time_s(1.0 + lam * m1 * tau, c + lam * m2 * tau)
            return np.where(stall < 1.0, t / np.maximum(1.0 - stall, 1e-12), np.inf)

    return solve_fixed_point(f, f(np.zeros_like(lam)))


def kv_tokens_needed(load: DecodeLoad, tpot_s: np.ndarray) -> np.ndarray:
    """Tokens of KV one instance must hold per window: mean plus KV_HEADROOM_Z standard
    deviations (M/G/infinity: occupancy variance = lambda tau m3)."""
    mean = load.rate_per_s * tpot_s * (load.context + load.steps)
    sd = np.sqrt(load.rate_per_s * tpot_s * load.context_sq)
    return mean + KV_HEADROOM_Z * sd


def batch_seen(wl: Workload, load: DecodeLoad, tpot_w: np.ndarray, rng: np.random.Generator):
    """Per sample request: the other requests in its batch, time-averaged over its
    lifetime. Mean lambda m1 tau (Little); Poisson variance, shrunk by averaging over a
    lifetime of L = (O - 1) tau against a correlation time of one mean residence."""
    s = wl.sample
    w = wl.window_index[s]
    tau = tpot_w[w]
    mean_b = load.others_rate_per_s[w] * load.steps[w] * tau
    mean_t = load.others_rate_per_s[w] * load.context[w] * tau
    life = np.maximum(wl.output_tokens[s] - 1, 0) * tau
    corr = np.maximum(load.steps[w] * tau, 1e-12)
    x = np.maximum(life / corr, 1e-9)
    shrink = np.where(x > 1e-6, 2.0 * (x - 1.0 + np.exp(-x)) / (x * x), 1.0)
    z = rng.standard_normal(len(s))
    b = np.maximum(mean_b + z * np.sqrt(mean_b * shrink), 0.0)
    t = np.where(mean_b > 0, mean_t * b / np.maximum(mean_b, 1e-12), 0.0)
    return b, t


def decode_time_s(steps, tpot_s) -> np.ndarray:
    """steps x TPOT per request, 0 for requests with no decode step (even where TPOT is
    infinite: a saturated pool does not delay a one-token request's completion)."""
    steps = np.asarray(steps, dtype=float)
    tpot_s = np.asarray(tpot_s, dtype=float)
    return np.multiply(steps, tpot_s, out=np.zeros(np.broadcast(steps, tpot_s).shape), where=steps > 0)


def slo_attainment(ttft_s, tpot_s, steps, slo) -> float:
    """Share of the sampled requests with TTFT <= slo.ttft_s and, if they decode at all,
    TPOT <= slo.tpot_s (the simulator's `records.summarize` definition)."""
    ok = (np.asarray(ttft_s) <= slo.ttft_s) & ((np.asarray(steps) <= 0) | (np.asarray(tpot_s) <= slo.tpot_s))
    return float(ok.mean()) if ok.size else float("nan")


def percentiles(x: np.ndarray, pcts=PERCENTILES) -> dict:
    x = np.asarray(x, dtype=float)
    if len(x) == 0:
        return {f"p{p}": float("nan") for p in pcts}
    if np.isinf(x).any():
        q = np.percentile(np.where(np.isinf(x), np.finfo(float).max, x), pcts)
        return {f"p{p}": (float("inf") if v >= np.finfo(float).max / 2 else float(v)) for p, v in zip(pcts, q)}
    return {f"p{p}": float(v) for p, v in zip(pcts, np.percentile(x, pcts))}


# ---- the public API -------------------------------------------------------------------
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
    from .coupled import predict_coupled
    return predict_coupled(deployment, wl, seed, slo)


def prefill_pool(perf: PerfModel, wl: Workload, chunk_tokens: int, batch_limit: int):
    """(alone_s per distinct prompt, work_s per request) of a chunked prefill pool."""
    fill = chunk_fill_tokens(chunk_tokens, batch_limit, wl.mean_prompt_tokens)
    vals = wl.prompt_values
    alone = chunked_alone_s(perf, vals, chunk_tokens)
    work = chunked_work_s(perf, vals, chunk_tokens, fill)[wl.prompt_index]
    return alone, work


def predict_disaggregated(dep, wl: Workload, seed: int = 0, slo=None) -> dict:
    pp, dp = dep.perf("prefill"), dep.perf("decode")
    n_p, n_d = dep.prefill.instances, dep.decode.instances
    alone, work = prefill_pool(pp, wl, dep.chunk_tokens, dep.policies.prefill_batch_limit)
    aw = arriving_work(wl, work)
    s = wl.sample
    ttft = fluid_wait_s(wl, aw, n_p) + alone[wl.prompt_index[s]]
    out = {"mode": "disaggregated", "model": "queueing", "limits": []}
    util_p = pool_utilisation(wl, work, n_p)
    if util_p["peak_window"] >= 1.0:
        out["limits"].append(f"prefill pool over capacity in its busiest window "
                             f"(utilisation {util_p['peak_window']:.2f}); its queue grows")
    dec = decode_side(dp, wl, n_d, seed, out["limits"])
    kv_bytes = wl.prompt_tokens[s] * dp.kv_bytes_per_token
    transfer = kv_transfer_time_s(kv_bytes, dep.kv_link_gb_s, dep.kv_latency_s)
    steps = np.maximum(wl.output_tokens[s] - 1, 0)
    jct = ttft + transfer + decode_time_s(steps, dec["tpot_sample"])
    out.update({
        "ttft_s": percentiles(ttft), "tpot_s": percentiles(dec["tpot_sample"][steps > 0]),
        "jct_s": percentiles(jct), "kv_transfer_s": percentiles(transfer),
        "utilisation": {"prefill": util_p, "decode_kv_peak": dec["kv_peak_fraction"]},
        "decode_batch": dec["batch"], "kv_peak_fraction": dec["kv_peak_fraction"],
    })
    out["feasible"] = not out["limits"]
    if slo is not None:
        out["slo_attainment"] = slo_attainment(ttft, dec["tpot_sample"], steps, slo)
    return out


def decode_side(perf: PerfModel, wl: Workload, instances: int, seed: int, limits: list,
                stall_fraction=0.0, stall_s=None) -> dict:
    """Decode pool prediction shared by the disaggregated and vLLM-style modes.
    `stall_s`: per window mean duration of one stall (vLLM prefill iteration)."""
    load = decode_load(wl, instances)
    tau = decode_tpot_fixed_point(perf, load, stall_fraction)
    need = kv_tokens_needed(load, tau)
    cap = perf.kv_capacity_tokens
    kv_peak = float(np.max(need) / cap) if cap > 0 else float("inf")
    biggest = int((wl.prompt_tokens + wl.output_tokens).max())
    if np.isinf(tau).any():
        limits.append(f"decode pool saturated in {int(np.isinf(tau).sum())} of {wl.windows} windows "
                      f"(iteration time grows faster than requests leave)")
    if biggest > cap:
        limits.append(f"the longest request needs {biggest} KV tokens, one decode instance holds {cap}")
    elif kv_peak > 1.0:
        limits.append(f"decode KV memory short: busiest window needs {kv_peak:.2f}x the "
                      f"{cap} tokens one instance holds")
    rng = np.random.default_rng(seed)
    s = wl.sample
    b, t = batch_seen(wl, load, np.where(np.isinf(tau), 0.0, tau), rng)
    own = wl.prompt_tokens[s] + wl.output_tokens[s] / 2.0
    step = perf.decode_time_s(1.0 + b, own + t)
    w = wl.window_index[s]
    steps = np.maximum(wl.output_tokens[s] - 1, 0)
    if stall_s is not None:
        life = steps * step / np.maximum(1.0 - stall_fraction[w], 1e-12)
        stalls = rng.poisson(np.minimum(load.rate_per_s[w] * life, 1e9)) * stall_s[w]
        step = step + stalls / np.maximum(steps, 1)
    tpot = np.where(np.isinf(tau[w]), np.inf, step)
    mean_b = load.rate_per_s * load.steps * np.where(np.isinf(tau), 0.0, tau)
    return {"tpot_sample": tpot, "tau_w": tau, "kv_peak_fraction": kv_peak,
            "batch": {"mean": float(np.average(mean_b, weights=np.maximum(wl.window_requests, 1e-12))),
                      "peak_window": float(mean_b.max())}}
