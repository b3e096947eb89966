"""The global scheduler's decisions, with the simulator's own pure pieces
(planner/sim/dispatch.py), so the testbed and the simulator route alike:

- `route`: a new request goes to the least-loaded accepting prefill instance (fewest
  prompt tokens routed and not yet prefilled; ties to the lowest index);
- `dispatch`: a prefilled request goes to the accepting decode instance the simulator's
  `Dispatcher` picks (power-of-two choices among instances with room for prompt +
  predicted output, lower heavy:light ratio first; or least_loaded / random).

Plans over time (testbed/windows.py): `set_accepting` turns an instance off (it drains:
no new routes or dispatches) or on; `reroute` moves a request a draining prefill instance
gave back (or one a new instance takes over, `donor_for`) to the least-loaded accepting
one; `drained` says when an instance holds nothing any more (a prefill instance: no
request routed and not prefilled, no give-back unanswered, no KV transfer unsent).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from planner.sim.dispatch import Dispatcher, least_loaded_prefill


@dataclass
class _Instance:
    iid: int
    load_tokens: int = 0
    accepting: bool = True
    held: int = 0                 # requests here and not done with this role
    queued: set = field(default_factory=set)   # prefill: routed, not started (as far as heard)
    sending: int = 0              # prefill: KV transfers ordered and not reported sent
    giving_back: int = 0          # prefill: give-back orders not answered yet


class GlobalScheduler:
    def __init__(self, n_prefill: int, n_decode: int, *, dispatcher: str = "power_of_two",
                 decode_capacity_tokens: int = 65536, seed: int = 0):
        if n_prefill < 1 or n_decode < 1:
            raise ValueError("need at least one prefill and one decode instance")
        self.prefill = [_Instance(i) for i in range(n_prefill)]
        self.decode = [_Instance(j) for j in range(n_decode)]
        self.dispatcher = Dispatcher(dispatcher, random.Random(seed), {})
        for d in self.decode:
            self.dispatcher.register(d.iid, int(decode_capacity_tokens))
        self._at: dict[int, tuple] = {}

    # ---- prefill ---------------------------------------------------------------------
    def route(self, rid: int, prompt_tokens: int, to: int | None = None) -> int:
        """The prefill instance for `rid`: `to` if it accepts, else the least loaded."""
        p = self.prefill[to] if to is not None and self.prefill[to].accepting else least_loaded_prefill(self.prefill)
        if p is None:
            raise RuntimeError("no prefill instance accepts requests")
        p.load_tokens += prompt_tokens
        p.held += 1
        p.queued.add(rid)
        self._at[rid] = (p.iid, prompt_tokens)
        return p.iid

    def started(self, rid: int) -> None:
        p, _ = self._at[rid]
        self.prefill[p].queued.discard(rid)

    def reroute(self, rid: int, to: int | None = None) -> int:
        """A request given back unstarted leaves its prefill instance for another."""
        _, tokens = self._leave_prefill(rid)
        return self.route(rid, tokens, to)

    def prefilled(self, rid: int) -> int:
        """`rid`'s prompt is done; its instance now owes one KV transfer. Returns it."""
        p, _ = self._leave_prefill(rid)
        self.prefill[p].sending += 1
        return p

    def kv_sent(self, p: int) -> None:
        self.prefill[p].sending -= 1

    def _leave_prefill(self, rid: int) -> tuple[int, int]:
        p, tokens = self._at.pop(rid)
        inst = self.prefill[p]
        inst.load_tokens -= tokens
        inst.held -= 1
        inst.queued.discard(rid)
        return p, tokens

    def donor_for(self, target: int) -> tuple[int, int] | None:
        """(instance, requests) to hand unstarted work to a prefill instance that has just
        become active, as the simulator does: half the queue of the accepting instance
        with the most unstarted requests (at least 2; ties to the lowest index)."""
        donors = [p for p in self.prefill if p.iid != target and p.accepting and len(p.queued) > 1]
        if not donors:
            return None
        d = max(donors, key=lambda p: (len(p.queued), -p.iid))
        return d.iid, len(d.queued) // 2

    # ---- decode ----------------------------------------------------------------------
    def dispatch(self, rid: int, prompt_tokens: int, predicted_tokens: int) -> int:
        need = prompt_tokens + predicted_tokens
        d = self.dispatcher.choose(self.decode, need, predicted_tokens)
        if d is None:
            raise RuntimeError("no decode instance accepts requests")
        self.dispatcher.assign(d.iid, need, predicted_tokens)
        d.held += 1
        self._at[rid] = (d.iid, need, predicted_tokens)
        return d.iid

    def finished(self, rid: int) -> None:
        d, need, pred = self._at.pop(rid)
        self.dispatcher.release(d, need, pred)
        self.decode[d].held -= 1

    # ---- plans over time -------------------------------------------------------------
    def instances(self, role: str) -> list[_Instance]:
        return self.prefill if role == "prefill" else self.decode

    def set_accepting(self, role: str, index: int, accepting: bool) -> None:
        self.instances(role)[index].accepting = accepting

    def drained(self, role: str, index: int) -> bool:
        inst = self.instances(role)[index]
        if role == "prefill":
            return inst.held == 0 and inst.giving_back == 0 and inst.sending == 0
        return inst.held == 0
