"""read_trace / write_trace: any supported format in, the plain CSV out."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from planner.errors import InputError

from .arrivals import arrival_times
from .columns import Rows
from .formats import CONVERTERS, DROP_ZERO_DEFAULT, FORMATS, detect
from .textio import looks_like_jsonl, read_csv_frame, read_jsonl_frame, read_text
from .trace import Trace

FORMAT_NAMES = tuple(FORMATS)


def read_trace(path, fmt: str | None = None, *, sort: bool = False, rate_per_s: float | None = None,
               cv: float = 1.0, seed: int = 0, per_turn: bool = False, drop_zero: bool | None = None) -> Trace:
    """Read a trace file in any supported format (chosen by its columns unless `fmt` names
    one; see traces.formats.FORMATS).

    - Arrivals are seconds from the first request. Rows out of arrival order are an error
      unless `sort` (stable sort by arrival).
    - Length-only datasets (sharegpt, sarathi, lengths) need `rate_per_s`: arrivals are drawn
      at that mean rate, Poisson (cv=1) or Gamma gaps with coefficient of variation `cv`,
      from `seed`, in file order. For timed formats, `rate_per_s` rescales time so the
      trace's mean rate (rows / span) becomes `rate_per_s`.
    - Rows with zero tokens are dropped and counted in Trace.dropped (BurstGPT failed
      requests always; others by default, except the plain format where they are an error);
      `drop_zero` overrides.
    - `per_turn` (ShareGPT tables): prompt = this turn's tokens, not history + turn.
    """
    path = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"unknown trace format {fmt!r}; choose one of {', '.join(FORMATS)}")
    text = read_text(path)
    if fmt == "mooncake" or (fmt is None and looks_like_jsonl(text)):
        df, lines = read_jsonl_frame(path, text)
    else:
        df, lines = read_csv_frame(path, text)
    rows = Rows(path, df, lines, fmt or "detected")
    fmt = fmt or detect(rows)
    rows.fmt = fmt
    if len(df) == 0:
        raise InputError(f"{path}: has a header but no requests; expected one request per line after the header")
    if drop_zero is None:
        drop_zero = DROP_ZERO_DEFAULT.get(fmt, True)
    parsed = CONVERTERS[fmt](rows, drop_zero, per_turn=per_turn)
    keep = ~parsed.drop
    prompt, output = parsed.prompt_tokens[keep], parsed.output_tokens[keep]
    extra = {k: np.asarray(v)[keep] for k, v in parsed.extra.items()}
    lines = lines[keep]
    if not keep.any():
        raise InputError(f"{path}: all {len(keep)} rows were dropped ({_dropped_text(rows.dropped)}); nothing left to read")

    if parsed.arrival_s is None:
        if rate_per_s is None:
            raise InputError(f"{path}: {fmt} is a length-only dataset with no arrival times; pass --rate R "
                             "(requests/s) to draw arrivals (Poisson, or Gamma with --cv)")
        arrival = np.round(arrival_times(rate_per_s, n_requests=len(prompt), cv=cv, seed=seed), 6)
    else:
        arrival = parsed.arrival_s[keep]
        back = np.diff(arrival) < 0
        if back.any():
            if not sort:
                i = int(np.argmax(back)) + 1
                raise InputError(f"{path}: line {int(lines[i])}: arrival time goes backwards ({_t(arrival[i])} after "
                                 f"{_t(arrival[i - 1])}); the file is not in arrival order - pass --sort to sort it")
            order = np.argsort(arrival, kind="stable")
            arrival, prompt, output = arrival[order], prompt[order], output[order]
            extra = {k: v[order] for k, v in extra.items()}
        arrival = arrival - arrival[0]
        if rate_per_s is not None:
            if not (math.isfinite(rate_per_s) and rate_per_s > 0):
                raise InputError(f"rate must be > 0 requests/s, got {rate_per_s}")
            span = float(arrival[-1])
            if span <= 0:
                raise InputError(f"{path}: all requests arrive at the same time; cannot rescale it to {rate_per_s} req/s")
            arrival = arrival * ((len(arrival) / span) / rate_per_s)
    return Trace(arrival, prompt, output, extra, name=path.name, dropped=dict(rows.dropped))


def write_trace(trace: Trace, path) -> None:
    """Write the plain CSV: arrival_s (microseconds), prompt_tokens, output_tokens, then the
    extra columns. A *.gz path is gzip-compressed."""
    path = Path(path)
    cols = {"arrival_s": np.round(trace.arrival_s, 6), "prompt_tokens": trace.prompt_tokens,
            "output_tokens": trace.output_tokens}
    for k, v in trace.extra.items():
        if k not in cols:
            cols[k] = v
    try:
        pd.DataFrame(cols).to_csv(path, index=False, float_format="%.6f", lineterminator="\n")
    except OSError as e:
        raise InputError(f"{path}: cannot write ({e.strerror or e}); check the folder exists and is writable") from None


def _t(x: float) -> str:
    return f"{x:.6g} s"


def _dropped_text(dropped: dict[str, int]) -> str:
    return ", ".join(f"{n} {why}" for why, n in dropped.items()) or "none"
