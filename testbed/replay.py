"""`testbed replay`: a trace against any OpenAI-compatible endpoint, as request records.

Our own asyncio client on httpx2 (the maintained successor of httpx that transformers'
hub client and the openai library already use): aiperf 0.13 would downgrade this
project's pandas 3 -> 2.3, huggingface-hub 2 -> 1 and transformers, and runs as a dozen
ZMQ-connected processes (on a 2-core machine they would compete with the server being
measured); guidellm 0.8 pins click 8.4 (below the CLI's) and needs a hub tokenizer for
its synthetic prompts. See docs/validate-live.md.

Open loop: request i is sent at arrival_s[i] x time_scale after the start, whatever is
in flight. Closed loop (`concurrency`): N requests in flight, the next sent as one ends.
Every request streams (`stream: true`, `stream_options.include_usage`), asks for exactly
its trace output (`max_tokens` = output tokens, with vLLM's `ignore_eos` and
`min_tokens`), and is recorded in the shared record schema (planner.records) with the
client's clock, seconds from the start: arrival_s = when it was sent, first_token_s = the
first chunk with text, finish_s = the last chunk with text; prompt_tokens /
output_tokens = the endpoint's usage counts (else the trace's prompt and the chunks
counted); the instances and server-side steps are unknown (-1 / NaN). Extra columns:
status (the shared column: finished, not_sent, or what went wrong - http_<code>,
connection_refused, connect_error, timeout, connection_error, malformed_stream,
stream_error, empty_output, client_error, cancelled), error,
http_status, scheduled_s (the trace's time), trace_prompt_tokens, trace_output_tokens and
chunk_times_s (every text chunk's time from arrival, ';'-separated).
"""
from __future__ import annotations

import asyncio
import json
import signal
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from planner.records import FINISHED, NOT_SENT, RECORD_COLUMNS, STATUS_COLUMN

EXTRA_COLUMNS = (STATUS_COLUMN, "error", "http_status", "scheduled_s", "trace_prompt_tokens", "trace_output_tokens",
                 "chunk_times_s")
START_LEAD_S = 0.05
OK = FINISHED


@dataclass(frozen=True)
class ReplayOptions:
    endpoint: str                      # http://host:port (with or without /v1)
    model: str
    api: str = "completions"           # or "chat"
    concurrency: int | None = None     # None: open loop at the trace's times
    time_scale: float = 1.0
    max_duration_s: float | None = None
    request_timeout_s: float = 600.0
    api_key: str | None = None
    ignore_eos: bool = True
    max_connections: int = 1000
    extra_body: tuple = ()             # (key, value) pairs merged into every request body


def base_url(endpoint: str) -> str:
    url = endpoint.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


def request_body(opts: ReplayOptions, prompt: str, max_tokens: int, stream: bool = True) -> dict:
    body = {"model": opts.model, "max_tokens": int(max_tokens), "stream": stream, "temperature": 0}
    if opts.api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if stream:
        body["stream_options"] = {"include_usage": True}
    if opts.ignore_eos:
        body.update(ignore_eos=True, min_tokens=int(max_tokens))
    body.update(dict(opts.extra_body))
    return body


def headers(opts: ReplayOptions) -> dict:
    return {"Authorization": f"Bearer {opts.api_key}"} if opts.api_key else {}


def route(opts: ReplayOptions) -> str:
    return base_url(opts.endpoint) + ("/v1/chat/completions" if opts.api == "chat" else "/v1/completions")


class _Malformed(Exception):
    pass


