"""Predict a frame of benchmark rows: every row comes back, with its prediction or the
reason it has none (never dropped, never guessed)."""
from __future__ import annotations

import sys
import time

import pandas as pd

from planner.bench.predict import INFERENCEMAX, Client, predict_spec
from planner.bench.rows import resolve
from planner.errors import InputError

OUT_COLUMNS = ("pred_ttft_ms", "pred_tpot_ms", "pred_tokens_per_s_per_gpu", "source", "status", "layout")


def predict_frame(df: pd.DataFrame, engine_overrides: dict | None = None, *, progress: bool = False,
                  client: Client = INFERENCEMAX, literal_layout: bool = False) -> pd.DataFrame:
    """df with OUT_COLUMNS added; `layout` is the engine layout predicted (and the file's
    columns where they were read as a squared GPU count: planner.bench.rows.squared_layout)."""
    out = df.copy()
    cols = {c: [] for c in OUT_COLUMNS}
    tick = _Ticker(len(df), progress)
    for row in df.to_dict("records"):
        spec = resolve(row, (engine_overrides or {}).get(str(row.get("backend", "")).lower()), literal_layout)
        if isinstance(spec, str):
            got = {"status": spec}
        else:
            layout = spec.describe()
            try:
                got = predict_spec(spec, client=client)
            except InputError as e:     # a setting the model does not cover: the row says which
                got = {"status": str(e)}
            except Exception as e:  # a row the model cannot take must not end the run
                got = {"status": f"error: {type(e).__name__}: {str(e)[:160]}"}
            got["layout"] = layout
        for c in OUT_COLUMNS:
            cols[c].append(got.get(c, float("nan") if c.startswith("pred_") else ""))
        tick()
    for c in OUT_COLUMNS:
        out[c] = cols[c]
    return out


class _Ticker:
    """A line on stderr every few seconds (a bar on a terminal) for runs over a few seconds."""

    def __init__(self, total: int, enabled: bool, every_s: float = 5.0):
        self.total, self.enabled, self.every_s = total, enabled, every_s
        self.n, self.t0, self.last = 0, time.perf_counter(), time.perf_counter()

    def __call__(self):
        self.n += 1
        now = time.perf_counter()
        if self.enabled and (now - self.last >= self.every_s or self.n == self.total) and now - self.t0 > 2.0:
            self.last = now
            end = "\n" if not sys.stderr.isatty() or self.n == self.total else "\r"
            print(f"predict: {self.n}/{self.total} rows, {now - self.t0:.0f} s", end=end, file=sys.stderr, flush=True)
