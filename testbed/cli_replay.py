"""`testbed replay`: send a trace to any OpenAI-compatible endpoint (vLLM, SGLang,
TensorRT-LLM, Dynamo, `testbed serve`) and write request records that `testbed validate
--records` compares with the plan's prediction and simulation.

Bad input exits 2 with one line. The records are always written (also after Ctrl-C or
--max-duration: every request so far, the rest `cancelled` or `not_sent`); exit 1 when the
replay was interrupted or no request succeeded, else 0 (failed requests are in the records).
"""
from __future__ import annotations

import asyncio
import json
import math
import sys
from pathlib import Path

import click

from planner.cli.params import SEED, Float, Int, OutFile, Seconds
from planner.errors import InputError

from .cli_run import EXIT_RUN_FAILED, guarded

DEFAULT_SLACK_S = 600.0


@click.command("replay")
@click.option("--endpoint", required=True, help="The server's base URL, e.g. http://127.0.0.1:8000 (or .../v1).")
@click.option("--trace", "trace_path", required=True, type=click.Path(dir_okay=False),
              help="Trace file (any format `planner trace stats` reads).")
@click.option("-o", "--output", required=True, type=OutFile(), help="Request records (CSV) to write.")
@click.option("--model", default=None, help="Model name to request [default: the first of the endpoint's /v1/models].")
@click.option("--api", type=click.Choice(["completions", "chat"]), default="completions", show_default=True,
              help="/v1/completions or /v1/chat/completions.")
@click.option("--concurrency", type=Int(lo=1, hi=100_000), default=None,
              help="Closed loop: keep N requests in flight [default: open loop at the trace's arrival times].")
@click.option("--time-scale", type=Float(lo=0, hi=1e6, lo_open=True), default=1.0, show_default=True,
              help="Stretch arrivals by this factor (>1 slower, <1 faster).")
@click.option("--head", "--max-requests", "head", type=Int(lo=1, hi=100_000_000), default=None, help="Send only the first N requests.")
@click.option("--max-duration", type=Seconds(lo_open=True, hi=30 * 86400), default=None,
              help="Stop after this many seconds (requests in flight are cut and recorded as cancelled) "
                   "[default: the trace's span + 600 s].")
@click.option("--request-timeout", type=Seconds(lo_open=True, hi=86400), default=600.0, show_default=True,
              help="Seconds one request may take before it is recorded as a timeout.")
@click.option("--api-key", envvar="OPENAI_API_KEY", default=None,
              help="Bearer token for the endpoint [env OPENAI_API_KEY].")
@click.option("--tokenizer", "tokenizer_path", type=click.Path(), default=None,
              help="The endpoint's tokenizer (local folder or tokenizer.json) to size prompts exactly "
                   "[default: sized from the endpoint's usage counts].")
@click.option("--no-ignore-eos", is_flag=True,
              help="Do not send ignore_eos/min_tokens (for servers that refuse them); outputs may end early.")
@click.option("--extra-body", default=None, metavar="JSON",
              help="A JSON object merged into every request body (a server's own fields, e.g. "
                   "'{\"nvext\": {\"ignore_eos\": true}}').")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the prompts' random text.")
