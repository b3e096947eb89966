"""Arrival processes: renewal (Poisson, or Gamma gaps with a chosen CV), optionally with
the rate modulated over time (a diurnal sine or periodic bursts) by time rescaling.

Time rescaling: draw a unit-rate renewal process in "operational time" tau, then map each
point back to wall time with t = Lambda^-1(tau), Lambda(t) = rate * integral_0^t m(u) du.
The multiplier m is normalised to mean 1 over its period, so `rate_per_s` is the long-run
mean rate whatever the modulation, and the CV is that of the gaps before modulation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from planner.errors import InputError

MODULATIONS = ("none", "diurnal", "bursts")


@dataclass(frozen=True)
class RateModulation:
    """`diurnal`: m(t) = 1 + amplitude * sin(2 pi t / period_s), amplitude in [0, 1).
    `bursts`: every period_s, the first burst_s seconds run at burst_factor times the base
    rate (then rescaled so the mean over a period is 1)."""
    kind: str = "none"
    period_s: float = 3600.0
    amplitude: float = 0.5
    burst_factor: float = 4.0
    burst_s: float = 30.0

    def __post_init__(self):
        if self.kind not in MODULATIONS:
            raise InputError(f"rate modulation must be one of {', '.join(MODULATIONS)}, got {self.kind!r}")
        if not self.period_s > 0:
            raise InputError(f"modulation period must be > 0 s, got {self.period_s}")
        if self.kind == "diurnal" and not 0 <= self.amplitude < 1:
            raise InputError(f"diurnal amplitude must be in [0, 1), got {self.amplitude}")
        if self.kind == "bursts" and not (self.burst_factor > 0 and 0 < self.burst_s <= self.period_s):
            raise InputError("bursts need burst_factor > 0 and 0 < burst_s <= period_s, got "
                             f"factor {self.burst_factor}, burst {self.burst_s} s, period {self.period_s} s")

    def multiplier(self, t_s) -> np.ndarray:
        """m(t): the instantaneous rate over the mean rate (mean 1 over a period)."""
        t = np.asarray(t_s, dtype=np.float64)
        if self.kind == "diurnal":
            return 1.0 + self.amplitude * np.sin(2 * np.pi * t / self.period_s)
        if self.kind == "bursts":
            norm = 1.0 + (self.burst_factor - 1.0) * self.burst_s / self.period_s
            return np.where(np.mod(t, self.period_s) < self.burst_s, self.burst_factor, 1.0) / norm
        return np.ones_like(t)

    def cumulative(self, t_s) -> np.ndarray:
        """Integral of m from 0 to t (closed form)."""
        t = np.asarray(t_s, dtype=np.float64)
        if self.kind == "diurnal":
            w = 2 * np.pi / self.period_s
            return t + self.amplitude / w * (1.0 - np.cos(w * t))
        if self.kind == "bursts":
            norm = 1.0 + (self.burst_factor - 1.0) * self.burst_s / self.period_s
            full, rem = np.divmod(t, self.period_s)
            per_period = self.burst_factor * self.burst_s + (self.period_s - self.burst_s)
            in_burst = np.minimum(rem, self.burst_s)
            part = self.burst_factor * in_burst + (rem - in_burst)
            return (full * per_period + part) / norm
        return t


def _gaps(rng: np.random.Generator, n: int, cv: float) -> np.ndarray:
    """`n` unit-mean gaps: exponential for cv=1, Gamma(1/cv^2) otherwise, constant for cv=0."""
    if cv == 0:
        return np.ones(n)
    if cv == 1:
        return rng.exponential(1.0, n)
    shape = 1.0 / (cv * cv)
    return rng.gamma(shape, 1.0 / shape, n)


def _check(rate_per_s: float, cv: float) -> None:
    if not (math.isfinite(rate_per_s) and rate_per_s > 0):
        raise InputError(f"arrival rate must be > 0 requests/s, got {rate_per_s}")
    if not (math.isfinite(cv) and cv >= 0):
        raise InputError(f"inter-arrival CV must be >= 0, got {cv}")


def _to_wall_time(tau: np.ndarray, rate_per_s: float, modulation: RateModulation) -> np.ndarray:
    """Map operational time (mean-rate units: tau = rate * t for no modulation) to seconds."""
    t = tau / rate_per_s
    if modulation.kind == "none" or len(t) == 0:
        return t
    # Lambda(t)/rate = cumulative(t); invert on a grid fine against the period.
    horizon = max(float(t[-1]), 1e-9)
    while float(modulation.cumulative(horizon)) < t[-1]:
        horizon *= 2.0
    step = modulation.period_s / 2000.0
    if modulation.kind == "bursts":
        step = min(step, modulation.burst_s / 200.0)
    grid = np.linspace(0.0, horizon + step, int(np.ceil((horizon + step) / step)) + 2)
    return np.interp(t, modulation.cumulative(grid), grid)


def arrival_times(rate_per_s: float, *, n_requests: int | None = None, duration_s: float | None = None,
                  cv: float = 1.0, seed: int | np.random.Generator = 0,
                  modulation: RateModulation = RateModulation()) -> np.ndarray:
    """Arrival seconds, the first at 0. Give exactly one of `n_requests` (that many
    arrivals) or `duration_s` (all arrivals in [0, duration_s))."""
    _check(rate_per_s, cv)
    if (n_requests is None) == (duration_s is None):
        raise InputError("give exactly one of a request count or a duration")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if n_requests is not None:
        if n_requests < 0:
            raise InputError(f"request count must be >= 0, got {n_requests}")
        if n_requests == 0:
            return np.zeros(0)
        tau = np.concatenate([[0.0], np.cumsum(_gaps(rng, n_requests - 1, cv))])
        return _to_wall_time(tau, rate_per_s, modulation)
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise InputError(f"duration must be > 0 s, got {duration_s}")
    target = float(modulation.cumulative(duration_s)) * rate_per_s  # operational time to cover
    parts, total = [np.zeros(1)], 0.0
    chunk = int(target + 10 * math.sqrt(target) * max(cv, 1.0) + 16)
    while total < target:
        g = np.cumsum(_gaps(rng, chunk, cv)) + total
        parts.append(g)
        total = float(g[-1])
    tau = np.concatenate(parts)
    tau = tau[tau < target]
    t = _to_wall_time(tau, rate_per_s, modulation)
    return t[t < duration_s]
