"""Trace statistics: load, burstiness, lengths and TetriInfer class shares.

Conventions (those of ../shared/traces/README.md): rate = requests / span, where span is
last arrival - first; CV = std / mean of the inter-arrival gaps (population std), 1.0 for
Poisson. Percentiles are numpy's default (linear interpolation).

Per-window rate: windows of `window_s` seconds from the first arrival; each window's rate
is its request count over its length. A trailing partial window shorter than half a
window is merged into the one before it, so a few stray requests at the end cannot show
up as a spike.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from planner.errors import InputError

from .classes import ClassThresholds, class_shares
from .trace import Trace

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class LengthStats:
    mean: float
    p50: float
    p90: float
    p99: float
    max: int


@dataclass(frozen=True)
class TraceStats:
    name: str
    requests: int
    span_s: float
    rate_per_s: float
    interarrival_cv: float
    window_s: float
    windows: int
    window_rate_mean_per_s: float
    window_rate_p90_per_s: float
    window_rate_max_per_s: float
    prompt_tokens: LengthStats
    output_tokens: LengthStats
    light_prompt_tokens: int
    light_output_tokens: int
    class_shares: dict[str, float]
    dropped: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)


def length_stats(x: np.ndarray) -> LengthStats:
    if len(x) == 0:
        return LengthStats(0.0, 0.0, 0.0, 0.0, 0)
    p50, p90, p99 = np.percentile(x, PERCENTILES)
    return LengthStats(float(np.mean(x)), float(p50), float(p90), float(p99), int(np.max(x)))


def interarrival_cv(arrival_s: np.ndarray) -> float:
    """std/mean of the gaps; 0.0 when there are fewer than two gaps or no time passes."""
    gaps = np.diff(arrival_s)
    if len(gaps) < 2 or gaps.mean() <= 0:
        return 0.0
    return float(gaps.std() / gaps.mean())


MAX_WINDOWS = 1_000_000   # per-window rates: more windows than this is a mistaken window


def window_rates(arrival_s: np.ndarray, window_s: float) -> np.ndarray:
    """Requests per second in each window (see the module docstring)."""
    if not window_s > 0:
        raise InputError(f"window must be > 0 s, got {window_s}")
    if len(arrival_s) == 0:
        return np.zeros(0)
    t = arrival_s - arrival_s[0]
    span = float(t[-1])
    if not span / window_s <= MAX_WINDOWS:   # a float comparison: a tiny window cannot overflow
        raise InputError(f"window of {window_s:g} s splits the {span:.6g} s trace into {span / window_s:,.3g} "
                         f"windows, more than {MAX_WINDOWS:,}; use a window >= {span / MAX_WINDOWS:.3g} s")
    n = max(1, int(np.ceil(span / window_s)))
    idx = np.minimum((t // window_s).astype(np.int64), n - 1)
    counts = np.bincount(idx, minlength=n).astype(np.float64)
    lengths = np.full(n, float(window_s))
    lengths[-1] = span - (n - 1) * window_s if span > 0 else window_s
    if n > 1 and lengths[-1] < window_s / 2:
        counts[-2] += counts[-1]
        lengths[-2] += lengths[-1]
        counts, lengths = counts[:-1], lengths[:-1]
    if lengths[-1] <= 0:  # a single window with no span (one request, or all at once)
        lengths[-1] = window_s
    return counts / lengths


def trace_stats(trace: Trace, window_s: float = 60.0, thresholds: ClassThresholds = ClassThresholds()) -> TraceStats:
    rates = window_rates(trace.arrival_s, window_s)
    return TraceStats(
        name=trace.name, requests=len(trace), span_s=trace.span_s, rate_per_s=trace.rate_per_s,
        interarrival_cv=interarrival_cv(trace.arrival_s), window_s=float(window_s), windows=len(rates),
        window_rate_mean_per_s=float(rates.mean()) if len(rates) else 0.0,
        window_rate_p90_per_s=float(np.percentile(rates, 90)) if len(rates) else 0.0,
        window_rate_max_per_s=float(rates.max()) if len(rates) else 0.0,
        prompt_tokens=length_stats(trace.prompt_tokens), output_tokens=length_stats(trace.output_tokens),
        light_prompt_tokens=thresholds.light_prompt_tokens, light_output_tokens=thresholds.light_output_tokens,
        class_shares=class_shares(trace.prompt_tokens, trace.output_tokens, thresholds),
        dropped=dict(trace.dropped))
