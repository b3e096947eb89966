"""Column checks shared by the readers: each failure is a one-line InputError that names the
file, the line, the column and what to do."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from planner.errors import InputError

from .units import clip

MAX_TOKENS = 10**9  # beyond any model's context; catches overflow and unit mix-ups


@dataclass
class Rows:
    """A frame being converted, with each row's file line number and a running tally of
    the rows dropped on purpose (reason -> count)."""
    path: Path
    df: pd.DataFrame
    lines: np.ndarray
    fmt: str
    dropped: dict[str, int] = field(default_factory=dict)
    drop: np.ndarray | None = None  # rows dropped so far (bool), so each is counted once
    row_word: str = "line"  # what a row number counts: a file line, or a request / conversation in a document

    def find(self, name: str) -> str | None:
        """The frame's column matching `name` case- and space-insensitively, or None."""
        want = name.strip().lower()
        for c in self.df.columns:
            if str(c).strip().lower() == want:
                return c
        return None

    def require(self, *names: str) -> list[str]:
        found = [self.find(n) for n in names]
        missing = [n for n, f in zip(names, found) if f is None]
        if missing:
            have = clip(", ".join(map(str, self.df.columns)) or "none")
            raise InputError(f"{self.path}: missing column(s) {', '.join(missing)} for the {self.fmt} format "
                             f"(found: {have}); rename the columns or pass the right --format")
        return found

    def where(self, i: int) -> str:
        return f"{self.path}: {self.row_word} {int(self.lines[i])}"

    def numbers(self, col: str) -> np.ndarray:
        """The column as float64; non-numbers and empty cells are errors."""
        s = self.df[col]
        if pd.api.types.is_bool_dtype(s.dtype):
            raise InputError(f"{self.where(0)}, column {col}: true/false values, expected numbers")
        if pd.api.types.is_numeric_dtype(s.dtype):
            v = s.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            v = pd.to_numeric(s.map(_scalar_or_nan), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            bad = np.isnan(v) & s.notna().to_numpy()
            if bad.any():
                i = int(np.argmax(bad))
                raise InputError(f"{self.where(i)}, column {col}: {_show(s.iloc[i])} is not a number; "
                                 "fix or remove that row")
        nan = np.isnan(v)
        if nan.any():
            i = int(np.argmax(nan))
            raise InputError(f"{self.where(i)}, column {col}: empty value (NaN); fill it in or remove that row")
        inf = ~np.isfinite(v)
        if inf.any():
            i = int(np.argmax(inf))
            raise InputError(f"{self.where(i)}, column {col}: {v[i]} is not a finite number; fix or remove that row")
        return v

    def tokens(self, col: str, drop_zero: bool, zero_reason: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(token counts as int64, mask of rows to drop because the count is 0). Negative,
        fractional or absurdly large counts are errors; zeros are errors unless drop_zero."""
        v = self.numbers(col)
        for bad, what in ((v < 0, "is negative"), (v != np.floor(v), "is not a whole number"),
                          (v > MAX_TOKENS, f"is above {MAX_TOKENS:,}")):
            if bad.any():
                i = int(np.argmax(bad))
                raise InputError(f"{self.where(i)}, column {col}: {_fmt(v[i])} {what}; token counts must be "
                                 "whole numbers >= 1 - fix or remove that row")
        zero = v == 0
        if zero.any() and not drop_zero:
            i = int(np.argmax(zero))
            raise InputError(f"{self.where(i)}, column {col}: 0 tokens; token counts must be >= 1 - remove "
                             "such rows or pass --drop-zero to drop and count them")
        if zero.any():
            already = self.drop if self.drop is not None else np.zeros(len(v), dtype=bool)
            new = int((zero & ~already).sum())
            if new:
                reason = zero_reason or f"{col} = 0"
                self.dropped[reason] = self.dropped.get(reason, 0) + new
            self.drop = already | zero
        return v.astype(np.int64), zero


def _scalar_or_nan(x):
    return x if isinstance(x, (str, int, float, np.integer, np.floating)) and not isinstance(x, bool) else (
        np.nan if x is None else "<not a number>")


def _show(x) -> str:
    s = repr(x)
    return s if len(s) <= 40 else s[:37] + "..."


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e18 else repr(float(x))
