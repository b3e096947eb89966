"""What a verification replays: the whole trace, or for a trace too large to replay many
times within the time budget, a stratified sample of time windows.

The sample keeps whole windows (contiguous spans of the trace, arrivals as they were, so
bursts and queues inside a window are real), chosen by load: the trace's windows sorted by
their work (prompt + output tokens), cut into `strata` groups of equal window count, the
window at each group's median taken, and the busiest window always in (it replaces its
group's median). Each chosen window is preceded by a warm-up span (the real requests of
the `warmup_fraction` of a window before it: simulated so the window starts loaded, not
counted) and an idle gap (so the previous window's backlog drains before the warm-up).
Percentiles are weighted: a counted request stands for its group's requests divided by
the window's, so the sample's percentiles estimate the whole trace's, the busiest window
included at its true share.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STRATA = 8                  # at most; fewer for a small sample, so each window holds >= WINDOW_REQUESTS
WINDOW_REQUESTS = 1_500
WARMUP_FRACTION = 0.25
MIN_WINDOW_S = 1.0


@dataclass(frozen=True, eq=False)
class VerifyTrace:
    """The trace a verification replays; `weights` (None: every request counts once) are
    per request of `trace`, 0 for warm-up requests."""
    trace: object
    weights: np.ndarray | None
    requests_total: int
    note: str
    windows: int = 0
    window_s: float = 0.0

    @property
    def sampled(self) -> bool:
        return self.weights is not None

    def as_dict(self) -> dict:
        return {"sampled": self.sampled, "requests_total": self.requests_total,
                "requests_replayed": len(self.trace),
                "requests_counted": int(len(self.trace) if self.weights is None else np.count_nonzero(self.weights)),
                "windows": self.windows, "window_s": self.window_s, "note": self.note}


def verification_trace(trace, max_requests: int, sample_requests: int | None = None, *,
                       strata: int | None = None, warmup_fraction: float = WARMUP_FRACTION) -> VerifyTrace:
    """The whole trace when it has at most `max_requests` requests, else a stratified
    sample of about `sample_requests` (default `max_requests`) requests, warm-ups included,
    in `strata` windows (default: up to STRATA, each with about WINDOW_REQUESTS or more)."""
    n = len(trace)
    if n <= max_requests:
        return VerifyTrace(trace, None, n, f"the whole trace ({n:,} requests)")
    max_requests = int(sample_requests or max_requests)
    if strata is None:
        strata = max(2, min(STRATA, max_requests // WINDOW_REQUESTS))
    a = np.asarray(trace.arrival_s, dtype=float)
    span = float(a[-1] - a[0])
    k = max(1, int(strata))
    # windows sized so that k of them plus their warm-ups hold about max_requests at the mean rate
    per_window = max_requests / (k * (1.0 + warmup_fraction))
    window_s = max(span * per_window / n, MIN_WINDOW_S)
    n_win = max(int(np.ceil(span / window_s)), 1)
    if n_win <= k:
        return VerifyTrace(trace, None, n, f"the whole trace ({n:,} requests)")
    idx = np.minimum(((a - a[0]) / window_s).astype(np.int64), n_win - 1)
    work = np.asarray(trace.prompt_tokens, dtype=float) + np.asarray(trace.output_tokens, dtype=float)
    load = np.bincount(idx, weights=work, minlength=n_win)
    count = np.bincount(idx, minlength=n_win).astype(float)
    order = np.argsort(load, kind="stable")
    groups = [g for g in np.array_split(order, k) if len(g)]
    chosen, weight_of = [], {}
    for j, g in enumerate(groups):
        w = int(g[-1]) if j == len(groups) - 1 else int(g[len(g) // 2])   # the top group: the busiest window
        if count[w] == 0:
            nz = g[count[g] > 0]
            if not len(nz):
                continue
            w = int(nz[len(nz) // 2])
        chosen.append(w)
        weight_of[w] = float(count[g].sum() / count[w])
    chosen.sort()
    warm_s = warmup_fraction * window_s
    parts_a, parts_p, parts_o, parts_w = [], [], [], []
    t = 0.0
    for w in chosen:
        lo = a[0] + w * window_s
        hi = lo + window_s
        i0, i1, i2 = np.searchsorted(a, [lo - warm_s, lo, hi], side="left")
        if w == n_win - 1:
            i2 = n
        seg = a[i0:i2] - (lo - warm_s)
        t += warm_s                                   # idle gap: the previous window drains
        parts_a.append(seg + t)
        parts_p.append(trace.prompt_tokens[i0:i2])
        parts_o.append(trace.output_tokens[i0:i2])
        parts_w.append(np.concatenate([np.zeros(i1 - i0), np.full(i2 - i1, weight_of[w])]))
        t += warm_s + window_s
    from traces.trace import Trace
    sample = Trace(np.concatenate(parts_a), np.concatenate(parts_p), np.concatenate(parts_o),
                   name=getattr(trace, "name", ""))
    weights = np.concatenate(parts_w)
    counted = int(np.count_nonzero(weights))
    note = (f"a stratified sample of {counted:,} of the trace's {n:,} requests: {len(chosen)} windows of "
            f"{window_s:,.0f} s, one per load stratum (the busiest window included), each replayed after "
            f"{warm_s:,.0f} s of warm-up; percentiles weighted by stratum")
    return VerifyTrace(sample, weights, n, note, len(chosen), window_s)


def weighted_quantiles(values: np.ndarray, weights: np.ndarray | None, qs) -> list[float]:
    """Quantiles (qs in percent) of `values` under `weights` (None: plain percentiles, as
    numpy's default linear interpolation); the weighted form takes the smallest value whose
    cumulative weight reaches q% of the total."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return [float("nan")] * len(qs)
    if weights is None:
        return [float(x) for x in np.percentile(v, list(qs))]
    w = np.asarray(weights, dtype=float)
    keep = w > 0
    v, w = v[keep], w[keep]
    if len(v) == 0:
        return [float("nan")] * len(qs)
    order = np.argsort(v, kind="stable")
    v, c = v[order], np.cumsum(w[order])
    total = c[-1]
    return [float(v[min(int(np.searchsorted(c, q / 100.0 * total, side="left")), len(v) - 1)]) for q in qs]
