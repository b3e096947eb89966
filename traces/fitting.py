"""Fit a truncated length distribution to measured token counts (used to derive the
constants in traces/lengths.py, and by the test that re-derives them)."""
from __future__ import annotations

import numpy as np
from scipy import optimize

from .lengths import LengthDist

FIT_QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90, 0.99)


def fit_length_dist(tokens, family: str, cap_tokens: int) -> LengthDist:
    """Least squares, in log space, between the law's p10/p25/p50/p75/p90/p99 and mean (truncated at
    `cap_tokens`) and those of `tokens`. Quantile matching rather than maximum likelihood:
    the planner cares about the percentiles, and MLE lets the far tail drag the body."""
    x = np.asarray(tokens, dtype=np.float64)
    x = x[x > 0]
    target_q = np.log(np.percentile(x, np.array(FIT_QUANTILES) * 100))
    target_mean = np.log(x.mean())

    def make(theta) -> LengthDist:
        if family == "power":  # one parameter: the scale is the cap
            return LengthDist(family, float(np.exp(theta[0])), float(cap_tokens), cap_tokens)
        shape, scale = np.exp(theta)
        return LengthDist(family, float(shape), float(scale), cap_tokens)

    def loss(theta) -> float:
        d = make(theta)
        q = np.log(np.maximum(d.quantile(FIT_QUANTILES), 1e-9))
        return float(np.sum((q - target_q) ** 2) + (np.log(d.mean_tokens(1000)) - target_mean) ** 2)

    start_shape = 1.2 if family == "weibull" else 0.9
    start = np.log([start_shape, float(np.median(x))])
    if family == "power":
        start = start[:1]
    best = optimize.minimize(loss, start, method="Nelder-Mead",
                             options={"xatol": 1e-5, "fatol": 1e-9, "maxiter": 4000})
    return make(best.x)
