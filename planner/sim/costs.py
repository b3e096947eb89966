"""Iteration costs from the planner's PerfModel, made cheap enough to call per event.

The simulator and the analytical model share one performance model (`planner.perf.model`). Calling
it costs microseconds of numpy per scalar, and the simulator needs millions of iteration
times, so this module reads the same function in a cheaper form:

For a fixed batch size B, `decode_time_s(B, T)` is a maximum of two straight lines in the
context T (compute roofline and memory roofline, each plus constant overheads). For a fixed
chunk size C, `prefill_time_s(C, k)` is the same in the cached context k. `Lines` probes the
PerfModel for the two lines, checks them against direct calls at a spread of points, and
falls back to calling the PerfModel directly wherever the check fails (a calibrated model
of another shape). Between two batch membership changes a decode instance runs k identical
iterations whose context grows by B each time; `DecodeCost.run_time_s` sums them in closed
form and `iterations_within` inverts that sum, so one event covers a whole run.
"""
from __future__ import annotations

import math

import numpy as np

_PROBE_FAR = (1.0e9, 2.0e9)
_CHECK_POINTS = (0.0, 1.0, 7.0, 100.0, 511.0, 2048.0, 1.0e4, 6.5e4, 3.0e5, 2.0e6)
_REL_TOL = 1e-9


class Lines:
    """`f(x) = max(a_lo + b_lo x, a_hi + b_hi x)` for x >= 0, probed from `fv` (f over a
    numpy array, three calls), or f itself (`exact=False`) when f is not of that shape."""

    __slots__ = ("a_lo", "b_lo", "a_hi", "b_hi", "cross", "exact", "fn")

    def __init__(self, fn, fv=None):
        self.fn = fn
        if fv is None:
            def fv(xs):
                return np.array([fn(float(x)) for x in xs])
        f0, f1, g0, g1 = (float(v) for v in fv(np.array([0.0, 1.0, *_PROBE_FAR])))
        b_near = f1 - f0
        b_far = (g1 - g0) / (_PROBE_FAR[1] - _PROBE_FAR[0])
        a_far = g0 - b_far * _PROBE_FAR[0]
        if b_near > b_far and b_near - b_far <= 1e-6 * abs(b_far):
            b_near = b_far   # one line: the difference is rounding in the near probe
        # the line with the larger slope wins beyond the crossing point
        if b_far >= b_near:
            self.a_lo, self.b_lo, self.a_hi, self.b_hi = f0, b_near, a_far, b_far
        else:  # not convex in the way a roofline is; the check below rejects it
            self.a_lo, self.b_lo, self.a_hi, self.b_hi = a_far, b_far, f0, b_near
        self._set_cross()
        if b_far >= b_near:
            # refine from points near the region of use: the high line's intercept from a
            # point past the crossing, the low line's slope over a wide span before it
            c0 = self.cross
            x_hi = max(2.0 * c0, 1.0) if math.isfinite(c0) else 1.0
            x_lo = c0 / 2.0 if 2.0 < c0 < _PROBE_FAR[0] else 0.0
            y_hi, y_lo = (float(v) for v in fv(np.array([x_hi, x_lo])))
            if x_hi < _PROBE_FAR[0] and c0 < x_hi:
                self.a_hi = y_hi - self.b_hi * x_hi
            if x_lo > 0.0:
                self.b_lo = (y_lo - f0) / x_lo
            self._set_cross()
        ys = fv(np.array(_CHECK_POINTS))
        self.exact = all(abs(self._lines(x) - float(y)) <= _REL_TOL * max(abs(float(y)), 1e-12)
                         for x, y in zip(_CHECK_POINTS, ys))

    def _set_cross(self) -> None:
        if self.b_hi > self.b_lo:
            self.cross = (self.a_lo - self.a_hi) / (self.b_hi - self.b_lo)
        else:
            self.cross = math.inf if self.a_lo >= self.a_hi else -math.inf

    def _lines(self, x: float) -> float:
        return max(self.a_lo + self.b_lo * x, self.a_hi + self.b_hi * x)

    def __call__(self, x: float) -> float:
        if self.exact:
            lo = self.a_lo + self.b_lo * x
            hi = self.a_hi + self.b_hi * x
            return hi if hi > lo else lo
        return self.fn(x)


class PrefillCost:
    """`time_s(chunk_tokens, cached_tokens)`: one prefill iteration, as PerfModel says.

    Chunk sizes seen often (a prefill instance's full chunk) get their `Lines`; nothing
    cached (whole prompts) is memoised per size; anything else is a direct call."""

    LINES_AFTER = 2   # calls with one chunk size before its lines are probed

    def __init__(self, perf):
        self.perf = perf
        self._by_chunk: dict[int, Lines] = {}
        self._uncached: dict[int, float] = {}
        self._seen: dict[int, int] = {}
        self._not_lines = False

    def time_s(self, chunk_tokens: int, cached_tokens: float = 0.0, requests: int = 1) -> float:
        if chunk_tokens <= 0:
            return 0.0
        if requests > 1:    # several slices, each attending over its own tokens
            return float(self.perf.prefill_time_s(chunk_tokens, cached_tokens, requests))
        lines = self._by_chunk.get(chunk_tokens)
        if lines is not None:
            return lines(cached_tokens)
        if cached_tokens == 0:
            t = self._uncached.get(chunk_tokens)
            if t is None:
                t = self._uncached[chunk_tokens] = float(self.perf.prefill_time_s(chunk_tokens, 0.0))
            return t
        seen = self._seen.get(chunk_tokens, 0) + 1
        self._seen[chunk_tokens] = seen
        if seen >= self.LINES_AFTER and not self._not_lines:
            perf, c = self.perf, chunk_tokens
            lines = self._by_chunk[chunk_tokens] = Lines(lambda k: float(perf.prefill_time_s(c, k)),
                                                         lambda ks: perf.prefill_time_s(np.full(len(ks), c), ks))
            # a model whose prefix cost is not two lines (measured attention tables) is so for
            # every chunk size: stop probing, call it directly (its scalar path is fast)
            self._not_lines = not lines.exact
            return lines(cached_tokens)
        return float(self.perf.prefill_time_s(chunk_tokens, cached_tokens))


