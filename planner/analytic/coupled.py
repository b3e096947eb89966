"""Coupled baselines on the same performance model (docs/model.md, "Coupled baselines").

vLLM-style (`coupled`): each instance prefills whole prompts in iterations that take
priority over decoding, so running decodes stall for every prefill:
    TTFT_i = per-instance prefill wait (Lindley, whole-prompt work) + t_prefill(P_i) + residual step
    window tau = t_decode(1 + B, c + T) / (1 - rho_prefill)       (fixed point, batch by Little)
    decode life_i: O_i - 1 steps made only outside its instance's prefill-busy intervals
Sarathi-style (`chunked_coupled`): every iteration carries the running decodes plus a
prefill slice filling a token budget of C tokens:
    t_mix  = t_mixed(C - B prefill tokens, decode batch B, context T)
    rho    = lambda E[P] t_mix / (C - B)        share of time in iterations with a slice
    window tau = 1 / (rho / t_mix + (1 - rho) / t_decode(B, T))    (fixed point)
    TTFT_i = per-instance prefill wait (P_i t_mix / (C - B) per request) + ceil(P_i / (C - B)) t_mix
    decode life_i: O_i - 1 iterations, t_mix inside its instance's prefill-busy intervals,
                   t_decode outside (`decode_life_s`)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.analytic.queueing import (batch_seen, decode_load, decode_side, decode_time_s, kv_tokens_needed, percentiles,
                       slo_attainment, solve_fixed_point)
from planner.analytic.transfer import admission_fraction
from planner.workload import Workload

SCREEN_MARGIN = 1e-9      # a bound must miss its target by this relative margin to screen a pool out
STALL_T_MIX_S = 1e30      # vLLM: a decode step makes no progress inside a prefill iteration


def predict_coupled(dep, wl: Workload, seed: int = 0, slo=None, base: "VllmBase | None" = None,
                    screen=None) -> dict | None:
    """Predicted percentiles of a coupled deployment (vLLM- or Sarathi-style).

    `base`: the instance-count-independent part of a vLLM-style pool (`vllm_base`), so a
    search over counts builds it once. `screen` (an SLO): return None, before the O(N)
    per-instance prefill queue is run, when the deployment is infeasible or lower bounds
    that leave the queue wait out (TTFT without the wait, TPOT without vLLM's stalls, JCT
    from both) already miss a target at the SLO percentile - the full prediction would miss
    it too, so the candidate search skips it at a fraction of the cost."""
    got = _predict(dep, wl, seed, base, screen, False)
    if got is None:
        return None
    out, (ttft, tpot, steps) = got
    if slo is not None:
        out["slo_attainment"] = slo_attainment(ttft, tpot, steps, slo)
    return out


def passes_screen(dep, wl: Workload, slo, seed: int = 0, base: "VllmBase | None" = None) -> bool:
    """False where `predict_coupled(..., screen=slo)` would return None (the deployment is
    infeasible or its queue-free bounds miss `slo`), at the cost of the screen alone:
    per window and per sample request, never over all N requests."""
    return _predict(dep, wl, seed, base, slo, True) is not None


def _predict(dep, wl, seed, base, screen, screen_only):
    perf = dep.perf("coupled")
    if dep.mode == "coupled":
        return _predict_vllm(dep, perf, wl, seed, base or vllm_base(perf, wl), screen, screen_only)
    return _predict_sarathi(dep, perf, wl, seed, screen, screen_only)


def _misses(slo, ttft_low_s, tpot_low_s, steps) -> bool:
    """Whether elementwise lower bounds of TTFT and TPOT (per sample request) already miss
    `slo` at its percentile (percentiles are monotone in the samples; JCT = TTFT + steps x
    TPOT is bounded by the same bounds)."""
    q = slo.percentile

    def over(x, target):
        return len(x) > 0 and percentiles(x, (q,))[f"p{q}"] > target * (1.0 + SCREEN_MARGIN)

    if over(ttft_low_s, slo.ttft_s) or over(tpot_low_s[steps > 0], slo.tpot_s):
        return True
    return slo.jct_s is not None and over(ttft_low_s + decode_time_s(steps, tpot_low_s), slo.jct_s)


def _per_window_mean(wl: Workload, values: np.ndarray) -> np.ndarray:
    tot = np.bincount(wl.window_index, weights=values, minlength=wl.windows)
    return tot / np.maximum(wl.window_requests, 1.0)


@dataclass(frozen=True, eq=False)
class VllmBase:
    """What a vLLM-style pool of one (GPU, TP) costs per request whatever its instance
    count (built once per candidate family; O(N))."""
    whole_s: np.ndarray          # per distinct prompt length: its whole-prompt prefill iteration
    work_s: np.ndarray           # per request (all N)
    total_work_s: float
    mean_work_w: np.ndarray      # per window: mean work of its arrivals
    per_token_s: float           # marginal prefill seconds per prompt token


def vllm_base(perf, wl: Workload) -> VllmBase:
    whole = perf.prefill_time_s(wl.prompt_values.astype(float), 0.0)
    work = whole[wl.prompt_index]
    return VllmBase(whole, work, float(work.sum()),
                    _per_window_mean(wl, work), _marginal_prefill_s(perf, wl))


def _predict_vllm(dep, perf, wl: Workload, seed: int, base: VllmBase, screen=None, screen_only: bool = False):
    n = dep.coupled.instances
    whole, work = base.whole_s, base.work_s
    s = wl.sample
    limits: list[str] = []
    rho_w = wl.window_rate_per_s / n * base.mean_work_w
    if rho_w.max() >= 1.0:
        limits.append(f"prefill alone needs {rho_w.max():.2f}x the instances' time in the busiest window")
        if screen is not None:
            return None             # infeasible: no need for the decode side
    dec = decode_side(perf, wl, n, seed, limits, stall_fraction=np.minimum(rho_w, 1.0))
    tau = np.where(np.isinf(dec["tau_w"]), 0.0, dec["tau_w"]) * (1 - np.minimum(rho_w, 1.0))
    w = wl.window_index[s]
    # the decode step in flight on arrival (uniform residual), and the prompts that arrive
    # meanwhile: they are admitted with this one and prefilled in the same iteration
    residual = admission_fraction(wl) * tau[w]
    per_token = base.per_token_s
    joiners = wl.window_sum_prompt[w] / wl.window_duration_s[w] / n
    steps = np.maximum(wl.output_tokens[s] - 1, 0)
    own = whole[wl.prompt_index[s]]
    if screen is not None and (limits or _misses(screen, own + residual + per_token * joiners * residual,
                                                  dec["tpot_sample"], steps)):
        return None                 # the wait and the stalls only add to these
    if screen_only:
        return True
    busy = PrefillBusy.round_robin(wl.arrival_s, work, n)
    wait = busy.backlog_at(s)
    ttft = wait + own + residual + per_token * joiners * residual
    # its decode steps run only while its instance is not prefilling (prefill iterations
    # take priority): the same busy intervals as the queue, walked per request
    step = dec["tpot_sample"]
    finite = np.isfinite(step)
    life = decode_life_s(busy, s, wl.arrival_s[s] + ttft, steps,
                         STALL_T_MIX_S, np.where(finite, step, 1.0))
    tpot = np.where(finite, np.where(steps > 0, life / np.maximum(steps, 1), step), np.inf)
    jct = ttft + decode_time_s(steps, tpot)
    util = {"mean": float(base.total_work_s / (n * max(wl.span_s, 1e-9))), "peak_window": float(rho_w.max())}
    return {"mode": "coupled", "model": "queueing", "limits": limits, "feasible": not limits,
            "ttft_s": percentiles(ttft), "tpot_s": percentiles(tpot[steps > 0]),
            "jct_s": percentiles(jct), "utilisation": {"prefill": util, "decode_kv_peak": dec["kv_peak_fraction"]},
            "decode_batch": dec["batch"], "kv_peak_fraction": dec["kv_peak_fraction"]}, (ttft, tpot, steps)


def _marginal_prefill_s(perf, wl: Workload) -> float:
    """Seconds one more prompt token adds to a whole-prompt prefill iteration (at the mean prompt)."""
    p = max(float(wl.mean_prompt_tokens), 2.0)
    return float(perf.prefill_time_s(2 * p, 0.0) - perf.prefill_time_s(p, 0.0)) / p


def sarathi_window_times(perf, wl: Workload, instances: int, budget_tokens: int):
    """Per window: (TPOT tau, t_mix, t_decode, prefill tokens per iteration, rho)."""
    load = decode_load(wl, instances)
    lam, m1, m2, c = load.others_rate_per_s, load.steps, load.context, load.mean_context
    lam_all = load.rate_per_s
    n_req = np.maximum(wl.window_requests, 1.0)
    mean_p = wl.window_sum_prompt / n_req
    budget = float(budget_tokens)

    def parts(tau):
        with np.errstate(invalid="ignore"):   # a window with no load: 0 x inf is 0 there, not NaN
            b = 1.0 + np.where(lam * m1 > 0, lam * m1 * tau, 0.0)
            t_ctx = c + np.where(lam * m2 > 0, lam * m2 * tau, 0.0)
        p = budget - b
        # prefill slices sit on average halfway into their prompts
        cached = np.maximum(mean_p - np.maximum(p, 1.0), 0.0) / 2.0
        t_mix = perf.mixed_time_s(np.maximum(p, 1.0), cached, b, t_ctx)
        t_dec = perf.decode_time_s(b, t_ctx)
        with np.errstate(divide="ignore", invalid="ignore"):
            rho = np.where(p > 0, lam_all * mean_p * t_mix / np.maximum(p, 1e-12), np.inf)
        return b, t_mix, t_dec, p, rho

    def f(tau):
        _, t_mix, t_dec, p, rho = parts(tau)
        with np.errstate(invalid="ignore"):
            return np.where((rho < 1.0) & (p > 0), _iteration_mean_s(np.minimum(rho, 1.0), t_mix, t_dec), np.inf)

    tau = solve_fixed_point(f, f(np.zeros_like(lam)))
    _, t_mix, t_dec, p, rho = parts(np.where(np.isinf(tau), 0.0, tau))
    return tau, t_mix, t_dec, p, rho, load


def instance_order(n: int, instances: int) -> tuple[np.ndarray, np.ndarray]:
    """Requests 0..n-1 grouped by instance (request j on instance j mod `instances`), in
    arrival order within each - the stable argsort of j mod n, read off the (rows,
    instances) layout column by column instead of sorted - and each instance's count."""
    rows = -(-n // instances)
    order = np.arange(rows * instances).reshape(rows, instances).T.ravel()
    order = order[order < n]
    r = np.arange(instances)
    return order, np.maximum((n - r + instances - 1) // instances, 0)


def _by_instance(x: np.ndarray, instances: int, rows: int, fill: float) -> np.ndarray:
    """x (request j on instance j mod `instances`) as (instances, rows): row k holds
    instance k's requests in order, the missing last ones `fill`."""
    out = np.empty((instances, rows))
    full = (rows - 1) * instances
    out[:, :rows - 1] = x[:full].reshape(rows - 1, instances).T
    last = x[full:]
    out[:len(last), rows - 1] = last
    out[len(last):, rows - 1] = fill
    return out


class PrefillBusy:
    """When each instance of a coupled pool is busy with prefill work, from the per-instance
    Lindley recursion (request j to instance j mod n, as `round_robin_backlog_s`): request
    j's prefill runs from a_j + W_j for w_j seconds, and on one FCFS instance these
    intervals do not overlap. Kept sorted by (instance, start) with prefix sums of the
    busy time, so the busy time up to any moment is one binary search."""

    def __init__(self, arrival_s, backlog_s, work_s, instances: int):
        a = np.asarray(arrival_s, dtype=float)
        n = len(a)
        self.instances = int(max(instances, 1))
        order, counts = instance_order(n, self.instances)
        self.start = (a + backlog_s)[order]            # per instance, non-decreasing
        self.length = np.asarray(work_s, dtype=float)[order]
        self.cum = np.concatenate([[0.0], np.cumsum(self.length)])
        # [bounds[k], bounds[k + 1]): instance k's rows
        self.bounds = np.concatenate([[0], np.cumsum(counts)])
        self._backlog = None

    @classmethod
    def round_robin(cls, arrival_s, work_s, instances: int) -> "PrefillBusy":
        """The busy intervals with the per-instance queue solved here: the recursion of
        `round_robin_backlog_s` in the same floating-point steps, but laid out by instance
        (a row per instance, padded at the end), so that each instance's running sum and
        minimum run along contiguous memory and the rows are already in the order kept
        here. `backlog_at` then reads the backlog of any request."""
        a = np.asarray(arrival_s, dtype=float)
        w = np.asarray(work_s, dtype=float)
        n, k = len(a), int(max(instances, 1))
        rows = -(-n // k)
        pad = rows * k - n
        t, x = _by_instance(a, k, rows, a[-1]), _by_instance(w, k, rows, 0.0)    # (instance, round)
        y = np.cumsum(x, axis=1)
        y -= x
        y -= t
        low = np.minimum.accumulate(y, axis=1)
        y -= low
        t += y                                          # the start of each request's prefill
        self = cls.__new__(cls)
        self.instances = k
        counts = np.maximum((n - np.arange(k) + k - 1) // k, 0)
        self.bounds = np.concatenate([[0], np.cumsum(counts)])
        if pad:
            real = (np.arange(rows)[None, :] * k + np.arange(k)[:, None] < n).ravel()
            self.start, self.length = t.ravel()[real], x.ravel()[real]
        else:
            self.start, self.length = t.ravel(), x.ravel()
        self.cum = np.empty(n + 1)
        self.cum[0] = 0.0
        np.cumsum(self.length, out=self.cum[1:])
        self._backlog = y
        return self

    def backlog_at(self, request) -> np.ndarray:
        """Per request: the work queued at its instance when it arrives (as
        `round_robin_backlog_s`); only for a pool made by `round_robin`."""
        request = np.asarray(request)
        return self._backlog[request % self.instances, request // self.instances]

    def _before(self, request, t_s) -> np.ndarray:
        """Per query: the last row of the request's instance starting at or before t_s
        (bounds[k] - 1 where none), by a vectorised bisection within the instance's rows."""
        k = np.asarray(request) % self.instances
        lo = self.bounds[k] - 1                       # invariant: start[lo] <= t (or lo = first - 1)
        hi = self.bounds[k + 1] - 1                   # candidates up to the instance's last row
        t = np.asarray(t_s, dtype=float)
        while True:
            open_ = lo < hi
            if not open_.any():
                return lo
            mid = (lo + hi + 1) // 2
            ok = open_ & (self.start[np.minimum(mid, len(self.start) - 1)] <= t)
            lo = np.where(ok, mid, lo)
            hi = np.where(open_ & ~ok, mid - 1, hi)

    def busy_until(self, request, t_s) -> np.ndarray:
        """Prefill-busy seconds of `request`'s instance from the start of the trace to t_s."""
        k = np.asarray(request) % self.instances
        j = self._before(request, t_s)
        first = j < self.bounds[k]
        jj = np.maximum(j, 0)
        inside = np.clip(np.asarray(t_s, dtype=float) - self.start[jj], 0.0, self.length[jj])
        return np.where(first, self.cum[self.bounds[k]], self.cum[jj] + inside) - self.cum[self.bounds[k]]


def decode_life_s(busy: PrefillBusy, request, first_s, steps, t_mix_s, t_dec_s) -> np.ndarray:
    """Per request: the time its `steps` decode iterations take from its first token, when
    the iterations falling in its instance's prefill-busy time carry a prefill slice (t_mix
    each) and the others are plain decode steps (t_dec). Progress in steps,
        prog(t) = t / t_dec - busy(t) (1 / t_dec - 1 / t_mix),
    grows piecewise linearly; the life ends where prog(first + life) = prog(first) + steps.
    Found exactly: bisect the instance's busy intervals for the last one starting before
    that point, then walk its busy part (t_mix per step) and the idle gap (t_dec per step)."""
    request = np.asarray(request)
    first = np.asarray(first_s, dtype=float)
    steps = np.asarray(steps, dtype=float)
    c = 1.0 / t_dec_s - 1.0 / t_mix_s
    k = request % busy.instances
    base = busy.cum[busy.bounds[k]]
    target = first / t_dec_s - busy.busy_until(request, first) * c + steps
    lo = busy.bounds[k] - 1                            # last row with prog(start) <= target
    hi = busy.bounds[k + 1] - 1
    top = len(busy.start) - 1
    while True:
        open_ = lo < hi
        if not open_.any():
            break
        mid = np.minimum((lo + hi + 1) // 2, top)
        prog = busy.start[mid] / t_dec_s - (busy.cum[mid] - base) * c
        ok = open_ & (prog <= target)
        lo = np.where(ok, mid, lo)
        hi = np.where(open_ & ~ok, mid - 1, hi)
    has = lo >= busy.bounds[k]
    j = np.maximum(lo, 0)
    start = np.where(has, busy.start[j], -np.inf)
    end = np.where(has, busy.start[j] + busy.length[j], -np.inf)
    anchor = np.maximum(first, start)                  # from here: busy until `end`, then idle
    done_before = np.where(has & (start > first), busy.cum[j] - base, busy.busy_until(request, first))
    left = target - (anchor / t_dec_s - done_before * c)
    busy_part = np.maximum(end - anchor, 0.0)
    t_end = np.where(left <= busy_part / t_mix_s, anchor + left * t_mix_s,
                     anchor + busy_part + (left - busy_part / t_mix_s) * t_dec_s)
    return np.where(steps > 0, np.maximum(t_end - first, 0.0), 0.0)


def _iteration_mean_s(busy_share, t_mix_s, t_dec_s):
    """Mean iteration time of an instance busy with prefill for a share `busy_share` of
    its time: rho / t_mix mixed iterations and (1 - rho) / t_dec plain decode iterations
    per second."""
    return 1.0 / (busy_share / t_mix_s + (1.0 - busy_share) / t_dec_s)


def _predict_sarathi(dep, perf, wl: Workload, seed: int, screen=None, screen_only: bool = False):
    n = dep.coupled.instances
    budget = dep.chunk_tokens
    tau, t_mix, t_dec, p_tok, rho, load = sarathi_window_times(perf, wl, n, budget)
    limits: list[str] = []
    if np.isinf(tau).any():
        limits.append(f"chunked coupled pool saturated in {int(np.isinf(tau).sum())} of {wl.windows} windows "
                      f"(decode batch plus prefill exceed the {budget}-token budget)")
    need = kv_tokens_needed(load, np.where(np.isinf(tau), 0.0, tau))
    cap = perf.kv_capacity_tokens
    kv_peak = float(need.max() / cap) if cap > 0 else float("inf")
    biggest = wl.max_request_tokens
    if biggest > cap:
        limits.append(f"the longest request needs {biggest} KV tokens, one instance holds {cap}")
    elif kv_peak > 1.0:
        limits.append(f"KV memory short: busiest window needs {kv_peak:.2f}x the {cap} tokens one instance holds")
    if screen is not None and limits:
        return None                 # infeasible: no need for the per-request part
    s = wl.sample
    w = wl.window_index[s]
    ps = wl.prompt_tokens[s]
    alone = np.ceil(ps / np.maximum(p_tok[w], 1.0)) * t_mix[w]
    rng = np.random.default_rng(seed)
    b, t = batch_seen(wl, load, np.where(np.isinf(tau), 0.0, tau), rng)
    steps = np.maximum(wl.output_tokens[s] - 1, 0)
    own = ps + wl.output_tokens[s] / 2.0
    p_i = np.maximum(budget - 1.0 - b, 1.0)
    mix_i = perf.mixed_time_s(p_i, np.maximum(ps - p_i, 0.0) / 2.0, 1.0 + b, own + t)
    dec_i = perf.decode_time_s(1.0 + b, own + t)
    saturated = np.isinf(tau[w])
    # lower bounds for the screen: no queue wait, and decode-only iterations (share 0)
    if screen is not None and (limits or _misses(screen, np.where(saturated, np.inf, alone),
                                                  np.where(saturated, np.inf, dec_i), steps)):
        return None
    if screen_only:
        return True
    per_tok = np.where(np.isinf(tau), 0.0, t_mix / np.maximum(p_tok, 1.0))
    work = wl.prompt_tokens * per_tok[wl.window_index]
    busy = PrefillBusy.round_robin(wl.arrival_s, work, n)      # per-instance queue (fewest-outstanding dispatch)
    ttft = np.where(saturated, np.inf, busy.backlog_at(s) + alone)
    first = wl.arrival_s[s] + np.where(saturated, 0.0, ttft)
    life = decode_life_s(busy, s, np.where(saturated, 0.0, first), steps, mix_i, dec_i)
    tpot = np.where(saturated, np.inf, np.where(steps > 0, life / np.maximum(steps, 1), dec_i))
    jct = ttft + decode_time_s(steps, tpot)
    mean_b = load.rate_per_s * load.steps * np.where(np.isinf(tau), 0.0, tau)
    util = {"mean": float(np.average(np.where(np.isfinite(rho), rho, 1.0), weights=np.maximum(wl.window_requests, 1e-12))),
            "peak_window": float(np.max(np.where(np.isfinite(rho), rho, np.inf)))}
    return {"mode": "chunked_coupled", "model": "queueing", "limits": limits, "feasible": not limits,
            "ttft_s": percentiles(ttft), "tpot_s": percentiles(tpot[steps > 0]), "jct_s": percentiles(jct),
            "utilisation": {"prefill": util, "decode_kv_peak": kv_peak},
            "decode_batch": {"mean": float(np.average(mean_b, weights=np.maximum(wl.window_requests, 1e-12))),
                             "peak_window": float(mean_b.max())},
            "kv_peak_fraction": kv_peak}, (ttft, tpot, steps)
