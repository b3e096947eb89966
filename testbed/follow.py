"""The run loop's side of plans over time: applies a `windows.Schedule` to a live run.

- a process that drains stops accepting routes (prefill) or dispatches (decode); a
  draining prefill process is told to give back its requests not started yet, and the
  scheduler re-routes them, one by one in their start order, to the least-loaded accepting
  prefill process (as the simulator's `Cluster.deactivate` does);
- a prefill process that becomes active takes half the unstarted requests of the busiest
  accepting one (at least 2 queued), as the simulator's `_steal_prefill_work` does;
- a draining process that holds nothing any more (`GlobalScheduler.drained`) is reported
  to the schedule, which stops it or starts its slot's flip.
"""
from __future__ import annotations

import pandas as pd

from .windows import ACTIVE, ROLES, TESTBED_SCALE_COLUMNS, Schedule


class FollowWindows:
    def __init__(self, schedule: Schedule, sched, send, place):
        """`send(worker_name, msg)` talks to a worker; `place(rid, prefill_index)` sends a
        re-routed request to its new prefill process (and records it)."""
        self.schedule = schedule
        self.sched = sched
        self.send = send
        self.place = place
        self.pending: dict[int, tuple[int, int | None]] = {}   # tag -> (from, to)
        self.next_tag = 0
        self.rerouted = 0                                      # requests moved after a give-back
        for r in ROLES:
            for i in range(len(sched.instances(r))):
                sched.set_accepting(r, i, schedule.state[(r, i)] == ACTIVE)

    def next_event_s(self) -> float:
        return self.schedule.next_event_s()

    def tick(self, now: float) -> None:
        """Window starts and flip ends due by `now`, then drains already complete."""
        self._apply(self.schedule.advance(now))
        self.check(now)

    def check(self, now: float) -> None:
        for role, i in self.schedule.draining():
            if self.sched.drained(role, i):
                self._apply(self.schedule.drained(role, i, now))

    def on_given_back(self, msg: dict) -> None:
        src, to = self.pending.pop(int(msg["tag"]))
        self.sched.prefill[src].giving_back -= 1
        for rid in msg["rids"]:
            self.place(int(rid), self.sched.reroute(int(rid), to))
            self.rerouted += 1

    def _apply(self, changes) -> None:
        for c in changes:
            if c.action == "drain":
                self.sched.set_accepting(c.role, c.index, False)
                if c.role == "prefill":
                    self._give_back(c.index, None, None)
            elif c.action in ("ready", "resume"):
                self.sched.set_accepting(c.role, c.index, True)
                if c.role == "prefill":
                    donor = self.sched.donor_for(c.index)
                    if donor is not None:
                        self._give_back(donor[0], donor[1], c.index)

    def _give_back(self, src: int, count: int | None, to: int | None) -> None:
        tag = self.next_tag
        self.next_tag += 1
        self.pending[tag] = (src, to)
        self.sched.prefill[src].giving_back += 1
        self.send(f"p{src}", {"op": "give_back", "count": count, "tag": tag})

    def log_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.schedule.log, columns=list(TESTBED_SCALE_COLUMNS))
