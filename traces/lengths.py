"""Token-length distributions for the synthetic generator, fitted to public traces.

Each marginal (prompt or output tokens) is a Weibull, lognormal or power law truncated above at
`cap_tokens`, sampled by inverse CDF so that any sub-range (a TetriInfer class, a model's
context limit) is drawn exactly from the fitted law restricted to that range.

Provenance of the parameters: fitted by `traces.fitting.fit_length_dist` (quantile matching
on p10/p25/p50/p75/p90/p99 plus the mean, in log space; the family per marginal chosen by
the better fit) to the files in ../shared/traces/ on 2026-11-24;
`tests/test_traces_lengths.py` refits them from those files and checks they still agree.
Fitted versus measured (p10 / p50 / p90 / p99, mean; then P(light) = P(prompt <= 512) or
P(output <= 128), which is what TetriInfer's classes see):

  marginal           column (file)                          law, cap       fit                             data
  azure-conv prompt  ContextTokens (azure2023_conv.csv)     lognorm 8192   242/753/2320/5373, 1084; 0.33   207/1020/2734/4142, 1155; 0.39
  azure-conv output  GeneratedTokens (azure2023_conv.csv)   lognorm 1000   54/156/437/833, 208; 0.41       54/129/424/601, 211; 0.50
  azure-code prompt  ContextTokens (azure2023_code.csv)     weibull 7437   157/1445/4975/7093, 2033; 0.25  147/1469/5188/7436, 2048; 0.23
  azure-code output  GeneratedTokens (azure2023_code.csv)   lognorm 2048   5/17/62/173, 28; 0.98           7/13/55/251, 28; 0.97
  sharegpt prompt    context_tokens (sharegpt_v3_lengths)   power   2048   47/658/1723/2015, 776; 0.43     37/727/1618/1941, 797; 0.38
  sharegpt output    response_tokens (same, zeros removed)  weibull 2048   59/227/538/886, 270; 0.27       50/255/550/769, 280; 0.24

Two parameters cannot follow Azure conv's lumpy body (its median sits below what its p90
implies), so that profile has fewer light requests than the data (0.33 vs 0.39 prompts,
0.41 vs 0.50 outputs). The generator's "mixed" kind therefore sets class shares explicitly
(traces/synthetic.py) and uses these laws only for lengths within a class.

The caps are where each dataset stops (Azure conv outputs end at 1000 tokens, Azure code
prompts at 7437, ShareGPT's history at ~2048); the generator narrows them further to the
served model's context (max_total_tokens).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from planner.errors import InputError

FAMILIES = ("weibull", "lognormal", "power")


@dataclass(frozen=True)
class LengthDist:
    """`weibull`: shape k, scale s (tokens). `lognormal`: shape sigma, scale exp(mu) (tokens).
    `power`: P(X <= x) = (x / cap)^k, shape k (scale is the cap; the limit of a Weibull whose
    scale is far above the cap, which is how ShareGPT's history-capped prompts look).
    The law is truncated to (0, cap_tokens]."""
    family: str
    shape: float
    scale_tokens: float
    cap_tokens: int

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise InputError(f"length distribution family must be one of {FAMILIES}, got {self.family!r}")
        if not (self.shape > 0 and self.scale_tokens > 0 and self.cap_tokens >= 1):
            raise InputError(f"length distribution needs shape, scale > 0 and cap >= 1, got {self}")

    def sf(self, x) -> np.ndarray:
        """Survival function P(X > x) of the untruncated law (precise in the upper tail)."""
        x = np.maximum(np.asarray(x, dtype=np.float64), 0.0)
        if self.family == "weibull":
            return np.exp(-np.power(x / self.scale_tokens, self.shape))
        if self.family == "power":
            return 1.0 - np.power(np.minimum(x / self.cap_tokens, 1.0), self.shape)
        with np.errstate(divide="ignore"):
            z = (np.log(x) - np.log(self.scale_tokens)) / self.shape
        return ndtr(-z)

    def isf(self, q) -> np.ndarray:
        """Inverse of sf."""
        q = np.asarray(q, dtype=np.float64)
        if self.family == "weibull":
            return self.scale_tokens * np.power(-np.log(q), 1.0 / self.shape)
        if self.family == "power":
            return self.cap_tokens * np.power(1.0 - q, 1.0 / self.shape)
        return self.scale_tokens * np.exp(-self.shape * ndtri(q))

    def quantile(self, p) -> np.ndarray:
        """Quantiles (continuous, tokens) of the law truncated to (0, cap]."""
        s_cap = self.sf(self.cap_tokens)
        return self.isf(1.0 - np.asarray(p, dtype=np.float64) * (1.0 - s_cap))

    def mean_tokens(self, grid: int = 4000) -> float:
        """Mean of the truncated law (midpoint rule over its quantile function)."""
        return float(self.quantile((np.arange(grid) + 0.5) / grid).mean())

    def sample(self, rng: np.random.Generator, n: int, lo_tokens=1, hi_tokens=None) -> np.ndarray:
        """`n` integer lengths in [lo, hi] (either may be an array of length n), drawn from
        the law restricted to that range: a continuous draw in (lo-1, hi] rounded up."""
        hi = self.cap_tokens if hi_tokens is None else np.minimum(hi_tokens, self.cap_tokens)
        lo = np.asarray(lo_tokens, dtype=np.float64)
        hi = np.asarray(hi, dtype=np.float64)
        if np.any(lo > hi) or np.any(lo < 1):
            raise InputError(f"cannot draw token lengths in [{np.min(lo):.0f}, {np.min(hi):.0f}]: empty range")
        s_lo, s_hi = self.sf(lo - 1.0), self.sf(hi)
        u = rng.random(n)
        q = s_hi + u * (s_lo - s_hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = self.isf(q)
        # Where the range has no mass in floating point (far tail), draw uniformly in it.
        flat = ~np.isfinite(x) | (s_lo - s_hi <= 1e-300)
        if np.any(flat):
            x = np.where(flat, (lo - 1.0) + u * (hi - lo + 1.0), x)
        return np.clip(np.ceil(x), lo, hi).astype(np.int64)


@dataclass(frozen=True)
class LengthProfile:
    name: str
    prompt: LengthDist
    output: LengthDist
    source: str


# Fitted 2026-11-24 (see module docstring); the refit test keeps these honest.
AZURE_CONV = LengthProfile(
    "azure-conv",
    prompt=LengthDist("lognormal", 0.8881, 755.77, 8192),
    output=LengthDist("lognormal", 0.8391, 157.90, 1000),
    source="Azure LLM inference trace 2023, conversation (azure2023_conv.csv)")
AZURE_CODE = LengthProfile(
    "azure-code",
    prompt=LengthDist("weibull", 0.8317, 2657.58, 7437),
    output=LengthDist("lognormal", 0.9909, 17.30, 2048),
    source="Azure LLM inference trace 2023, code completion (azure2023_code.csv)")
SHAREGPT = LengthProfile(
    "sharegpt",
    prompt=LengthDist("power", 0.6106, 2048, 2048),
    output=LengthDist("weibull", 1.391, 295.40, 2048),
    source="ShareGPT V3 per-turn lengths with history, cl100k (sharegpt_v3_lengths_cl100k.csv)")
PROFILES = {p.name: p for p in (AZURE_CONV, AZURE_CODE, SHAREGPT)}


def profile(name: str) -> LengthProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise InputError(f"unknown length profile {name!r}; choose one of {', '.join(PROFILES)}") from None
