"""Coupled baselines: prefill and decode on the same instances.

vLLM-style (`coupled`): a `DecodeInstance` with `prefill_on_admit` - at an iteration
boundary, waiting requests are admitted FCFS while their prompt blocks fit (greedy, vLLM's
policy) and their prompts total at most `max_prefill_tokens`; the whole-prompt prefill
iteration of the admitted requests stalls every running decode; their first token is out
when it ends.

Sarathi-style (`chunked_coupled`): `ChunkedCoupledInstance` below. Every iteration carries
the running decodes plus a prefill chunk of up to `chunk_tokens - B` prompt tokens (requests
sliced and merged FCFS, a request's blocks reserved for its whole prompt when its first
slice is scheduled). A mixed iteration costs `PerfModel.step_s(c, cached, B, T, slices)`
(the planner's Sarathi iteration formula; each prompt slice attends over its own tokens).
Without prefill work the instance runs plain decode iterations (summed ahead as on a
decode instance). A request joins the decode batch at the end of the iteration that
finished its prompt, its first token then.
"""
from __future__ import annotations

from collections import deque

from planner.sim.costs import MixedCost
from planner.sim.decode import GREEDY, DecodeInstance


class AdpBalance:
    """TensorRT-LLM's attention-DP balance (attention_dp_config.enable_balance; PyExecutor's
    _balance_adp_requests): the DP ranks of one engine run every step together, and a rank
    starts new prompts only when every rank has a prompt waiting and a free slot (so all of
    them prefill in the same step), after `batching_wait_iters` more steps when every rank
    also has requests decoding; otherwise it holds them, for at most `timeout_iters` of its
    steps, or not at all while some rank has nothing to decode. Ranks are simulated on
    their own clocks; each decides at its own step boundary from the others' queues."""

    def __init__(self, timeout_iters: int, batching_wait_iters: int):
        self.timeout, self.batching = int(timeout_iters), int(batching_wait_iters)
        self.ranks: list = []

    def may_start(self, rank) -> bool:
        """Whether `rank`, with prompts waiting, starts them in the step it is planning (call
        once per step: it counts the steps waited)."""
        ranks = self.ranks
        all_gen = all(r.B > 0 for r in ranks)
        if all(r.B < r.batch_limit and (r.pq or r.partial >= 0) for r in ranks):
            rank.adp_wait = 0
            if all_gen and rank.adp_batch < self.batching:
                rank.adp_batch += 1
                return False
            rank.adp_batch = 0
            return True
        rank.adp_wait += 1
        if rank.adp_wait >= self.timeout or not all_gen:
            rank.adp_wait = 0
            return True
        return False


