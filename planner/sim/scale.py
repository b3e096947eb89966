"""Plans over time: the instance counts per role change at each window's start.

A deployment with `windows` (planner.plan.Window) says how many prefill, decode (or
coupled) instances serve from each window's `start_s` on. `start_s` is measured from the
replay's first arrival (the same clock as the trace's own `arrival_s`, scaled by
`time_scale / rate_scale` like the arrivals). The first window's counts serve from the
start; the deployment's role `instances` are not used.

At each later window start, per role:
- a role that shrinks releases instances: first those not serving yet (starting, or
  flipping into the role), then those draining back into it, then serving ones - idle and
  least loaded first (prefill: prompt tokens queued; decode: predicted tokens routed;
  coupled: requests held), the newest on ties. A serving instance *drains*: it takes no
  new requests (the global scheduler and dispatcher skip it; unstarted requests queued on
  a prefill or coupled instance move to the least-loaded instance that stays), finishes
  the work it holds (a prefill instance also waits for its KV transfers to leave), then
  flips or stops;
- a role that grows takes, in this order: instances started ahead for this window
  (`start_ahead`), instances draining out of this role (they resume at once), released
  instances of the same pool (same GPU type and TP) that had not started yet (they switch
  role and keep their ready time), released instances of the other role of the pool
  (they flip: serve the new role `flip_latency_s` after their drain ends; one idle at the
  window start flips at once), and new instances, which serve `start_latency_s` after
  they are started (default `DEFAULT_START_LATENCY_S`: boot a VM and load the weights).
  Whether a released instance's drain is already over is checked only after the growing
  roles have taken theirs, so an idle one flips rather than stops. Instances left released
  stop once drained (a release that never started is cancelled).
With `start_ahead`, the instances a window must start (its growth beyond what flips can
cover, known from the counts alone) are started `start_latency_s` before the window
begins (not before the first arrival), as a schedule planned ahead would, and billed from
then.

Billing: an instance is billed from its start (boot included) until it stops; the
instances of the first window from the first arrival; all that still run, until the last
event. Instance-seconds are attributed to a role (starting and serving: that role;
draining: the role it leaves; flipping: the role it joins) and per window.

Every change is in the scale log (times from the first arrival; a role not involved is
""): `start`, `ready`, `drain`, `resume`, `switch` (a
start changes role), `cancel`, `flip` (drain over, flipping), `stop`. The flips also go
to the flip log. Reactive flips (`Policies.flip_idle_s`) are off while windows run: the
plan decides the roles.
"""
from __future__ import annotations

import bisect
import math

from planner.errors import InputError
from planner.sim.engine import COMPLETE, CONTROL

DEFAULT_START_LATENCY_S = 120.0
SCALE_LOG_COLUMNS = ("time_s", "window", "instance", "action", "from_role", "to_role", "ready_s")
ROLE_FIELDS = {"prefill": "prefill_instances", "decode": "decode_instances", "coupled": "coupled_instances"}
STARTING, ACTIVE, DRAINING, FLIPPING, STOPPED = "starting", "active", "draining", "flipping", "stopped"


def window_roles(deployment) -> tuple[str, ...]:
    return ("prefill", "decode") if deployment.mode == "disaggregated" else ("coupled",)


def check_windows(deployment) -> None:
    """Window times non-negative and sorted; every role of the mode has >= 1 instance in
    every window (a role with none could not take the requests routed to it)."""
    prev = -math.inf
    roles = window_roles(deployment)
    for k, w in enumerate(deployment.windows):
        if not (w.start_s >= 0 and math.isfinite(w.start_s)) or w.start_s < prev:
            raise InputError(f"windows[{k}].start_s={w.start_s}: window starts must be >= 0 and non-decreasing")
        prev = w.start_s
        for r in roles:
            n = getattr(w, ROLE_FIELDS[r])
            if int(n) != n or n < 1:
                raise InputError(f"windows[{k}]: {ROLE_FIELDS[r]}={n}; every window needs at least one "
                                 f"{r} instance in a {deployment.mode} deployment")


