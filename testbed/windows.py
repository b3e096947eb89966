"""Plans over time on the testbed: which worker process serves, drains, waits or flips.

A testbed cannot boot machines, so every worker process a plan's windows ever need is
started with the cluster, and the *routing* follows the schedule (planner.plan.Window):

- Processes: P = the most prefill instances of any window, D = the most decode ones.
  Slots (the physical fleet) S = the most prefill + decode instances of any window.
  Prefill process k sits on slot k, decode process j on slot S-1-j; a prefill and a decode
  process on one slot stand for one instance that flips (with `--pin-cpus` they share a CPU:
  `Layout.cpu_rank`).
- In window w the active processes are prefill 0..p_w-1 and decode 0..d_w-1 (p_w + d_w <= S,
  so two active processes never share a slot). Window w starts `origin_s + start_s x
  time_scale` on the run clock (the arrivals' clock).
- At a window start, per process: one that leaves the active set *drains* (it takes no new
  requests; the caller re-routes its unstarted ones and lets it finish what it holds), and a
  waiting or flipping one is cancelled. One that joins: resumes at once if it was draining;
  else waits while the other process on its slot drains, then flips - serves
  `flip_latency_s x time_scale` after that drain ends; else serves at once (a slot whose
  flip to the other role was just cancelled flips back, with the latency). A drained
  process nobody waits for stops (the process stays up, idle).

`Schedule` is the decision logic only (no processes, no I/O): the caller feeds it the clock
(`advance`) and the drains it observes (`drained`), and applies the returned `Change`s.
Every change is logged in the simulator's scale-log schema (planner.sim.scale: times from
the first arrival, `instance` = the slot) plus the worker's name. The first window's
processes are not logged (as in the simulator). A VM's start latency is not modelled: the
processes are already running.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from planner.sim.scale import SCALE_LOG_COLUMNS

ROLES = ("prefill", "decode")
ACTIVE, DRAINING, IDLE, WAITING, FLIPPING = "active", "draining", "idle", "waiting", "flipping"
TESTBED_SCALE_COLUMNS = SCALE_LOG_COLUMNS + ("worker",)


@dataclass(frozen=True)
class Layout:
    prefill: int      # prefill processes
    decode: int       # decode processes
    slots: int

    def slot(self, role: str, index: int) -> int:
        return index if role == "prefill" else self.slots - 1 - index

    def cpu_rank(self, slot: int) -> int:
        """The slot's place in the order CPUs are handed out (--pin-cpus: rank mod CPUs):
        slots from both ends alternately (0, S-1, 1, S-2, ...), so the processes active
        in most windows - the lowest-indexed of each role - get CPUs of their own first."""
        return 2 * slot if slot <= self.slots - 1 - slot else 2 * (self.slots - 1 - slot) + 1

    def partner(self, role: str, index: int) -> tuple[str, int] | None:
        """The other role's process on the same slot, if there is one."""
        s = self.slot(role, index)
        if role == "prefill":
            j = self.slots - 1 - s
            return ("decode", j) if 0 <= j < self.decode else None
        return ("prefill", s) if s < self.prefill else None


def layout(windows) -> Layout:
    return Layout(max(int(w.prefill_instances) for w in windows), max(int(w.decode_instances) for w in windows),
                  max(int(w.prefill_instances) + int(w.decode_instances) for w in windows))


def worker_name(role: str, index: int) -> str:
    return ("p" if role == "prefill" else "d") + str(index)


class Change(NamedTuple):
    time_s: float       # run clock
    role: str           # the process's role
    index: int          # its index within the role
    action: str         # drain, resume, ready, flip, stop, cancel


def summary(windows) -> str:
    lay = layout(windows)
    p = sorted({int(w.prefill_instances) for w in windows})
    d = sorted({int(w.decode_instances) for w in windows})
    rng = lambda v: str(v[0]) if len(v) == 1 else f"{v[0]}-{v[-1]}"   # noqa: E731
    return (f"following {len(windows)} windows: prefill {rng(p)}, decode {rng(d)} instances, "
            f"{lay.slots} slots")


