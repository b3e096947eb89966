"""KV-cache transfer over a shared link: request-level, fair sharing of bandwidth.

Each prefill instance sends over its own link (its NIC); the transfers in flight on a link
share its bandwidth equally (processor sharing). A transfer of `b` bytes alone on the link
takes `latency_s + b / bandwidth`, exactly `planner.perf.model.kv_transfer_time_s`. Sharing is
tracked in "virtual bytes": every active transfer has received the same number of bytes
since the link's virtual clock started, so a transfer is done when the virtual clock passes
its start mark plus its size, and only the earliest such mark needs an event.
"""
from __future__ import annotations

import heapq


class KvLink:
    __slots__ = ("loop", "bytes_per_s", "latency_s", "on_done", "_active", "_vbytes", "_t",
                 "_gen", "bytes_sent", "transfers", "busy_s")

    def __init__(self, loop, link_gb_s: float, latency_s: float, on_done):
        self.loop = loop
        self.bytes_per_s = link_gb_s * 1e9
        self.latency_s = latency_s
        self.on_done = on_done              # on_done(time_s, request)
        self._active: list = []             # heap of (virtual finish bytes, seq, request)
        self._vbytes = 0.0                  # bytes each active transfer has received
        self._t = 0.0
        self._gen = 0
        self.bytes_sent = 0.0
        self.transfers = 0
        self.busy_s = 0.0

    def _advance(self, now: float) -> None:
        n = len(self._active)
        if n:
            self._vbytes += (now - self._t) * self.bytes_per_s / n
            self.busy_s += now - self._t
        self._t = now

    def send(self, now: float, nbytes: float, request) -> None:
        self._advance(now)
        self.transfers += 1
        self.bytes_sent += nbytes
        heapq.heappush(self._active, (self._vbytes + nbytes, self.transfers, request))
        self._reschedule(now)

    def _reschedule(self, now: float) -> None:
        self._gen += 1
        if self._active:
            n = len(self._active)
            left = max(self._active[0][0] - self._vbytes, 0.0)
            self.loop.at(now + left * n / self.bytes_per_s, self._finish, self._gen)

    def _finish(self, now: float, gen: int) -> None:
        if gen != self._gen:
            return
        # the clock did not move: what is left of the first transfer is below the time
        # resolution at `now` (large times); it is done, else the link would wait forever
        stalled = now <= self._t
        self._advance(now)
        active = self._active
        # everything whose bytes are in (allow for rounding in the virtual clock)
        eps = 1e-9 * max(1.0, self._vbytes)
        while active and (active[0][0] <= self._vbytes + eps or stalled):
            _, _, request = heapq.heappop(active)
            self.loop.at(now + self.latency_s, self.on_done, request)
            stalled = False
        self._reschedule(now)
