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

from planner.perf.model import PerfModel
from planner.analytic.prefill import pool_utilisation, pool_wait_s, prefill_pool, prefill_ttft
from planner.analytic.transfer import admission_fraction, kv_transfer_sample_s, record_tpot_s
from planner.workload import Workload

PERCENTILES = (50, 90, 99)
KV_HEADROOM_Z = 2.33           # KV memory sized for the 99th percentile of tokens held
DECODE_BATCH_LIMIT = 256       # running sequences per instance (vLLM's max_num_seqs; the simulator's default)
FIXED_POINT_MAX_S = 1e3        # TPOT above this reads as saturated


# ---- prefill ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ArrivingWork:
    """Per-request work (instance-seconds) of a trace for the fluid backlog model, built
    once per candidate so that many instance counts can be tried on it."""
    work_s: np.ndarray              # per request (all N)
    mean_work_s: float
    total_work_s: float


def arriving_work(wl: Workload, work_s: np.ndarray) -> ArrivingWork:
    w = np.asarray(work_s, dtype=float)
    return ArrivingWork(w, float(w.mean()), float(w.sum()))


def arriving_linear_work(wl: Workload, seconds_per_token_w: np.ndarray) -> ArrivingWork:
    """`arriving_work` for work linear in the prompt with a per-window rate:
    work_i = P_i * seconds_per_token_w[window of i]."""
    return arriving_work(wl, wl.prompt_tokens * np.asarray(seconds_per_token_w, dtype=float)[wl.window_index])


def fluid_wait_s(wl: Workload, aw: ArrivingWork, servers: int) -> np.ndarray:
    """Queueing wait of each sample request in a pool of `servers` instances (exact
    Lindley recursion on the trace's own arrivals, `prefill.pool_wait_s`)."""
    return pool_wait_s(wl.arrival_s, aw.work_s, servers)[wl.sample]


# ---- decode ---------------------------------------------------------------------------
def solve_fixed_point(f, lo, hi: float = FIXED_POINT_MAX_S, iters: int = 60):
    """Least tau >= lo with f(tau) = tau for increasing f, vectorised over windows; inf where
    f(hi) > hi (the pool cannot keep up). `f` must be elementwise and broadcast over a
    leading axis (the bracketing grid is evaluated in one call)."""
    with np.errstate(all="ignore"):
        return _bracket_and_bisect(f, np.maximum(np.asarray(lo, dtype=float), 1e-9), hi, iters)


REFINE_POINTS = 64           # where doubling misses a fixed point before f turns infinite


def _bracket_and_bisect(f, lo, hi, iters):
    # bracket: the first tau = lo * 2^j with f(tau) <= tau (f may blow up beyond it again)
    grid = lo[None, :] * (2.0 ** np.arange(0, 64))[:, None]
    grid = np.minimum(grid, hi)
    fg = f(grid)                            # one call over the whole (64, windows) grid
    below = fg <= grid
    saturated = ~below.any(axis=0)
    cols = np.arange(len(lo))
    j = np.argmax(below, axis=0)
    hi_arr = grid[j, cols]
    lo = np.where(j > 0, grid[np.maximum(j - 1, 0), cols], lo)
    # f infinite past a capacity edge (e.g. a Sarathi budget filled): the fixed points may lie
    # in a stretch shorter than one doubling just before it; look there on a fine grid
    finite = np.isfinite(fg)
    miss = saturated & finite[0] & ~finite[-1]
    if miss.any():
        edge = np.argmin(finite, axis=0)                  # first grid point where f is infinite
        a, b = grid[np.maximum(edge - 1, 0), cols], grid[edge, cols]
        frac = np.linspace(0.0, 1.0, REFINE_POINTS + 1)[1:-1, None]
        fine = np.where(miss, a + (b - a) * frac, lo)
        fb = f(fine) <= fine
        found = miss & fb.any(axis=0)
        k = np.argmax(fb, axis=0)
        hi_arr = np.where(found, fine[k, cols], hi_arr)
        lo = np.where(found, np.where(k > 0, fine[np.maximum(k - 1, 0), cols], a), lo)
        saturated &= ~found
    hi_arr = _bisect(f, lo, hi_arr, iters)
    return np.where(saturated, np.inf, hi_arr)