@click.option("--no-progress", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@guarded
def replay_cmd(endpoint, trace_path, output, model, api, concurrency, time_scale, head, max_duration,
               request_timeout, api_key, tokenizer_path, no_ignore_eos, extra_body, seed, no_progress, as_json):
    """Replay a trace against an OpenAI-compatible endpoint and write request records.

    \b
    Example:
      testbed replay --endpoint http://127.0.0.1:8000 --trace t.csv -o records.csv
      testbed validate --plan plan.json --trace t.csv --records records.csv
    """
    try:
        import httpx2  # noqa: F401
    except ImportError:
        raise InputError("testbed replay needs the serve extra (httpx2 is missing): "
                         "pip install -e '.[serve]'") from None
    from traces import read_trace

    from .replay import ReplayOptions
    if not endpoint.startswith(("http://", "https://")):
        raise InputError(f"--endpoint must be an http:// or https:// URL, got {endpoint!r}")
    for flag, v, low in (("--concurrency", concurrency, 1), ("--head", head, 1)):
        if v is not None and v < low:
            raise InputError(f"{flag} must be >= {low}, got {v}")
    for flag, v in (("--time-scale", time_scale), ("--request-timeout", request_timeout),
                    ("--max-duration", max_duration)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise InputError(f"{flag} must be a number > 0, got {v}")
    extra = _extra_body(extra_body)
    out_dir = Path(output).resolve().parent
    if not out_dir.is_dir():
        raise InputError(f"-o {output}: folder {out_dir} does not exist (mkdir -p {out_dir})")
    trace = read_trace(trace_path)
    if head is not None:
        trace = trace.head(head)
    if len(trace) == 0:
        raise InputError(f"{trace_path}: the trace has no requests")
    if max_duration is None:
        max_duration = (0.0 if concurrency else float(trace.span_s) * time_scale) + DEFAULT_SLACK_S
    tokenizer = None
    if tokenizer_path:
        from .serve_tokenizer import local_tokenizer
        tokenizer = local_tokenizer(tokenizer_path)
    model = model or _first_model(endpoint, api_key)
    opts = ReplayOptions(endpoint=endpoint, model=model, api=api, concurrency=concurrency, time_scale=time_scale,
                         max_duration_s=max_duration, request_timeout_s=request_timeout, api_key=api_key,
                         ignore_eos=not no_ignore_eos, extra_body=extra)
    records, stopped, how = asyncio.run(_run(trace, opts, tokenizer, tokenizer_path or "", seed, not no_progress))
    from planner.outputs import write_csv
    write_csv(records, output, index=False)
    summary = _summary(records, stopped, how, opts)
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=float))
    else:
        click.echo(_render(summary, output))
    if stopped.startswith("interrupted") or summary["finished"] == 0:
        if summary["finished"] == 0:
            click.echo(f"error: no request succeeded ({_first_error(records)}); records written to {output}", err=True)
        sys.exit(EXIT_RUN_FAILED)


def _extra_body(text: str | None) -> tuple:
    if not text:
        return ()
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise InputError(f"--extra-body is not JSON ({e}): {text[:100]}") from None
    if not isinstance(obj, dict):
        raise InputError(f"--extra-body must be a JSON object, got {text[:100]}")
    return tuple(obj.items())


def _first_model(endpoint: str, api_key: str | None) -> str:
    from .replay import served_models
    try:
        names = asyncio.run(served_models(endpoint, api_key))
    except Exception as e:  # noqa: BLE001 - any failure to list models means: say --model
        raise InputError(f"cannot list the models at {endpoint}/v1/models ({type(e).__name__}: {str(e)[:150]}); "
                         "is the server up? pass --model NAME") from None
    if not names:
        raise InputError(f"{endpoint}/v1/models lists no model; pass --model NAME")
    return names[0]


async def _run(trace, opts, tokenizer, tokenizer_path: str, seed: int, progress: bool):
    from .replay import probe_prompt_tokens, replay
    from .replay_prompts import PROBES, fit_sizer, probe_text
    counts, error = await probe_prompt_tokens(opts, [probe_text(u, lead) for u, lead in PROBES])
    sizer = fit_sizer(counts, seed=seed, tokenizer=tokenizer, tokenizer_path=tokenizer_path, error=error)
    prompts = [sizer.text(i, int(n)) for i, n in enumerate(trace.prompt_tokens)]
    mode = f"closed loop, {opts.concurrency} in flight" if opts.concurrency else \
        f"open loop over {trace.span_s * opts.time_scale:.1f} s"
    _err(f"replaying {len(trace)} requests to {opts.endpoint} ({opts.model}, {mode}); prompts sized by {sizer.how}")
    records, stopped = await replay(trace, opts, prompts, on_progress=_Progress(len(trace)) if progress else None)
    return records, stopped, sizer.how


