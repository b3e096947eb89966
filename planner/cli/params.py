"""Click parameter types for every numeric option and output path of `planner` and `testbed`.

A flag declared with one of these is checked when click parses it, before the command
body runs or opens any file: a bad value exits 2 with click's one line naming the flag,
the value and the allowed range. The rules themselves are planner/checks.py's, shared with
the readers of plan JSON, model configs and profiles.

    @click.option("--slo-ttft", type=Seconds(lo_open=True))      # 0.5, "500ms", "0.5s"; > 0
    @click.option("--rate-scale", type=Float(lo=0, lo_open=True))
    @click.option("--requests", type=Int(lo=1, hi=MAX_REQUESTS))
    @click.option("-o", "--output", type=OutFile())                # folder must exist, writable

Output files: a missing folder is an error (exit 2, "create it with mkdir -p"), not made
for you (a typo in a path should not scatter folders); output *folders* (`--config-out`,
`export -o`) are created. Files themselves are written through planner/outputs.py
(temporary file, renamed when complete).
"""
from __future__ import annotations

import os

import click

from planner.checks import check_float, check_int, describe_range, parse_duration
from planner.errors import InputError

# Bounds on counts a user can ask for: large enough for any real trace or run, small
# enough that a typo (10^12) is refused instead of filling memory or spinning.
MAX_REQUESTS = 100_000_000
MAX_TOKENS = 10_000_000           # tokens in one request (prompt or output)
MAX_INSTANCES = 100_000
MAX_SCALE = 1e6                   # time/rate multipliers
SEED_MAX = 2**63 - 1
# A bare number at or above these is refused for an SLO with "did you mean 50ms?" (Seconds)
TPOT_BARE_BELOW_S = 1.0
TTFT_BARE_BELOW_S = 60.0


class Float(click.ParamType):
    """A finite float within [lo, hi] (open ends with lo_open/hi_open); NaN and inf refused."""
    name = "float"

    def __init__(self, lo=None, hi=None, lo_open=False, hi_open=False, unit: str = ""):
        self.lo, self.hi, self.lo_open, self.hi_open, self.unit = lo, hi, lo_open, hi_open, unit

    def convert(self, value, param, ctx):
        try:
            return check_float(value, _where(param), lo=self.lo, hi=self.hi, lo_open=self.lo_open,
                               hi_open=self.hi_open, unit=self.unit)
        except InputError as e:
            self.fail(_strip_where(e, param), param, ctx)

    def get_metavar(self, param, ctx=None):
        return "FLOAT"

    def __repr__(self):
        return describe_range(self.lo, self.hi, self.lo_open, self.hi_open, self.unit)


class Int(click.ParamType):
    """An integer within [lo, hi]; '2.5', 'nan' and 10**12 (above hi) refused."""
    name = "integer"

    def __init__(self, lo=None, hi=None):
        self.lo, self.hi = lo, hi

    def convert(self, value, param, ctx):
        try:
            return check_int(value, _where(param), lo=self.lo, hi=self.hi)
        except InputError as e:
            self.fail(_strip_where(e, param), param, ctx)

    def get_metavar(self, param, ctx=None):
        return "INTEGER"

    def __repr__(self):
        return describe_range(self.lo, self.hi, integer=True)


class Seconds(click.ParamType):
    """A duration in seconds: 0.5, "500ms", "0.5s", "2min"; finite, >= lo (> lo with lo_open).

    `bare_below`: a number written without a unit must be below this many seconds, else it
    is refused with "did you mean 50ms?" (an SLO of `--slo-tpot 50` is 50 seconds per
    token: nobody means that; TPOT_BARE_BELOW_S and TTFT_BARE_BELOW_S)."""
    name = "duration"

    def __init__(self, lo=0.0, hi=None, lo_open=False, bare_below: float | None = None):
        self.lo, self.hi, self.lo_open, self.bare_below = lo, hi, lo_open, bare_below

    def convert(self, value, param, ctx):
        try:
            v = parse_duration(value, _where(param), lo=self.lo, hi=self.hi, lo_open=self.lo_open)
        except InputError as e:
            self.fail(_strip_where(e, param), param, ctx)
        if self.bare_below is not None and _bare(value) and v >= self.bare_below:
            text = str(value).strip()
            self.fail(f"{text} means {v:g} seconds (a number without a unit is seconds); did you mean {text}ms? "
                      f"Write {text}ms, or {text}s if you do mean seconds", param, ctx)
        return v

    def get_metavar(self, param, ctx=None):
        return "SECONDS"

    def __repr__(self):
        return describe_range(self.lo, self.hi, self.lo_open, unit="s")


