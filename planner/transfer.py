"""KV transfer and decode admission of a disaggregated request (docs/model.md, "KV transfer").

Each prefill instance sends the KV caches it makes over its own link; transfers in flight
share it equally (processor sharing, as `planner.sim.kvlink`). A request's transfer starts
when its prefill work starts plus its prefill (start times from `prefill_model`, which keep
the prefill stage's smoothing of bursts), so per request i (all N, then sampled):
    x_i   = P_i * kv_bytes_per_token / bandwidth  (alone on the link; 0 for O_i = 1: no KV sent)
    L_i   = backlog found on its own link: consecutive transfers go to the n links in turn,
            a Lindley recursion per link on the start times (`round_robin_backlog_s`)
    T_i   = latency + x_i + L_i * E[min(x, x_i)] / E[x]
Under processor sharing a transfer only waits for the part of each transfer ahead of it that
is no larger than itself: E[min(x, x_i)] / E[x] of the backlog.
Then the decode instance admits it at its next iteration boundary: a wait uniform on
(0, one decode step) - `admission_fraction` draws the fraction.

The record schema's TPOT is (finish - first token) / (O - 1) and a disaggregated request's
first token comes from the prefill instance, so TPOT_i = step_i + (T_i + admission_i) / (O_i - 1).
"""
from __future__ import annotations

import numpy as np

from .prefill_model import round_robin_backlog_s

ADMISSION_SEED_OFFSET = 104729


def expected_min(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """E[min(V, x)] over the empirical distribution of `values`, for each x."""
    v = np.sort(np.asarray(values, dtype=float))
    cum = np.concatenate([[0.0], np.cumsum(v)])
    k = np.searchsorted(v, x, side="left")
    return (cum[k] + np.asarray(x, dtype=float) * (len(v) - k)) / max(len(v), 1)


def kv_transfer_sample_s(wl, start_s: np.ndarray, links: int, kv_bytes_per_token: float,
                         link_gb_s: float, latency_s: float) -> np.ndarray:
    """Per sample request: KV transfer time over a pool of `links` shared links."""
    bw = link_gb_s * 1e9
    x = wl.prompt_tokens * (kv_bytes_per_token / bw) * (wl.output_tokens > 1)   # one-token requests send none
    start = np.maximum.accumulate(np.asarray(start_s, dtype=float))
    s = wl.sample
    backlog = round_robin_backlog_s(start, x, links)[s]
    sent = x[x > 0]
    if len(sent) == 0:
        return np.full(len(s), latency_s)
    share = expected_min(sent, x[s]) / float(sent.mean())
    return latency_s + x[s] + backlog * share


def admission_fraction(wl) -> np.ndarray:
    """Per sample request: where in the running decode iteration its KV arrives (U(0, 1))."""
    return np.random.default_rng(wl.seed + ADMISSION_SEED_OFFSET).uniform(size=len(wl.sample))


def record_tpot_s(step_s, steps, transfer_s, admission_s) -> np.ndarray:
    """TPOT as the records define it: the decode step plus transfer and admission spread
    over the O - 1 decode steps (inf stays inf; requests with no decode step get the step)."""
    steps = np.asarray(steps, dtype=float)
    extra = (np.asarray(transfer_s) + np.asarray(admission_s)) / np.maximum(steps, 1.0)
    return np.where(steps > 0, step_s + extra, step_s)
