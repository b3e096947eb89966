"""The trace summarised for the queueing model: built once per trace, in O(N) numpy.

- per time window (default 60 s): requests, rate, inter-arrival CV and the length moments
  the decode fixed point needs (so peaks are sized, not averaged away);
- fine arrival bins (at most `MAX_BINS` over the span) for the fluid backlog model of the
  prefill queue, which follows every burst the bins resolve;
- a deterministic systematic sample of requests (at most `MAX_SAMPLE`) on which latency
  percentiles are read;
- the distinct prompt lengths, so that per-request work is evaluated once per distinct
  length and gathered.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from planner.errors import InputError

DEFAULT_WINDOW_S = 60.0
MAX_BINS = 1 << 17
MAX_SAMPLE = 20_000
MAX_WINDOWS = 10_000             # per-window fixed points run over every window: keep them bounded
LIGHT_PREFILL_MAX_TOKENS = 512   # TetriInfer's class thresholds
LIGHT_DECODE_MAX_TOKENS = 128


@dataclass(frozen=True, eq=False)
class Workload:
    name: str
    requests: int
    span_s: float
    window_s: float
    # per request (length N)
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    prompt_index: np.ndarray      # index into prompt_values
    bin_index: np.ndarray         # fluid-model arrival bin
    window_index: np.ndarray
    prompt_values: np.ndarray     # distinct prompt lengths, sorted
    bin_width_s: float
    bins: int
    # per window (length W)
    window_start_s: np.ndarray
    window_duration_s: np.ndarray
    window_requests: np.ndarray
    window_interarrival_cv: np.ndarray
    window_sum_prompt: np.ndarray          # sum P
    window_sum_decode_steps: np.ndarray    # sum (O - 1)
    window_sum_decode_context: np.ndarray  # sum (O - 1) (P + O / 2)
    window_sum_decode_context_sq: np.ndarray  # sum (O - 1) (P + O / 2)^2
    # per fluid bin (length bins)
    bin_prompt_sum: np.ndarray    # prompt tokens arriving in the bin
    bin_window: np.ndarray        # window the bin starts in
    # sample (length M): indices into the requests
    sample: np.ndarray
    sample_prompt_ahead: np.ndarray   # prompt tokens of earlier arrivals in the same bin
    seed: int = 0

    @property
    def windows(self) -> int:
        return len(self.window_start_s)

    @property
    def window_rate_per_s(self) -> np.ndarray:
        return self.window_requests / self.window_duration_s

    @property
    def rate_per_s(self) -> float:
        return self.requests / self.span_s if self.span_s > 0 else 0.0

    @property
    def mean_prompt_tokens(self) -> float:
        return float(self.prompt_tokens.mean())

    @property
    def mean_output_tokens(self) -> float:
        return float(self.output_tokens.mean())

    @cached_property
    def max_request_tokens(self) -> int:
        """The longest request's prompt + output tokens (its KV at the end); cached."""
        return int((self.prompt_tokens + self.output_tokens).max())

    @cached_property
    def sorted_sent_prompt_tokens(self) -> np.ndarray:
        """Prompt lengths of the requests that send KV to a decode instance (output > 1),
        sorted; computed on first use and kept (the KV-transfer model's share of a backlog)."""
        return np.sort(self.prompt_tokens[self.output_tokens > 1])

    @property
    def interarrival_cv(self) -> float:
        return interarrival_cv(self.arrival_s)

    def stats(self) -> dict:
        """Trace statistics the plan records as its input identity."""
        p, o = self.prompt_tokens, self.output_tokens
        heavy_p, heavy_d = p > LIGHT_PREFILL_MAX_TOKENS, o > LIGHT_DECODE_MAX_TOKENS
        rate = self.window_rate_per_s
        return {
            "name": self.name, "requests": self.requests, "span_s": self.span_s,
            "rate_per_s": self.rate_per_s, "interarrival_cv": self.interarrival_cv,
            "window_s": self.window_s, "windows": self.windows,
            "peak_window_rate_per_s": float(rate.max()) if len(rate) else 0.0,
            "prompt_tokens": _pcts(p), "output_tokens": _pcts(o),
            "classes": {"lpld": float(np.mean(~heavy_p & ~heavy_d)), "lphd": float(np.mean(~heavy_p & heavy_d)),
                        "hpld": float(np.mean(heavy_p & ~heavy_d)), "hphd": float(np.mean(heavy_p & heavy_d))},
        }


