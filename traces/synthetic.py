"""Synthetic traces for TetriInfer's five workload classes (LPLD, LPHD, HPLD, HPHD, mixed).

Lengths: each class draws its prompt and output lengths from a fitted length profile
(traces/lengths.py) restricted to the class's side of the thresholds, and to the served
model's context (prompt + output <= max_total_tokens; 2048 for OPT). "mixed" draws the
class of each request first, with `shares` (default: the Azure conversation trace's
measured 28.6/10.9/21.2/39.4%), then its lengths within that class. Prompt and output are drawn
independently within a class.

Arrivals: traces/arrivals.py (Poisson, Gamma with a CV, optional rate modulation).
Everything comes from one seeded numpy Generator: same arguments, same trace.
"""
from __future__ import annotations

import numpy as np

from planner.errors import InputError

from .arrivals import RateModulation, arrival_times
from .classes import CLASSES, KINDS, ClassThresholds
from .lengths import LengthProfile, profile as length_profile
from .trace import Trace

# LPLD/LPHD/HPLD/HPHD shares measured on azure2023_conv.csv at 512/128 (`planner trace stats`).
AZURE_CONV_SHARES = (0.2857, 0.1090, 0.2119, 0.3935)
OPT_MAX_TOTAL_TOKENS = 2048  # OPT's max_position_embeddings


def class_ranges(cls: str, thresholds: ClassThresholds, prof: LengthProfile,
                 max_total_tokens: int) -> tuple[int, int, int, int]:
    """(prompt_lo, prompt_hi, output_lo, output_hi) for a class, before the per-request
    context limit; raises InputError when the class cannot fit the context."""
    lp, lo = thresholds.light_prompt_tokens, thresholds.light_output_tokens
    p_lo, p_hi = (1, lp) if cls[:2] == "LP" else (lp + 1, prof.prompt.cap_tokens)
    o_lo, o_hi = (1, lo) if cls[2:] == "LD" else (lo + 1, prof.output.cap_tokens)
    p_hi = min(p_hi, max_total_tokens - o_lo)
    o_hi = min(o_hi, max_total_tokens - p_lo)
    if p_lo > p_hi or o_lo > o_hi:
        raise InputError(f"class {cls} cannot fit: thresholds {lp}/{lo} tokens leave no room within "
                         f"max_total_tokens={max_total_tokens} (and the profile caps "
                         f"{prof.prompt.cap_tokens}/{prof.output.cap_tokens}); raise max_total_tokens")
    return p_lo, p_hi, o_lo, o_hi


def sample_class_lengths(rng: np.random.Generator, cls: str, n: int, prof: LengthProfile,
                         thresholds: ClassThresholds, max_total_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    p_lo, p_hi, o_lo, o_hi = class_ranges(cls, thresholds, prof, max_total_tokens)
    prompt = prof.prompt.sample(rng, n, p_lo, p_hi)
    output = prof.output.sample(rng, n, o_lo, np.minimum(o_hi, max_total_tokens - prompt))
    return prompt, output


def _shares(shares) -> np.ndarray:
    s = np.asarray(AZURE_CONV_SHARES if shares is None else shares, dtype=np.float64)
    if s.shape != (4,) or not np.all(np.isfinite(s)) or np.any(s < 0) or s.sum() <= 0:
        raise InputError(f"mixed shares must be four non-negative numbers (LPLD,LPHD,HPLD,HPHD), got {shares}")
    return s / s.sum()


def generate(kind: str, *, n_requests: int | None = None, duration_s: float | None = None,
             rate_per_s: float, cv: float = 1.0, seed: int = 0, profile: str = "azure-conv",
             thresholds: ClassThresholds = ClassThresholds(), max_total_tokens: int = OPT_MAX_TOTAL_TOKENS,
             shares=None, modulation: RateModulation = RateModulation()) -> Trace:
    """A synthetic trace of `kind` (lpld, lphd, hpld, hphd, mixed): `n_requests` requests or
    all arrivals within `duration_s`, at mean `rate_per_s` with inter-arrival CV `cv`."""
    kind = kind.lower()
    if kind not in KINDS:
        raise InputError(f"unknown trace kind {kind!r}; choose one of {', '.join(KINDS)}")
    if max_total_tokens < 2:
        raise InputError(f"max_total_tokens must be >= 2, got {max_total_tokens}")
    if n_requests is not None and n_requests < 1:
        raise InputError(f"request count must be >= 1, got {n_requests}")
    prof = length_profile(profile)
    rng = np.random.default_rng(seed)
    arrivals = arrival_times(rate_per_s, n_requests=n_requests, duration_s=duration_s, cv=cv,
                             seed=rng, modulation=modulation)
    n = len(arrivals)
    prompt = np.empty(n, dtype=np.int64)
    output = np.empty(n, dtype=np.int64)
    if kind == "mixed":
        which = rng.choice(4, size=n, p=_shares(shares))
    else:
        which = np.full(n, CLASSES.index(kind.upper()))
    for i, cls in enumerate(CLASSES):
        idx = np.flatnonzero(which == i)
        if len(idx):
            prompt[idx], output[idx] = sample_class_lengths(rng, cls, len(idx), prof, thresholds, max_total_tokens)
    # Microsecond resolution: what write_trace keeps, so a written trace reads back equal.
    arrivals = np.round(arrivals, 6)
    return Trace(arrivals, prompt, output, name=f"{kind}-{profile}-r{rate_per_s:g}-s{seed}")
