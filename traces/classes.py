"""TetriInfer's workload classes: light/heavy prefill crossed with light/heavy decode.

A request is light-prefill when its prompt has at most `light_prompt_tokens` tokens (512 in
the paper, OPT-13B's prefill saturation point on a V100) and light-decode when it generates
at most `light_output_tokens` tokens (128 in the paper). LPLD means both light, HPHD both
heavy; "mixed" is any blend of the four.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.errors import InputError

CLASSES = ("LPLD", "LPHD", "HPLD", "HPHD")
KINDS = ("lpld", "lphd", "hpld", "hphd", "mixed")


@dataclass(frozen=True)
class ClassThresholds:
    light_prompt_tokens: int = 512
    light_output_tokens: int = 128

    def __post_init__(self):
        if self.light_prompt_tokens < 1 or self.light_output_tokens < 1:
            raise InputError("class thresholds must be >= 1 token "
                             f"(got prompt {self.light_prompt_tokens}, output {self.light_output_tokens})")


def classify(prompt_tokens, output_tokens, thresholds: ClassThresholds = ClassThresholds()) -> np.ndarray:
    """Class index per request: 0 LPLD, 1 LPHD, 2 HPLD, 3 HPHD (the order of CLASSES)."""
    heavy_prefill = np.asarray(prompt_tokens) > thresholds.light_prompt_tokens
    heavy_decode = np.asarray(output_tokens) > thresholds.light_output_tokens
    return heavy_prefill.astype(np.int64) * 2 + heavy_decode.astype(np.int64)


def class_shares(prompt_tokens, output_tokens, thresholds: ClassThresholds = ClassThresholds()) -> dict[str, float]:
    """Fraction of requests in each class (0.0 each for an empty trace)."""
    idx = classify(prompt_tokens, output_tokens, thresholds)
    counts = np.bincount(idx, minlength=4)
    total = int(counts.sum())
    return {c: (float(counts[i]) / total if total else 0.0) for i, c in enumerate(CLASSES)}
