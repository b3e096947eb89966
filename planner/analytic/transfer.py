"""KV transfer and decode admission of a disaggregated request (docs/model.md, "KV transfer").

Each prefill instance sends the KV caches it makes over its own link; transfers in flight
share it equally (processor sharing, as `planner.sim.kvlink`). A request's transfer starts
when its prefill work starts plus its prefill (start times from `analytic.prefill`, which keep
the prefill stage's smoothing of bursts), so per request i (all N, then sampled):
    x_i   = P_i * kv_bytes_per_token / bandwidth  (alone on the link; 0 for O_i = 1: no KV sent)
    L_i   = backlog found on its own link: a Lindley recursion per link on the start times.
            The simulator's global scheduler sends a request to the least-loaded prefill
            instance, ties to the lowest id, so at low load instance 0 gets most requests
            and its link most bytes: `link_of_request` assigns requests to instances from
            the number of earlier requests still in prefill when each arrives.
    T_i   = latency + x_i + L_i * E[min(x, x_i)] / E[x]
Under processor sharing a transfer only waits for the part of each transfer ahead of it that
is no larger than itself: E[min(x, x_i)] / E[x] of the backlog.
Then the decode instance admits it at its next iteration boundary: a wait uniform on
(0, one decode step) - `admission_fraction` draws the fraction.

The record schema's TPOT is (finish - first token) / (O - 1) and a disaggregated request's
first token comes from the prefill instance, so TPOT_i = step_i + (T_i + admission_i) / (O_i - 1).
"""
from __future__ import annotations

import weakref
from functools import lru_cache

import numpy as np

from planner.analytic.prefill import round_robin_backlog_s

ADMISSION_SEED_OFFSET = 104729


