"""Faults a test injects into worker processes (docs/reliability.md), named in the
environment the launcher passes on: TESTBED_FAULTS="corrupt_kv=3" makes the prefill
worker that holds request 3 flip one byte of its KV cache after computing the checksum
and before sending it, as a broken link or a torn write would. Unset in normal runs; read
once per process."""
from __future__ import annotations

import os
from functools import lru_cache

ENV = "TESTBED_FAULTS"


@lru_cache(maxsize=1)
def faults() -> dict[str, str]:
    out = {}
    for item in os.environ.get(ENV, "").split(","):
        key, _, value = item.strip().partition("=")
        if key:
            out[key] = value
    return out


def corrupt_kv(rid: int, tensor):
    """The tensor to send for request `rid`: a corrupted copy if a test asked for it."""
    if faults().get("corrupt_kv") != str(rid) or tensor.numel() == 0:
        return tensor
    bad = tensor.clone()
    flat = bad.reshape(-1).view(__import__("torch").uint8)
    flat[flat.numel() // 2] ^= 0xFF
    return bad