SPECULATIVE_LEVELS = 4       # bisection levels per call of f (all 2^4 - 1 midpoints they may visit)


def _bisect(f, lo, hi, iters):
    """`iters` steps of bisection (lo moves up to mid where f(mid) > mid, else hi moves down),
    vectorised over windows, exactly as one step per call would run them; but each call of
    f evaluates every midpoint the next few levels could visit, so f (numpy overhead on a
    few hundred windows) is called a quarter as often. Stops once a step changes nothing."""
    cols = np.arange(len(lo))
    depth = SPECULATIVE_LEVELS if len(lo) * (2 ** SPECULATIVE_LEVELS - 1) <= 1 << 15 else 1
    done = 0
    while done < iters:
        d = min(depth, iters - done)
        inner = 2 ** d - 1
        # breadth-first tree of the intervals: node k's children are 2k + 1 (f(mid) > mid:
        # (mid, hi)) and 2k + 2 ((lo, mid)), each midpoint as the sequential step computes it
        node_lo, node_hi, mids = [lo] + [None] * (inner - 1), [hi] + [None] * (inner - 1), []
        for k in range(inner):
            m = 0.5 * (node_lo[k] + node_hi[k])
            mids.append(m)
            if 2 * k + 2 < inner:
                node_lo[2 * k + 1], node_hi[2 * k + 1] = m, node_hi[k]
                node_lo[2 * k + 2], node_hi[2 * k + 2] = node_lo[k], m
        mid_all = np.stack(mids)
        above_all = f(mid_all) > mid_all
        node = np.zeros(len(lo), dtype=np.int64)
        for _ in range(d):
            mid, above = mid_all[node, cols], above_all[node, cols]
            new_lo = np.where(above, mid, lo)
            new_hi = np.where(above, hi, mid)
            if np.array_equal(new_lo, lo) and np.array_equal(new_hi, hi):
                return hi                   # converged to adjacent floats: later steps change nothing
            lo, hi = new_lo, new_hi
            node = 2 * node + np.where(above, 1, 2)
        done += d
    return hi


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


