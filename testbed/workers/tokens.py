"""Prompt token ids. Traces carry lengths, not text: every request's prompt is drawn from a
generator seeded by (seed, request id), so any process (and a test) can rebuild it."""
from __future__ import annotations

import torch

FIRST_TOKEN_ID = 4       # skip OPT's special ids 0..3 (bos/pad/eos/unk)


def prompt_ids(seed: int, rid: int, prompt_tokens: int, vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(rid)) & ((1 << 63) - 1))
    return torch.randint(FIRST_TOKEN_ID, vocab, (int(prompt_tokens),), generator=g, dtype=torch.long)