def split_interval(bounds, t0: float, t1: float):
    """(window index, seconds) pieces of [t0, t1) over windows starting at `bounds`
    (window 0 also takes anything before bounds[1])."""
    if t1 <= t0:
        return
    k = max(bisect.bisect_right(bounds, t0) - 1, 0)
    n = len(bounds)
    while t0 < t1:
        end = bounds[k + 1] if k + 1 < n else math.inf
        piece = min(t1, end) - t0
        if piece > 0:
            yield k, piece
        t0 = min(t1, end)
        k += 1


class WindowBusy:
    """Busy seconds per window and role, fed by the instances (`add`)."""
    __slots__ = ("bounds", "seconds")

    def __init__(self, bounds, roles):
        self.bounds = bounds
        self.seconds = [{r: 0.0 for r in roles} for _ in bounds]

    def add(self, role: str, t0: float, t1: float) -> None:
        for k, s in split_interval(self.bounds, t0, t1):
            self.seconds[k][role] += s


class Machine:
    """One instance's life: state, the role it serves or counts toward, billing segment."""
    __slots__ = ("iid", "pool", "state", "role", "member_of", "then", "ready_s", "up", "reserved_for",
                 "seg_t0", "seg_role")

    def __init__(self, iid: int, pool, state: str, role: str, now: float, ready_s: float):
        self.iid = iid
        self.pool = pool
        self.state = state
        self.role = role              # the role it serves, starts for, drains from or flips to
        self.member_of = role         # the role it counts toward (None: released)
        self.then = None              # draining: the role it flips to afterwards (None: stop)
        self.ready_s = ready_s
        self.up = state == ACTIVE
        self.reserved_for = -1        # started ahead for this window
        self.seg_t0 = now
        self.seg_role = role


