"""The decode batch's K/V, layer-major and padded, kept across iterations.

`Engine.decode` attends over this workspace instead of gathering every request's cache
once per layer and iteration: a request's filled tokens are copied in once, when it first
joins the batch; each iteration then appends one token per request per layer (one
`index_copy_` per layer) and attention reads the workspace in place.

Layout: `data[layers, 2, slots, tokens, kv_heads, head_dim]` (K at index 0, V at 1). The
batch of an iteration occupies slots 0..B-1, so a layer's K is the view
`data[layer, 0, :B, :S]` - `[B, S, kv_heads, head_dim]`, `[B, heads, S, head_dim]` after a
transpose - with S the longest context in the batch; shorter requests are masked.

The workspace mirrors the requests' `RequestKV`s (which stay the record: the engine writes
each new token into both): `sync` keeps exactly the caches of the current iteration,
each identified by object identity, storage, length and `version` (bumped by
`RequestKV.receive`). A cache that left the batch, or changed outside `decode` (another
length, another tensor, received contents), is dropped and the last slot
moved into its place; a new or changed one is copied in. Capacity grows by reallocation
(x1.25, rounded), never shrinks; `Engine.reset_decode_workspace()` frees it.
"""
from __future__ import annotations

import math

import torch

from .kv_cache import RequestKV

TOKEN_ROUND = 64          # token capacity grows in multiples of this
GROWTH = 1.25


class DecodeWorkspace:
    def __init__(self, layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device, max_tokens: int):
        self.layers, self.kv_heads, self.head_dim = layers, kv_heads, head_dim
        self.dtype, self.device, self.max_tokens = dtype, device, max_tokens
        self.data: torch.Tensor | None = None
        self.kvs: list[RequestKV] = []          # slot -> cache
        self.lengths: list[int] = []            # slot -> tokens held (== kvs[slot].length)
        self._marks: list[tuple] = []            # slot -> (data_ptr, version) of kvs[slot]
        self.loads = 0                          # caches copied in (joins), for tests/metrics

    # -- capacity -----------------------------------------------------------------------
    @property
    def slots(self) -> int:
        return 0 if self.data is None else self.data.shape[2]

    @property
    def capacity_tokens(self) -> int:
        return 0 if self.data is None else self.data.shape[3]

    @property
    def nbytes(self) -> int:
        return 0 if self.data is None else self.data.numel() * self.data.element_size()

    def _ensure(self, slots: int, tokens: int) -> None:
        if slots <= self.slots and tokens <= self.capacity_tokens:
            return
        new_slots = max(slots, math.ceil(self.slots * GROWTH)) if slots > self.slots else self.slots
        new_tokens = self.capacity_tokens
        if tokens > self.capacity_tokens:
            want = max(tokens, math.ceil(self.capacity_tokens * GROWTH))
            new_tokens = min(self.max_tokens, -(-want // TOKEN_ROUND) * TOKEN_ROUND)
        # zeros: masked positions are multiplied by 0 in attention, so they must be finite
        # (later they hold earlier occupants' K/V, finite too)
        data = torch.zeros((self.layers, 2, new_slots, new_tokens, self.kv_heads, self.head_dim),
                           dtype=self.dtype, device=self.device)
        if self.data is not None and self.kvs:
            n, t = len(self.kvs), max(self.lengths)
            data[:, :, :n, :t].copy_(self.data[:, :, :n, :t])
        self.data = None            # drop the old buffer before anyone else allocates
        self.data = data

    def reserve(self, slots: int, tokens: int) -> None:
        self._ensure(slots, tokens)

    def release(self) -> None:
        self.data, self.kvs, self.lengths, self._marks = None, [], [], []

    # -- membership ---------------------------------------------------------------------
    def _drop(self, slot: int) -> None:
        last = len(self.kvs) - 1
        if slot != last:
            n = self.lengths[last]
            self.data[:, :, slot, :n].copy_(self.data[:, :, last, :n])
            self.kvs[slot], self.lengths[slot], self._marks[slot] = self.kvs[last], n, self._marks[last]
        self.kvs.pop()
        self.lengths.pop()
        self._marks.pop()

    def sync(self, kvs: list[RequestKV], extra_tokens: int = 1) -> list[int]:
        """Make the workspace hold exactly `kvs` (distinct caches) with room for
        `extra_tokens` more each; return each cache's slot (a permutation of 0..len-1)."""
        want = {id(kv): kv for kv in kvs}
        for slot in range(len(self.kvs) - 1, -1, -1):
            kv = self.kvs[slot]
            if (want.get(id(kv)) is not kv or kv.length != self.lengths[slot]
                    or (kv.data.data_ptr(), kv.version) != self._marks[slot]):
                self._drop(slot)
        where = {id(kv): s for s, kv in enumerate(self.kvs)}
        joining = [kv for kv in kvs if id(kv) not in where]
        self._ensure(len(kvs), max(kv.length for kv in kvs) + extra_tokens)
        for kv in joining:
            slot = len(self.kvs)
            n = kv.length
            self.data[:, :, slot, :n].copy_(kv.data[:n].permute(1, 2, 0, 3, 4))
            self.kvs.append(kv)
            self.lengths.append(n)
            self._marks.append((kv.data.data_ptr(), kv.version))
            where[id(kv)] = slot
            self.loads += 1
        return [where[id(kv)] for kv in kvs]

    def advance(self) -> None:
        """Every resident cache got one token (the engine wrote it to both copies)."""
        self.lengths = [n + 1 for n in self.lengths]
