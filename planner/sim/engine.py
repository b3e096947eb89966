"""The event loop: a heap of (time, priority, sequence, callback, argument).

Ties in time go to the lower priority number, then to the event scheduled first, so a run
is a pure function of its inputs and seed. Open-loop arrivals are not put on the heap: they
are a sorted array merged in as the loop goes (priority ARRIVAL, before any other event at
the same instant), which keeps the heap small on million-request traces.
"""
from __future__ import annotations

import heapq

from planner.errors import InputError

ARRIVAL = 0      # a request enters the system
COMPLETE = 1     # an iteration, transfer or flip ends
CONTROL = 2      # checks that look at the state after everything else at that instant


class EventLoop:
    __slots__ = ("now", "_heap", "_seq", "events")

    def __init__(self):
        self.now = 0.0
        self._heap: list = []
        self._seq = 0
        self.events = 0

    def at(self, time_s: float, callback, arg=None, priority: int = COMPLETE) -> None:
        """Run `callback(time_s, arg)` at `time_s` (never before now)."""
        self._seq += 1
        heapq.heappush(self._heap, (time_s, priority, self._seq, callback, arg))

    def run(self, arrival_s=None, on_arrival=None, max_events: int | None = None) -> None:
        """Run until the heap and the arrivals are exhausted. `arrival_s`: a sorted
        sequence of times; `on_arrival(t, i)` is called for the i-th. `max_events`: stop
        with an InputError after that many events (a run that cannot end, e.g. times so
        large that adding a step time no longer moves the clock, ends with a message)."""
        limit = max_events if max_events is not None else float("inf")
        heap = self._heap
        pop = heapq.heappop
        arrivals = arrival_s if arrival_s is not None else ()
        n_arr = len(arrivals)
        i = 0
        next_arr = arrivals[0] if n_arr else float("inf")
        events = 0
        while True:
            if heap:
                top = heap[0]
                if next_arr <= top[0]:
                    self.now = next_arr
                    on_arrival(next_arr, i)
                    i += 1
                    next_arr = arrivals[i] if i < n_arr else float("inf")
                else:
                    t, _, _, cb, arg = pop(heap)
                    self.now = t
                    cb(t, arg)
            elif i < n_arr:
                self.now = next_arr
                on_arrival(next_arr, i)
                i += 1
                next_arr = arrivals[i] if i < n_arr else float("inf")
            else:
                break
            events += 1
            if events >= limit:
                self.events += events
                raise InputError(f"the simulation did not finish within {events:,} events (simulated time "
                                 f"{self.now:.6g} s), more than this workload can need; look for extreme "
                                 "values in the trace, the plan or the scale flags")
        self.events += events