class Schedule:
    def __init__(self, windows, *, time_scale: float = 1.0, origin_s: float = 0.0, flip_latency_s: float = 0.0):
        if not windows:
            raise ValueError("no windows to follow")
        self.lay = layout(windows)
        self.origin = float(origin_s)
        self.bounds = [self.origin + float(w.start_s) * time_scale for w in windows]
        self.targets = [{"prefill": int(w.prefill_instances), "decode": int(w.decode_instances)} for w in windows]
        self.flip_s = float(flip_latency_s) * time_scale
        self.state = {(r, i): IDLE for r in ROLES for i in range(getattr(self.lay, r))}
        self.ready_at: dict[tuple[str, int], float] = {}
        self.window = 0
        self.log: list[tuple] = []
        for r in ROLES:
            for i in range(self.targets[0][r]):
                self.state[(r, i)] = ACTIVE

    # ---- queries -------------------------------------------------------------------
    def active(self, role: str) -> list[int]:
        return [i for (r, i), s in self.state.items() if r == role and s == ACTIVE]

    def draining(self) -> list[tuple[str, int]]:
        return [k for k, s in self.state.items() if s == DRAINING]

    def next_event_s(self) -> float:
        """Run-clock time of the next window start or flip end (inf: none left)."""
        t = self.bounds[self.window + 1] if self.window + 1 < len(self.bounds) else math.inf
        return min([t, *self.ready_at.values()])

    # ---- inputs --------------------------------------------------------------------
    def advance(self, now: float) -> list[Change]:
        """Apply the window starts and flip ends due by `now`, in time order (a flip
        ending at a window's start first)."""
        out: list[Change] = []
        while True:
            nb = self.bounds[self.window + 1] if self.window + 1 < len(self.bounds) else math.inf
            key = min(self.ready_at, key=lambda k: (self.ready_at[k], k), default=None)
            nf = self.ready_at[key] if key is not None else math.inf
            if min(nb, nf) > now:
                return out
            if nf <= nb:
                del self.ready_at[key]
                self._set(out, now, key, ACTIVE, "ready")
            else:
                self.window += 1
                self._boundary(out, now)

    def drained(self, role: str, index: int, now: float) -> list[Change]:
        """The caller saw draining process (role, index) hold nothing any more."""
        out: list[Change] = []
        if self.state.get((role, index)) != DRAINING:
            return out
        mate = self.lay.partner(role, index)
        if mate is not None and self.state[mate] == WAITING:
            self.state[(role, index)] = IDLE
            self._flip(out, now, (role, index), mate)
        else:
            self._set(out, now, (role, index), IDLE, "stop", from_role=role, to_role="")
        return out

    # ---- internals -----------------------------------------------------------------
    def _boundary(self, out: list, now: float) -> None:
        target = self.targets[self.window]
        want = {k: k[1] < target[k[0]] for k in self.state}
        cancelled_flip: set[int] = set()
        for k, s in self.state.items():
            if want[k]:
                continue
            if s == ACTIVE:
                self._set(out, now, k, DRAINING, "drain", from_role=k[0], to_role="")
            elif s in (WAITING, FLIPPING):
                if s == FLIPPING:
                    cancelled_flip.add(self.lay.slot(*k))
                    del self.ready_at[k]
                self._set(out, now, k, IDLE, "cancel", from_role=k[0], to_role="")
        for k, s in list(self.state.items()):
            if not want[k] or s in (ACTIVE, WAITING, FLIPPING):
                continue
            if s == DRAINING:
                self._set(out, now, k, ACTIVE, "resume")
                continue
            mate = self.lay.partner(*k)
            if mate is not None and self.state[mate] == DRAINING:
                self.state[k] = WAITING        # flips once the mate has drained
            elif mate is not None and self.lay.slot(*k) in cancelled_flip:
                self._flip(out, now, mate, k)  # the slot was flipping to the mate's role: flip back
            else:
                self._set(out, now, k, ACTIVE, "ready")

    def _flip(self, out: list, now: float, src: tuple[str, int], dst: tuple[str, int]) -> None:
        ready = now + self.flip_s
        self.state[dst] = FLIPPING
        self.ready_at[dst] = ready
        self._log(now, dst, "flip", src[0], dst[0], ready)
        out.append(Change(now, dst[0], dst[1], "flip"))
        if self.flip_s <= 0:
            del self.ready_at[dst]
            self._set(out, now, dst, ACTIVE, "ready")

    def _set(self, out: list, now: float, key, state: str, action: str, *, from_role: str = "",
             to_role: str | None = None) -> None:
        self.state[key] = state
        self._log(now, key, action, from_role, key[0] if to_role is None else to_role, math.nan)
        out.append(Change(now, key[0], key[1], action))

    def _log(self, now, key, action, from_role, to_role, ready) -> None:
        self.log.append((now - self.origin, self.window, self.lay.slot(*key), action, from_role, to_role,
                         ready - self.origin if ready == ready else math.nan, worker_name(*key)))
