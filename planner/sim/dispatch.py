"""Where requests go: the global prefill scheduler and the decode dispatcher.

Prefill: the least-loaded prefill instance (fewest prompt tokens routed and not yet
prefilled), ties to the lowest instance id.

Decode (TetriInfer's dispatcher, on predicted lengths): `power_of_two` samples two instances
among those with room for the request's predicted need (prompt + predicted output, the
bucket's lower bound, against the instance's KV capacity minus what is already routed
there) and takes the one with the lower heavy:light decode ratio (ties: less routed load,
then lower id); one with room is taken as it is; none with room falls back to the least
loaded. `least_loaded` takes the instance with the least routed predicted tokens; `random`
any instance; `round_robin` the next instance in turn, whatever its load (TensorRT-LLM's
disaggregated router and SGLang's data-parallel controller by default). A request is
"heavy" when its predicted output is at least `heavy_decode_tokens` (128, the paper's class
threshold).
"""
from __future__ import annotations

HEAVY_DECODE_TOKENS = 128


def least_loaded_prefill(instances):
    best = None
    for inst in instances:
        if inst.accepting and (best is None or inst.load_tokens < best.load_tokens):
            best = inst
    return best


class Dispatcher:
    def __init__(self, policy: str, rng, capacity_tokens: dict, heavy_decode_tokens: int = HEAVY_DECODE_TOKENS):
        self.policy = policy
        self.rng = rng                      # random.Random
        self.capacity = capacity_tokens     # iid -> KV tokens an instance holds
        self.heavy_tokens = heavy_decode_tokens
        self.load: dict[int, int] = {}      # iid -> predicted tokens routed, not finished
        self.heavy: dict[int, int] = {}
        self.light: dict[int, int] = {}
        self.turn = 0                       # round_robin: requests dispatched so far

    def register(self, iid: int, capacity_tokens: int) -> None:
        self.capacity[iid] = capacity_tokens
        self.load.setdefault(iid, 0)
        self.heavy.setdefault(iid, 0)
        self.light.setdefault(iid, 0)

    def choose(self, instances, need_tokens: int, pred_tokens: int):
        live = [d for d in instances if d.accepting]
        if not live:
            return None
        if len(live) == 1:
            return live[0]
        load = self.load
        if self.policy == "random":
            return live[self.rng.randrange(len(live))]
        if self.policy == "round_robin":
            self.turn += 1
            return live[(self.turn - 1) % len(live)]
        if self.policy == "least_loaded":
            return min(live, key=lambda d: (load[d.iid], d.iid))
        cap = self.capacity
        room = [d for d in live if cap[d.iid] - load[d.iid] >= need_tokens]
        if not room:
            return min(live, key=lambda d: (load[d.iid], d.iid))
        if len(room) == 1:
            return room[0]
        i = self.rng.randrange(len(room))
        j = self.rng.randrange(len(room) - 1)
        if j >= i:
            j += 1
        a, b = room[i], room[j]
        return min((a, b), key=self._ratio_key)

    def _ratio_key(self, d):
        iid = d.iid
        return ((self.heavy[iid] + 1) / (self.light[iid] + 1), self.load[iid], iid)

    def assign(self, iid: int, need_tokens: int, pred_tokens: int) -> None:
        self.load[iid] += need_tokens
        if pred_tokens >= self.heavy_tokens:
            self.heavy[iid] += 1
        else:
            self.light[iid] += 1

    def release(self, iid: int, need_tokens: int, pred_tokens: int) -> None:
        self.load[iid] -= need_tokens
        if pred_tokens >= self.heavy_tokens:
            self.heavy[iid] -= 1
        else:
            self.light[iid] -= 1