def _pcts(x: np.ndarray) -> dict:
    q = np.percentile(x, [50, 90, 99])
    return {"mean": float(x.mean()), "p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]),
            "max": int(x.max())}


def interarrival_cv(arrival_s: np.ndarray) -> float:
    gaps = np.diff(arrival_s)
    if len(gaps) < 2 or gaps.mean() <= 0:
        return 1.0
    return float(gaps.std() / gaps.mean())


def build_workload(trace, window_s: float = DEFAULT_WINDOW_S, max_sample: int = MAX_SAMPLE,
                   max_bins: int = MAX_BINS, seed: int = 0) -> Workload:
    """Summarise a `traces.Trace` (or anything with arrival_s, prompt_tokens, output_tokens
    arrays). Arrival times are shifted to start at 0."""
    if not window_s > 0:
        raise InputError(f"window must be > 0 s, got {window_s}")
    a = np.asarray(trace.arrival_s, dtype=np.float64)
    p = np.asarray(trace.prompt_tokens, dtype=np.int64)
    o = np.asarray(trace.output_tokens, dtype=np.int64)
    n = len(a)
    if n == 0:
        raise InputError(f"trace {getattr(trace, 'name', '')!r} has no requests; nothing to plan for")
    a = a - a[0]
    span = float(a[-1])
    values, p_index = np.unique(p, return_inverse=True)

    bins = int(min(max_bins, max(1, n)))
    width = max(span / bins, 1e-9)
    b_index = np.minimum((a / width).astype(np.int64), bins - 1)

    if not (window_s > 0 and span / window_s <= MAX_WINDOWS):   # compared as floats: no int(inf)
        raise InputError(f"the trace spans {span:.6g} s: windows of {window_s:g} s make {span / window_s:,.3g} of them, "
                         f"more than {MAX_WINDOWS:,}; use --window >= {span / MAX_WINDOWS:.3g} "
                         "(or check the arrival times' unit)")
    n_win = max(1, int(np.ceil(span / window_s)) if span > 0 else 1)
    w_index = np.minimum((a / window_s).astype(np.int64), n_win - 1)
    starts = np.arange(n_win) * window_s
    # the last window ends at the last arrival; give it at least a tenth of a window so a
    # lone request at its start does not read as an infinite rate
    dur = np.minimum(starts + window_s, max(span, 0.0)) - starts
    dur = np.maximum(dur, 0.1 * window_s)
    if span == 0:
        dur[:] = window_s
    counts = np.bincount(w_index, minlength=n_win).astype(np.float64)
    steps = (o - 1).astype(np.float64)
    ctx = p + o / 2.0
    sums = {
        "prompt": np.bincount(w_index, weights=p.astype(np.float64), minlength=n_win),
        "steps": np.bincount(w_index, weights=steps, minlength=n_win),
        "ctx": np.bincount(w_index, weights=steps * ctx, minlength=n_win),
        "ctx2": np.bincount(w_index, weights=steps * ctx * ctx, minlength=n_win),
    }
    cv = _window_cv(a, w_index, n_win)

    m = min(n, max_sample)
    sample = np.unique(np.floor(np.arange(m) * (n / m)).astype(np.int64))
    pf = p.astype(np.float64)
    bin_p = np.bincount(b_index, weights=pf, minlength=bins)
    ahead = (np.cumsum(pf) - pf)[sample] - (np.cumsum(bin_p) - bin_p)[b_index[sample]]
    bin_window = np.minimum((np.arange(bins) * width / window_s).astype(np.int64), n_win - 1)
    return Workload(
        name=getattr(trace, "name", "") or "trace", requests=n, span_s=span, window_s=float(window_s),
        arrival_s=a, prompt_tokens=p, output_tokens=o, prompt_index=p_index.astype(np.int64),
        bin_index=b_index, window_index=w_index, prompt_values=values, bin_width_s=width, bins=bins,
        window_start_s=starts, window_duration_s=dur, window_requests=counts, window_interarrival_cv=cv,
        window_sum_prompt=sums["prompt"], window_sum_decode_steps=sums["steps"],
        window_sum_decode_context=sums["ctx"], window_sum_decode_context_sq=sums["ctx2"],
        bin_prompt_sum=bin_p, bin_window=bin_window, sample=sample,
        sample_prompt_ahead=np.maximum(ahead, 0.0), seed=seed)


