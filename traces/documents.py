"""Trace files that are one JSON document (or JSONL lines holding whole benchmark runs),
turned into a frame of per-request columns that the converters in traces.formats_json read.

- vLLM benchmark result (`vllm bench serve --save-result`, older `benchmark_serving.py
  --save-result`): one object with per-request lists input_lens, output_lens, ttfts, itls,
  errors (and start_times in some versions), plus request_rate and burstiness.
- SGLang `bench_serving --output-file F --output-details`: JSONL, one line per run with the
  same per-request lists; the last run is read.
- genai-perf `profile_export.json`: experiments[].requests[] with timestamp (ns),
  response_timestamps (ns), request_inputs.payload and response_outputs[].response.
- ShareGPT conversation JSON (the file vLLM's and SGLang's benchmarks sample from): a list
  of {"id", "conversations": [{"from": "human"|"gpt", "value": text}]}.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from planner.errors import InputError

from .tokens import token_counter
from .units import clip

PER_REQUEST = ("input_lens", "output_lens")
HUMAN, BOT = ("human", "user"), ("gpt", "assistant", "chatgpt", "bard", "bing")


@dataclass
class Document:
    """A frame of per-request columns with each row's 1-based number in the document."""
    fmt: str
    df: pd.DataFrame
    lines: np.ndarray
    row_word: str = "request"
    notes: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    rate_hint: tuple[float, float, str] | None = None  # (req/s, CV, where it came from)


def load_json(text: str):
    """The whole text as one JSON value, or None when it is not one (JSONL, CSV)."""
    if text.lstrip()[:1] not in ("{", "["):
        return None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None


def is_bench_run(obj) -> bool:
    return isinstance(obj, dict) and ("input_lens" in obj or ("completed" in obj and "request_throughput" in obj))


def document(path, doc, tokenizer: str | None, per_turn: bool) -> Document | None:
    """The Document for a whole-file JSON value, or None when it is no known document."""
    if is_bench_run(doc):
        if str(path).endswith((".jsonl", ".jsonl.gz")):  # SGLang appends one line per run
            return bench_runs(path, [doc])
        return bench_run(path, doc, "vllm-bench", "vLLM --save-result JSON", "--save-detailed")
    if isinstance(doc, dict) and isinstance(doc.get("experiments"), list):
        return genai_perf(path, doc, tokenizer)
    if isinstance(doc, list) and doc and isinstance(doc[0], dict) and "conversations" in doc[0]:
        return sharegpt_conversations(path, doc, tokenizer, per_turn)
    return None


def bench_runs(path, records: list[dict]) -> Document:
    """SGLang bench_serving JSONL: one run per line; read the last."""
    doc = bench_run(path, records[-1], "sglang-bench", "SGLang bench_serving output", "--output-details")
    if len(records) > 1:
        doc.notes.append(f"{len(records)} benchmark runs in the file; read the last one "
                         f"(request_rate {records[-1].get('request_rate')})")
    return doc


def _list(path, obj: dict, key: str, n: int | None) -> list:
    v = obj.get(key)
    if not isinstance(v, list):
        raise InputError(f"{path}: {key!r} is {clip(type(v).__name__, 40)}, expected a list with one entry per request")
    if n is not None and len(v) != n:
        raise InputError(f"{path}: {key!r} has {len(v):,} entries but input_lens has {n:,}; the file is inconsistent - "
                         "re-export it")
    return v


def _number(x) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else float("nan")


