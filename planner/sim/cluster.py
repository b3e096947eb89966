"""The simulated cluster: instances wired to the global scheduler, dispatcher, KV links and
flip logic, for the three deployment modes.

Instance ids: disaggregated plans number prefill instances 0..P-1 and decode instances
P..P+D-1 (with flips enabled an id keeps its number when it changes role); coupled plans
number their instances 0..N-1 and a request's prefill and decode instance are the same.
With time windows (scale.py) the first window's instances are numbered that way and every
instance started later takes the next number; an instance's role objects (prefill,
decode) are made when it first serves that role.
"""
from __future__ import annotations

import random

from planner.sim.coupled import AdpBalance, ChunkedCoupledInstance
from planner.sim.costs import DecodeCost, PrefillCost, ScaledPerf
from planner.sim.decode import GREEDY, DecodeInstance
from planner.sim.dispatch import Dispatcher, least_loaded_prefill
from planner.sim.flip import Flipper
from planner.sim.frontend import FrontEnd
from planner.sim.kvlink import KvLink
from planner.sim.prefill import PrefillInstance
from planner.sim.scale import Scaler

VLLM_MAX_BATCHED_TOKENS = 2048   # vLLM's default max_num_batched_tokens (2023-24 releases)


class Cluster:
    def __init__(self, deployment, reqs, loop, *, seed: int = 0, block_tokens: int = 16,
                 decode_batch_limit: int = 256, on_finish=None, coupled_admission: str = GREEDY,
                 max_prefill_tokens: int | None = None, origin_s: float = 0.0, time_factor: float = 1.0,
                 start_latency_s: float | None = None, start_ahead: bool = False,
                 coupled_max_paddings: int | None = None, pad_prefill_chunks: bool = False,
                 step_scale: float = 1.0):
        self.dep = deployment
        self.step_scale = float(step_scale)
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
        self.scaler = None
        self.coupled_max_paddings = coupled_max_paddings
        self.pad_prefill_chunks = pad_prefill_chunks
        self._decode_by_id: dict = {}
        self._prefill_by_id: dict = {}
        self._coupled_by_id: dict = {}
        pol = deployment.policies
        windows = bool(deployment.windows)
        # with windows the plan decides the roles: no reactive flips
        self.flipper = Flipper(loop, self, None if windows else pol.flip_idle_s, pol.flip_latency_s)
        if windows:
            from planner.sim.scale import DEFAULT_START_LATENCY_S
            self.scaler = Scaler(self, loop, deployment, origin_s=origin_s, time_factor=time_factor,
                                 start_latency_s=DEFAULT_START_LATENCY_S if start_latency_s is None
                                 else start_latency_s, start_ahead=start_ahead)
            self._on_idle = self._on_idle_scaled
        else:
            self._on_idle = self.flipper.on_idle
        # where requests go: decode instances (disaggregated), or with round_robin the coupled
        # instances / DP ranks in turn (otherwise the one with the fewest outstanding)
        self.dispatcher = Dispatcher(pol.dispatcher, self.rng, {})
        if deployment.mode == "disaggregated":
            self._build_disaggregated()
            for inst in self.prefill + self.decode:   # idle from the start
                if inst.accepting:
                    self.flipper.on_idle(0.0, inst)
        else:
            self._build_coupled(coupled_admission, max_prefill_tokens)
        if self.scaler is not None:
            self.scaler.begin()

    # ---- construction -------------------------------------------------------------
    def _perf(self, role: str):
        """The role's performance model, every step `step_scale` times as costly."""
        perf = self.dep.perf(role)
        return perf if self.step_scale == 1.0 else ScaledPerf(perf, self.step_scale)

    def _build_disaggregated(self) -> None:
        dep, pol = self.dep, self.dep.policies
        self.perf_by_role = {"prefill": self._perf("prefill"), "decode": self._perf("decode")}
        self.costs = {r: (PrefillCost(p), DecodeCost(p)) for r, p in self.perf_by_role.items()}
        self.kv_bytes_per_token = self.perf_by_role["prefill"].kv_bytes_per_token
        # a prompt whose KV cannot fit in an empty prefill instance, or in an empty decode
        # instance when it has tokens to decode, is aborted on arrival (as the decode instance
        # would after the prefill; a 10^9-token prompt is not prefilled chunk by chunk first)
        self.cap_blocks = {r: p.kv_capacity_tokens // self.block_tokens for r, p in self.perf_by_role.items()}
        if self.scaler is not None:
            return                      # the scaler makes the instances
        # an instance with attention DP runs `dp` ranks, each with its own queue and KV cache
        P, D = dep.prefill.instances * dep.prefill.dp, dep.decode.instances * dep.decode.dp
        flips = pol.flip_idle_s is not None
        for iid in range(P + D):
            home = "prefill" if iid < P else "decode"
            self.role_of[iid] = home
            if home == "prefill" or flips:
                self._make_prefill(iid, home).accepting = home == "prefill"
            if home == "decode" or flips:
                self._make_decode(iid, home).accepting = home == "decode"

    def _make_prefill(self, iid: int, hardware: str) -> PrefillInstance:
        """A prefill role object on instance `iid`; `hardware` is the role whose GPU and TP
        the instance has (an instance keeps its hardware when it flips)."""
        dep, pol = self.dep, self.dep.policies
        pcost, _ = self.costs[hardware]
        p = PrefillInstance(iid, self.loop, self.reqs, self.perf_by_role[hardware], dep.chunk_tokens,
                            pol.prefill_batch_limit, pol.prefill_order, self._on_prefill_done,
                            self._on_idle, cost=pcost)
        p.pad_to_chunk = self.pad_prefill_chunks
        self.prefill.append(p)
        self._prefill_by_id[iid] = p
        self.links[iid] = KvLink(self.loop, dep.kv_link_gb_s, dep.kv_latency_s, self._on_kv_done)
        if self.scaler is not None:
            p.win, p.win_role = self.scaler.busy, "prefill"
        return p

    def _make_decode(self, iid: int, hardware: str) -> DecodeInstance:
        pcost, dcost = self.costs[hardware]
        d = DecodeInstance(iid, self.loop, self.reqs, self.perf_by_role[hardware], block_tokens=self.block_tokens,
                           batch_limit=self.decode_batch_limit, admission=self.dep.policies.decode_admission,
                           on_finish=self._on_decode_finish, on_idle=self._on_idle,
                           decode_cost=dcost, prefill_cost=pcost)
        self.decode.append(d)
        self._decode_by_id[iid] = d
        self.dispatcher.register(iid, d.cap * self.block_tokens)
        if self.scaler is not None:
            d.win, d.win_role = self.scaler.busy, "decode"
        return d

    def _build_coupled(self, admission: str, max_prefill_tokens: int | None) -> None:
        dep = self.dep
        perf = self._perf("coupled")
        self._coupled_kw = dict(perf=perf, pcost=PrefillCost(perf), dcost=DecodeCost(perf), admission=admission,
                                budget=max_prefill_tokens or max(VLLM_MAX_BATCHED_TOKENS, dep.chunk_tokens))
        if self.scaler is not None:
            return
        for iid in range(dep.coupled.instances * dep.coupled.dp):
            self.role_of[iid] = "coupled"
            self._make_coupled(iid)
        eng = dep.engine
        rate = eng.frontend_tokens_per_s
        if rate < float("inf"):        # one streaming front end per engine instance, shared by its DP ranks
            for first in range(0, len(self.coupled), dep.coupled.dp):
                front = FrontEnd(rate)
                for rank in self.coupled[first:first + dep.coupled.dp]:
                    rank.frontend = front
        if dep.coupled.dp > 1 and eng.adp_timeout_iters and dep.mode == "chunked_coupled":
            for first in range(0, len(self.coupled), dep.coupled.dp):
                gate = AdpBalance(eng.adp_timeout_iters, eng.adp_batching_wait_iters)
                gate.ranks = self.coupled[first:first + dep.coupled.dp]
                for rank in gate.ranks:
                    rank.adp = gate

    def _make_coupled(self, iid: int) -> DecodeInstance:
        k = self._coupled_kw
        kw = dict(block_tokens=self.block_tokens, batch_limit=self.decode_batch_limit,
                  admission=k["admission"], on_finish=self._on_coupled_finish,
                  decode_cost=k["dcost"], prefill_cost=k["pcost"])
        if self.scaler is not None:
            kw["on_idle"] = self._on_idle
        if self.dep.mode == "chunked_coupled":
            eng = self.dep.engine
            inst = ChunkedCoupledInstance(iid, self.loop, self.reqs, k["perf"], chunk_tokens=self.dep.chunk_tokens,
                                          batch_wait=(eng.batch_wait_iters, eng.batch_wait_ratio), **kw)
        else:
            inst = DecodeInstance(iid, self.loop, self.reqs, k["perf"], prefill_on_admit=True,
                                  max_prefill_tokens=k["budget"], max_paddings=self.coupled_max_paddings,
                                  recv_interval=self.dep.engine.recv_interval, **kw)
        inst.outstanding = 0
        self.coupled.append(inst)
        self._coupled_by_id[iid] = inst
        if self.scaler is not None:
            inst.win, inst.win_role = self.scaler.busy, "coupled"
        return inst

    # ---- request path ----------------------------------------------------------------
    def on_arrival(self, now: float, rid: int) -> None:
        if self.coupled:
            live = self.coupled if self.scaler is None else [c for c in self.coupled if c.accepting]
            if self.dispatcher.policy == "round_robin":     # the engine's data-parallel controller
                inst = self.dispatcher.choose(live, 0, 0)
            else:
                inst = min(live, key=_outstanding_key)
            inst.outstanding += 1
            self.reqs.prefill_instance[rid] = inst.iid
            if self.dep.mode == "coupled":
                self.reqs.prefill_start[rid] = now
            inst.arrive(now, rid)
            return
        reqs = self.reqs
        blocks = (reqs.prompt[rid] + self.block_tokens) // self.block_tokens
        if blocks > self.cap_blocks["prefill"] or (reqs.output[rid] > 1 and blocks > self.cap_blocks["decode"]):
            reqs.aborted[rid] = True
            self._count_finish(now, rid)
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
        if self.scaler is not None:
            self.scaler.on_kv_sent(now, reqs.prefill_instance[rid])

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
        """Instance `iid` serves `role` from now on (made on first use)."""
        self.role_of[iid] = role
        if role == "prefill":
            p = self._prefill_by_id.get(iid)
            if p is None:
                p = self._make_prefill(iid, self._hardware(iid, role))
            p.accepting = True
            self._steal_prefill_work(now, p)
        elif role == "decode":
            d = self._decode_by_id.get(iid)
            if d is None:
                d = self._make_decode(iid, self._hardware(iid, role))
            d.accepting = True
        else:
            c = self._coupled_by_id.get(iid)
            if c is None:
                c = self._make_coupled(iid)
            c.accepting = True

    def _hardware(self, iid: int, role: str) -> str:
        # an instance keeps the hardware of the role it was started for; flips stay in a
        # pool (same GPU and TP), so the other role's hardware is the same
        return role

    def deactivate(self, now: float, iid: int, role: str) -> None:
        """Instance `iid` takes no new work in `role` (it drains): unstarted requests queued
        on it move to the least-loaded instance of the role that still accepts."""
        reqs = self.reqs
        if role == "prefill":
            p = self._prefill_by_id[iid]
            p.accepting = False
            while p.queued and any(q.accepting for q in self.prefill):
                rid = p._pop()
                p.load_tokens -= reqs.prompt[rid]
                least_loaded_prefill(self.prefill).enqueue(now, rid)
        elif role == "decode":
            self._decode_by_id[iid].accepting = False
        else:
            c = self._coupled_by_id[iid]
            c.accepting = False
            live = [x for x in self.coupled if x.accepting]
            if live:
                for rid in c.take_unstarted():
                    c.outstanding -= 1
                    self.on_arrival_to(now, rid, min(live, key=_outstanding_key))

    def on_arrival_to(self, now: float, rid: int, inst) -> None:
        inst.outstanding += 1
        self.reqs.prefill_instance[rid] = inst.iid
        inst.arrive(now, rid)

    def drained(self, iid: int, role: str) -> bool:
        """Nothing left in `role` on instance `iid` (a prefill instance's KV sent too)."""
        if role == "prefill":
            return self._prefill_by_id[iid].idle and not self.links[iid]._active
        if role == "decode":
            return self._decode_by_id[iid].idle and self.dispatcher.load[iid] == 0
        c = self._coupled_by_id[iid]
        return c.idle and c.outstanding == 0

    def work_of(self, iid: int, role: str) -> int:
        """Work an instance holds in `role` (what a shrinking role releases least of)."""
        if role == "prefill":
            p = self._prefill_by_id[iid]
            return p.load_tokens + (0 if p.idle else 1)
        if role == "decode":
            return self.dispatcher.load[iid]
        return self._coupled_by_id[iid].outstanding

    def _on_idle_scaled(self, now: float, inst) -> None:
        self.scaler.on_idle(now, inst)

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
        if self.scaler is not None:
            self.scaler.close(now)

    def role_busy_gpu_s(self) -> dict:
        """Busy GPU-seconds per role the instance's hardware was bought for (flip time at
        the decode price) - the plan's home roles without windows."""
        roles = self.dep.roles()
        out: dict[str, float] = {}
        if self.dep.mode != "disaggregated":
            out["coupled"] = sum(c.busy_s for c in self.coupled) * roles["coupled"].tp
            return out
        if self.scaler is not None:
            for name, pool in (("prefill", self.prefill), ("decode", self.decode)):
                out[name] = sum(i.busy_s for i in pool) * roles[name].tp
        else:
            P = roles["prefill"].instances * roles["prefill"].dp
            for inst in self.prefill + self.decode:
                home = "prefill" if inst.iid < P else "decode"
                out[home] = out.get(home, 0.0) + inst.busy_s * roles[home].tp
        out["decode"] = out.get("decode", 0.0) + self.flipper.flipping_s * roles["decode"].tp
        return out

    def busy_instance_s(self) -> dict:
        out = {"prefill": sum(p.busy_s for p in self.prefill),
               "decode": sum(d.busy_s for d in self.decode),
               "coupled": sum(c.busy_s for c in self.coupled),
               "flipping": self.flipper.flipping_s}
        out["total"] = sum(out.values())
        return out


def _outstanding_key(inst):
    return (inst.outstanding, inst.iid)