class ChunkedCoupledInstance(DecodeInstance):
    def __init__(self, iid, loop, reqs, perf, *, chunk_tokens: int, batch_wait: tuple[int, float] = (0, 0.0), **kw):
        kw.setdefault("admission", GREEDY)
        super().__init__(iid, loop, reqs, perf, **kw)
        self.chunk = int(chunk_tokens)
        # TensorRT-LLM's batch waiting (PyExecutor._waiting_requests): (steps, share of the budget)
        self.wait_iters, self.wait_ratio = int(batch_wait[0]), float(batch_wait[1])
        self.waited = 0
        self.mixed = MixedCost(perf)
        self.pq: deque = deque()       # requests whose prefill has not started
        self.partial = -1
        self.partial_done = 0
        self.joining: list[int] = []   # prompts finished by the iteration now running
        self.pending_res: dict[int, int] = {}   # reservations (blocks) of requests in prefill, not yet running
        self.adp: AdpBalance | None = None      # the engine's attention-DP balance, shared by its ranks
        self.adp_wait = self.adp_batch = 0

    @property
    def idle(self) -> bool:
        return super().idle and not self.pq and self.partial < 0 and not self.joining

    def take_unstarted(self) -> list[int]:
        out = list(self.pq)
        self.pq.clear()
        return out

    def arrive(self, now: float, rid: int) -> None:
        self.pq.append(rid)
        if self.partial >= 0 or len(self.pq) > 1 or self.joining:
            if not (self.ev_n < 0 and self.B == 0):
                return  # already stepping one iteration at a time
        self._wake(now)

    def _more_work(self) -> bool:
        return bool(self.joining) or self.partial >= 0 or (bool(self.pq) and self._can_start())

    def _can_start(self) -> bool:
        """Whether the next waiting request may start its prefill: a running slot, its
        prompt's blocks now, and under a reserving admission (TensorRT-LLM's guaranteed-no-
        evict) its whole reservation on top of those of the running and prefilling requests."""
        rid = self.pq[0]
        need = (self.reqs.prompt[rid] + self.bs) // self.bs
        if not (self.B + len(self.joining) < self.batch_limit and self._fits(need)):
            return False
        if self.admission == GREEDY:
            return True
        return self.R + sum(self.pending_res.values()) + self._reserve_blocks(rid, self.reqs.prompt[rid]) <= self.cap

    def _batch_waits(self, left: int) -> bool:
        """TensorRT-LLM's batch waiting, once per step while requests decode and prompts wait
        (not with attention DP): the prompts this step could take, with the decode tokens,
        reach `wait_ratio` of the token budget, or they have waited `wait_iters` steps -
        then they start (the count restarts); otherwise they wait one more step."""
        tokens = self.B
        for rid in self.pq:
            p = self.reqs.prompt[rid]
            if p > left:
                break
            tokens += p
            left -= p
        if self.waited >= self.wait_iters or (self.wait_ratio and tokens >= self.wait_ratio * self.chunk):
            self.waited = 0
            return False
        self.waited += 1
        return True

    def _joins(self, now: float) -> float:
        reqs = self.reqs
        seen = self._first_tokens(now, len(self.joining))
        for rid in self.joining:
            self.held -= (reqs.prompt[rid] + self.bs) // self.bs
            reqs.first_token[rid] = seen
            reqs.decode_instance[rid] = self.iid
            reqs.has_kv[rid] = True
            reserved = self.pending_res.pop(rid, 0)
            if reqs.output[rid] <= 1:
                reqs.finish[rid] = seen
                if self.on_finish is not None:
                    self.on_finish(now, rid, self)
                continue
            reqs.decode_start[rid] = now
            self._add(rid, reqs.prompt[rid], reserved)
        self.joining = []
        return 0.0

    def _extra_iteration_s(self, now: float) -> float:
        reqs = self.reqs
        prompt = reqs.prompt
        bs = self.bs
        left = self.chunk - self.B
        weighted = 0.0
        tokens = slices = 0
        if self.partial >= 0 and left > 0:
            rid, have = self.partial, self.partial_done
            take = min(prompt[rid] - have, left)
            weighted += take * have
            tokens += take
            slices += 1
            left -= take
            if have + take == prompt[rid]:
                self.joining.append(rid)
                self.partial = -1
            else:
                self.partial_done = have + take
        while self.pq and (prompt[self.pq[0]] + bs) // bs > self.cap:
            self._abort(now, self.pq.popleft())   # a prompt larger than the whole KV memory
        held = self.adp is not None and bool(self.pq) and not self.adp.may_start(self)
        if not held and self.pq and self.B > 0 and (self.wait_iters or self.wait_ratio) and self.adp is None:
            held = self._batch_waits(left)
        while left > 0 and self.pq and not held and self._can_start():
            rid = self.pq.popleft()
            self.held += (prompt[rid] + bs) // bs
            if self.admission != GREEDY:
                self.pending_res[rid] = self._reserve_blocks(rid, prompt[rid])
            reqs.prefill_start[rid] = now
            reqs.prefill_instance[rid] = self.iid
            p = prompt[rid]
            take = min(p, left)
            tokens += take
            slices += 1
            left -= take
            if take == p:
                self.joining.append(rid)
            else:
                self.partial, self.partial_done = rid, take
        if tokens == 0:
            return 0.0
        B = self.B
        if B == 0:
            return self.pcost.time_s(tokens, weighted / tokens, slices)
        ctx = self.context_tokens()
        t_mix = self.mixed.time_s(tokens, weighted / tokens, B, ctx, slices)
        return max(t_mix - self.cost.time_s(B, ctx), 0.0)   # the decode part is summed as usual