class DecodeCost:
    """Decode iteration times for a batch of B requests holding T context tokens in total.

    `run_time_s(B, T0, k)`: the time of k consecutive iterations starting with context T0
    (the context grows by B per iteration: each request appends one token).
    `iterations_within(B, T0, budget_s, k_max)`: the most iterations (<= k_max) that end
    within `budget_s`.
    """

    def __init__(self, perf):
        self.perf = perf
        self._by_batch: list[Lines | None] = []

    def lines(self, batch: int) -> Lines:
        tab = self._by_batch
        if batch >= len(tab):
            tab.extend([None] * (batch + 1 - len(tab)))
        lines = tab[batch]
        if lines is None:
            perf = self.perf
            lines = Lines(lambda t: float(perf.decode_time_s(batch, t)),
                          lambda ts: perf.decode_time_s(np.full(len(ts), batch), ts))
            tab[batch] = lines
        return lines

    def time_s(self, batch: int, context_tokens: float) -> float:
        if batch <= 0:
            return 0.0
        return self.lines(batch)(context_tokens)

    def run_time_s(self, batch: int, context0: float, iters: int) -> float:
        if iters <= 0 or batch <= 0:
            return 0.0
        ln = self.lines(batch)
        if not ln.exact:
            t, total = context0, 0.0
            for _ in range(iters):
                total += ln.fn(t)
                t += batch
            return total
        # iterations i with context0 + i*B < cross use the low-slope line
        cross = ln.cross
        if cross <= context0:
            m = 0
        elif cross == math.inf:
            m = iters
        else:
            m = min(iters, int(math.ceil((cross - context0) / batch)))
        total = 0.0
        if m > 0:  # i in [0, m)
            total += m * ln.a_lo + ln.b_lo * (m * context0 + batch * m * (m - 1) / 2.0)
        n = iters - m
        if n > 0:  # i in [m, iters)
            total += n * ln.a_hi + ln.b_hi * (n * context0 + batch * (m + iters - 1) * n / 2.0)
        return total

    def iterations_within(self, batch: int, context0: float, budget_s: float, k_max: int) -> int:
        """Largest k in [0, k_max] with run_time_s(batch, context0, k) <= budget_s."""
        if budget_s <= 0.0 or k_max <= 0:
            return 0
        if self.run_time_s(batch, context0, k_max) <= budget_s:
            return k_max
        # the first iteration is the cheapest: start from a lower bound on k
        lo, hi = 0, k_max  # run(lo) <= budget < run(hi)
        first = self.time_s(batch, context0)
        guess = int(budget_s / first) if first > 0 else k_max
        if 0 < guess < hi:
            if self.run_time_s(batch, context0, guess) <= budget_s:
                lo = guess
            else:
                hi = guess
        while hi - lo > 1:
            mid = (lo + hi) >> 1
            if self.run_time_s(batch, context0, mid) <= budget_s:
                lo = mid
            else:
                hi = mid
        return lo


class MixedCost:
    """`time_s(p, k, b, T)`: a mixed (Sarathi-style) iteration, the performance model's
    scalar fast path (`PerfModel.step_s`: plain lookups, no numpy per call)."""

    def __init__(self, perf):
        self.perf = perf

    def time_s(self, prefill_tokens, cached_tokens, decode_batch, context_tokens, requests: int = 1) -> float:
        return self.perf.step_s(prefill_tokens, cached_tokens, decode_batch, context_tokens, requests)


class ScaledPerf:
    """A PerfModel whose every step costs `factor` times as much (prefill, decode, mixed
    iterations, the per-request chunk cost); memory and everything else unchanged. The
    margin search (`planner.search.margin`) replays a plan at slower kernels with it."""

    _TIMES = ("prefill_time_s", "decode_time_s", "mixed_time_s", "step_s")

    def __init__(self, perf, factor: float):
        if not (factor > 0 and math.isfinite(factor)):
            raise ValueError(f"step-cost factor must be finite and > 0, got {factor}")
        self._perf = perf
        self.factor = float(factor)

    def __getattr__(self, name):
        attr = getattr(self._perf, name)
        if name in self._TIMES:
            f = self.factor

            def scaled(*args, **kw):
                return attr(*args, **kw) * f
            return scaled
        if name == "prefill_request_s":
            return attr * self.factor
        return attr
