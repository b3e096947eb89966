"""The one in-memory trace type: numpy arrays, validated once at construction."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from planner.errors import InputError


@dataclass(frozen=True, eq=False)
class Trace:
    """Requests in arrival order. `arrival_s` starts at 0 (seconds from the first request)
    and never decreases; token counts are integers >= 1. `extra` holds any other columns
    a reader kept (same length). `dropped` counts rows a reader removed on purpose, by
    reason, so nothing is lost silently."""
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    name: str = ""
    dropped: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what a reader approximated or assumed (token counts, drawn arrivals)

    def __post_init__(self):
        a = np.ascontiguousarray(self.arrival_s, dtype=np.float64)
        p = np.ascontiguousarray(self.prompt_tokens, dtype=np.int64)
        o = np.ascontiguousarray(self.output_tokens, dtype=np.int64)
        if not (a.ndim == p.ndim == o.ndim == 1) or not (len(a) == len(p) == len(o)):
            raise InputError(f"trace {self.name!r}: arrival, prompt and output columns must be 1-D and of equal length")
        if len(a) and not np.all(np.isfinite(a)):
            raise InputError(f"trace {self.name!r}: arrival times must be finite numbers")
        if len(a) > 1 and np.any(np.diff(a) < 0):
            row = int(np.argmax(np.diff(a) < 0)) + 1
            raise InputError(f"trace {self.name!r}: arrival times decrease at request {row}; sort the trace first")
        for col, arr in (("prompt_tokens", p), ("output_tokens", o)):
            if len(arr) and arr.min() < 1:
                row = int(np.argmin(arr))
                raise InputError(f"trace {self.name!r}: {col} must be >= 1 (request {row} has {arr[row]})")
        for k, v in self.extra.items():
            if len(v) != len(a):
                raise InputError(f"trace {self.name!r}: extra column {k!r} has {len(v)} rows, expected {len(a)}")
        object.__setattr__(self, "arrival_s", a)
        object.__setattr__(self, "prompt_tokens", p)
        object.__setattr__(self, "output_tokens", o)

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def span_s(self) -> float:
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) > 1 else 0.0

    @property
    def rate_per_s(self) -> float:
        """Requests per second: rows / span (the convention of ../shared/traces/README.md)."""
        return len(self) / self.span_s if self.span_s > 0 else 0.0

    def time_scaled(self, factor: float) -> "Trace":
        """Arrivals stretched by `factor` (>1 slows traffic down, <1 speeds it up)."""
        if factor <= 0:
            raise InputError(f"time scale must be > 0, got {factor}")
        return Trace(self.arrival_s * factor, self.prompt_tokens, self.output_tokens,
                     dict(self.extra), self.name, dict(self.dropped), self.notes)

    def head(self, n: int) -> "Trace":
        return Trace(self.arrival_s[:n], self.prompt_tokens[:n], self.output_tokens[:n],
                     {k: v[:n] for k, v in self.extra.items()}, self.name, dict(self.dropped), self.notes)

    def window(self, start_s: float, end_s: float) -> "Trace":
        """Requests arriving in [start_s, end_s), arrival times kept as they are."""
        lo, hi = np.searchsorted(self.arrival_s, [start_s, end_s], side="left")
        return Trace(self.arrival_s[lo:hi], self.prompt_tokens[lo:hi], self.output_tokens[lo:hi],
                     {k: v[lo:hi] for k, v in self.extra.items()}, self.name, {})