def _error_text(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    try:
        err = json.loads(text).get("error")
        text = err.get("message", str(err)) if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        pass
    return " ".join(text.split())[:300]


async def send_one(client, opts: ReplayOptions, rec: dict, prompt: str, t0: float) -> None:
    """Send one request and fill `rec` as its stream comes; never raises (but CancelledError)."""
    import httpx2 as httpx
    rec["arrival_s"] = time.perf_counter() - t0
    rec["status"] = "in_flight"
    times: list[float] = []

    async def exchange():
        async with client.stream("POST", route(opts), json=request_body(opts, prompt, rec["trace_output_tokens"]),
                                 headers=headers(opts)) as resp:
            rec["http_status"] = resp.status_code
            if resp.status_code != 200:
                rec["status"], rec["error"] = f"http_{resp.status_code}", _error_text(await resp.aread())
                return
            await _read_stream(resp, opts, rec, times, t0)
    try:
        await asyncio.wait_for(exchange(), opts.request_timeout_s)
    except _Malformed as e:
        rec["status"], rec["error"] = "malformed_stream", str(e)
    except (asyncio.TimeoutError, TimeoutError):
        rec["status"], rec["error"] = "timeout", f"no complete answer within {opts.request_timeout_s:g} s"
    except httpx.ConnectError as e:
        why = _root_cause(e)
        refused = isinstance(why, ConnectionRefusedError)
        rec["status"], rec["error"] = ("connection_refused" if refused else "connect_error"), str(why)[:300]
    except httpx.TimeoutException as e:
        rec["status"], rec["error"] = "timeout", f"{type(e).__name__}: {e}"[:300]
    except httpx.TransportError as e:
        rec["status"], rec["error"] = "connection_error", f"{type(e).__name__}: {e}"[:300]
    except asyncio.CancelledError:
        rec["status"] = "cancelled"
        raise
    except Exception as e:  # noqa: BLE001 - a client bug or an odd answer is one request's record
        rec["status"], rec["error"] = "client_error", f"{type(e).__name__}: {e}"[:300]
    finally:
        if times:
            rec["first_token_s"] = times[0] - t0
            rec["chunk_times_s"] = ";".join(f"{t - t0 - rec['arrival_s']:.6f}" for t in times)
            if rec["status"] == OK:
                rec["finish_s"] = times[-1] - t0
        if rec["status"] == OK and not times:
            rec["status"], rec["error"] = "empty_output", "the stream carried no text"


def _root_cause(e: BaseException) -> BaseException:
    """The innermost exception of a chain (httpx wraps the socket's error several times)."""
    seen = 0
    while (e.__cause__ or e.__context__) is not None and seen < 16:
        e, seen = e.__cause__ or e.__context__, seen + 1
    return e


async def _read_stream(resp, opts, rec, times, t0) -> None:
    done = finished = False
    chat = opts.api == "chat"
    async for line in resp.aiter_lines():
        if not line.startswith("data:"):
            continue                           # blank separators, comments, event:/id: fields
        data = line[5:].strip()
        if data == "[DONE]":
            done = True
            break
        try:
            obj = json.loads(data)
        except ValueError:
            raise _Malformed(f"a data line is not JSON: {data[:120]!r}") from None
        if not isinstance(obj, dict):
            raise _Malformed(f"a data line is not a JSON object: {data[:120]!r}")
        if obj.get("error"):
            rec["status"], rec["error"] = "stream_error", _error_text(json.dumps(obj).encode())
            return
        usage = obj.get("usage")
        if isinstance(usage, dict):
            if isinstance(usage.get("prompt_tokens"), int):
                rec["prompt_tokens"] = usage["prompt_tokens"]
            if isinstance(usage.get("completion_tokens"), int):
                rec["usage_output_tokens"] = usage["completion_tokens"]
        choices = obj.get("choices") or []
        if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
            raise _Malformed(f"'choices' is not a list of objects: {data[:120]!r}")
        for c in choices[:1]:
            part = c.get("delta") if chat else c
            if not isinstance(part, dict):
                raise _Malformed(f"a chat chunk without 'delta': {data[:120]!r}")
            text = part.get("content" if chat else "text")
            if text is not None and not isinstance(text, str):
                raise _Malformed(f"text is not a string: {data[:120]!r}")
            finish = c.get("finish_reason")
            # a token: text, or an empty text that is no role, finish or usage marker (a
            # server that sends one event per token sends "" for a held-back partial character)
            if isinstance(text, str) and (text or (finish is None and "role" not in part and not usage)):
                times.append(time.perf_counter())
            finished = finished or finish is not None
    if not (done or finished):
        raise _Malformed("the stream ended without a finish_reason or [DONE]")
    rec["status"] = OK
    rec["output_tokens"] = rec.pop("usage_output_tokens", None) or len(times)


def new_records(trace, time_scale: float, closed_loop: bool = False) -> list[dict]:
    out = []
    for i in range(len(trace)):
        p, o = int(trace.prompt_tokens[i]), int(trace.output_tokens[i])
        out.append({"request_id": i, "arrival_s": np.nan, "prompt_tokens": p, "output_tokens": o,
                    "prefill_instance": -1, "decode_instance": -1, "prefill_start_s": np.nan,
                    "first_token_s": np.nan, "kv_done_s": np.nan, "decode_start_s": np.nan, "finish_s": np.nan,
                    "predicted_bucket": -1, "status": NOT_SENT, "error": "", "http_status": -1,
                    "scheduled_s": np.nan if closed_loop else float(trace.arrival_s[i]) * time_scale,
                    "trace_prompt_tokens": p,
                    "trace_output_tokens": o, "chunk_times_s": ""})
    return out


def records_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(RECORD_COLUMNS) + list(EXTRA_COLUMNS))
    for c in ("arrival_s", "prefill_start_s", "first_token_s", "kv_done_s", "decode_start_s", "finish_s",
              "scheduled_s"):
        df[c] = df[c].astype(float).round(6)
    return df