class Scaler:
    """Drives a Cluster through the deployment's windows (see the module docstring)."""

    def __init__(self, cluster, loop, deployment, *, origin_s: float, time_factor: float,
                 start_latency_s: float, start_ahead: bool):
        if not start_latency_s >= 0:
            raise InputError(f"start latency must be >= 0 s, got {start_latency_s}")
        check_windows(deployment)
        self.c = cluster
        self.loop = loop
        self.roles = window_roles(deployment)
        role_specs = deployment.roles()
        self.pool_of = {r: (role_specs[r].gpu, role_specs[r].tp) for r in self.roles}
        self.tp = {r: role_specs[r].tp for r in self.roles}
        ws = deployment.windows
        self.origin = origin_s
        self.bounds = [origin_s + w.start_s * time_factor for w in ws]
        self.targets = [{r: int(getattr(w, ROLE_FIELDS[r])) for r in self.roles} for w in ws]
        self.start_latency_s = float(start_latency_s)
        self.start_ahead = start_ahead
        self.flip_latency_s = float(deployment.policies.flip_latency_s)
        self.machines: dict[int, Machine] = {}
        self.next_iid = 0
        self.log: list[tuple] = []
        self.segments: list[tuple] = []     # (role, t0, t1) billed
        self.busy = WindowBusy(self.bounds, self.roles)
        self.window = 0

    # ---- set-up --------------------------------------------------------------------
    def begin(self) -> None:
        now = self.origin
        for r in self.roles:
            for _ in range(self.targets[0][r]):
                m = self._new_machine(r, ACTIVE, now, now)
                self.c.activate(now, m.iid, r)
        for k in range(1, len(self.bounds)):
            self.loop.at(self.bounds[k], self._boundary, k, COMPLETE)
            if self.start_ahead:
                for r, n in self._starts_needed(k).items():
                    at = max(self.bounds[k] - self.start_latency_s, self.origin)
                    for _ in range(n):
                        self.loop.at(at, self._start_ahead, (k, r), COMPLETE)

    def _starts_needed(self, k: int) -> dict[str, int]:
        """Instances window k must start: each role's growth beyond what the shrinking
        roles of its pool hand over (handed to the growing roles in role order)."""
        prev, cur = self.targets[k - 1], self.targets[k]
        out = {}
        for pool in dict.fromkeys(self.pool_of.values()):
            rs = [r for r in self.roles if self.pool_of[r] == pool]
            freed = sum(max(prev[r] - cur[r], 0) for r in rs)
            for r in rs:
                grow = max(cur[r] - prev[r], 0)
                take = min(grow, freed)
                freed -= take
                if grow > take:
                    out[r] = grow - take
        return out

    def _new_machine(self, role: str, state: str, now: float, ready_s: float) -> Machine:
        m = Machine(self.next_iid, self.pool_of[role], state, role, now, ready_s)
        self.machines[m.iid] = m
        self.next_iid += 1
        return m

    def _log(self, now, m, action, from_role, to_role, ready_s=math.nan) -> None:
        self.log.append((now - self.origin, self.window, m.iid, action, from_role or "", to_role or "",
                         ready_s - self.origin if ready_s == ready_s else math.nan))

    def _bill(self, m: Machine, now: float, role) -> None:
        """Close m's billing segment at `now`; open one for `role` (None: stop billing)."""
        if m.seg_role is not None and now > m.seg_t0:
            self.segments.append((m.seg_role, m.seg_t0, now))
        m.seg_t0 = now
        m.seg_role = role

    # ---- starts --------------------------------------------------------------------
    def _start(self, now: float, role: str, ready_s: float) -> Machine:
        m = self._new_machine(role, STARTING, now, ready_s)
        self._log(now, m, "start", None, role, ready_s)
        self.loop.at(ready_s, self._ready, m.iid, CONTROL)
        return m

    def _start_ahead(self, now: float, arg) -> None:
        k, role = arg
        m = self._start(now, role, max(now + self.start_latency_s, self.bounds[k]))
        m.member_of = None            # counts toward its role from window k on
        m.reserved_for = k

    def _ready(self, now: float, iid: int) -> None:
        m = self.machines[iid]
        if m.state != STARTING or now < m.ready_s:
            return
        m.up = True
        if m.member_of is not None:
            self._activate(now, m, m.member_of)

    def _activate(self, now: float, m: Machine, role: str) -> None:
        m.state, m.role, m.member_of, m.then = ACTIVE, role, role, None
        if m.seg_role != role:
            self._bill(m, now, role)
        self._log(now, m, "ready", None, role)
        self.c.activate(now, m.iid, role)

    # ---- window boundaries -----------------------------------------------------------
    def _boundary(self, now: float, k: int) -> None:
        self.window = k
        target = self.targets[k]
        released: list[Machine] = []
        for r in self.roles:
            members = [m for m in self.machines.values() if m.member_of == r]
            excess = len(members) - target[r]
            if excess > 0:
                members.sort(key=lambda m: self._leave_key(m))
                for m in members[:excess]:
                    self._release(now, m)
                    released.append(m)
        for r in self.roles:
            need = target[r] - sum(1 for m in self.machines.values() if m.member_of == r)
            if need <= 0:
                continue
            cands = [m for m in self.machines.values()
                     if m.member_of is None and m.state != STOPPED and m.pool == self.pool_of[r]
                     and (m.reserved_for < 0 or m.reserved_for == k)]
            cands.sort(key=lambda m: (self._join_rank(m, r, k), m.iid))
            for m in cands[:need]:
                self._join(now, m, r)
            for _ in range(need - min(need, len(cands))):
                self._start(now, r, now + self.start_latency_s)
        for m in released + [m for m in self.machines.values() if m.reserved_for == k]:
            if m.member_of is None and m.state in (STARTING, FLIPPING):
                self._bill(m, now, None)
                m.state = STOPPED
                self._log(now, m, "cancel", m.role, None)
            elif m.state == DRAINING:
                # only now, after the growing roles had their pick: a drain that is
                # already over flips (taken by the other role) or stops
                self._check_drained(now, m)

    def _leave_key(self, m: Machine):
        rank = {STARTING: 0, FLIPPING: 1, DRAINING: 2, ACTIVE: 3}[m.state]
        if m.state == STARTING:
            return (rank, -m.ready_s, -m.iid)
        return (rank, self.c.work_of(m.iid, m.role) if m.state == ACTIVE else 0, -m.iid)

    def _release(self, now: float, m: Machine) -> None:
        m.member_of = None
        if m.state == ACTIVE:
            m.state, m.then = DRAINING, None
            self._log(now, m, "drain", m.role, None)
            self.c.deactivate(now, m.iid, m.role)   # drained yet? checked after the grow step
        elif m.state == DRAINING:
            m.then = None

    def _join_rank(self, m: Machine, role: str, k: int) -> int:
        if m.reserved_for == k:
            return 0
        if m.state == DRAINING and m.role == role:
            return 1
        if m.state == STARTING:
            return 2
        if m.state == DRAINING:
            return 3
        return 4                         # flipping away from `role`: flips back

    def _join(self, now: float, m: Machine, role: str) -> None:
        m.reserved_for = -1
        if m.state == DRAINING and m.role == role:
            m.state, m.member_of, m.then = ACTIVE, role, None
            self._log(now, m, "resume", None, role)
            self.c.activate(now, m.iid, role)
        elif m.state == STARTING:
            old = m.role
            m.member_of, m.role = role, role
            if old != role:
                self._bill(m, now, role)
                self._log(now, m, "switch", old, role, m.ready_s)
            if m.up:
                self._activate(now, m, role)
        elif m.state == DRAINING:
            m.member_of, m.then = role, role
        else:                            # flipping to the other role: flip again
            self._flip(now, m, m.role, role)

    # ---- drains and flips ----------------------------------------------------------
    def on_idle(self, now: float, inst) -> None:
        m = self.machines.get(inst.iid)
        if m is not None and m.state == DRAINING:
            self._check_drained(now, m)

    def on_kv_sent(self, now: float, iid: int) -> None:
        m = self.machines.get(iid)
        if m is not None and m.state == DRAINING and m.role == "prefill":
            self._check_drained(now, m)

    def _check_drained(self, now: float, m: Machine) -> None:
        if not self.c.drained(m.iid, m.role):
            return
        if m.then is None:
            self._bill(m, now, None)
            m.state = STOPPED
            self._log(now, m, "stop", m.role, None)
        else:
            self._flip(now, m, m.role, m.then)

    def _flip(self, now: float, m: Machine, from_role: str, to_role: str) -> None:
        ready = now + self.flip_latency_s
        m.state, m.role, m.member_of, m.then, m.ready_s = FLIPPING, to_role, to_role, None, ready
        self._bill(m, now, to_role)
        self._log(now, m, "flip", from_role, to_role, ready)
        self.c.flipper.log.append((now, m.iid, from_role, to_role, ready))
        self.c.flipper.flipping_s += self.flip_latency_s
        self.loop.at(ready, self._flip_done, (m.iid, ready), CONTROL)

    def _flip_done(self, now: float, arg) -> None:
        iid, ready = arg
        m = self.machines[iid]
        if m.state == FLIPPING and m.ready_s == ready and m.member_of is not None:
            self._activate(now, m, m.member_of)

    # ---- accounting ----------------------------------------------------------------
    def close(self, now: float) -> None:
        for m in self.machines.values():
            if m.state != STOPPED:
                self._bill(m, max(now, m.seg_t0), None)

    def billed_instance_s(self) -> dict[str, float]:
        out = {r: 0.0 for r in self.roles}
        for role, t0, t1 in self.segments:
            out[role] += t1 - t0
        return out

    def window_table(self) -> list[dict]:
        """Per window: target counts, billed and busy instance-seconds per role."""
        billed = [{r: 0.0 for r in self.roles} for _ in self.bounds]
        for role, t0, t1 in self.segments:
            for k, s in split_interval(self.bounds, t0, t1):
                billed[k][role] += s
        rows = []
        for k, b in enumerate(self.bounds):
            rows.append({"index": k, "start_s": b - self.origin, "instances": dict(self.targets[k]),
                         "billed_instance_s": billed[k], "busy_instance_s": dict(self.busy.seconds[k])})
        return rows
