"""Converters for benchmark exports and request logs (JSON / JSONL), and for any table whose
columns the user names with --columns. Each returns a traces.formats.Parsed; `raw_time`
marks arrival values whose unit the format does not fix (read as seconds unless
--time-unit says otherwise, after traces.units.check_time_unit)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from planner.errors import InputError

from .columns import Rows
from .formats import Parsed, datetime_seconds

AIPERF = ("metadata.request_start_ns", "metrics.input_sequence_length.value", "metrics.output_sequence_length.value")
USAGE_PREFIXES = ("", "response.", "response.body.")
# OpenAI log arrival columns, best first; `created` (OpenAI's response field) is Unix seconds
OPENAI_TIMES = ("timestamp", "request_time", "start_time", "created_at", "time")
MEASURED = ("measured_ttft_s", "measured_itl_mean_s")


def usage_prefix(rows: Rows) -> str | None:
    for p in USAGE_PREFIXES:
        if rows.find(p + "usage.prompt_tokens") is not None and rows.find(p + "usage.completion_tokens") is not None:
            return p
    return None


def detect_log(rows: Rows) -> str | None:
    """aiperf or openai for a flattened JSONL frame, else None."""
    if all(rows.find(c) is not None for c in AIPERF):
        return "aiperf"
    if usage_prefix(rows) is not None:
        return "openai"
    return None


def drop_failed(fmt: str, df: pd.DataFrame, lines: np.ndarray) -> tuple[pd.DataFrame, np.ndarray, dict[str, int]]:
    """Rows of a log that record a failed request (no lengths), removed and counted."""
    if fmt == "aiperf":
        err = [c for c in df.columns if c == "error" or c.startswith("error.")]
        failed = np.array(df[err].notna().any(axis=1)) if err else np.zeros(len(df), dtype=bool)
        out = "metrics.output_sequence_length.value"
        failed = failed | (np.array(df[out].isna()) if out in df.columns else True)
        why = "failed (error recorded)"
    elif fmt == "openai":
        p = next(p for p in USAGE_PREFIXES if p + "usage.prompt_tokens" in df.columns)
        failed = df[p + "usage.prompt_tokens"].isna().to_numpy() | df[p + "usage.completion_tokens"].isna().to_numpy()
        why = "no usage (failed or cut-off request)"
    else:
        return df, lines, {}
    if not failed.any():
        return df, lines, {}
    return df.loc[~failed].reset_index(drop=True), lines[~failed], {why: int(failed.sum())}


def _measured(rows: Rows) -> dict[str, np.ndarray]:
    return {c: rows.df[c].to_numpy(dtype=np.float64) for c in MEASURED if c in rows.df.columns}


def bench(rows: Rows, drop_zero: bool, **_) -> Parsed:
    """vLLM / SGLang benchmark results (traces.documents.bench_run's frame)."""
    p, o = rows.require("input_lens", "output_lens")
    prompt, zp = rows.tokens(p, drop_zero)
    output, zo = rows.tokens(o, drop_zero)
    s = rows.find("start_times")
    arrival = rows.numbers(s) if s is not None else None  # perf_counter seconds
    return Parsed(arrival, prompt, output, _measured(rows), zp | zo)


def genai_perf(rows: Rows, drop_zero: bool, **_) -> Parsed:
    t, p, o = rows.require("timestamp", "prompt_tokens", "output_tokens")
    prompt, zp = rows.tokens(p, drop_zero)
    output, zo = rows.tokens(o, drop_zero)
    return Parsed(rows.numbers(t) * 1e-9, prompt, output, _measured(rows), zp | zo)


def conversations(rows: Rows, drop_zero: bool, **_) -> Parsed:
    """ShareGPT conversation JSON (traces.documents.sharegpt_conversations' frame)."""
    p, o = rows.require("prompt_tokens", "output_tokens")
    prompt, zp = rows.tokens(p, drop_zero)
    output, zo = rows.tokens(o, drop_zero)
    extra = {c: rows.df[c].to_numpy() for c in ("conv_id", "turn")}
    return Parsed(None, prompt, output, extra, zp | zo)


def aiperf(rows: Rows, drop_zero: bool, **_) -> Parsed:
    t, p, o = rows.require(*AIPERF)
    prompt, zp = rows.tokens(p, drop_zero)
    output, zo = rows.tokens(o, drop_zero)
    extra = {}
    for col, name in (("metrics.time_to_first_token.value", "measured_ttft_s"),
                      ("metrics.inter_token_latency.value", "measured_itl_mean_s")):
        c = rows.find(col)
        unit = rows.find(col.rsplit(".", 1)[0] + ".unit")
        if c is not None and unit is not None and set(rows.df[unit].dropna()) == {"ms"}:
            extra[name] = pd.to_numeric(rows.df[c], errors="coerce").to_numpy(dtype=np.float64) * 1e-3
    return Parsed(rows.numbers(t) * 1e-9, prompt, output, extra, zp | zo)


def _times(rows: Rows, col: str) -> tuple[np.ndarray, bool]:
    """(arrival values, raw_time): numbers in an unstated unit, or date-times in seconds."""
    s = rows.df[col]
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        return rows.numbers(col), True
    numeric = pd.to_numeric(s, errors="coerce")
    if numeric.notna().all():
        return rows.numbers(col), True
    return datetime_seconds(rows, col, "'2024-05-01T12:00:03.250Z'"), False


def openai(rows: Rows, drop_zero: bool, **_) -> Parsed:
    pre = usage_prefix(rows)
    p, o = rows.require(pre + "usage.prompt_tokens", pre + "usage.completion_tokens")
    prompt, zp = rows.tokens(p, drop_zero)
    output, zo = rows.tokens(o, drop_zero)
    t = next((rows.find(c) for c in OPENAI_TIMES if rows.find(c) is not None), None)
    if t is not None:
        arrival, raw = _times(rows, t)
    else:
        created = rows.find(pre + "created") or rows.find("created")
        if created is None:
            arrival, raw = None, False
        else:
            arrival, raw = rows.numbers(created), False  # OpenAI's `created`: Unix seconds
            t = created
    return Parsed(arrival, prompt, output, {}, zp | zo, raw_time=raw, time_col=t or "")


def mapped(rows: Rows, drop_zero: bool, columns: dict[str, str] | None = None, **_) -> Parsed:
    """A table whose columns --columns names: arrival (optional), prompt, output."""
    if not columns:
        raise InputError("the columns format needs --columns arrival=COL,prompt=COL,output=COL")
    p, o = rows.require(columns["prompt"], columns["output"])
    prompt, zp = rows.tokens(p, drop_zero)
    output, zo = rows.tokens(o, drop_zero)
    used = {p, o}
    arrival, raw, t = None, False, ""
    if "arrival" in columns:
        (t,) = rows.require(columns["arrival"])
        used.add(t)
        arrival, raw = _times(rows, t)
    extra = {str(c): rows.df[c].to_numpy() for c in rows.df.columns if c not in used}
    return Parsed(arrival, prompt, output, extra, zp | zo, raw_time=raw, time_col=t)


CONVERTERS = {"vllm-bench": bench, "sglang-bench": bench, "genai-perf": genai_perf, "aiperf": aiperf,
              "openai": openai, "columns": mapped, "sharegpt-json": conversations}
