"""A decode instance: continuous batching with KV memory counted in blocks.

The batch runs iteration after iteration; iteration n takes
`PerfModel.decode_time_s(B, T(n))` for the B running requests holding T(n) KV tokens
(each request appends one token per iteration). Membership changes only at iteration
boundaries, and only when a request finishes, is admitted, is preempted, or arrives to an
idle queue - so one event covers a whole run of iterations, its time summed in closed form
(`DecodeCost.run_time_s`). Request i admitted at boundary n0 with kv0 tokens holds
kv0 + (n - n0) at boundary n, and T(n) = sum(kv0) + B*n - sum(n0) costs O(1).

Memory: `kv_capacity_tokens // block_tokens` blocks; iteration n needs
ceil((ctx + 1) / block_tokens) blocks per request. Admission (head of the line, FCFS):
- greedy (vLLM): admit while the request's KV fits in the free blocks now;
- reserve_static: also require the sum of reservations (prompt + predicted output, the
  predicted bucket's lower bound) to fit;
- reserve_dynamic: also require it to fit once the running request with the shortest
  predicted remaining output ends (its reservation freed).
Under every policy a batch that outgrows memory preempts by recompute (vLLM): the most
recently admitted request leaves, drops its KV, goes back to the head of the queue, and on
readmission the instance recomputes its KV with a prefill of prompt + generated tokens,
stalling the batch. A request that cannot fit in an empty instance is aborted (counted).

Coupled (vLLM-style) instances reuse this class with `prefill_on_admit`: admitting a new
request means a whole-prompt prefill iteration that stalls the running decodes. With
`max_paddings` set (vLLM <= 0.2, the releases of the TetriInfer paper's time) the prompts
of one prefill iteration are padded to the longest: the iteration costs count x longest
tokens, which must stay within `max_prefill_tokens`, with at most `max_paddings` padding
tokens (vLLM's default 256); otherwise prompts are packed (sum of the lengths).
"""
from __future__ import annotations

import heapq
import math
from collections import deque

from planner.sim.costs import DecodeCost, PrefillCost
from planner.sim.engine import COMPLETE, CONTROL

GREEDY, RESERVE_STATIC, RESERVE_DYNAMIC = "greedy", "reserve_static", "reserve_dynamic"


