"""The trace formats users bring, recognised by their columns. Each converter turns a frame
into arrival seconds (None for length-only data), prompt and output tokens, extra columns
worth keeping, and a mask of rows dropped on purpose (counted in Rows.dropped)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from planner.errors import InputError

from .columns import Rows
from .units import clip


@dataclass(frozen=True)
class Parsed:
    arrival_s: np.ndarray | None  # None: the dataset has lengths only
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    extra: dict[str, np.ndarray]
    drop: np.ndarray  # bool per row
    raw_time: bool = False  # arrival_s holds numbers in a unit the format does not fix (see traces.units)
    time_col: str = ""


# name -> (columns that identify it, one-line description for help and errors)
FORMATS: dict[str, tuple[tuple[str, ...], str]] = {
    "plain": (("arrival_s", "prompt_tokens", "output_tokens"), "arrival_s,prompt_tokens,output_tokens (+ extra columns)"),
    "azure": (("TIMESTAMP", "ContextTokens", "GeneratedTokens"), "Azure LLM inference CSV: TIMESTAMP,ContextTokens,GeneratedTokens"),
    "mooncake": (("timestamp", "input_length", "output_length"), "Mooncake JSONL: timestamp (ms),input_length,output_length,hash_ids"),
    "burstgpt": (("Timestamp", "Request tokens", "Response tokens"), "BurstGPT CSV: Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"),
    "sharegpt": (("conv_id", "turn", "response_tokens"), "ShareGPT per-turn lengths: conv_id,turn,prompt_tokens,response_tokens,context_tokens (lengths only)"),
    "sarathi": (("num_prefill_tokens", "num_decode_tokens"), "Sarathi/Vidur lengths: num_prefill_tokens,num_decode_tokens,... (lengths only)"),
    "lengths": (("prompt_tokens", "output_tokens"), "prompt_tokens,output_tokens without arrival_s (lengths only)"),
}
# Read from JSON documents and logs (traces.documents, traces.formats_json), recognised by
# their structure; `columns` is any table mapped with --columns.
JSON_FORMATS: dict[str, str] = {
    "vllm-bench": "vLLM benchmark result JSON (--save-result): input_lens, output_lens, ttfts, itls, errors",
    "sglang-bench": "SGLang bench_serving JSONL (--output-file with --output-details); the last run is read",
    "aiperf": "aiperf profile_export.jsonl: metadata.request_start_ns, metrics.input/output_sequence_length",
    "genai-perf": "genai-perf profile_export.json: experiments[].requests[] (timestamps in ns)",
    "openai": "OpenAI-style JSONL request log with usage.prompt_tokens/completion_tokens (+ timestamp or created)",
    "sharegpt-json": "ShareGPT conversation JSON ([{conversations: [{from, value}]}]; lengths only, needs --rate)",
    "columns": "any CSV/JSONL with --columns arrival=COL,prompt=COL,output=COL",
}

# Zero-length rows: an error in our own plain format (its spec says >= 1), dropped and
# counted in the formats where they are a known feature of the data (failed requests,
# empty ShareGPT turns).
DROP_ZERO_DEFAULT = {"plain": False}


def detect(rows: Rows) -> str:
    """The first format (in FORMATS order) whose identifying columns are all present."""
    for name, (cols, _) in FORMATS.items():
        if all(rows.find(c) is not None for c in cols):
            return name
    have = clip(", ".join(map(str, rows.df.columns)) or "none")
    known = ", ".join(list(FORMATS) + list(JSON_FORMATS))
    raise InputError(f"{rows.path}: unrecognised columns ({have}). Known formats: {known} (`planner trace --help` "
                     "describes each). Pass --columns arrival=COL,prompt=COL,output=COL to name yours, or --format")


def datetime_seconds(rows: Rows, t: str, example: str) -> np.ndarray:
    """Date-time column `t` as seconds from its first row. Offsets ("Z", "+01:00") are
    honoured; times without one are taken as UTC."""
    raw = rows.df[t]
    try:
        ts = pd.to_datetime(raw.astype(str).str.strip(), format="ISO8601", errors="coerce", utc=True)
    except (ValueError, TypeError, OverflowError) as e:
        raise InputError(f"{rows.path}: column {t}: cannot read the date-times ({e}); "
                         f"expected e.g. {example}") from None
    bad = ts.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"{rows.where(i)}, column {t}: {str(raw.iloc[i])!r} is not a date-time like "
                         f"{example}; fix or remove that row")
    stamps = ts.dt.tz_convert(None).to_numpy()  # in pandas' own unit: no wrap-around outside 1677-2262
    unit = np.datetime_data(stamps.dtype)[0]
    ticks = stamps.view(np.int64)
    if int(ticks.max()) - int(ticks.min()) > np.iinfo(np.int64).max:  # differences would overflow
        raise InputError(f"{rows.path}: column {t}: the date-times span too many years to be one trace "
                         f"({ts.min()} to {ts.max()}); fix the wrong dates")
    return (ticks - ticks[0]) / (np.timedelta64(1, "s") / np.timedelta64(1, unit))


def _extras(rows: Rows, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    out = {}
    for n in names:
        c = rows.find(n)
        if c is not None:
            out[n.lower().replace(" ", "_")] = rows.df[c].to_numpy()
    return out


def plain(rows: Rows, drop_zero: bool, **_) -> Parsed:
    a, p, o = rows.require("arrival_s", "prompt_tokens", "output_tokens")
    prompt, zp = rows.tokens(p, drop_zero)
    output, zo = rows.tokens(o, drop_zero)
    extra = {c: rows.df[c].to_numpy() for c in rows.df.columns if c not in (a, p, o)}
    return Parsed(rows.numbers(a), prompt, output, extra, zp | zo, raw_time=True, time_col=a)


def azure(rows: Rows, drop_zero: bool, **_) -> Parsed:
    t, p, o = rows.require("TIMESTAMP", "ContextTokens", "GeneratedTokens")
    seconds = datetime_seconds(rows, t, "'2023-11-16 18:17:03.9799600'")
    prompt, zp = rows.tokens(p, drop_zero)
    output, zo = rows.tokens(o, drop_zero)
    return Parsed(seconds, prompt, output, {}, zp | zo)


def mooncake(rows: Rows, drop_zero: bool, **_) -> Parsed:
    t, p, o = rows.require("timestamp", "input_length", "output_length")
    prompt, zp = rows.tokens(p, drop_zero)
    output, zo = rows.tokens(o, drop_zero)
    extra = {}
    h = rows.find("hash_ids")
    if h is not None:  # prefix-cache block ids, kept as space-separated text
        extra["hash_ids"] = np.array([" ".join(map(str, x)) if isinstance(x, list) else "" for x in rows.df[h]],
                                     dtype=object)
    return Parsed(rows.numbers(t) / 1000.0, prompt, output, extra, zp | zo)


def burstgpt(rows: Rows, drop_zero: bool, **_) -> Parsed:
    t, p, o = rows.require("Timestamp", "Request tokens", "Response tokens")
    prompt, zp = rows.tokens(p, drop_zero, "zero request tokens")
    # BurstGPT logs failed requests with 0 response tokens: always dropped, counted.
    output, zo = rows.tokens(o, True, "failed (0 response tokens)")
    return Parsed(rows.numbers(t), prompt, output, _extras(rows, ("Model", "Log Type")), zp | zo)


def sharegpt(rows: Rows, drop_zero: bool, per_turn: bool = False, **_) -> Parsed:
    """Prompt = context_tokens (history + this turn), as a chat server sees it; with
    per_turn, prompt_tokens (this turn alone)."""
    (r,) = rows.require("response_tokens")
    p = rows.require("prompt_tokens" if per_turn else "context_tokens")[0]
    prompt, zp = rows.tokens(p, drop_zero)
    output, zo = rows.tokens(r, drop_zero)
    return Parsed(None, prompt, output, _extras(rows, ("conv_id", "turn")), zp | zo)


def sarathi(rows: Rows, drop_zero: bool, **_) -> Parsed:
    p, o = rows.require("num_prefill_tokens", "num_decode_tokens")
    prompt, zp = rows.tokens(p, drop_zero)
    output, zo = rows.tokens(o, drop_zero)
    return Parsed(None, prompt, output, {}, zp | zo)


def lengths(rows: Rows, drop_zero: bool, **_) -> Parsed:
    p, o = rows.require("prompt_tokens", "output_tokens")
    prompt, zp = rows.tokens(p, drop_zero)
    output, zo = rows.tokens(o, drop_zero)
    extra = {c: rows.df[c].to_numpy() for c in rows.df.columns if c not in (p, o)}
    return Parsed(None, prompt, output, extra, zp | zo)


CONVERTERS = {"plain": plain, "azure": azure, "mooncake": mooncake, "burstgpt": burstgpt,
              "sharegpt": sharegpt, "sarathi": sarathi, "lengths": lengths}