async def replay(trace, opts: ReplayOptions, prompts: list[str], *, on_progress=None) -> tuple[pd.DataFrame, str]:
    """Replay; returns (records, why it stopped early or ""). Ctrl-C / SIGTERM stop it
    (requests in flight are cancelled and recorded as such); so does `max_duration_s`."""
    import httpx2 as httpx
    rows = new_records(trace, opts.time_scale, closed_loop=bool(opts.concurrency))
    stop, why = asyncio.Event(), []
    loop = asyncio.get_running_loop()

    def on_signal(name):
        if not why:
            why.append(f"interrupted ({name})")
        stop.set()
    installed = []
    for sig, name in ((signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")):
        try:
            loop.add_signal_handler(sig, on_signal, name)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass                                  # not the main thread: no signal handling
    tasks: set = set()
    limits = httpx.Limits(max_connections=opts.max_connections, max_keepalive_connections=opts.max_connections)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(opts.request_timeout_s, connect=10.0),
                                 trust_env=False) as client:
        t0 = time.perf_counter() + START_LEAD_S
        await asyncio.sleep(START_LEAD_S)
        one = lambda i: send_one(client, opts, rows[i], prompts[i], t0)  # noqa: E731
        driver = asyncio.ensure_future(_closed(one, len(rows), opts.concurrency, stop) if opts.concurrency
                                       else _open(one, rows, t0, tasks, stop))
        watch = [driver, asyncio.ensure_future(stop.wait())]
        if on_progress is not None:
            watch.append(asyncio.ensure_future(_report(on_progress, rows)))
        try:
            await asyncio.wait(watch[:2], timeout=opts.max_duration_s, return_when=asyncio.FIRST_COMPLETED)
            if not driver.done():
                if not why:
                    why.append(f"--max-duration {opts.max_duration_s:g} s reached")
                stop.set()
                driver.cancel()
            for t in list(tasks):
                t.cancel()
            await asyncio.gather(driver, *tasks, return_exceptions=True)
        finally:
            for t in watch[1:]:
                t.cancel()
            for sig in installed:
                loop.remove_signal_handler(sig)
    for r in rows:
        if r["status"] in ("cancelled", "in_flight"):
            r["status"], r["error"] = "cancelled", why[0] if why else "cancelled"
    if on_progress is not None:
        on_progress(rows, final=True)
    return records_frame(rows), (why[0] if why else "")


async def _open(one, rows, t0: float, tasks: set, stop: asyncio.Event) -> None:
    for i, r in enumerate(rows):
        delay = t0 + r["scheduled_s"] - time.perf_counter()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except (asyncio.TimeoutError, TimeoutError):
                pass
        if stop.is_set():
            return
        t = asyncio.ensure_future(one(i))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*list(tasks), return_exceptions=True)


async def _closed(one, n: int, concurrency: int, stop: asyncio.Event) -> None:
    it = iter(range(n))

    async def worker():
        for i in it:
            if stop.is_set():
                return
            await one(i)
    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))


async def _report(on_progress, rows, every_s: float = 0.5) -> None:
    while True:
        await asyncio.sleep(every_s)
        on_progress(rows, final=False)


async def probe_prompt_tokens(opts: ReplayOptions, texts: list[str]) -> tuple[list, str]:
    """The endpoint's usage.prompt_tokens for each text (max_tokens 1, not streamed):
    ([count or None, ...], the first error or "")."""
    import httpx2 as httpx
    out, error = [], ""
    async with httpx.AsyncClient(timeout=httpx.Timeout(min(opts.request_timeout_s, 120.0), connect=10.0),
                                 trust_env=False) as client:
        for text in texts:
            try:
                r = await client.post(route(opts), json=request_body(opts, text, 1, stream=False),
                                      headers=headers(opts))
                usage = r.json().get("usage") if r.status_code == 200 else None
                n = usage.get("prompt_tokens") if isinstance(usage, dict) else None
                if r.status_code != 200:
                    error = error or f"HTTP {r.status_code}: {_error_text(r.content)}"
                out.append(n if isinstance(n, int) else None)
            except (httpx.HTTPError, ValueError, AttributeError) as e:
                error = error or f"{type(e).__name__}: {e}"[:300]
                out.append(None)
    return out, error


async def served_models(endpoint: str, api_key: str | None, timeout_s: float = 30.0) -> list[str]:
    """Model ids from GET /v1/models (raises httpx2.HTTPError / ValueError)."""
    import httpx2 as httpx
    async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as client:
        r = await client.get(base_url(endpoint) + "/v1/models",
                             headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
        r.raise_for_status()
        return [m["id"] for m in r.json().get("data", []) if isinstance(m, dict) and "id" in m]
