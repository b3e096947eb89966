"""Prefill chunk batching (TetriInfer): requests sliced and merged into chunks of exactly
`chunk_tokens` tokens (the last chunk of a busy queue may be shorter only when the queue
holds fewer tokens), at most `batch_limit` requests per chunk.

Order: a request whose prefill has begun finishes before any new one starts
(non-preemptive); new requests start in the policy's order: FCFS (arrival), SJF (shortest
prompt first) or LJF (longest first), ties by arrival. Pure bookkeeping, no torch.
"""
from __future__ import annotations

from dataclasses import dataclass

ORDERS = ("fcfs", "sjf", "ljf")


@dataclass
class PrefillItem:
    rid: int
    prompt_tokens: int
    seq: int                 # arrival order at this worker
    done_tokens: int = 0

    @property
    def left_tokens(self) -> int:
        return self.prompt_tokens - self.done_tokens


@dataclass(frozen=True)
class Slice:
    rid: int
    start: int               # first prompt position of the slice
    tokens: int
    last: bool               # the slice ends the request's prompt


class ChunkScheduler:
    def __init__(self, chunk_tokens: int, batch_limit: int = 16, order: str = "fcfs"):
        if chunk_tokens < 1 or batch_limit < 1:
            raise ValueError("chunk_tokens and batch_limit must be >= 1")
        if order not in ORDERS:
            raise ValueError(f"prefill order {order!r} is not one of {', '.join(ORDERS)}")
        self.chunk_tokens, self.batch_limit, self.order = chunk_tokens, batch_limit, order
        self._started: list[PrefillItem] = []
        self._waiting: list[PrefillItem] = []
        self._seq = 0

    def add(self, rid: int, prompt_tokens: int) -> None:
        if prompt_tokens < 1:
            raise ValueError(f"request {rid}: prompt must have >= 1 token")
        self._waiting.append(PrefillItem(rid, prompt_tokens, self._seq))
        self._seq += 1

    def __len__(self) -> int:
        return len(self._started) + len(self._waiting)

    @property
    def queued_tokens(self) -> int:
        return sum(i.left_tokens for i in self._started) + sum(i.left_tokens for i in self._waiting)

    def _key(self, item: PrefillItem):
        if self.order == "sjf":
            return (item.prompt_tokens, item.seq)
        if self.order == "ljf":
            return (-item.prompt_tokens, item.seq)
        return (item.seq,)

    def take_waiting(self, count: int | None = None) -> list[int]:
        """Remove and return up to `count` (None: all) requests not started yet, in the
        order they would start (a draining instance gives them back)."""
        self._waiting.sort(key=self._key)
        n = len(self._waiting) if count is None else max(min(int(count), len(self._waiting)), 0)
        taken, self._waiting = self._waiting[:n], self._waiting[n:]
        return [i.rid for i in taken]

    def next_chunk(self) -> list[Slice]:
        """The next chunk's slices (empty when idle); advances the requests' progress."""
        self._waiting.sort(key=self._key)
        budget = self.chunk_tokens
        out: list[Slice] = []
        while budget > 0 and len(out) < self.batch_limit:
            if self._started:
                item = self._started[0]
            elif self._waiting:
                item = self._waiting.pop(0)
                self._started.append(item)
            else:
                break
            n = min(budget, item.left_tokens)
            out.append(Slice(item.rid, item.done_tokens, n, n == item.left_tokens))
            item.done_tokens += n
            budget -= n
            if item.left_tokens == 0:
                self._started.pop(0)
        return out
