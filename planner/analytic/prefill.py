"""Chunked prefill pool (disaggregated): per-request TTFT, vectorised over the whole trace.

TetriInfer's prefill instance runs chunks of C tokens made of whatever is queued when the
chunk starts (requests sliced and merged, FCFS); it never waits to fill one. So a request
that finds its instance idle opens a chunk of its own (`alone`, the prompt's chunks back to
back), while one that finds it busy rides in merged chunks at full-chunk efficiency
(`merged` = P/F of an iteration of F tokens) and its first token comes at the end of the
chunk that carries its last slice - a chunk the requests queued behind it fill.

Per request i (all N requests, in arrival order; docs/model.md "Prefill pool"):
    U_i     = pool backlog found on arrival: Lindley recursion of the requests' work on the
              trace's own arrival times, drained at n instance-seconds per second
    busy_i  = U_i > (n - 1) * mean(w)        (every instance busy: JSQ keeps them balanced)
    w_i     = merged_i if busy_i else alone_i  (two fixed-point passes: busy needs U needs w)
    wait_i  = max(U_i - (n - 1) * mean(w), 0) / n
    TTFT_i  = alone_i                                           if not busy_i
            = wait_i + merged_i + b * min(V_i * C, q_i * (wait_i + merged_i))   if busy_i
with V_i ~ U(0, 1) the room left in its last chunk, q_i the prompt tokens per second
arriving at one instance in its window (what fills that room) and b the marginal
seconds per prefill token at chunk C.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from planner.perf.model import PerfModel

BUSY_PASSES = 1
FILL_SEED_OFFSET = 7919      # the chunk-room draw: a fixed stream per workload seed


def chunk_fill_tokens(chunk_tokens: int, batch_limit: int, mean_prompt_tokens: float) -> float:
    """Tokens a merged chunk actually carries: at most `batch_limit` request slices."""
    return float(min(chunk_tokens, max(batch_limit * mean_prompt_tokens, 1.0)))


def chunked_work_s(perf: PerfModel, prompt_tokens, chunk_tokens: int, fill_tokens: float | None = None):
    """Instance-seconds a prompt costs when its slices ride in merged chunks of `fill`
    tokens: its share P/F of chunk iterations, attention at its mean cached context, and
    `prefill_request_s` for its slice in each of the ceil(P/F) chunks it rides in."""
    p = np.asarray(prompt_tokens, dtype=float)
    fill = float(chunk_tokens if fill_tokens is None else fill_tokens)
    cached = np.maximum(p - chunk_tokens, 0.0) / 2.0
    # plus its own slice in each chunk it rides in (one more request in that chunk)
    return p / fill * perf.prefill_time_s(np.full_like(p, fill), cached) + np.ceil(p / fill) * perf.prefill_request_s


def chunked_alone_s(perf: PerfModel, prompt_tokens, chunk_tokens: int):
    """Time to prefill one prompt on an idle instance: full chunks then the remainder
    (vectorised `PerfModel.prompt_prefill_time_s`, attention at the mean cached context),
    the first chunk `prefill_idle_factor` times as long (it starts the idle instance)."""
    p = np.asarray(prompt_tokens, dtype=float)
    full = np.floor((p - 1) / chunk_tokens)
    rem = p - full * chunk_tokens
    t_full = full * perf.prefill_time_s(np.full_like(p, float(chunk_tokens)),
                                        np.maximum(full - 1, 0) * chunk_tokens / 2.0)
    t_full = np.where(full > 0, t_full, 0.0)
    t = t_full + perf.prefill_time_s(rem, full * chunk_tokens)
    idle = perf.prefill_idle_factor
    if idle != 1.0:   # its first chunk starts the idle instance: cold
        first = np.where(full > 0, perf.prefill_time_s(np.full_like(p, float(chunk_tokens)), 0.0),
                         perf.prefill_time_s(rem, 0.0))
        t = t + (idle - 1.0) * first
    return t


def backlog_s(arrival_s: np.ndarray, work_s: np.ndarray, servers: float) -> np.ndarray:
    """Work (instance-seconds) each arrival finds in a pool draining `servers` per second,
    not counting its own: the Lindley recursion U_i = max_{j<=i} (sum_{j<=m<i} w_m -
    servers (a_i - a_j)), in O(N) numpy. Arrival times must not decrease."""
    y = np.cumsum(work_s, dtype=float)
    y -= work_s
    y -= servers * np.asarray(arrival_s, dtype=float)
    y -= np.minimum.accumulate(y)          # in place: O(N) with few temporaries
    return y


def round_robin_backlog_s(arrival_s: np.ndarray, work_s: np.ndarray, servers: int) -> np.ndarray:
    """Work each arrival finds at its own server when consecutive arrivals go to the
    servers in turn (request i to server i mod n), each draining 1 per second: a Lindley
    recursion per server. For dispatch that does not look at the work queued (the coupled
    pools' fewest-outstanding-requests rule, the prefill instance's own KV link)."""
    n = len(work_s)
    a = np.asarray(arrival_s, dtype=float)
    w = np.asarray(work_s, dtype=float)
    if servers <= 1:
        return backlog_s(a, w, 1)
    if n <= servers:
        return np.zeros(n)
    rows = -(-n // servers)
    pad = rows * servers - n
    t = np.concatenate([a, np.full(pad, a[-1])]).reshape(rows, servers)
    ww = np.concatenate([w, np.zeros(pad)]).reshape(rows, servers)
    y = np.cumsum(ww, axis=0) - ww - t
    return (y - np.minimum.accumulate(y, axis=0)).reshape(-1)[:n]


@dataclass(frozen=True, eq=False)
class PrefillPool:
    """What a prefill pool of one (GPU, TP, chunk) costs per request, independent of the
    instance count (the optimizer builds it once per candidate and tries many counts).
    Per-request costs are kept per distinct prompt length and gathered on use; the one
    per-request array kept is the prefix sum the first busy pass starts from, so each
    instance count tried costs a running minimum there instead of a whole recursion."""
    alone_values_s: np.ndarray   # per distinct prompt length (wl.prompt_values)
    merged_values_s: np.ndarray  # per distinct prompt length
    prompt_index: np.ndarray     # per request (all N): into the values (the workload's own array)
    chunk_tokens: int
    seconds_per_token: float     # marginal cost of one more token in a chunk of C
    fill_room: np.ndarray        # per sample request: V ~ U(0, 1)
    merged_ahead_s: np.ndarray   # per request (all N): merged work of the requests before it
    merged_mean_s: float         # mean merged work per request

    @property
    def alone_s(self) -> np.ndarray:
        """Per request (all N): its prompt alone on an idle instance."""
        return self.alone_values_s[self.prompt_index]

    @property
    def merged_s(self) -> np.ndarray:
        """Per request (all N): its work riding in merged chunks."""
        return self.merged_values_s[self.prompt_index]

    def work_s(self, busy: np.ndarray, index_buffer: np.ndarray | None = None) -> np.ndarray:
        """Per request (all N): the merged work where `busy`, the alone time elsewhere (one
        gather from both tables; `index_buffer`: N int64 of scratch for the gather's index)."""
        index = np.multiply(busy, len(self.alone_values_s), out=index_buffer, dtype=np.int64)
        index += self.prompt_index
        return np.concatenate([self.alone_values_s, self.merged_values_s])[index]


def prefill_pool(perf: PerfModel, wl, chunk_tokens: int, batch_limit: int) -> PrefillPool:
    vals = wl.prompt_values
    fill = chunk_fill_tokens(chunk_tokens, batch_limit, wl.mean_prompt_tokens)
    alone = chunked_alone_s(perf, vals, chunk_tokens)
    merged_values = chunked_work_s(perf, vals, chunk_tokens, fill)
    merged = merged_values[wl.prompt_index]
    ahead = np.cumsum(merged, dtype=float)       # backlog_s's first two steps, once per pool
    ahead -= merged
    half = max(chunk_tokens // 2, 1)
    b = float(perf.prefill_time_s(chunk_tokens, 0.0) - perf.prefill_time_s(half, 0.0)) / max(chunk_tokens - half, 1)
    room = np.random.default_rng(wl.seed + FILL_SEED_OFFSET).uniform(size=len(wl.sample))
    return PrefillPool(alone, merged_values, wl.prompt_index, int(chunk_tokens), max(b, 0.0), room,
                       ahead, float(merged.mean()))


@dataclass(frozen=True, eq=False)
class PrefillResult:
    ttft_sample_s: np.ndarray    # per sample request
    start_s: np.ndarray          # per request (all N): arrival + wait (when its work starts)
    work_s: np.ndarray           # per request (all N): the work it costs its instance
    busy_sample: np.ndarray      # per sample request: found every instance busy


def pool_wait_s(arrival_s, work_s, servers: int) -> np.ndarray:
    """Per request wait before its work starts: max(U - (n - 1) w_mean, 0) / n."""
    u = backlog_s(arrival_s, work_s, servers)
    u -= (servers - 1) * float(work_s.mean())
    np.maximum(u, 0.0, out=u)
    u /= servers
    return u


_WORK_BUFFERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # workload -> {name: array}


def work_buffer(wl, name: str) -> np.ndarray:
    """A float64 array of one entry per request of `wl`, kept while the workload lives and
    handed to every call that asks by the same `name`: scratch for a function's own
    temporaries, never returned to its callers. A fresh array costs page faults as it is
    first written, and with numpy's huge-page advice those can cost more than the
    arithmetic (about 1.4 s of a 1M-request plan's prefill passes), so the hot passes
    reuse one."""
    per_wl = _WORK_BUFFERS.setdefault(wl, {})
    if name not in per_wl:
        per_wl[name] = np.empty(len(wl.arrival_s))
    return per_wl[name]


def prefill_ttft(pool: PrefillPool, wl, servers: int) -> PrefillResult:
    """The busy passes and the wait as `backlog_s` and `pool_wait_s` compute them (the
    same floating-point steps), the first pass from the pool's prefix sum and all of it in
    two buffers: each instance count costs two running minima, one running sum and a
    gather, and allocates little besides what it returns (fresh memory is slow to touch)."""
    a = np.asarray(wl.arrival_s, dtype=float)
    y = np.multiply(a, servers)                       # work the pool drains by each arrival
    np.subtract(pool.merged_ahead_s, y, out=y)        # backlog_s(a, merged, servers) ...
    low = np.minimum.accumulate(y, out=work_buffer(wl, "prefill_ttft"))
    y -= low
    # wait > 0 exactly where the backlog exceeds (n - 1) mean(w) (pool_wait_s's numerator)
    busy = y > (servers - 1) * pool.merged_mean_s
    w = pool.work_s(busy, index_buffer=low.view(np.int64))   # the running minimum is spent
    for _ in range(BUSY_PASSES - 1):
        busy = backlog_s(a, w, servers) > (servers - 1) * float(w.mean())
        w = pool.work_s(busy)
    np.cumsum(w, out=y)                               # pool_wait_s(a, w, servers)
    y -= w
    y -= np.multiply(a, servers, out=low)
    y -= np.minimum.accumulate(y, out=low)
    y -= (servers - 1) * float(w.mean())
    np.maximum(y, 0.0, out=y)
    y /= servers
    wait = y
    s = wl.sample
    idx = pool.prompt_index[s]
    ws, ms = wait[s], pool.merged_values_s[idx]
    busy_s = ws > 0
    fill_rate = (wl.window_sum_prompt / wl.window_duration_s)[wl.window_index[s]] / servers
    extra = pool.seconds_per_token * np.minimum(pool.fill_room * pool.chunk_tokens, fill_rate * (ws + ms))
    ttft = np.where(busy_s, ws + ms + extra, pool.alone_values_s[idx])
    wait += a                                      # now the start of each request's work
    return PrefillResult(ttft, wait, w, busy_s)


def pool_utilisation(wl, work_s: np.ndarray, servers: int) -> dict:
    per_win = np.bincount(wl.window_index, weights=work_s, minlength=wl.windows)
    rho = per_win / (servers * wl.window_duration_s)
    span = max(wl.span_s, float(wl.window_duration_s.sum()) if wl.span_s == 0 else wl.span_s)
    return {"mean": float(work_s.sum() / (servers * span)), "peak_window": float(rho.max())}