def bench_run(path, obj: dict, fmt: str, what: str, detail_flag: str) -> Document:
    if "input_lens" not in obj or "output_lens" not in obj:
        raise InputError(f"{path}: this {what} holds summary numbers only, no per-request lengths; rerun the "
                         f"benchmark with {detail_flag} (keys found: {clip(', '.join(map(str, obj)), 160)})")
    inp = _list(path, obj, "input_lens", None)
    n = len(inp)
    cols = {"input_lens": inp, "output_lens": _list(path, obj, "output_lens", n)}
    errors = obj.get("errors")
    failed = np.zeros(n, dtype=bool)
    if errors is not None:
        failed = np.array([bool(e) for e in _list(path, obj, "errors", n)], dtype=bool)
    if "ttfts" in obj:
        cols["measured_ttft_s"] = [_number(x) for x in _list(path, obj, "ttfts", n)]
    if "itls" in obj:
        cols["measured_itl_mean_s"] = [float(np.mean([_number(v) for v in x])) if isinstance(x, list) and x
                                       else float("nan") for x in _list(path, obj, "itls", n)]
    if "start_times" in obj:
        cols["start_times"] = _list(path, obj, "start_times", n)
    df = pd.DataFrame(cols)
    lines = np.arange(1, n + 1, dtype=np.int64)
    doc = Document(fmt, df.loc[~failed].reset_index(drop=True), lines[~failed])
    if failed.any():
        doc.dropped["failed in the benchmark (error recorded)"] = int(failed.sum())
    if "start_times" not in obj:
        rate, burst = obj.get("request_rate"), obj.get("burstiness", 1.0)
        try:
            rate, burst = float(rate), float(burst if burst is not None else 1.0)
        except (TypeError, ValueError):
            rate = float("nan")
        if np.isfinite(rate) and rate > 0 and np.isfinite(burst) and burst > 0:
            # vLLM draws gaps from Gamma(shape=burstiness): CV = 1/sqrt(burstiness)
            doc.rate_hint = (rate, 1.0 / float(np.sqrt(burst)), f"the benchmark's request_rate {rate:g} req/s, "
                             f"burstiness {burst:g}")
    return doc


def _payload_text(payload) -> str:
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except (json.JSONDecodeError, RecursionError):
            return payload
    if not isinstance(payload, dict):
        return ""
    parts = []
    msgs = payload.get("messages")
    for m in msgs if isinstance(msgs, list) else []:
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            parts += [x.get("text", "") for x in c if isinstance(x, dict) and isinstance(x.get("text"), str)]
    for k in ("prompt", "text_input"):
        if isinstance(payload.get(k), str):
            parts.append(payload[k])
    return "\n".join(parts)


def _chunk(resp) -> tuple[str, dict | None]:
    """(text carried by one streamed response, its usage block if any)."""
    if isinstance(resp, dict) and "response" in resp:
        resp = resp["response"]
    if isinstance(resp, str):
        body = resp.strip()
        if body.startswith("data:"):
            body = body[5:].strip()
        if body in ("", "[DONE]"):
            return "", None
        try:
            resp = json.loads(body)
        except (json.JSONDecodeError, RecursionError):
            return body, None
    if not isinstance(resp, dict):
        return "", None
    usage = resp.get("usage") if isinstance(resp.get("usage"), dict) else None
    text = str(resp.get("text_output") or "")
    choices = resp.get("choices")
    for ch in choices if isinstance(choices, list) else []:
        if isinstance(ch, dict):
            d = ch.get("delta") if isinstance(ch.get("delta"), dict) else {}
            msg = ch.get("message") if isinstance(ch.get("message"), dict) else {}
            text += str(d.get("content") or ch.get("text") or msg.get("content") or "")
    return text, usage