def _window_cv(a: np.ndarray, w_index: np.ndarray, n_win: int) -> np.ndarray:
    """Inter-arrival CV within each window (gaps whose both ends lie in it); 1.0 where a
    window has fewer than three arrivals."""
    if len(a) < 3:
        return np.ones(n_win)
    gaps = np.diff(a)
    same = w_index[1:] == w_index[:-1]
    g, wi = gaps[same], w_index[1:][same]
    k = np.bincount(wi, minlength=n_win).astype(np.float64)
    s1 = np.bincount(wi, weights=g, minlength=n_win)
    s2 = np.bincount(wi, weights=g * g, minlength=n_win)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / k
        var = np.maximum(s2 / k - mean * mean, 0.0)
        cv = np.sqrt(var) / mean
    return np.where((k >= 2) & (mean > 0), cv, 1.0)


# ---- requests longer than the model's context -------------------------------------------
OVERLONG_POLICIES = ("reject", "truncate", "keep")
DEFAULT_OVERLONG = "reject"


def overlong_mask(trace, context_tokens: int) -> np.ndarray:
    """Requests whose prompt + output exceed `context_tokens` (an engine refuses them: vLLM
    answers 400 when prompt + max_tokens > max_model_len)."""
    return (np.asarray(trace.prompt_tokens) + np.asarray(trace.output_tokens)) > int(context_tokens)


def apply_overlong(trace, context_tokens: int, policy: str = DEFAULT_OVERLONG, model: str = ""):
    """(trace, info) with the over-long requests treated as `policy` says:
    - reject (what engines do): dropped, counted in the trace's `dropped` and in `info`;
    - truncate: output cut to at most context - 1 tokens, then the prompt to what is left
      (the prompt's oldest tokens dropped, as a client trimming history would), so
      prompt + output = context;
    - keep: planned as given (as if the model took them), counted and warned about.
    `info` is the same for every command (stats, plan, simulation, report):
    {policy, context_tokens, model, requests, share, prompt_alone, action}."""
    if policy not in OVERLONG_POLICIES:
        raise InputError(f"--overlong must be one of {', '.join(OVERLONG_POLICIES)}, got {policy!r}")
    ctx = int(context_tokens)
    if ctx < 2:
        raise InputError(f"a context of {ctx} tokens cannot hold a prompt and an output token")
    over = overlong_mask(trace, ctx)
    n_over, n = int(over.sum()), len(trace)
    prompt_alone = int((np.asarray(trace.prompt_tokens)[over] >= ctx).sum())
    info = {"policy": policy, "context_tokens": ctx, "model": model, "requests": n_over,
            "share": n_over / n if n else 0.0, "prompt_alone": prompt_alone,
            "action": {"reject": "rejected", "truncate": "truncated", "keep": "kept"}[policy]}
    if not n_over or policy == "keep":
        return trace, info
    from traces.trace import Trace
    if policy == "reject":
        keep = ~over
        if not keep.any():
            raise InputError(f"every one of the trace's {n:,} requests is longer than {model or 'the model'}'s "
                             f"{ctx:,}-token context: --overlong truncate or keep, or a longer-context model")
        why = f"longer than {model + chr(39) + 's ' if model else 'the '}{ctx:,}-token context"
        return Trace(trace.arrival_s[keep], trace.prompt_tokens[keep], trace.output_tokens[keep],
                     {k: v[keep] for k, v in trace.extra.items()}, trace.name,
                     {**trace.dropped, why: n_over}, trace.notes), info
    out = np.minimum(np.asarray(trace.output_tokens), ctx - 1)
    prompt = np.minimum(np.asarray(trace.prompt_tokens), ctx - out)
    return Trace(trace.arrival_s, prompt, out, dict(trace.extra), trace.name, dict(trace.dropped),
                 trace.notes), info


def overlong_text(info: dict) -> str | None:
    """One line for the terminal, or None when no request is over-long."""
    if not info or not info.get("requests"):
        return None
    who = f"{info['model']}'s " if info.get("model") else "the model's "
    base = (f"{info['requests']:,} requests ({info['share']:.1%}) exceed {who}{info['context_tokens']:,}-token "
            f"context (prompt + output)")
    return base + {"reject": ": rejected, as an engine would (--overlong truncate|keep to plan them)",
                   "truncate": ": truncated to fit (output first capped, then the prompt's oldest tokens)",
                   "keep": ": kept and planned as given, as if the model took them"}[info["policy"]]
