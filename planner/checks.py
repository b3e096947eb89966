"""Checks for numbers and names read from flags and files: finite, in range, the right kind.

One place for the rules so that a flag (planner/cli/params.py wraps these as click types)
and a file field (plan JSON, model config, profile CSV) are held to the same ones. Each
check returns the clean value or raises InputError naming where the value came from, the
value, and what is allowed.
"""
from __future__ import annotations

import math
import numbers
import re

from planner.errors import InputError

# Durations: a number is seconds; a suffix names the unit ("50ms", "0.5s", "2min").
DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0,
                  "m": 60.0, "min": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf|infinity))\s*([a-zµ]*)\s*$",
                       re.IGNORECASE)


def describe_range(lo=None, hi=None, lo_open=False, hi_open=False, unit: str = "", integer=False) -> str:
    """'a number > 0 s', 'an integer in [1, 4096]', ... for error messages and help."""
    kind = "an integer" if integer else "a finite number"
    u = f" {unit}" if unit else ""
    lo, hi = _num(lo), _num(hi)
    if lo is not None and hi is not None:
        return f"{kind} in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}{u}"
    if lo is not None:
        return f"{kind} {'>' if lo_open else '>='} {lo}{u}"
    if hi is not None:
        return f"{kind} {'<' if hi_open else '<='} {hi}{u}"
    return kind + u


def _num(x):
    """1000000 -> '1,000,000', 0.5 -> '0.5', None stays None."""
    if x is None:
        return None
    if isinstance(x, int) or (float(x) == int(x) and abs(x) >= 10_000):
        return f"{int(x):,}"
    return f"{x:g}"


def _in_range(v, lo, hi, lo_open, hi_open) -> bool:
    if lo is not None and (v < lo or (lo_open and v == lo)):
        return False
    if hi is not None and (v > hi or (hi_open and v == hi)):
        return False
    return True


def _show(value) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_float(value, where: str, *, lo=None, hi=None, lo_open=False, hi_open=False, unit: str = "") -> float:
    """A finite real number in range (bools and strings in JSON are refused: `where` says which)."""
    allowed = describe_range(lo, hi, lo_open, hi_open, unit)
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise InputError(f"{where}: {_show(value)} is not a number; expected {allowed}")
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{where}: {_show(value)} is not a number; expected {allowed}") from None
    if not math.isfinite(v) or not _in_range(v, lo, hi, lo_open, hi_open):
        raise InputError(f"{where}: {_show(value)} is out of range; expected {allowed}")
    return v


def check_int(value, where: str, *, lo=None, hi=None) -> int:
    """An integer in [lo, hi]. 3.0 is accepted as 3 (JSON writers do that); 2.5 is not."""
    allowed = describe_range(lo, hi, integer=True)
    if isinstance(value, bool):
        raise InputError(f"{where}: {_show(value)} is not an integer; expected {allowed}")
    if isinstance(value, numbers.Integral):
        v = int(value)
    elif isinstance(value, numbers.Real):
        if not math.isfinite(value) or value != int(value):
            raise InputError(f"{where}: {_show(value)} is not an integer; expected {allowed}")
        v = int(value)
    elif isinstance(value, str):
        text = value.strip().replace("_", "")
        try:
            v = int(text, 10)
        except ValueError:
            try:  # "1e6" is an integer written as a float
                f = float(text)
                v = int(f) if math.isfinite(f) and f == int(f) else None
            except (ValueError, OverflowError):
                v = None
            if v is None:
                raise InputError(f"{where}: {_show(value)} is not an integer; expected {allowed}") from None
    else:
        raise InputError(f"{where}: {_show(value)} is not an integer; expected {allowed}")
    if not _in_range(v, lo, hi, False, False):
        raise InputError(f"{where}: {_show(value)} is out of range; expected {allowed}")
    return v


def parse_duration(value, where: str, *, lo=0.0, hi=None, lo_open=False) -> float:
    """Seconds from 0.5, "0.5", "500ms", "0.5s", "2min"; finite and >= lo (> lo if lo_open)."""
    allowed = describe_range(lo, hi, lo_open, unit="s") + " (a number of seconds, or with a unit: 50ms, 0.5s, 2min)"
    if isinstance(value, bool):
        raise InputError(f"{where}: {_show(value)} is not a duration; expected {allowed}")
    if isinstance(value, numbers.Real):
        v = float(value)
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if not m or m.group(2).lower() not in DURATION_UNITS and m.group(2) != "":
            raise InputError(f"{where}: {_show(value)} is not a duration; expected {allowed}")
        v = float(m.group(1)) * DURATION_UNITS.get(m.group(2).lower() or "s", 1.0)
    else:
        raise InputError(f"{where}: {_show(value)} is not a duration; expected {allowed}")
    if not math.isfinite(v) or not _in_range(v, lo, hi, lo_open, False):
        raise InputError(f"{where}: {_show(value)} is out of range; expected {allowed}")
    return v


def check_str(value, where: str, *, choices=None) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where}: {_show(value)} is not a string")
    if choices is not None and value not in choices:
        raise InputError(f"{where}: {_show(value)} is not one of {', '.join(choices)}")
    return value


def check_object(value, where: str) -> dict:
    """A JSON object (dict); a list, string or number in its place is named."""
    if not isinstance(value, dict):
        kind = {list: "a list", str: "a string", type(None): "null"}.get(type(value), type(value).__name__)
        raise InputError(f"{where}: expected a JSON object, got {kind}")
    return value


__all__ = ["check_float", "check_int", "parse_duration", "check_str", "check_object", "describe_range",
           "DURATION_UNITS"]
