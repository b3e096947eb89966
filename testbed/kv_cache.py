"""One request's KV cache: a single contiguous tensor, easy to send between processes.

Layout: `data[capacity_tokens, layers, 2, kv_heads, head_dim]` (index 0 of the `2` axis is
K, 1 is V). Token-major, so the filled part `data[:length]` is ONE contiguous block: a
connector sends `view()` as it is (no gather, no copy) and the receiver copies it into the
front of a buffer of its own capacity (`from_view`, or `receive`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(eq=False)
class RequestKV:
    data: torch.Tensor      # [capacity_tokens, layers, 2, kv_heads, head_dim], model dtype
    length: int = 0         # tokens filled (positions 0 .. length-1)
    version: int = 0        # bumped by `receive` (contents replaced): the decode workspace re-copies

    def __post_init__(self):
        if self.data.dim() != 5 or self.data.shape[2] != 2:
            raise ValueError(f"KV data must be [capacity, layers, 2, kv_heads, head_dim], got {tuple(self.data.shape)}")
        if not 0 <= self.length <= self.data.shape[0]:
            raise ValueError(f"length {self.length} outside capacity {self.data.shape[0]}")

    @property
    def capacity_tokens(self) -> int:
        return self.data.shape[0]

    @property
    def layers(self) -> int:
        return self.data.shape[1]

    @property
    def kv_heads(self) -> int:
        return self.data.shape[3]

    @property
    def head_dim(self) -> int:
        return self.data.shape[4]

    @property
    def free_tokens(self) -> int:
        return self.capacity_tokens - self.length

    @property
    def bytes_per_token(self) -> int:
        return self.data[0].numel() * self.data.element_size()

    @property
    def filled_bytes(self) -> int:
        """Bytes a transfer of `view()` moves."""
        return self.length * self.bytes_per_token

    def view(self) -> torch.Tensor:
        """The filled tokens, `[length, layers, 2, kv_heads, head_dim]`, contiguous."""
        return self.data[: self.length]

    def receive(self, filled: torch.Tensor) -> None:
        """Overwrite this cache with `filled` (a sender's `view()`), on this cache's device."""
        if filled.shape[1:] != self.data.shape[1:]:
            raise ValueError(f"KV shape {tuple(filled.shape)} does not match this cache's "
                             f"[*, {', '.join(map(str, self.data.shape[1:]))}]")
        n = filled.shape[0]
        if n > self.capacity_tokens:
            raise ValueError(f"{n} tokens do not fit in a KV cache of {self.capacity_tokens}")
        self.data[:n].copy_(filled)
        self.length = n
        self.version += 1

    @classmethod
    def allocate(cls, capacity_tokens: int, layers: int, kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str) -> "RequestKV":
        if capacity_tokens < 1:
            raise ValueError(f"KV capacity must be >= 1 token, got {capacity_tokens}")
        data = torch.empty((capacity_tokens, layers, 2, kv_heads, head_dim), dtype=dtype, device=device)
        return cls(data, 0)

    @classmethod
    def from_view(cls, filled: torch.Tensor, capacity_tokens: int,
                  device: torch.device | str | None = None) -> "RequestKV":
        """Receiver side: a new cache of `capacity_tokens` holding `filled` at its front."""
        _, layers, _, kv_heads, head_dim = filled.shape
        kv = cls.allocate(capacity_tokens, layers, kv_heads, head_dim, filled.dtype,
                          filled.device if device is None else device)
        kv.receive(filled)
        return kv


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
    return layers * 2 * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()