class DecodeInstance:
    def __init__(self, iid: int, loop, reqs, perf, *, block_tokens: int = 16,
                 batch_limit: int = 256, admission: str = RESERVE_DYNAMIC, on_finish=None,
                 on_idle=None, prefill_on_admit: bool = False, max_prefill_tokens: int = 0,
                 max_paddings: int | None = None, recv_interval: int = 1,
                 decode_cost: DecodeCost | None = None, prefill_cost: PrefillCost | None = None):
        self.iid = iid
        self.loop = loop
        self.reqs = reqs
        self.cost = decode_cost if decode_cost is not None else DecodeCost(perf)
        self.pcost = prefill_cost if prefill_cost is not None else PrefillCost(perf)
        self.bs = int(block_tokens)
        self.cap = perf.kv_capacity_tokens // self.bs
        self.batch_limit = int(batch_limit)
        self.admission = admission
        self.on_finish = on_finish        # on_finish(time_s, rid, instance)
        self.on_idle = on_idle            # on_idle(time_s, instance)
        self.prefill_on_admit = prefill_on_admit
        self.max_prefill_tokens = int(max_prefill_tokens)
        self.max_paddings = max_paddings
        self._budget_full = False
        # batch state at the sync boundary (n, t): iteration n starts at time t
        self.n = 0
        self.t = 0.0
        self.B = 0
        self.K0 = 0            # sum of kv0 over running
        self.N0 = 0            # sum of n0 over running
        self.R = 0             # sum of reserved blocks over running
        self.held = 0          # blocks held outside the batch (chunked prefills in flight)
        self.running: dict[int, tuple] = {}   # rid -> (n0, kv0, reserved_blocks); insertion order = admission order
        self._fin: list = []                 # (finish boundary, seq, rid, epoch)
        self._seq = 0
        self.waiting: deque = deque()
        self._gen = 0
        self.ev_n = -1         # boundary of the pending event, -1 if none
        self.busy_since = -1.0
        self.busy_s = 0.0
        self.preemptions = 0
        self.frontend = None   # a FrontEnd streaming this instance's tokens (clients see them late), or None
        self.peak_kv_tokens = 0          # most KV tokens held at once (running batch + prefills in flight)
        self.aborted = 0
        self.iterations = 0
        self.accepting = True
        self.win = None                  # scale.WindowBusy when the plan has time windows
        self.win_role = "decode"
        # SGLang's --scheduler-recv-interval: while decoding, the scheduler takes new requests
        # in only every `recv_interval` decode iterations (at once after a prefill step or
        # when idle); arrivals wait in `inbox` until then
        self.recv_interval = max(int(recv_interval), 1)
        self.recv_n = 0                  # a boundary at which requests were taken in
        self.inbox: list[int] = []

    # ---- state -------------------------------------------------------------------------
    def context_tokens(self, n: int | None = None) -> int:
        """T(n): KV tokens held by the running batch at boundary n."""
        return self.K0 + self.B * (self.n if n is None else n) - self.N0

    @property
    def kv_capacity_tokens(self) -> int:
        return self.cap * self.bs

    @property
    def idle(self) -> bool:
        return self.B == 0 and not self.waiting and not self.inbox and self.ev_n < 0 and self.held == 0

    def used_blocks(self, n: int | None = None) -> int:
        """Blocks iteration n needs: ceil((ctx + 1) / block) per running request."""
        n = self.n if n is None else n
        bs = self.bs
        return sum((kv0 + n - n0 + bs) // bs for n0, kv0, _ in self.running.values())

    def _fits(self, extra_blocks: int) -> bool:
        room = self.cap - self.held - extra_blocks
        if (self.context_tokens() + self.B * self.bs) // self.bs <= room:  # upper bound
            return True
        return self.used_blocks() <= room

    # ---- arrivals --------------------------------------------------------------------
    def arrive(self, now: float, rid: int) -> None:
        if self.recv_interval > 1 and self.B > 0:
            self.inbox.append(rid)
            if len(self.inbox) == 1:
                self._wake(now)
            return
        self.waiting.append(rid)
        if len(self.waiting) > 1 or self.B >= self.batch_limit:
            if not (self.ev_n < 0 and self.B == 0):
                return  # the head of the line is already waiting for a boundary
        self._wake(now)

    def _wake(self, now: float) -> None:
        """New work: process it at the next iteration boundary (now, if idle)."""
        if self.ev_n < 0 and self.B == 0 and now >= self.t:
            # idle: start at this instant, after everything else that happens at it
            self.t = now
            self._mark_busy(now)
            self._schedule_at(self.n, CONTROL)
            return
        k_evt = self.ev_n - self.n if self.ev_n >= 0 else 1 << 60
        budget = now - self.t
        if budget <= 0.0 or self.B == 0:
            k = 0
        else:
            t0 = self.context_tokens()
            k = self.cost.iterations_within(self.B, t0, budget, min(k_evt, 1 << 40))
            if self.cost.run_time_s(self.B, t0, k) < budget:
                k += 1  # that iteration is running; join at its end
        if self.inbox:
            k = self._recv_boundary(self.n + k) - self.n
        if k < k_evt:
            self._schedule_at(self.n + k)

    def _recv_boundary(self, n: int) -> int:
        """The first boundary at or after n at which the scheduler takes requests in."""
        r = self.recv_interval
        return self.recv_n + -(-(n - self.recv_n) // r) * r if n > self.recv_n else self.recv_n

    # ---- boundaries --------------------------------------------------------------------
    def _schedule_at(self, boundary: int, priority: int = COMPLETE) -> None:
        self._gen += 1
        self.ev_n = boundary
        # the run's last iteration holds the most: T(boundary) tokens once it appended its own
        held = self.K0 + self.B * max(boundary, self.n) - self.N0 + self.held * self.bs
        if held > self.peak_kv_tokens:
            self.peak_kv_tokens = held
        t = self.t + self.cost.run_time_s(self.B, self.context_tokens(), boundary - self.n)
        self.loop.at(t, self._on_event, self._gen, priority)

    def _on_event(self, now: float, gen: int) -> None:
        if gen != self._gen:
            return
        k = self.ev_n - self.n
        if k > 0:
            self.iterations += k
            if self.frontend is not None and self.B:
                self.frontend.made(self.t, now, k * self.B)
        self.n = self.ev_n
        self.t = now
        self.ev_n = -1
        self._process(now)

    def _process(self, now: float) -> None:
        reqs = self.reqs
        n = self.n
        fin = self._fin
        while fin and fin[0][0] <= n:
            _, _, rid, ep = heapq.heappop(fin)
            if ep != reqs.epoch[rid]:
                continue
            self._remove(rid)
            reqs.finish[rid] = self._seen(now)
            if self.on_finish is not None:
                self.on_finish(now, rid, self)
        stall = self._joins(now)
        if self.B and not self._fits(0):
            self._preempt_until_fits(now)
        if self.inbox and (self.B == 0 or self._recv_boundary(n) == n):
            self.waiting.extend(self.inbox)
            self.inbox.clear()
            self.recv_n = n
        admitted_s = self._admit(now, stall)
        stall += admitted_s
        if admitted_s > 0 and self.recv_interval > 1:
            self.recv_n = n + 1      # a prefill step: the scheduler takes requests in right after it
        stall += self._extra_iteration_s(now)
        self.t = now + stall
        self._schedule_next(now)

    def _schedule_next(self, now: float) -> None:
        fin = self._fin
        reqs = self.reqs
        while fin and fin[0][3] != reqs.epoch[fin[0][2]]:
            heapq.heappop(fin)
        if self._budget_full:
            self._budget_full = False
            self._schedule_at(self.n)
            return
        if self.B == 0:
            if self.t > now or self._more_work() or self.inbox:
                self._schedule_at(self.n)   # end of a stall, or chunked prefill to continue
            else:
                self._mark_idle(now)
            return
        target = self._next_boundary(fin[0][0])
        if self.inbox:
            target = min(target, self._recv_boundary(self.n + 1))
        self._schedule_at(target)

    def _next_boundary(self, n_finish: int) -> int:
        """The next boundary with a membership change: the next completion, or the first
        boundary whose iteration would not fit in memory."""
        n = self.n
        if self._more_work():
            n_finish = min(n_finish, n + 1)
        last = n_finish - 1        # iterations n..last must fit
        if last <= n:
            return n_finish
        bs = self.bs
        room = self.cap - self.held
        if (self.context_tokens(last) + self.B * bs) // bs <= room:
            return n_finish
        ctxs = [kv0 - n0 for n0, kv0, _ in self.running.values()]

        def used(m):
            return sum((c + m + bs) // bs for c in ctxs)
        if used(last) <= room:
            return n_finish
        lo, hi = n, last          # used(lo) <= room < used(hi)
        while hi - lo > 1:
            mid = (lo + hi) >> 1
            if used(mid) <= room:
                lo = mid
            else:
                hi = mid
        return hi

    # ---- membership ------------------------------------------------------------------
    def _add(self, rid: int, kv0: int, reserved: int) -> None:
        n = self.n
        self.running[rid] = (n, kv0, reserved)
        self.B += 1
        self.K0 += kv0
        self.N0 += n
        self.R += reserved
        remaining = self.reqs.output[rid] - 1 - self.reqs.generated[rid]
        self._seq += 1
        heapq.heappush(self._fin, (n + remaining, self._seq, rid, self.reqs.epoch[rid]))

    def _remove(self, rid: int) -> tuple:
        n0, kv0, reserved = self.running.pop(rid)
        self.B -= 1
        self.K0 -= kv0
        self.N0 -= n0
        self.R -= reserved
        return n0, kv0, reserved

    def _preempt_until_fits(self, now: float) -> None:
        reqs = self.reqs
        while self.B and not self._fits(0):
            if self.B == 1 and self.held == 0:
                rid = next(iter(self.running))
                self._remove(rid)
                self._abort(now, rid)
                break
            rid = next(reversed(self.running))
            n0, _, _ = self._remove(rid)
            reqs.generated[rid] += self.n - n0
            reqs.epoch[rid] += 1
            reqs.has_kv[rid] = False
            reqs.preemptions[rid] += 1
            self.preemptions += 1
            self.waiting.appendleft(rid)

    def _abort(self, now: float, rid: int) -> None:
        self.aborted += 1
        self.reqs.aborted[rid] = True
        self.reqs.epoch[rid] += 1
        if self.on_finish is not None:
            self.on_finish(now, rid, self)

    def _reserve_blocks(self, rid: int, kv0: int) -> int:
        reqs = self.reqs
        want = max(reqs.prompt[rid] + reqs.pred[rid], kv0 + 1)
        return min(-(-want // self.bs), self.cap)

    def _shortest_reservation(self) -> int:
        """Reservation of the running request with the shortest predicted remaining output."""
        reqs = self.reqs
        n = self.n
        best, best_res = math.inf, 0
        for rid, (n0, _, res) in self.running.items():
            left = reqs.pred[rid] - reqs.generated[rid] - (n - n0)
            if left < best:
                best, best_res = left, res
        return best_res

    def _admit(self, now: float, stall_before: float) -> float:
        reqs = self.reqs
        waiting = self.waiting
        bs, cap = self.bs, self.cap
        policy = self.admission
        prefill_tokens = 0
        n_prefill = longest = 0
        padded = self.max_paddings is not None
        admitted = []
        finished_at_prefill = []
        while waiting and self.B < self.batch_limit:
            rid = waiting[0]
            kv0 = reqs.prompt[rid] + reqs.generated[rid]
            need = (kv0 + bs) // bs
            if need > cap - self.held:
                if self.B == 0 and self.held == 0:
                    waiting.popleft()
                    self._abort(now, rid)
                    continue
                break
            if not self._fits(need):
                break
            reserved = 0
            if policy != GREEDY:
                reserved = self._reserve_blocks(rid, kv0)
                if self.R + reserved > cap - self.held:
                    if policy == RESERVE_STATIC or self.B == 0:
                        break
                    if self.R + reserved - self._shortest_reservation() > cap - self.held:
                        break
            recompute = not reqs.has_kv[rid]
            if recompute and prefill_tokens:
                if padded:
                    width = max(longest, kv0)
                    over = (n_prefill + 1) * width > self.max_prefill_tokens > 0 \
                        or (n_prefill + 1) * width - (prefill_tokens + kv0) > self.max_paddings
                else:
                    over = self.max_prefill_tokens and prefill_tokens + kv0 > self.max_prefill_tokens
                if over:
                    self._budget_full = True   # another prefill iteration right after this one
                    break
            waiting.popleft()
            if recompute:
                prefill_tokens += kv0
                n_prefill += 1
                longest = max(longest, kv0)
                reqs.has_kv[rid] = True
            if reqs.output[rid] - 1 - reqs.generated[rid] <= 0:
                finished_at_prefill.append(rid)   # one-token output of a coupled instance
                continue
            self._add(rid, kv0, reserved)
            admitted.append(rid)
        if padded and n_prefill:
            prefill_tokens = n_prefill * longest
        stall = self.pcost.time_s(prefill_tokens, 0.0, n_prefill) if prefill_tokens else 0.0
        t_start = now + stall_before + stall
        seen = self._first_tokens(t_start, len(admitted) + len(finished_at_prefill))
        for rid in admitted:
            if reqs.decode_start[rid] != reqs.decode_start[rid]:   # NaN: first admission
                reqs.decode_start[rid] = t_start
                reqs.decode_instance[rid] = self.iid
            if reqs.first_token[rid] != reqs.first_token[rid]:
                reqs.first_token[rid] = seen
        for rid in finished_at_prefill:
            reqs.decode_instance[rid] = self.iid
            reqs.first_token[rid] = seen
            reqs.finish[rid] = seen
            if self.on_finish is not None:
                self.on_finish(t_start, rid, self)
        return stall

    def _seen(self, t: float) -> float:
        """When the client sees a token this instance made at `t` (its front end's queue)."""
        return t if self.frontend is None else self.frontend.seen(t)

    def _first_tokens(self, t: float, n: int) -> float:
        """When clients see the first tokens of `n` prompts finished at `t`, which then join
        the front end's queue."""
        seen = self._seen(t)
        if self.frontend is not None and n:
            self.frontend.made(t, t, n)
        return seen

    # ---- hooks for the chunked coupled instance ------------------------------------
    def _joins(self, now: float) -> float:
        return 0.0

    def _extra_iteration_s(self, now: float) -> float:
        return 0.0

    def _more_work(self) -> bool:
        return False

    # ---- busy time -------------------------------------------------------------------
    def _mark_busy(self, now: float) -> None:
        if self.busy_since < 0:
            self.busy_since = now

    def _mark_idle(self, now: float) -> None:
        if self.busy_since >= 0:
            self.busy_s += now - self.busy_since
            if self.win is not None:
                self.win.add(self.win_role, self.busy_since, now)
            self.busy_since = -1.0
        if self.on_idle is not None and not self.waiting:
            self.on_idle(now, self)

    def close(self, now: float) -> None:
        if self.busy_since >= 0:
            self.busy_s += max(now - self.busy_since, 0.0)
            if self.win is not None:
                self.win.add(self.win_role, self.busy_since, now)
            self.busy_since = -1.0

    def take_unstarted(self) -> list[int]:
        """Remove and return the waiting requests whose prefill has not started (a
        coupled instance that drains hands them to another)."""
        reqs = self.reqs
        keep, out = [], []
        for rid in self.waiting:
            (out if reqs.first_token[rid] != reqs.first_token[rid] else keep).append(rid)
        self.waiting = deque(keep)
        out += self.inbox
        self.inbox = []
        return out
