"""Where a batch of tokens routed at random lands on expert-parallel GPUs: the busiest GPU's
expert-token pairs and distinct experts, which set a MoE layer's time (every GPU waits for
the busiest at the combine).

The measured MoE tables route balanced: at t tokens every one of the ep GPUs computes
t k / ep pairs over min(E / ep, t k / ep) of its experts. Independent requests route at
random: each token takes its top-k experts, under group-limited routing (DeepSeek-V3's
n_group / topk_group) only from its topk_group best groups of experts. On one GPU
(ep = 1) the pairs are exactly t k and the experts touched E (1 - (1 - k / E)^t) on
average; on ep GPUs the busiest holds more than the mean of both, by much at decode batch
sizes (DeepSeek-R1, EP 8, 4 tokens: 32 pairs, 4 per GPU on average, 7-8 on the busiest)
and little at prompt sizes (relative spread ~ 1 / sqrt(t k / ep)). Expected maxima are
sampled (seeded, so plans are reproducible) on a grid of token counts and interpolated;
past the grid the pairs follow the central limit (mean + c sqrt(t)) and every expert of a
GPU is touched. Routing is taken as independent and uniform over the allowed experts: real
gates prefer some experts (EPLB exists for that), so this is a floor on the imbalance.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

_TRIAL_ELEMENTS = 1 << 20      # scores drawn per grid point (trials x tokens x experts)
_MIN_TRIALS, _MAX_TRIALS = 16, 256
_SATURATED = 0.995             # past the grid: a GPU's experts are all touched


def _grid(experts: int, topk: int, ep: int) -> np.ndarray:
    """Token counts to sample: up to where every GPU's experts are nearly all touched and
    its pairs number at least 64 on average."""
    local_full = np.log(1.0 - _SATURATED) / np.log(1.0 - topk / experts)
    top = max(local_full, 64.0 * ep / topk, 8.0)
    top = 2.0 ** np.ceil(np.log2(top))
    g = np.unique(np.round(np.concatenate([[1, 2, 3], 2.0 ** np.arange(2, np.log2(top) + 0.5, 0.5)])))
    return g[g <= top]


def _sample(tokens: int, experts: int, topk: int, ep: int, groups: int, groups_per_token: int,
            rng: np.random.Generator) -> tuple[float, float]:
    """(E[max pairs], E[max distinct experts]) over the ep GPUs for `tokens` tokens."""
    trials = int(np.clip(_TRIAL_ELEMENTS // (tokens * experts), _MIN_TRIALS, _MAX_TRIALS))
    scores = rng.random((trials, tokens, experts), dtype=np.float32)
    if groups > 1 and groups_per_token < groups:
        per_group = experts // groups
        g = rng.random((trials, tokens, groups), dtype=np.float32)
        keep = np.argpartition(g, groups - groups_per_token, axis=-1)[..., groups - groups_per_token:]
        allowed = np.zeros((trials, tokens, groups), dtype=bool)
        np.put_along_axis(allowed, keep, True, axis=-1)
        scores = np.where(np.repeat(allowed, per_group, axis=-1), scores + 1.0, scores)
    chosen = np.argpartition(scores, experts - topk, axis=-1)[..., experts - topk:]
    # every trial's expert counts at once: trial tr's experts offset by tr x experts
    flat = (chosen.reshape(trials, -1) + np.arange(trials)[:, None] * experts).ravel()
    per_gpu = np.bincount(flat, minlength=trials * experts).reshape(trials, ep, experts // ep)
    pairs = per_gpu.sum(axis=-1).max(axis=-1)
    distinct = (per_gpu > 0).sum(axis=-1).max(axis=-1)
    return float(pairs.mean()), float(distinct.mean())


@lru_cache(maxsize=64)
def _table(experts: int, topk: int, ep: int, groups: int, groups_per_token: int):
    rng = np.random.default_rng(0)
    grid = _grid(experts, topk, ep)
    pairs, distinct = zip(*(_sample(int(t), experts, topk, ep, groups, groups_per_token, rng) for t in grid))
    pairs, distinct = np.asarray(pairs), np.asarray(distinct)
    # past the grid: the spread of the busiest GPU's pairs grows as sqrt(t)
    spread = (pairs[-1] - grid[-1] * topk / ep) / np.sqrt(grid[-1])
    return grid, pairs, distinct, max(spread, 0.0)


def busiest_gpu(tokens, experts: int, topk: int, ep: int, groups: int = 1,
                groups_per_token: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Expected (pairs, distinct experts) of the busiest of `ep` GPUs, each holding
    experts / ep of the experts, when `tokens` tokens (array) route at random."""
    t = np.maximum(np.asarray(tokens, dtype=float), 1.0)
    local = experts / ep
    if ep <= 1 or experts % ep:
        return t * topk, experts * (1.0 - (1.0 - topk / experts) ** t)
    if groups <= 1 or experts % groups or groups_per_token >= groups:
        groups, groups_per_token = 1, 1
    grid, pairs, distinct, spread = _table(experts, topk, ep, groups, groups_per_token)
    lg = np.log(t)
    p = np.where(t <= grid[-1], np.interp(lg, np.log(grid), pairs), t * topk / ep + spread * np.sqrt(t))
    d = np.where(t <= grid[-1], np.interp(lg, np.log(grid), distinct), local)
    return p, np.minimum(d, local)
