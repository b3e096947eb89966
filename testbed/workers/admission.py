"""Decode admission (TetriInfer's local decode policies): the simulator's rules
(planner/sim/decode.py) on the testbed's requests, in KV blocks of `block_tokens`.

A running request holding `ctx` KV tokens needs ceil((ctx + 1) / block) blocks for its next
iteration. For the head of the FCFS queue (while the batch is under `batch_limit`):
- greedy (vLLM): admit while its KV fits in the free blocks now;
- reserve_static: also require the batch's reservations plus its own (prompt + predicted
  output, the predicted bucket's lower bound; at least ctx + 1) to fit;
- reserve_dynamic: like static, but the reservation of the running request with the
  shortest predicted remaining output counts as already freed.
A batch that outgrows memory preempts its most recently admitted requests (back to the
head of the queue; the decode worker recomputes their KV on readmission, as vLLM does).
Pure bookkeeping, no torch.
"""
from __future__ import annotations

from dataclasses import dataclass

POLICIES = ("greedy", "reserve_static", "reserve_dynamic")


@dataclass
class DecodeItem:
    rid: int
    prompt_tokens: int
    predicted_tokens: int        # lower bound of the predicted output bucket
    generated: int = 0           # tokens made by decode iterations (the first token came from prefill)
    reserved_blocks: int = 0

    @property
    def ctx_tokens(self) -> int:
        """KV tokens the request holds before its next iteration."""
        return self.prompt_tokens + self.generated


class Admission:
    def __init__(self, policy: str, capacity_tokens: int, block_tokens: int = 16, batch_limit: int = 256):
        if policy not in POLICIES:
            raise ValueError(f"decode admission {policy!r} is not one of {', '.join(POLICIES)}")
        self.policy = policy
        self.bs = int(block_tokens)
        self.cap = max(int(capacity_tokens) // self.bs, 1)
        self.batch_limit = int(batch_limit)

    def blocks(self, item: DecodeItem) -> int:
        return (item.ctx_tokens + self.bs) // self.bs

    def used_blocks(self, running: list[DecodeItem]) -> int:
        return sum(self.blocks(r) for r in running)

    def _reserve(self, item: DecodeItem) -> int:
        want = max(item.prompt_tokens + item.predicted_tokens, item.ctx_tokens + 1)
        return min(-(-want // self.bs), self.cap)

    def admit(self, running: list[DecodeItem], waiting: list[DecodeItem]) -> int:
        """How many requests from the head of `waiting` to admit now (sets their reservations)."""
        batch = list(running)
        used = self.used_blocks(batch)
        reserved = sum(r.reserved_blocks for r in batch)
        n = 0
        for item in waiting:
            if len(batch) >= self.batch_limit:
                break
            need = self.blocks(item)
            if used + need > self.cap and batch:
                break
            res = 0
            if self.policy != "greedy":
                res = self._reserve(item)
                if reserved + res > self.cap and batch:
                    if self.policy == "reserve_static":
                        break
                    shortest = min(batch, key=lambda r: r.predicted_tokens - r.generated)
                    if reserved + res - shortest.reserved_blocks > self.cap:
                        break
            item.reserved_blocks = res
            batch.append(item)
            used += need
            reserved += res
            n += 1
        return n

    def overflow(self, running: list[DecodeItem]) -> int:
        """How many of the most recently admitted requests to preempt so that the next
        iteration fits (never the last one: a lone request runs whatever its size)."""
        used = self.used_blocks(running)
        n = 0
        while used > self.cap and len(running) - n > 1:
            n += 1
            used -= self.blocks(running[-n])
        return n
