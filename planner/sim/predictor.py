"""Output-length predictor: TetriInfer's classifier on the prefill instance, as a model.

The paper fine-tunes OPT-125M to predict a request's output-length bucket; with buckets of
200 tokens it is right 74.9% of the time. The simulator draws each prediction: right with
probability `accuracy`, otherwise a bucket `d` away with P(|d| = j) proportional to
`miss_decay ** (j - 1)` (a real classifier's misses land mostly next door), side chosen at
random and reflected at the edges. A confusion matrix from a file (rows: true bucket,
columns: predicted bucket, each row a distribution) replaces that model; accuracy 1.0 is the
perfect predictor. Resource estimates use the predicted bucket's lower bound.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from planner.errors import InputError

MISS_DECAY = 0.3   # P(miss by 2 buckets) / P(miss by 1 bucket), and so on


@dataclass(frozen=True)
class LengthPredictor:
    bucket_tokens: int = 200
    accuracy: float = 0.749
    miss_decay: float = MISS_DECAY
    confusion: np.ndarray | None = None   # (buckets, buckets) row-stochastic, or None

    def __post_init__(self):
        if self.bucket_tokens < 1:
            raise InputError(f"predictor bucket must be >= 1 token, got {self.bucket_tokens}")
        if not 0.0 <= self.accuracy <= 1.0:
            raise InputError(f"predictor accuracy must be in [0, 1], got {self.accuracy}")
        if self.confusion is not None:
            m = np.asarray(self.confusion, dtype=float)
            if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 1:
                raise InputError(f"confusion matrix must be square, got shape {m.shape}")
            if not np.isfinite(m).all() or np.any(m < 0) or np.any(m.sum(axis=1) <= 0):
                raise InputError("confusion matrix rows must be finite, non-negative, with a positive sum")
            object.__setattr__(self, "confusion", m / m.sum(axis=1, keepdims=True))

    def true_bucket(self, output_tokens) -> np.ndarray:
        """Bucket b holds outputs in [b * bucket, (b + 1) * bucket)."""
        return np.asarray(output_tokens, dtype=np.int64) // self.bucket_tokens

    def lower_bound_tokens(self, bucket) -> np.ndarray:
        return np.asarray(bucket, dtype=np.int64) * self.bucket_tokens

    def predict(self, output_tokens, seed: int = 0, n_buckets: int | None = None) -> np.ndarray:
        """Predicted bucket per request (vectorised, reproducible from `seed`)."""
        true = self.true_bucket(output_tokens)
        rng = np.random.default_rng(seed)
        if self.confusion is not None:
            return self._from_confusion(true, rng)
        nb = int(n_buckets) if n_buckets is not None else int(true.max(initial=0)) + 1
        nb = max(nb, int(true.max(initial=0)) + 1)
        pred = true.copy()
        if self.accuracy >= 1.0 or nb == 1 or len(true) == 0:
            return pred
        miss = rng.random(len(true)) >= self.accuracy
        idx = np.flatnonzero(miss)
        # distance j >= 1, geometric with ratio miss_decay; side +-1 at random
        u = rng.random(len(idx))
        decay = min(max(self.miss_decay, 1e-9), 1 - 1e-9)
        dist = 1 + np.floor(np.log1p(-u) / np.log(decay)).astype(np.int64)
        dist = np.minimum(dist, nb - 1)
        side = np.where(rng.random(len(idx)) < 0.5, -1, 1)
        cand = true[idx] + side * dist
        # reflect at the edges: a miss below bucket 0 or above the last goes the other way
        cand = np.where(cand < 0, true[idx] + dist, cand)
        cand = np.where(cand >= nb, true[idx] - dist, cand)
        pred[idx] = np.clip(cand, 0, nb - 1)
        return pred

    def _from_confusion(self, true: np.ndarray, rng) -> np.ndarray:
        m = self.confusion
        nb = m.shape[0]
        rows = np.minimum(true, nb - 1)   # outputs past the matrix use its last row
        cdf = np.cumsum(m, axis=1)
        u = rng.random(len(true))
        pred = np.empty(len(true), dtype=np.int64)
        for b in np.unique(rows):
            sel = rows == b
            pred[sel] = np.minimum(np.searchsorted(cdf[b], u[sel], side="right"), nb - 1)
        return pred


def read_confusion(path: str | Path) -> np.ndarray:
    """A confusion matrix CSV: one row per true bucket, one column per predicted bucket,
    counts or probabilities; an optional header row or index column of labels is skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read confusion matrix ({e.__class__.__name__})") from None
    rows = [r.split(",") for r in text.strip().splitlines() if r.strip()]

    def numeric(cells):
        try:
            return [float(c) for c in cells]
        except ValueError:
            return None
    if rows and numeric(rows[0]) is None:
        rows = rows[1:]
    data = []
    for i, r in enumerate(rows):
        vals = numeric(r)
        if vals is None:
            vals = numeric(r[1:])
        if vals is None:
            raise InputError(f"{path}: row {i + 1} is not numeric; expected a square matrix of counts")
        bad = [v for v in vals if not (np.isfinite(v) and 0 <= v <= 1e15)]
        if bad:
            raise InputError(f"{path}: row {i + 1} holds {bad[0]}; expected finite counts or shares >= 0")
        data.append(vals)
    try:
        return np.asarray(data, dtype=float)
    except ValueError:
        raise InputError(f"{path}: rows have different lengths; expected a square matrix") from None


def predictor_from_policies(policies, confusion=None, perfect: bool = False) -> LengthPredictor:
    if isinstance(confusion, (str, Path)):
        confusion = read_confusion(confusion)
    return LengthPredictor(bucket_tokens=policies.predictor_bucket_tokens,
                           accuracy=1.0 if perfect else policies.predictor_accuracy,
                           confusion=confusion)
