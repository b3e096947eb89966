"""read_trace / write_trace: any supported format in, the plain CSV out."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from planner.errors import InputError

from .arrivals import arrival_times
from .columns import Rows
from .documents import Document, bench_runs, document, is_bench_run, load_json
from .formats import CONVERTERS, DROP_ZERO_DEFAULT, FORMATS, JSON_FORMATS, detect
from .formats_json import CONVERTERS as JSON_CONVERTERS, detect_log, drop_failed
from .textio import jsonl_frame, read_csv_frame, read_jsonl_records, read_text
from .trace import Trace
from .units import check_time_unit, clip, seconds_per_unit

FORMAT_NAMES = tuple(FORMATS) + tuple(JSON_FORMATS)
ALL_CONVERTERS = {**CONVERTERS, **JSON_CONVERTERS}


def read_trace(path, fmt: str | None = None, *, sort: bool = False, rate_per_s: float | None = None,
               cv: float = 1.0, seed: int = 0, per_turn: bool = False, drop_zero: bool | None = None,
               columns: dict[str, str] | None = None, time_unit: str | None = None,
               tokenizer: str | None = None) -> Trace:
    """Read a trace file in any supported format (chosen by its columns or structure unless
    `fmt` names one; see traces.formats.FORMATS and JSON_FORMATS).

    - Arrivals are seconds from the first request. Rows out of arrival order are an error
      unless `sort` (stable sort by arrival).
    - Length-only datasets (sharegpt, sarathi, lengths, ShareGPT JSON, benchmark results
      without request times) need `rate_per_s`: arrivals are drawn at that mean rate, Poisson
      (cv=1) or Gamma gaps with coefficient of variation `cv`, from `seed`, in file order. A
      benchmark result that records its request rate is drawn at that rate by default. For
      timed formats, `rate_per_s` rescales time so the trace's mean rate becomes `rate_per_s`.
    - `columns` ({arrival, prompt, output} -> column name) reads any table; `time_unit`
      (s, ms, us, ns) is the unit of arrival numbers whose format does not fix one (else
      seconds, checked by traces.units.check_time_unit).
    - Rows with zero tokens are dropped and counted in Trace.dropped (BurstGPT failed
      requests always; others by default, except the plain format where they are an error);
      `drop_zero` overrides. Failed requests in benchmark exports and logs are dropped and
      counted. Trace.notes says what was approximated or assumed.
    - `per_turn` (ShareGPT): prompt = this turn's tokens, not history + turn.
    - `tokenizer`: tokenizer.json for formats holding text (ShareGPT JSON, genai-perf).
    """
    path = Path(path)
    if fmt is not None and fmt not in FORMAT_NAMES:
        raise InputError(f"unknown trace format {fmt!r}; choose one of {', '.join(FORMAT_NAMES)}")
    if columns is not None and fmt not in (None, "columns"):
        raise InputError("--columns names the columns itself; drop --format")
    if time_unit is not None:
        seconds_per_unit(time_unit)
    src = _source(path, read_text(path), fmt, columns, tokenizer, per_turn)
    rows = Rows(path, src.df, src.lines, src.fmt, dict(src.dropped), row_word=src.row_word)
    if columns is not None:
        fmt = "columns"
    elif fmt is None or fmt == "sharegpt" and src.fmt == "sharegpt-json":
        fmt = src.fmt if src.fmt != "detected" else (detect_log(rows) or detect(rows))
    rows.fmt = fmt
    if fmt in ("aiperf", "openai"):
        rows.df, rows.lines, failed = drop_failed(fmt, rows.df, rows.lines)
        rows.dropped.update(failed)
    if len(rows.df) == 0:
        if rows.dropped:
            raise InputError(f"{path}: all rows were dropped ({_dropped_text(rows.dropped)}); nothing left to read")
        raise InputError(f"{path}: has a header but no requests; expected one request per line after the header")
    if drop_zero is None:
        drop_zero = DROP_ZERO_DEFAULT.get(fmt, True)
    parsed = ALL_CONVERTERS[fmt](rows, drop_zero, per_turn=per_turn, columns=columns)
    keep = ~parsed.drop
    prompt, output = parsed.prompt_tokens[keep], parsed.output_tokens[keep]
    extra = {k: np.asarray(v)[keep] for k, v in parsed.extra.items()}
    lines = rows.lines[keep]
    if not keep.any():
        raise InputError(f"{path}: all {len(keep)} rows were dropped ({_dropped_text(rows.dropped)}); nothing left to read")
    notes = list(src.notes)

    if parsed.arrival_s is None:
        if time_unit is not None:
            raise InputError(f"--time-unit: {path} ({fmt}) has no arrival times to read in {time_unit}")
        if rate_per_s is None and src.rate_hint is not None:
            rate_per_s, cv, why = src.rate_hint
            notes.append(f"arrivals drawn at {why} (gap CV {cv:.2g}, seed {seed}); pass --rate to choose another")
        if rate_per_s is None:
            raise InputError(f"{path}: {fmt} is a length-only dataset with no arrival times; pass --rate R "
                             "(requests/s) to draw arrivals (Poisson, or Gamma with --cv)")
        arrival = np.round(arrival_times(rate_per_s, n_requests=len(prompt), cv=cv, seed=seed), 6)
    else:
        arrival = parsed.arrival_s[keep]
        if time_unit is not None:
            if not parsed.raw_time:
                raise InputError(f"--time-unit: the {fmt} format fixes its time unit (column "
                                 f"{parsed.time_col or 'of arrival times'}); drop --time-unit")
            arrival = arrival * seconds_per_unit(time_unit)
        elif parsed.raw_time and rate_per_s is None:
            check_time_unit(arrival, str(path), parsed.time_col)
        back = np.diff(arrival) < 0
        if back.any():
            if not sort:
                i = int(np.argmax(back)) + 1
                raise InputError(f"{path}: {rows.row_word} {int(lines[i])}: arrival time goes backwards "
                                 f"({_t(arrival[i])} after {_t(arrival[i - 1])}); the file is not in arrival order "
                                 "- pass --sort to sort it")
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
            scale = (len(arrival) / span) / rate_per_s
            if not (math.isfinite(span) and math.isfinite(scale) and scale > 0):
                raise InputError(f"{path}: cannot rescale arrivals spanning {span:g} s to {rate_per_s:g} req/s "
                                 "(out of a float's range); check the rate, the time column and --time-unit")
            arrival = arrival * scale
    return Trace(arrival, prompt, output, extra, name=path.name, dropped=dict(rows.dropped), notes=tuple(notes))


def _source(path: Path, text: str, fmt: str | None, columns, tokenizer, per_turn) -> Document:
    """The file as a frame of rows: a JSON document's requests, JSONL records, or CSV lines."""
    head = text.lstrip()[:1]
    if head in ("{", "["):
        doc = load_json(text)
        if doc is not None and columns is None:
            d = document(path, doc, tokenizer, per_turn)
            if d is not None:
                if fmt is not None and fmt != d.fmt and not (fmt == "sharegpt" and d.fmt == "sharegpt-json"):
                    raise InputError(f"{path}: --format {fmt}, but the file is a {JSON_FORMATS[d.fmt]}; drop --format")
                return d
        if isinstance(doc, list):
            if not all(isinstance(r, dict) for r in doc):
                raise InputError(f"{path}: a JSON list of {clip(type(doc[0]).__name__ if doc else 'nothing', 40)}; "
                                 "expected objects with one request each (or a known export; see --format)")
            records, lines = doc, np.arange(1, len(doc) + 1, dtype=np.int64)
            word = "request"
        elif isinstance(doc, dict):
            records, lines, word = [doc], np.array([1], dtype=np.int64), "line"
        else:
            records, lines = read_jsonl_records(path, text)
            word = "line"
        if columns is None and fmt in (None, "sglang-bench") and records and is_bench_run(records[0]):
            return bench_runs(path, records)
        return Document("detected", jsonl_frame(records), lines, row_word=word)
    df, lines = read_csv_frame(path, text)
    return Document("detected", df, lines, row_word="line")


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
