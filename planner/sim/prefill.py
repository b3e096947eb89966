"""A prefill instance: TetriInfer's chunked prefill.

Each iteration runs one chunk of exactly `chunk_tokens` tokens (fewer only when less work is
queued; the instance never waits to fill a chunk). Requests are sliced and merged into
chunks: the chunk takes the unfinished rest of the request it last sliced first
(non-preemptive), then whole or sliced requests in the queue's order - FCFS (arrival), SJF
(shortest prompt first) or LJF (longest first) - up to `batch_limit` requests a chunk. A
chunk's time is `PerfModel.prefill_time_s(tokens, cached, slices)` with `cached` the
slice-weighted context already in the KV cache (sum of slice_len * cached_len / tokens), as
perf/profile.py defines for merged chunks. A request's first token is out when its last slice's chunk ends.
With `pad_to_chunk` (the paper's implementation: "pad the last chunk with zeros") a chunk
with fewer tokens costs a full chunk. A chunk that starts an idle instance costs
`Efficiency.prefill_idle_factor` times as much (cold caches; 1.0 unless calibrated).
"""
from __future__ import annotations

import heapq
from collections import deque

from planner.sim.costs import PrefillCost
from planner.sim.engine import CONTROL


class PrefillInstance:
    def __init__(self, iid: int, loop, reqs, perf, chunk_tokens: int, batch_limit: int,
                 order: str, on_done, on_idle=None, cost: PrefillCost | None = None):
        self.iid = iid
        self.loop = loop
        self.reqs = reqs
        self.cost = cost if cost is not None else PrefillCost(perf)
        self.chunk = int(chunk_tokens)
        self.limit = max(int(batch_limit), 1)
        self.order = order
        self.on_done = on_done            # on_done(time_s, rid, instance)
        self.on_idle = on_idle            # on_idle(time_s, instance)
        self._fifo = deque() if order == "fcfs" else None
        self._heap: list = []
        self.partial = -1                 # request sliced by the last chunk, or -1
        self.partial_done = 0             # its tokens already prefilled
        self.busy = False
        self.cold = True                  # the next chunk starts an idle instance
        self.load_tokens = 0              # prompt tokens routed here and not yet prefilled
        self.queued = 0                   # requests waiting (not started)
        self.busy_s = 0.0
        self.chunks = 0
        self.accepting = True
        self.pad_to_chunk = False
        self.win = None                   # scale.WindowBusy when the plan has time windows
        self.win_role = "prefill"

    # ---- queue -----------------------------------------------------------------------
    def enqueue(self, now: float, rid: int) -> None:
        p = self.reqs.prompt[rid]
        self.load_tokens += p
        self.queued += 1
        if self._fifo is not None:
            self._fifo.append(rid)
        elif self.order == "sjf":
            heapq.heappush(self._heap, (p, rid))
        else:
            heapq.heappush(self._heap, (-p, rid))
        if not self.busy:
            # start at this instant, once every request arriving at it is queued
            self.busy = True
            self.loop.at(now, self._kick, None, CONTROL)

    def _kick(self, now: float, _arg) -> None:
        self._start(now)

    def _pop(self) -> int:
        self.queued -= 1
        if self._fifo is not None:
            return self._fifo.popleft()
        return heapq.heappop(self._heap)[1]

    @property
    def idle(self) -> bool:
        return not self.busy and self.queued == 0 and self.partial < 0

    # ---- chunks ----------------------------------------------------------------------
    def _start(self, now: float) -> None:
        reqs = self.reqs
        prompt = reqs.prompt
        left = self.chunk
        slices = 0
        weighted = 0.0
        done = []
        if self.partial >= 0:
            rid, have = self.partial, self.partial_done
            rest = prompt[rid] - have
            take = rest if rest < left else left
            weighted += take * have
            left -= take
            slices = 1
            if take == rest:
                done.append(rid)
                self.partial = -1
            else:
                self.partial_done = have + take
        while left > 0 and slices < self.limit and self.queued:
            rid = self._pop()
            reqs.prefill_start[rid] = now
            reqs.prefill_instance[rid] = self.iid
            p = prompt[rid]
            slices += 1
            if p <= left:
                left -= p
                done.append(rid)
            else:
                self.partial = rid
                self.partial_done = left
                left = 0
        tokens = self.chunk - left
        if tokens == 0:
            self.busy = False
            self.cold = True
            if self.on_idle is not None:
                self.on_idle(now, self)
            return
        self.busy = True
        dur = self.cost.time_s(self.chunk if self.pad_to_chunk else tokens, weighted / tokens, slices)
        if self.cold:
            dur *= self.cost.perf.prefill_idle_factor
            self.cold = False
        self.busy_s += dur
        self.chunks += 1
        if self.win is not None:
            self.win.add(self.win_role, now, now + dur)
        self.loop.at(now + dur, self._end, (tokens, done))

    def _end(self, now: float, arg) -> None:
        tokens, done = arg
        self.load_tokens -= tokens
        for rid in done:
            self.reqs.first_token[rid] = now
            self.on_done(now, rid, self)
        self._start(now)