class _Progress:
    """Replay progress through planner.progress: a bar on a terminal; in a log, a line
    every few seconds (requests done, sent and failed)."""

    def __init__(self, n: int):
        from planner.progress import progress_bar
        self.bar = progress_bar(n, "replay", "req", leave=False)

    def __call__(self, rows, final: bool) -> None:
        done = sum(r["status"] not in ("not_sent", "in_flight") for r in rows)
        failed = sum(r["status"] not in ("finished", "not_sent", "in_flight") for r in rows)
        sent = sum(r["status"] != "not_sent" for r in rows)
        self.bar.set_postfix_str(f"{sent} sent, {failed} failed")
        self.bar.update(done - self.bar.n)
        if final:
            self.bar.close()


def _summary(records, stopped: str, how: str, opts) -> dict:
    import numpy as np

    from planner.records import FINISHED, summarize
    ok = records["status"] == FINISHED
    s = summarize(records[ok]) if ok.any() else {}
    lag = (records["arrival_s"] - records["scheduled_s"]).to_numpy(dtype=float)
    lag = lag[np.isfinite(lag)]
    miss = (records.loc[ok, "prompt_tokens"] - records.loc[ok, "trace_prompt_tokens"]).abs()
    short = int((records.loc[ok, "output_tokens"] < records.loc[ok, "trace_output_tokens"]).sum())
    return {"requests": int(len(records)), "finished": int(ok.sum()),
            "status": {str(k): int(v) for k, v in records["status"].value_counts().items()},
            "stopped": stopped, "prompts": how, "endpoint": opts.endpoint, "model": opts.model,
            "prompt_tokens_off": {"mean": float(miss.mean()) if len(miss) else None,
                                  "max": int(miss.max()) if len(miss) else None},
            "outputs_short": short, "send_lag_s": {"max": float(lag.max()) if len(lag) else None,
                                                   "p99": float(np.percentile(lag, 99)) if len(lag) else None},
            **{k: s.get(k) for k in ("ttft_s", "tpot_s", "jct_s", "requests_per_s", "output_tokens_per_s")}}


def _render(s: dict, output: str) -> str:
    def ms(v):
        return "-" if v is None or v != v else f"{v * 1e3:.1f}ms"
    fails = ", ".join(f"{k} {v}" for k, v in s["status"].items() if k != "finished") or "none"
    lines = [f"{s['finished']}/{s['requests']} requests finished (others: {fails})"
             + (f"; stopped early: {s['stopped']}" if s["stopped"] else "")]
    if s["finished"]:
        lines.append(f"  {s['requests_per_s']:.2f} req/s, {s['output_tokens_per_s']:.0f} output tok/s")
        for m in ("ttft_s", "tpot_s", "jct_s"):
            p = s[m]
            lines.append(f"  {m[:-2].upper():<5} p50 {ms(p['p50']):>10}  p90 {ms(p['p90']):>10}  "
                         f"p99 {ms(p['p99']):>10}")
        off = s["prompt_tokens_off"]
        lines.append(f"  prompts: {s['prompts']}; endpoint's count off the trace's by {off['mean']:.2f} tokens "
                     f"on average (max {off['max']})")
        if s["outputs_short"]:
            lines.append(f"  {s['outputs_short']} outputs shorter than the trace's (the endpoint stopped early: "
                         "does it honour ignore_eos?)")
    lag = s["send_lag_s"]
    if lag["max"] is not None:
        lines.append(f"  send lag behind the trace: p99 {lag['p99'] * 1e3:.1f} ms, max {lag['max'] * 1e3:.1f} ms")
    lines.append(f"records written to {output}")
    return "\n".join(lines)


def _first_error(records) -> str:
    bad = records[(records["status"] != "finished") & (records["error"].astype(str) != "")]
    if bad.empty:
        return "none was sent"
    r = bad.iloc[0]
    return f"{r['status']}: {r['error']}"


def _err(line: str) -> None:
    click.echo(line, err=True)
