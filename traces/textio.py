"""Turn a trace file's bytes into a pandas frame, or a one-line InputError that names the
file, the line and what to do. Line numbers are the file's own (header = line 1)."""
from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from planner.errors import InputError


def read_text(path: Path) -> str:
    """The file's text: UTF-8 (BOM allowed), UTF-16 with a BOM, gzip-compressed if *.gz."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a trace file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise InputError(f"{path}: not a valid gzip file ({e}); decompress or re-download it") from None
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            text = raw.decode("utf-16")
        except UnicodeDecodeError:
            raise InputError(f"{path}: starts with a UTF-16 mark but is not valid UTF-16; re-save it as UTF-8") from None
    else:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = raw[:e.start].count(b"\n") + 1
            raise InputError(f"{path}: line {line} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset "
                             f"{e.start}); re-save the file as UTF-8") from None
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise InputError(f"{path}: line {line} contains a NUL byte: this looks like a binary file, not a CSV/JSONL trace")
    if not text.strip():
        raise InputError(f"{path}: file is empty; expected a header line and one request per line")
    if "\r" in text:  # Windows (CRLF) or old Mac (CR) line ends: one convention downstream
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def looks_like_jsonl(text: str) -> bool:
    return text.lstrip()[:1] == "{"


def _fields(line: str) -> int:
    try:
        return len(next(csv.reader([line]), []))
    except csv.Error:  # e.g. a field over csv's size limit; a rough count is enough here
        return line.count(",") + 1


def _last_line(text: str) -> tuple[int, str]:
    body = text.rstrip("\n")
    return body.count("\n") + 1, body[body.rfind("\n") + 1:]


def read_csv_frame(path: Path, text: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The CSV as a frame (pandas' own type inference) and each row's file line number.
    Blank lines are skipped (they are not requests)."""
    n_fields = _fields(text.lstrip("\n").split("\n", 1)[0])
    if not text.endswith("\n"):
        last_no, last = _last_line(text)
        if last_no > 1 and _fields(last) < n_fields:
            raise InputError(f"{path}: line {last_no} (the last) has fewer fields than the header's {n_fields} "
                             "and no line end: the file looks cut off; remove that line or re-export the file")
    try:
        df = pd.read_csv(io.StringIO(text), skip_blank_lines=False, low_memory=False)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: no header line found; expected a CSV with column names on line 1") from None
    except pd.errors.ParserError as e:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(e))
        if m:
            raise InputError(f"{path}: line {m.group(2)} has {m.group(3)} fields but the header has "
                             f"{m.group(1)}; fix or remove that line") from None
        raise InputError(f"{path}: not a readable CSV ({str(e).strip().splitlines()[-1]})") from None
    except (ValueError, OverflowError, csv.Error) as e:
        raise InputError(f"{path}: not a readable CSV ({e})") from None
    leading_blank = len(text) - len(text.lstrip("\n"))
    first_line = 2 + text[:leading_blank].count("\n")
    lines = np.arange(len(df), dtype=np.int64) + first_line
    if len(df.columns) and len(df):
        blank = df.isna().all(axis=1).to_numpy()
        if blank.any():
            df, lines = df.loc[~blank].reset_index(drop=True), lines[~blank]
    df.columns = [str(c) for c in df.columns]
    return df, lines


def read_jsonl_records(path: Path, text: str) -> tuple[list[dict], np.ndarray]:
    """One JSON object per line, with each object's line number."""
    records, lines = [], []
    all_lines = text.split("\n")
    last_no = len(all_lines) if all_lines[-1].strip() else len(all_lines) - 1
    for i, line in enumerate(all_lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            if i == last_no and not text.endswith("\n"):
                raise InputError(f"{path}: line {i} (the last) is incomplete JSON: the file looks cut off; "
                                 "remove that line or re-download the file") from None
            msg = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply"
            raise InputError(f"{path}: line {i} is not valid JSON ({msg}); fix or remove that line") from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}: line {i} is a JSON {type(obj).__name__}, expected one object per line")
        records.append(obj)
        lines.append(i)
    return records, np.asarray(lines, dtype=np.int64)


def jsonl_frame(records: list[dict]) -> pd.DataFrame:
    """Records as a frame; nested objects (aiperf's metrics, a log's usage) become dotted
    columns such as `usage.prompt_tokens` (lists stay as values)."""
    if records and any(isinstance(v, dict) for v in records[0].values()):
        try:
            return pd.json_normalize(records)
        except (ValueError, TypeError, RecursionError, AttributeError):
            pass
    return pd.DataFrame.from_records(records)


def read_jsonl_frame(path: Path, text: str) -> tuple[pd.DataFrame, np.ndarray]:
    """One JSON object per line (Mooncake style) as a frame, with each row's line number."""
    records, lines = read_jsonl_records(path, text)
    return jsonl_frame(records), lines
