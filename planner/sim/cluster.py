"""The simulated cluster: instances wired to the global scheduler, dispatcher, KV links and
flip logic, for the three deployment modes.

Instance ids: disaggregated plans number prefill instances 0..P-1 and decode instances
P..P+D-1 (with flips enabled an id keeps its number when it changes role); coupled plans
number their instances 0..N-1 and a request's prefill and decode instance are the same.
"""
from __future__ import annotations

import random

from .coupled import ChunkedCoupledInstance
from .costs import DecodeCost, PrefillCost
from .decode import GREEDY, DecodeInstance
from .dispatch import Dispatcher, least_loaded_prefill
from .flip import Flipper
from .kvlink import KvLink
from .prefill import PrefillInstance

VLLM_MAX_BATCHED_TOKENS = 2048   # vLLM's default max_num_batched_tokens (2023-24 releases)


class Cluster:
    def __init__(self, deployment, reqs, loop, *, seed: int = 0, block_tokens: int = 16,
                 decode_batch_limit: int = 256, on_finish=None, coupled_admission: str = GREEDY,
                 max_prefill_tokens: int | None = None):
        self.dep = deployment
        self.reqs = reqs
        self.loop = loop
        self.rng = random.Random(seed)
        self.block_tokens = block_tokens
        self.decode_batch_limit = decode_batch_limit
        self.user_on_finish = on_finish
        self.finished = 0
        self.aborted = 0
        self.role_of: dict[int, str] = {}
        self.prefill: list[PrefillInstance] = []
        self.decode: list[DecodeInstance] = []
        self.coupled: list[DecodeInstance] = []
        self.links: dict[int, KvLink] = {}
        pol = deployment.policies
        self.flipper = Flipper(loop, self, pol.flip_idle_s, pol.flip_latency_s)
        if deployment.mode == "disaggregated":
            self._build_disaggregated()
            for inst in self.prefill + self.decode:   # idle from the start
                if inst.accepting:
                    self.flipper.on_idle(0.0, inst)
        else:
            self._build_coupled(coupled_admission, max_prefill_tokens)

    # ---- construction -------------------------------------------------------------
    def _build_disaggregated(self) -> None:
        dep, pol = self.dep, self.dep.policies
        P, D = dep.prefill.instances, dep.decode.instances
        flips = pol.flip_idle_s is not None
        perf_by_role = {"prefill": dep.perf("prefill"), "decode": dep.perf("decode")}
        costs = {r: (PrefillCost(p), DecodeCost(p)) for r, p in perf_by_role.items()}
        self.kv_bytes_per_token = perf_by_role["prefill"].kv_bytes_per_token
        self.dispatcher = Dispatcher(pol.dispatcher, self.rng, {})
        for iid in range(P + D):
            home = "prefill" if iid < P else "decode"
            self.role_of[iid] = home
            perf = perf_by_role[home]          # an instance keeps its hardware when it flips
            pcost, dcost = costs[home]
            if home == "prefill" or flips:
                p = PrefillInstance(iid, self.loop, self.reqs, perf, dep.chunk_tokens,
                                    pol.prefill_batch_limit, pol.prefill_order,
                                    self._on_prefill_done, self.flipper.on_idle, cost=pcost)
                p.accepting = home == "prefill"
                self.prefill.append(p)
                self.links[iid] = KvLink(self.loop, dep.kv_link_gb_s, dep.kv_latency_s, self._on_kv_done)
            if home == "decode" or flips:
                d = DecodeInstance(iid, self.loop, self.reqs, perf, block_tokens=self.block_tokens,
                                   batch_limit=self.decode_batch_limit, admission=pol.decode_admission,
                                   on_finish=self._on_decode_finish, on_idle=self.flipper.on_idle,
                                   decode_cost=dcost, prefill_cost=pcost)
                d.accepting = home == "decode"
                self.decode.append(d)
                self.dispatcher.register(iid, d.cap * self.block_tokens)
        self._decode_by_id = {d.iid: d for d in self.decode}
        self._prefill_by_id = {p.iid: p for p in self.prefill}

    def _build_coupled(self, admission: str, max_prefill_tokens: int | None) -> None:
        dep = self.dep
        perf = dep.perf("coupled")
        pcost, dcost = PrefillCost(perf), DecodeCost(perf)
        budget = max_prefill_tokens or max(VLLM_MAX_BATCHED_TOKENS, dep.chunk_tokens)
        for iid in range(dep.coupled.instances):
            self.role_of[iid] = "coupled"
            kw = dict(block_tokens=self.block_tokens, batch_limit=self.decode_batch_limit,
                      admission=admission, on_finish=self._on_coupled_finish,
                      decode_cost=dcost, prefill_cost=pcost)
            if dep.mode == "chunked_coupled":
                inst = ChunkedCoupledInstance(iid, self.loop, self.reqs, perf,
                                              chunk_tokens=dep.chunk_tokens, **kw)
            else:
                inst = DecodeInstance(iid, self.loop, self.reqs, perf, prefill_on_admit=True,
                                      max_prefill_tokens=budget, **kw)
            inst.outstanding = 0
            self.coupled.append(inst)

    # ---- request path ----------------------------------------------------------------
    def on_arrival(self, now: float, rid: int) -> None:
        if self.coupled:
            inst = min(self.coupled, key=_outstanding_key)
            inst.outstanding += 1
            self.reqs.prefill_instance[rid] = inst.iid
            if self.dep.mode == "coupled":
                self.reqs.prefill_start[rid] = now
            inst.arrive(now, rid)
            return
        least_loaded_prefill(self.prefill).enqueue(now, rid)

    def _on_prefill_done(self, now: float, rid: int, inst) -> None:
        reqs = self.reqs
        if reqs.output[rid] <= 1:       # the prefill made the only token
            reqs.finish[rid] = now
            self._count_finish(now, rid)
            return
        need = reqs.prompt[rid] + reqs.pred[rid]
        d = self.dispatcher.choose(self.decode, need, reqs.pred[rid])
        reqs.decode_instance[rid] = d.iid
        self.dispatcher.assign(d.iid, need, reqs.pred[rid])
        self.links[inst.iid].send(now, self.kv_bytes_per_token * reqs.prompt[rid], rid)

    def _on_kv_done(self, now: float, rid: int) -> None:
        reqs = self.reqs
        reqs.kv_done[rid] = now
        reqs.has_kv[rid] = True
        self._decode_by_id[reqs.decode_instance[rid]].arrive(now, rid)

    def _on_decode_finish(self, now: float, rid: int, inst) -> None:
        reqs = self.reqs
        self.dispatcher.release(inst.iid, reqs.prompt[rid] + reqs.pred[rid], reqs.pred[rid])
        self._count_finish(now, rid)

    def _on_coupled_finish(self, now: float, rid: int, inst) -> None:
        inst.outstanding -= 1
        self._count_finish(now, rid)

    def _count_finish(self, now: float, rid: int) -> None:
        if self.reqs.aborted[rid]:
            self.aborted += 1
        else:
            self.finished += 1
        if self.user_on_finish is not None:
            self.user_on_finish(now, rid)

    # ---- flips -------------------------------------------------------------------------
    def is_idle(self, inst) -> bool:
        if isinstance(inst, PrefillInstance):
            return inst.idle
        return inst.idle and self.dispatcher.load[inst.iid] == 0

    def active_count(self, role: str) -> int:
        pool = self.prefill if role == "prefill" else self.decode
        return sum(1 for i in pool if i.accepting)

    def loaded(self, role: str) -> bool:
        if role == "prefill":
            return any(p.accepting and p.queued > 0 for p in self.prefill)
        return any(d.accepting and d.waiting for d in self.decode)

    def activate(self, now: float, iid: int, role: str) -> None:
        self.role_of[iid] = role
        if role == "prefill":
            self._prefill_by_id[iid].accepting = True
            self._steal_prefill_work(now, self._prefill_by_id[iid])
        else:
            self._decode_by_id[iid].accepting = True

    def _steal_prefill_work(self, now: float, target) -> None:
        """A fresh prefill instance takes queued, unstarted requests from the busiest one."""
        donors = [p for p in self.prefill if p is not target and p.accepting and p.queued > 1]
        if not donors:
            return
        donor = max(donors, key=lambda p: (p.queued, -p.iid))
        for _ in range(donor.queued // 2):
            rid = donor._pop()
            donor.load_tokens -= self.reqs.prompt[rid]
            target.enqueue(now, rid)

    # ---- accounting --------------------------------------------------------------------
    def instances(self):
        return self.prefill + self.decode + self.coupled

    def close(self, now: float) -> None:
        for d in self.decode + self.coupled:
            d.close(now)

    def busy_instance_s(self) -> dict:
        out = {"prefill": sum(p.busy_s for p in self.prefill),
               "decode": sum(d.busy_s for d in self.decode),
               "coupled": sum(c.busy_s for c in self.coupled),
               "flipping": self.flipper.flipping_s}
        out["total"] = sum(out.values())
        return out


def _outstanding_key(inst):
    return (inst.outstanding, inst.iid)
