"""The output-length classifier on the prefill worker (TetriInfer runs OPT-125M there).

Traces carry no prompt text, so a trained classifier's answer would mean nothing here.
The testbed keeps its *cost* real: a small OPT decoder (opt-125m scaled, seeded random
weights) with a linear classification head runs a forward pass over each prompt's tokens
on the prefill worker. Its *label* is drawn like the simulator's predictor
(`planner.sim.predictor.LengthPredictor`, the same seed over the same trace), so the
testbed and the simulator dispatch on the same predicted buckets; the scheduler hands each
request its drawn label and the worker reports it after the classifier has run.
"""
from __future__ import annotations

import torch

from ..model import build_model

MAX_CLASSIFIER_TOKENS = 512    # the classifier reads at most the prompt's last 512 tokens


class LengthClassifier:
    def __init__(self, *, layers: int = 1, hidden: int = 128, buckets: int = 16, seed: int = 0,
                 device: str = "cpu", dtype: str = "fp32"):
        self.model = build_model("opt-125m", layers=layers, hidden=hidden, seed=seed + 7919,
                                 dtype=dtype, device=device)
        self.decoder = self.model.model
        g = torch.Generator().manual_seed(seed + 104729)
        w = torch.randn(buckets, hidden, generator=g) * hidden ** -0.5
        self.head = w.to(device=device, dtype=self.model.dtype)
        self.device = torch.device(device)

    @torch.inference_mode()
    def run(self, prompts: list[torch.Tensor]) -> list[int]:
        """The classifier's own bucket per prompt (a real forward pass; the testbed reports
        the drawn label instead, see the module docstring)."""
        out = []
        for ids in prompts:
            ids = ids[-MAX_CLASSIFIER_TOKENS:].to(self.device).unsqueeze(0)
            h = self.decoder(input_ids=ids).last_hidden_state[0, -1]
            out.append(int(torch.argmax(self.head @ h)))
        return out