def _count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def genai_perf(path, doc: dict, tokenizer: str | None) -> Document:
    exps = [e for e in doc["experiments"] if isinstance(e, dict) and isinstance(e.get("requests"), list)]
    if not exps:
        raise InputError(f"{path}: genai-perf export with no experiments[].requests; expected profile_export.json")
    reqs = exps[-1]["requests"]
    count, how = token_counter(tokenizer)
    stamp, prompt_text, prompt_used, out_tokens, ttft = [], [], [], [], []
    approx_out = False
    for r in reqs:
        r = r if isinstance(r, dict) else {}
        stamp.append(r.get("timestamp"))
        outs = r.get("response_outputs")
        chunks = [_chunk(x) for x in (outs if isinstance(outs, list) else [])]
        usage = next((u for _, u in reversed(chunks) if u), None) or {}
        prompt_used.append(usage.get("prompt_tokens"))
        inputs = r.get("request_inputs") if isinstance(r.get("request_inputs"), dict) else {}
        prompt_text.append(_payload_text(inputs.get("payload", inputs)))
        if _count(usage.get("completion_tokens")):
            out_tokens.append(usage["completion_tokens"])
        else:
            approx_out = True
            out_tokens.append(sum(1 for text, _ in chunks if text))
        rts = r.get("response_timestamps") if isinstance(r.get("response_timestamps"), list) else []
        ttft.append((_number(rts[0]) - _number(r.get("timestamp"))) * 1e-9 if rts else float("nan"))
    need = [i for i, u in enumerate(prompt_used) if not _count(u)]
    counted = count([prompt_text[i] for i in need]) if need else []
    prompt = list(prompt_used)
    for i, c in zip(need, counted):
        prompt[i] = c
    df = pd.DataFrame({"timestamp": stamp, "prompt_tokens": prompt, "output_tokens": out_tokens,
                       "measured_ttft_s": ttft})
    d = Document("genai-perf", df, np.arange(1, len(df) + 1, dtype=np.int64))
    if len(exps) > 1:
        d.notes.append(f"{len(exps)} experiments in the file; read the last one ({clip(exps[-1].get('experiment'), 80)})")
    if need:
        d.notes.append(f"prompt tokens of {len(need):,} requests without usage: {how}")
    if approx_out:
        d.notes.append("output tokens without usage counted as streamed chunks that carry text (one token each)")
    return d


def sharegpt_conversations(path, doc: list, tokenizer: str | None, per_turn: bool) -> Document:
    """One request per human turn answered by the model: prompt = the conversation so far
    including this turn (per_turn: this turn only), output = the answer."""
    turns_text, conv_of, turn_of, row_of = [], [], [], []
    for ci, conv in enumerate(doc, start=1):
        turns = conv.get("conversations") if isinstance(conv, dict) else None
        if not isinstance(turns, list):
            raise InputError(f"{path}: conversation {ci} has no 'conversations' list "
                             f"({clip(json.dumps(conv)[:400], 120)}); expected ShareGPT JSON")
        for t in turns:
            if not (isinstance(t, dict) and isinstance(t.get("value"), str)):
                raise InputError(f"{path}: conversation {ci}: a turn is not {{'from': ..., 'value': text}} "
                                 f"({clip(json.dumps(t), 120)})")
        turns_text.append([(str(t.get("from", "")).lower(), t["value"]) for t in turns])
        conv_of.append(conv.get("id", ci))
        row_of.append(ci)
    count, how = token_counter(tokenizer)
    flat = [v for turns in turns_text for _, v in turns]
    counts = iter(count(flat))
    prompt, output, conv_id, turn_no, lines = [], [], [], [], []
    for turns, cid, ci in zip(turns_text, conv_of, row_of):
        tok = [next(counts) for _ in turns]
        history, n = 0, 0
        for k, (who, _) in enumerate(turns):
            if who in HUMAN and k + 1 < len(turns) and turns[k + 1][0] in BOT:
                n += 1
                prompt.append(tok[k] if per_turn else history + tok[k])
                output.append(tok[k + 1])
                conv_id.append(str(cid))
                turn_no.append(n)
                lines.append(ci)
            history += tok[k]
    if not prompt:
        raise InputError(f"{path}: no human turn followed by a model turn in {len(doc):,} conversations; "
                         "expected ShareGPT JSON ('from': 'human' then 'gpt')")
    df = pd.DataFrame({"prompt_tokens": prompt, "output_tokens": output, "conv_id": conv_id, "turn": turn_no})
    d = Document("sharegpt-json", df, np.asarray(lines, dtype=np.int64), row_word="conversation")
    d.notes.append(how)
    return d
