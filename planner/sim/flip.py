"""Instance flip: an idle instance changes role when the other role is loaded.

When an instance goes idle, a check is set `flip_idle_s` later. If the instance is still
idle then (no work since), the other role has work queued that no instance has started
(a prefill queue, or a decode instance with requests waiting for admission), and the
instance is not the last of its role, it stops accepting work and flips: it serves the other
role `flip_latency_s` later. Every flip is logged.
"""
from __future__ import annotations

from planner.sim.engine import CONTROL

FLIP_LOG_COLUMNS = ("time_s", "instance", "from_role", "to_role", "ready_s")


class Flipper:
    def __init__(self, loop, cluster, idle_s: float | None, latency_s: float):
        self.loop = loop
        self.cluster = cluster
        self.idle_s = idle_s
        self.latency_s = latency_s
        self.log: list[tuple] = []
        self.flipping_s = 0.0

    def on_idle(self, now: float, inst) -> None:
        if self.idle_s is None or not inst.accepting:
            return
        inst.idle_since = now
        self.loop.at(now + self.idle_s, self._check, (inst, now), CONTROL)

    def _check(self, now: float, arg) -> None:
        inst, mark = arg
        c = self.cluster
        if not inst.accepting or getattr(inst, "idle_since", None) != mark or not c.is_idle(inst):
            return
        role = c.role_of[inst.iid]
        other = "decode" if role == "prefill" else "prefill"
        if c.active_count(role) <= 1 or not c.loaded(other):
            return
        inst.accepting = False
        ready = now + self.latency_s
        self.log.append((now, inst.iid, role, other, ready))
        self.flipping_s += self.latency_s
        self.loop.at(ready, self._done, (inst.iid, other))

    def _done(self, now: float, arg) -> None:
        iid, role = arg
        self.cluster.activate(now, iid, role)
