"""Time units of arrival columns, `--columns` mappings, and quoting input in messages.

A numeric arrival column whose unit the format does not fix (the plain CSV's `arrival_s`,
a column named with --columns, an OpenAI log's `timestamp`) is read in seconds unless
--time-unit says otherwise. Two checks refuse a unit that cannot be right, with a one-line
hint, instead of planning a trace that became 1,000 times too slow:
- Unix time: the first value, read in each unit, lands in 2001..2100 in exactly one of
  them; if that unit is not the one assumed, the file is refused.
- Rate: at least 20 requests at under 0.01 requests/s (fewer than one per 100 s: no load
  to buy GPUs for) reads like milliseconds taken as seconds; the hint gives the rate in the
  unit that makes it plausible.
Either check is off when --time-unit is given (the user has said) or when --rate rescales
time (the unit cancels out).
"""
from __future__ import annotations

import numpy as np

from planner.errors import InputError

TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}  # seconds per unit
QUOTE_CHARS = 200
EPOCH_S = (1.0e9, 4.1e9)        # 2001-09 .. 2099-12, Unix seconds
SLOW_RATE_PER_S = 0.01
SLOW_MIN_REQUESTS = 20
COLUMN_KEYS = ("arrival", "prompt", "output")


def clip(text, limit: int = QUOTE_CHARS) -> str:
    """`text` (str() of anything) cut to about `limit` characters, saying how much was cut."""
    s = str(text)
    if len(s) <= limit:
        return s
    return f"{s[:limit]}... ({len(s) - limit:,} more characters)"


def seconds_per_unit(unit: str) -> float:
    if unit not in TIME_UNITS:
        raise InputError(f"--time-unit {unit!r}: choose one of {', '.join(TIME_UNITS)}")
    return TIME_UNITS[unit]


def _epoch_unit(first: float) -> str | None:
    hits = [u for u, f in TIME_UNITS.items() if EPOCH_S[0] <= first * f <= EPOCH_S[1]]
    return hits[0] if len(hits) == 1 else None


def check_time_unit(raw: np.ndarray, where: str, col: str, assumed: str = "s") -> None:
    """Refuse `assumed` as the unit of the arrival values `raw` when they read like another
    unit (see the module docstring). `where` names the file for the message."""
    if len(raw) == 0:
        return
    first = float(np.min(raw))
    epoch = _epoch_unit(first)
    flag = f"--time-unit {assumed}"
    if epoch is not None and epoch != assumed:
        raise InputError(f"{where}: column {col}: {first:,.0f} reads as Unix time in {epoch}, not {assumed}; "
                         f"pass --time-unit {epoch} (or {flag} if the values really are {assumed})")
    if epoch is not None:
        return
    n = len(raw)
    span_s = (float(np.max(raw)) - first) * TIME_UNITS[assumed]
    if n < SLOW_MIN_REQUESTS or span_s <= 0:
        return
    rate = n / span_s
    if rate >= SLOW_RATE_PER_S:
        return
    faster = [u for u, f in TIME_UNITS.items() if f < TIME_UNITS[assumed] and n / (span_s * f / TIME_UNITS[assumed])
              >= SLOW_RATE_PER_S]
    better = faster[0] if faster else "ms"
    rate_better = n / (span_s * TIME_UNITS[better] / TIME_UNITS[assumed])
    raise InputError(f"{where}: column {col}: {n:,} requests over {_duration(span_s)} ({rate:.2g} req/s) "
                     f"if the times are in {assumed}; if they are in {better} pass --time-unit {better} "
                     f"({rate_better:,.3g} req/s), or {flag} to keep {assumed}")


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86_400.0), ("hours", 3_600.0), ("minutes", 60.0)):
        if seconds >= 2 * size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:,.1f} s"


def parse_columns(text: str | None) -> dict[str, str] | None:
    """`arrival=timestamp,prompt=input_tokens,output=output_tokens` -> {key: column}.
    prompt and output are required; arrival is optional (then arrivals are drawn at --rate)."""
    if text is None:
        return None
    out: dict[str, str] = {}
    for item in text.split(","):
        key, eq, col = item.partition("=")
        key, col = key.strip().lower(), col.strip()
        if not eq or not col or key not in COLUMN_KEYS:
            raise InputError(f"--columns {clip(text, 80)!r}: expected KEY=COLUMN pairs separated by commas with KEY "
                             f"one of {', '.join(COLUMN_KEYS)}, e.g. arrival=timestamp,prompt=input_tokens,"
                             "output=output_tokens")
        if key in out:
            raise InputError(f"--columns: {key} is given twice")
        out[key] = col
    missing = [k for k in ("prompt", "output") if k not in out]
    if missing:
        raise InputError(f"--columns needs {' and '.join(k + '=COLUMN' for k in missing)} "
                         "(arrival=COLUMN is optional: without it arrivals are drawn at --rate)")
    return out
