"""The global scheduler's decisions, with the simulator's own pure pieces
(planner/sim/dispatch.py), so the testbed and the simulator route alike:

- `route`: a new request goes to the least-loaded prefill instance (fewest prompt tokens
  routed and not yet prefilled; ties to the lowest index);
- `dispatch`: a prefilled request goes to the decode instance the simulator's `Dispatcher`
  picks (power-of-two choices among instances with room for prompt + predicted output,
  lower heavy:light ratio first; or least_loaded / random).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from planner.sim.dispatch import Dispatcher, least_loaded_prefill


@dataclass
class _Instance:
    iid: int
    load_tokens: int = 0
    accepting: bool = True


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

    def route(self, rid: int, prompt_tokens: int) -> int:
        p = least_loaded_prefill(self.prefill)
        p.load_tokens += prompt_tokens
        self._at[rid] = (p.iid, prompt_tokens)
        return p.iid

    def prefilled(self, rid: int) -> None:
        p, tokens = self._at.pop(rid)
        self.prefill[p].load_tokens -= tokens

    def dispatch(self, rid: int, prompt_tokens: int, predicted_tokens: int) -> int:
        need = prompt_tokens + predicted_tokens
        d = self.dispatcher.choose(self.decode, need, predicted_tokens).iid
        self.dispatcher.assign(d, need, predicted_tokens)
        self._at[rid] = (d, need, predicted_tokens)
        return d

    def finished(self, rid: int) -> None:
        d, need, pred = self._at.pop(rid)
        self.dispatcher.release(d, need, pred)