def expected_min(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """E[min(V, x)] over the empirical distribution of `values`, for each x."""
    return _expected_min_sorted(np.sort(np.asarray(values, dtype=float)), x)


def _expected_min_sorted(v: np.ndarray, x: np.ndarray, cum: np.ndarray | None = None) -> np.ndarray:
    """`expected_min` over sorted values `v`; `cum`: their prefix sums led by 0, if known."""
    if cum is None:
        cum = np.concatenate([[0.0], np.cumsum(v)])
    k = np.searchsorted(v, x, side="left")
    return (cum[k] + np.asarray(x, dtype=float) * (len(v) - k)) / max(len(v), 1)


HUNT_RANDOM_SHARE = 0.5      # busy instances: half the lowest ids, half a random set (see link_of_request)
HUNT_MAX_LINKS = 64          # above this many prefill instances links are taken in turn


@lru_cache(maxsize=None)
def _first_idle_cdf(links: int) -> np.ndarray:
    """Row m: CDF over instance ids of the lowest idle one when m of `links` are busy, as a
    mix of "the busy ones are ids 0..m-1" and "a uniformly random set of m"."""
    from math import comb
    t = np.zeros((links, links))
    for m in range(links):
        rnd = np.array([comb(links - k - 1, m - k) / comb(links, m) if k <= m else 0.0 for k in range(links)])
        t[m] = HUNT_RANDOM_SHARE * rnd
        t[m, m] += 1.0 - HUNT_RANDOM_SHARE
    cdf = np.cumsum(t, axis=1)
    cdf.flags.writeable = False      # cached per link count
    return cdf


def link_of_request(arrival_s: np.ndarray, done_s: np.ndarray, links: int) -> np.ndarray:
    """Prefill instance (hence KV link) of each request under the simulator's global
    scheduler: the least-loaded instance, ties to the lowest id. A request that finds m
    instances busy (m = requests that arrived before it and are not done, counted on the
    trace's own arrivals) takes the lowest idle id - instance 0 gets most requests at low
    load; where all are busy it goes to any (a golden-ratio sequence, deterministic)."""
    n = len(arrival_s)
    # done times are nearly sorted (start times are monotone): a stable (merge) sort is fast
    busy = _busy_on_arrival(np.asarray(arrival_s, dtype=float), np.sort(done_s, kind="stable"), links)
    any_k, point, lowest_idle = _hunt_tables(n, links)
    index = busy.astype(np.int64)
    index *= lowest_idle.shape[1]
    index += point
    k = lowest_idle.ravel()[index]
    np.copyto(k, any_k, where=busy == links)       # all busy: any instance
    return k


@lru_cache(maxsize=8)
def _hunt_tables(n: int, links: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the n draws u of `_golden_sequence(n)` (kept for the last few (n, links): every
    prefill option of a workload with this many instances asks for the same):
    - any_k: the instance a request takes when all `links` are busy, int(u x links);
    - point: g = how many of the distinct values in `_first_idle_cdf(links)` are <= u;
    - lowest_idle[m, g] (m < links): min(searchsorted(cdf[m], u, "right"), links - 1) for
      any u with that g, i.e. the lowest idle id when m are busy (no cdf value lies between
      the g-th value and u, so the count up to u is the count up to the g-th value).
    One search per request here instead of one per request and call."""
    u = _golden_sequence(n)
    cdf = _first_idle_cdf(links)
    values = np.unique(cdf)
    lowest = np.zeros((links + 1, len(values) + 1), dtype=np.int64)    # row `links` (all busy): any_k instead
    for m in range(links):
        lowest[m, 1:] = np.searchsorted(cdf[m], values, side="right")
    np.minimum(lowest, links - 1, out=lowest)
    out = ((u * links).astype(np.uint8 if links < 256 else np.int64),
           np.searchsorted(values, u, side="right").astype(np.int16 if len(values) < 2 ** 15 else np.int64), lowest)
    for a in out:
        a.flags.writeable = False
    return out


def _busy_on_arrival(arrival_s: np.ndarray, done_sorted_s: np.ndarray, cap: int) -> np.ndarray:
    """min(max(i - #{done <= a_i}, 0), cap) per request i: the earlier requests not done
    when it arrives, capped. #{done <= a_i} <= i - m exactly where the (i - m)-th smallest
    done time exceeds a_i, so the count is the number of m in 1..cap with
    done_sorted[i - m] > a_i: `cap` comparisons of shifted views, stopped at the first m
    where none holds (done_sorted[i - m] only falls as m grows)."""
    n = len(arrival_s)
    busy = np.zeros(n, dtype=np.uint8 if cap < 256 else np.int64)
    hit = np.empty(n, dtype=bool)
    for m in range(1, min(cap, n - 1) + 1):
        h = np.greater(done_sorted_s[:n - m], arrival_s[m:], out=hit[:n - m])
        if not h.any():
            break
        busy[m:] += h
    return busy


@lru_cache(maxsize=2)
def _golden_sequence(n: int) -> np.ndarray:
    """(i x golden ratio) mod 1 for i < n: a deterministic low-discrepancy sequence (kept for
    the last two lengths: every prefill option of a workload asks for the same one)."""
    u = (np.arange(n) * 0.6180339887498949) % 1.0
    u.flags.writeable = False
    return u


def _group_rows(values: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices grouped by a small non-negative integer value (ascending within each
    group) and the group bounds: rows of value m are rows[bounds[m]:bounds[m + 1]]. A
    stable radix argsort (values below 2^16), O(N)."""
    small = values.astype(np.uint8 if groups <= 256 else np.uint16 if groups <= 65536 else np.int64)
    rows = np.argsort(small, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(values, minlength=groups))])
    return rows, bounds


def per_link_backlog_s(start_s: np.ndarray, x_s: np.ndarray, link: np.ndarray, links: int) -> np.ndarray:
    """Backlog each transfer finds on its own link: a Lindley recursion per link (one
    stable sort by link, then the recursion restarted at each link's first request)."""
    order, bounds = _group_rows(link, links)
    x = x_s[order]
    y = np.cumsum(x)
    y -= x
    y -= start_s[order]
    # running minimum within each link's segment: offset each segment far below the previous
    sizes = np.diff(bounds)
    sizes = sizes[sizes > 0]
    big = (np.abs(y).max() + 1.0) * 4.0
    offset = np.repeat(np.arange(len(sizes)) * big, sizes)    # segment number x big, per sorted row
    low = np.subtract(y, offset, out=x)
    np.minimum.accumulate(low, out=low)
    low += offset
    y -= low
    out = offset                                               # reused: every row is written
    out[order] = y
    return out


def kv_transfer_sample_s(wl, start_s: np.ndarray, links: int, kv_bytes_per_token: float,
                         link_gb_s: float, latency_s: float, arrival_s: np.ndarray | None = None) -> np.ndarray:
    """Per sample request: KV transfer time over a pool of `links` shared links, the
    transfer of request i starting at start_s[i] (its prefill done). With the arrival
    times, requests go to the link of the instance the least-loaded dispatch picks
    (`link_of_request`); without, in turn (round robin)."""
    bw = link_gb_s * 1e9
    scale = kv_bytes_per_token / bw
    x = wl.prompt_tokens * scale * (wl.output_tokens > 1)   # one-token requests send none
    start = np.maximum.accumulate(np.asarray(start_s, dtype=float))
    s = wl.sample
    if arrival_s is None or links <= 1 or links > HUNT_MAX_LINKS:
        backlog = round_robin_backlog_s(start, x, links)[s]
    else:
        link = link_of_request(np.asarray(arrival_s, dtype=float), np.asarray(start_s, dtype=float), links)
        backlog = per_link_backlog_s(start, x, link, links)[s]
    sent = _sent_sizes(wl, x, scale)
    if sent is None:
        return np.full(len(s), latency_s)
    sorted_s, cum, mean = sent
    share = _expected_min_sorted(sorted_s, x[s], cum) / mean
    return latency_s + x[s] + backlog * share


_SENT: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()    # workload -> {scale: sizes}


def _sent_sizes(wl, x: np.ndarray, scale: float):
    """(the sorted sizes of the transfers sent, their prefix sums led by 0, their mean), or
    None where nothing is sent: what `expected_min` needs, for `x` = the workload's
    transfer sizes at `scale` seconds per prompt token. Kept per workload and scale (a
    plan search asks for a few link speeds, many times each)."""
    per_wl = _SENT.setdefault(wl, {})
    if scale not in per_wl:
        sends = x[x > 0]
        if len(sends) == 0:
            per_wl[scale] = None
        else:
            sent = wl.sorted_sent_prompt_tokens * scale       # = np.sort(sends): scaling keeps the order
            if len(sent) != len(sends):
                sent = np.sort(sends)
            per_wl[scale] = (sent, np.concatenate([[0.0], np.cumsum(sent)]), float(sends.mean()))
    return per_wl[scale]


def admission_fraction(wl) -> np.ndarray:
    """Per sample request: where in the running decode iteration its KV arrives (U(0, 1))."""
    return np.random.default_rng(wl.seed + ADMISSION_SEED_OFFSET).uniform(size=len(wl.sample))


def record_tpot_s(step_s, steps, transfer_s, admission_s) -> np.ndarray:
    """TPOT as the records define it: the decode step plus transfer and admission spread
    over the O - 1 decode steps (inf stays inf; requests with no decode step get the step)."""
    steps = np.asarray(steps, dtype=float)
    extra = (np.asarray(transfer_s) + np.asarray(admission_s)) / np.maximum(steps, 1.0)
    return np.where(steps > 0, step_s + extra, step_s)