class Percent(click.ParamType):
    """A share: "20%" or the fraction 0.2, within [lo, hi] (as fractions). A bare number
    above 1 is refused with "did you mean 20%?" (a 2000% margin is nobody's intent)."""
    name = "percent"

    def __init__(self, lo=0.0, hi=1.0):
        self.lo, self.hi = lo, hi

    def convert(self, value, param, ctx):
        text = str(value).strip()
        pct = text.endswith("%")
        try:
            v = check_float(text[:-1] if pct else text, _where(param))
        except InputError as e:
            self.fail(_strip_where(e, param), param, ctx)
        if not pct and v > 1:
            self.fail(f"{text} is read as a fraction ({v:g} = {v:.0%}); did you mean {text}%?", param, ctx)
        v = v / 100.0 if pct else v
        if not self.lo <= v <= self.hi:
            self.fail(f"{text} is out of range; expected {self.lo:.0%} to {self.hi:.0%}", param, ctx)
        return v

    def get_metavar(self, param, ctx=None):
        return "PERCENT"

    def __repr__(self):
        return f"{self.lo:.0%} to {self.hi:.0%}"


class OutFile(click.ParamType):
    """A file to write: not a folder, in a folder that exists and that we may write to.
    Checked at parse time, so that a bad path fails before any work is done."""
    name = "file"

    def convert(self, value, param, ctx):
        try:
            return check_output_file(value, _where(param))
        except InputError as e:
            self.fail(_strip_where(e, param), param, ctx)

    def get_metavar(self, param, ctx=None):
        return "FILE"


class OutDir(click.ParamType):
    """A folder to write into; created if missing (its parent must be writable)."""
    name = "directory"

    def convert(self, value, param, ctx):
        try:
            return check_output_dir(value, _where(param))
        except InputError as e:
            self.fail(_strip_where(e, param), param, ctx)

    def get_metavar(self, param, ctx=None):
        return "DIR"


SEED = Int(lo=0, hi=SEED_MAX)      # numpy and torch take non-negative seeds


def check_output_file(path, where: str = "output") -> str:
    path = os.fspath(path)
    if not path or "\0" in path:
        raise InputError(f"{where}: {path!r} is not a file name")
    if os.path.isdir(path):
        raise InputError(f"{where}: {path} is a folder; give a file name inside it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"{where}: folder {os.path.dirname(path) or folder} does not exist "
                         f"(create it first: mkdir -p {os.path.dirname(path) or folder})")
    if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise InputError(f"{where}: cannot write {path} (permission denied)")
    return path


def check_output_dir(path, where: str = "output") -> str:
    path = os.fspath(path)
    if not path or "\0" in path:
        raise InputError(f"{where}: {path!r} is not a folder name")
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"{where}: {path} exists and is not a folder")
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{where}: cannot create or write {path} (permission denied in {probe})")
    return path


def _bare(value) -> bool:
    """A duration written as a plain number, without a unit."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, str) and not value.strip()[-1:].isalpha()


def _where(param) -> str:
    return (param.opts[0] if param is not None and param.opts else getattr(param, "name", None)) or "value"


def _strip_where(err: InputError, param) -> str:
    """click already names the option; drop our own 'where: ' prefix from the message."""
    text = str(err)
    prefix = _where(param) + ": "
    return text[len(prefix):] if text.startswith(prefix) else text


__all__ = ["Float", "Int", "Seconds", "OutFile", "OutDir", "check_output_file", "check_output_dir",
           "SEED", "MAX_REQUESTS", "MAX_TOKENS", "MAX_INSTANCES", "MAX_SCALE", "TPOT_BARE_BELOW_S", "TTFT_BARE_BELOW_S"]