def batch_needed(load: DecodeLoad, tpot_s: np.ndarray) -> np.ndarray:
    """Running requests one instance must hold per window: the Little's-law mean plus
    KV_HEADROOM_Z Poisson standard deviations (compared with DECODE_BATCH_LIMIT)."""
    mean = load.rate_per_s * load.steps * np.where(np.isfinite(tpot_s), tpot_s, 0.0)
    return mean + KV_HEADROOM_Z * np.sqrt(mean)


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
def predict_disaggregated(dep, wl: Workload, seed: int = 0, slo=None, known_ttft_s=None, known_transfer_s=None) -> dict:
    """`known_ttft_s`, `known_transfer_s`: the prefill TTFT and KV transfer samples of this
    very deployment already computed (by `prefill_ttft` and `kv_transfer_sample_s` at
    `dep.kv_link_gb_s`, as here - the candidate search's), so they are not computed twice."""
    pp, dp = dep.perf("prefill"), dep.perf("decode")
    n_p, n_d = dep.prefill.instances, dep.decode.instances
    pool = prefill_pool(pp, wl, dep.chunk_tokens, dep.policies.prefill_batch_limit)
    known = known_ttft_s is not None and known_transfer_s is not None
    pre = None if known else prefill_ttft(pool, wl, n_p)
    ttft = known_ttft_s if known else pre.ttft_sample_s
    s = wl.sample
    out = {"mode": "disaggregated", "model": "queueing", "limits": []}
    util_p = pool_utilisation(wl, pool.merged_s, n_p)
    if util_p["peak_window"] >= 1.0:
        out["limits"].append(f"prefill pool over capacity in its busiest window "
                             f"(utilisation {util_p['peak_window']:.2f}); its queue grows")
    link = kv_link_load(wl, dp.kv_bytes_per_token, dep.kv_link_gb_s, n_p)
    if link["peak_window"] >= 1.0:
        out["limits"].append(f"KV links over capacity in the busiest window (utilisation "
                             f"{link['peak_window']:.2f} of {n_p} x {dep.kv_link_gb_s:g} GB/s); transfers queue")
    dec = decode_side(dp, wl, n_d, seed, out["limits"])
    transfer = known_transfer_s if known else kv_transfer_sample_s(
        wl, pre.start_s + pre.work_s, n_p, dp.kv_bytes_per_token, dep.kv_link_gb_s, dep.kv_latency_s, wl.arrival_s)
    step = dec["tpot_sample"]
    admission = admission_fraction(wl) * np.where(np.isinf(step), 0.0, step)
    steps = np.maximum(wl.output_tokens[s] - 1, 0)
    tpot = record_tpot_s(step, steps, transfer, admission)
    jct = ttft + np.where(steps > 0, transfer + admission, 0.0) + decode_time_s(steps, step)
    out.update({
        "ttft_s": percentiles(ttft), "tpot_s": percentiles(tpot[steps > 0]),
        "tpot_decode_s": percentiles(step[steps > 0]),
        "jct_s": percentiles(jct), "kv_transfer_s": percentiles(transfer[steps > 0]),
        "utilisation": {"prefill": util_p, "kv_link": link, "decode_kv_peak": dec["kv_peak_fraction"]},
        "decode_batch": dec["batch"], "kv_peak_fraction": dec["kv_peak_fraction"],
    })
    out["feasible"] = not out["limits"]
    if slo is not None:
        out["slo_attainment"] = slo_attainment(ttft, tpot, steps, slo)
    return out


def kv_link_load(wl: Workload, kv_bytes_per_token: float, link_gb_s: float, links: int) -> dict:
    """Utilisation of the prefill pool's KV links (requests with a decode step send KV)."""
    sends = wl.output_tokens > 1
    per_win = np.bincount(wl.window_index, weights=wl.prompt_tokens * sends, minlength=wl.windows)
    rho = per_win * kv_bytes_per_token / (link_gb_s * 1e9 * links * wl.window_duration_s)
    total = float((wl.prompt_tokens * sends).sum()) * kv_bytes_per_token / (link_gb_s * 1e9 * links)
    return {"mean": total / max(wl.span_s, float(wl.window_duration_s.sum()) if wl.span_s == 0 else wl.span_s),
            "peak_window": float(rho.max())}


def decode_side(perf: PerfModel, wl: Workload, instances: int, seed: int, limits: list,
                stall_fraction=0.0, stall_s=None) -> dict:
    """Decode pool prediction shared by the disaggregated and vLLM-style modes.
    `stall_s`: per window mean duration of one stall (vLLM prefill iteration)."""
    load = decode_load(wl, instances)
    tau = decode_tpot_fixed_point(perf, load, stall_fraction)
    need = kv_tokens_needed(load, tau)
    cap = perf.kv_capacity_tokens
    kv_peak = float(np.max(need) / cap) if cap > 0 else float("inf")
    biggest = wl.max_request_tokens
    if np.isinf(tau).any():
        limits.append(f"decode pool saturated in {int(np.isinf(tau).sum())} of {wl.windows} windows "
                      f"(iteration time grows faster than requests leave)")
    if biggest > cap:
        limits.append(f"the longest request needs {biggest} KV tokens, one decode instance holds {cap}")
    elif kv_peak > 1.0:
        limits.append(f"decode KV memory short: busiest window needs {kv_peak:.2f}x the "
                      f"{cap} tokens one instance holds")
    batch_need = batch_needed(load, tau)
    if np.isfinite(tau).all() and batch_need.max() > DECODE_BATCH_LIMIT:
        limits.append(f"decode batch over the {DECODE_BATCH_LIMIT}-sequence limit: busiest window needs "
                      f"{batch_need.max():.0f} running requests per instance; requests queue for a slot")
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
