"""`planner trace stats|generate|convert`: inspect, synthesise and convert request traces."""
from __future__ import annotations

import click

from traces.arrivals import MODULATIONS, RateModulation
from traces.classes import CLASSES, KINDS, ClassThresholds
from traces.io import FORMAT_NAMES, read_trace, write_trace
from traces.lengths import PROFILES
from traces.stats import trace_stats
from traces.units import TIME_UNITS, parse_columns

from planner.cli.params import MAX_REQUESTS, MAX_TOKENS, SEED, Float, Int, OutFile, Seconds
from planner.errors import InputError
from planner.workload import DEFAULT_OVERLONG, OVERLONG_POLICIES


def trace_read_options(f):
    """Options every command that reads a trace shares (--format, --sort, --rate, --cv,
    --seed, --per-turn, --drop-zero); pair with read_with_options(path, **those)."""
    opts = [
        click.option("--format", "fmt", type=click.Choice(FORMAT_NAMES), default=None,
                     help="Input format; by default recognised from the columns."),
        click.option("--sort", is_flag=True, help="Sort rows by arrival time instead of rejecting an unsorted file."),
        click.option("--rate", "rate_per_s", type=Float(lo=0, hi=1e9, lo_open=True), default=None,
                     help="Requests/s. Length-only data (sharegpt, sarathi, lengths): draw arrivals at this rate. "
                          "Timed traces: rescale time to this mean rate."),
        click.option("--cv", type=Float(lo=0, hi=100), default=1.0, show_default=True,
                     help="Inter-arrival CV for drawn arrivals (1 = Poisson, else Gamma)."),
        click.option("--seed", type=SEED, default=0, show_default=True, help="Seed for drawn arrivals."),
        click.option("--per-turn", is_flag=True,
                     help="ShareGPT tables: prompt = this turn's tokens (default: history + turn)."),
        click.option("--drop-zero/--no-drop-zero", default=None,
                     help="Drop (and count) rows with 0 tokens, or reject them. Default: reject in the plain "
                          "format, drop elsewhere."),
        click.option("--columns", "columns_text", default=None, metavar="arrival=COL,prompt=COL,output=COL",
                     help="Read any CSV/JSONL by naming its columns (nested JSON keys as a.b); arrival is "
                          "optional (else arrivals are drawn at --rate)."),
        click.option("--time-unit", type=click.Choice(list(TIME_UNITS)), default=None,
                     help="Unit of numeric arrival times whose format does not fix one (plain, --columns, "
                          "OpenAI logs). Default: seconds, refused with a hint when implausible."),
        click.option("--tokenizer", type=click.Path(), default=None,
                     help="tokenizer.json (or a model folder holding one) to count tokens of text traces "
                          "(ShareGPT JSON, genai-perf); default: characters / 4, stated."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def read_with_options(path, fmt, sort, rate_per_s, cv, seed, per_turn, drop_zero, columns_text=None,
                      time_unit=None, tokenizer=None):
    return read_trace(path, fmt, sort=sort, rate_per_s=rate_per_s, cv=cv, seed=seed,
                      per_turn=per_turn, drop_zero=drop_zero, columns=parse_columns(columns_text),
                      time_unit=time_unit, tokenizer=tokenizer)


def report_read(trace) -> None:
    """Notes on stderr: rows dropped on purpose, and what the reader approximated."""
    _report_dropped(trace)
    for note in trace.notes:
        click.echo(f"note: {note}", err=True)


def _report_dropped(trace) -> None:
    if trace.dropped:
        total = sum(trace.dropped.values())
        why = ", ".join(f"{n:,} {reason}" for reason, n in trace.dropped.items())
        click.echo(f"note: dropped {total:,} rows on purpose ({why})", err=True)


def _threshold_options(f):
    f = click.option("--light-output", type=Int(lo=0, hi=MAX_TOKENS), default=128, show_default=True,
                     help="Light decode: at most this many output tokens.")(f)
    f = click.option("--light-prompt", type=Int(lo=0, hi=MAX_TOKENS), default=512, show_default=True,
                     help="Light prefill: at most this many prompt tokens.")(f)
    return f


@click.group()
def trace():
    """Inspect, generate and convert request traces.

    \b
    Formats read (recognised by their columns or structure, or --format):
      plain         arrival_s,prompt_tokens,output_tokens (+ extra columns)
      azure         TIMESTAMP,ContextTokens,GeneratedTokens (Azure LLM inference)
      mooncake      JSONL: timestamp (ms), input_length, output_length, hash_ids
      burstgpt      Timestamp,Model,Request tokens,Response tokens,...
      sharegpt      conv_id,turn,prompt_tokens,response_tokens,context_tokens  (needs --rate)
      sarathi       num_prefill_tokens,num_decode_tokens,...                   (needs --rate)
      lengths       prompt_tokens,output_tokens                                (needs --rate)
      vllm-bench    vLLM --save-result JSON (arrivals at its request_rate or --rate)
      sglang-bench  SGLang bench_serving --output-file with --output-details
      aiperf        aiperf profile_export.jsonl
      genai-perf    genai-perf profile_export.json
      openai        JSONL request log with usage.prompt_tokens/completion_tokens
      sharegpt-json ShareGPT conversations JSON (--tokenizer, else chars/4; --rate)
      columns       anything, with --columns arrival=COL,prompt=COL,output=COL
    Measured TTFT / ITL in benchmark exports are kept as measured_* columns.
    \b
    Examples:
      planner trace stats traces/mixed.csv
      planner trace stats traces/examples/vllm_bench_result.json
      planner trace stats traces/examples/requests.csv --columns arrival=timestamp,prompt=input_tokens,output=output_tokens --time-unit ms
      planner trace stats traces/examples/sharegpt_conversations.json --rate 2
      planner trace generate --kind lphd --requests 3000 --rate 4 -o lphd.csv
      planner trace convert traces/examples/openai_log.jsonl -o plain.csv
    """


@trace.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--window", "window_s", type=Seconds(lo_open=True, hi=1e9), default=60.0, show_default=True,
              help="Window (s) for the per-window rate.")
@click.option("--model", default=None,
              help="Count the requests longer than this model's context (catalog name or config.json) and treat "
                   "them as --overlong says, as `planner recommend` would.")
@click.option("--overlong", type=click.Choice(OVERLONG_POLICIES), default=DEFAULT_OVERLONG, show_default=True,
              help="With --model: reject (drop, as engines do), truncate or keep requests longer than its context; "
                   "the statistics are of the trace so treated.")
@_threshold_options
@trace_read_options
def stats(file, as_json, window_s, light_prompt, light_output, model, overlong, **read_kw):
    """Requests, span, rate, burstiness, lengths and class shares of a trace FILE; with
    --model, how many requests exceed its context and what is done with them.

    \b
    Examples:
      planner trace stats traces/mixed.csv
      planner trace stats traces/examples/aiperf_profile_export.jsonl --json --window 10
      planner trace stats ../shared/traces/azure2023_conv.csv --model opt-13b
    """
    from planner.cli.output import echo_json
    t = read_with_options(file, **read_kw)
    info = None
    if model:
        from planner import catalog
        from planner.workload import apply_overlong
        spec = catalog.model(model)
        t, info = apply_overlong(t, spec.max_context, overlong, spec.name)
    s = trace_stats(t, window_s, ClassThresholds(light_prompt, light_output))
    report_read(t)
    if as_json:
        echo_json({**s.to_dict(), **({"overlong": info} if info is not None else {})})
        return
    lines = [
        f"trace          {s.name}",
        f"requests       {s.requests:,}" + (f"   (dropped {sum(s.dropped.values()):,})" if s.dropped else ""),
        f"span           {s.span_s:,.1f} s",
        f"rate           {s.rate_per_s:.3f} req/s   inter-arrival CV {s.interarrival_cv:.2f}",
        f"per {s.window_s:g} s      mean {s.window_rate_mean_per_s:.3f}  p90 {s.window_rate_p90_per_s:.3f}  "
        f"max {s.window_rate_max_per_s:.3f} req/s over {s.windows} windows",
    ]
    for label, ls in (("prompt tokens", s.prompt_tokens), ("output tokens", s.output_tokens)):
        lines.append(f"{label:<14} mean {ls.mean:.1f}  p50 {ls.p50:.0f}  p90 {ls.p90:.0f}  p99 {ls.p99:.0f}  max {ls.max}")
    shares = "  ".join(f"{c} {100 * s.class_shares[c]:.1f}%" for c in CLASSES)
    lines.append(f"classes        {shares}   (light: prompt <= {s.light_prompt_tokens}, output <= {s.light_output_tokens})")
    for reason, n in s.dropped.items():
        lines.append(f"dropped        {n:,} {reason}")
    if info is not None:
        from planner.workload import overlong_text
        fits = f"every request fits {info['model']}'s {info['context_tokens']:,}-token context"
        lines.append(f"context        {overlong_text(info) or fits}")
    lines += _measured_lines(t)
    click.echo("\n".join(lines))


def _measured_lines(t) -> list[str]:
    """Latencies a benchmark export recorded (kept for comparison with predictions)."""
    import numpy as np
    out = []
    for col, label, scale, unit in (("measured_ttft_s", "measured TTFT", 1.0, "s"),
                                    ("measured_itl_mean_s", "measured ITL", 1e3, "ms")):
        v = np.asarray(t.extra.get(col, []), dtype=float)
        v = v[np.isfinite(v)]
        if len(v):
            p50, p90, p99 = np.percentile(v, [50, 90, 99]) * scale
            out.append(f"{label:<14} p50 {p50:.3g} {unit}  p90 {p90:.3g} {unit}  p99 {p99:.3g} {unit}  "
                       f"({len(v):,} requests, as the benchmark measured)")
    return out


@trace.command()
@click.option("--kind", type=click.Choice(KINDS, case_sensitive=False), default="mixed", show_default=True,
              help="Workload class: TetriInfer's LPLD, LPHD, HPLD, HPHD, or mixed.")
@click.option("--requests", "n_requests", type=Int(lo=1, hi=MAX_REQUESTS), default=None, help="Number of requests (or give --duration).")
@click.option("--duration", "duration_s", type=Seconds(lo_open=True, hi=1e9), default=None, help="Seconds of traffic (or give --requests).")
@click.option("--rate", "rate_per_s", type=Float(lo=0, hi=1e7, lo_open=True), required=True, help="Mean arrival rate, requests/s.")
@click.option("--cv", type=Float(lo=0, hi=100), default=1.0, show_default=True,
              help="Inter-arrival CV: 1 Poisson, else Gamma gaps.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--profile", type=click.Choice(list(PROFILES)), default="azure-conv", show_default=True,
              help="Fitted length distributions to draw from (see traces/lengths.py).")
@_threshold_options
@click.option("--max-total-tokens", type=Int(lo=2, hi=MAX_TOKENS), default=2048, show_default=True,
              help="Prompt + output limit (the served model's context; OPT: 2048).")
@click.option("--shares", default=None,
              help="Mixed only: LPLD,LPHD,HPLD,HPHD shares, e.g. 0.25,0.25,0.25,0.25 "
                   "(default: Azure conv's 28.6/10.9/21.2/39.4%).")
@click.option("--modulation", type=click.Choice(MODULATIONS), default="none", show_default=True,
              help="Vary the rate over time: a diurnal sine, or periodic bursts (mean rate stays --rate).")
@click.option("--period", "period_s", type=Seconds(lo_open=True, hi=1e9), default=3600.0, show_default=True, help="Modulation period, s.")
@click.option("--amplitude", type=Float(lo=0, hi=1, hi_open=True), default=0.5, show_default=True, help="Diurnal: relative swing, in [0, 1).")
@click.option("--burst-factor", type=Float(lo=0, hi=1e3, lo_open=True), default=4.0, show_default=True, help="Bursts: rate multiple during a burst.")
@click.option("--burst-length", "burst_s", type=Seconds(lo_open=True, hi=1e9), default=30.0, show_default=True, help="Bursts: seconds per burst.")
@click.option("-o", "--output", "out", type=OutFile(), required=True, help="CSV file to write.")
def generate(kind, n_requests, duration_s, rate_per_s, cv, seed, profile, light_prompt, light_output,
             max_total_tokens, shares, modulation, period_s, amplitude, burst_factor, burst_s, out):
    """Write a synthetic trace (plain CSV) for a TetriInfer workload class.

    \b
    Examples:
      planner trace generate --kind lphd --requests 3000 --rate 4 --seed 2 -o lphd.csv
      planner trace generate --kind mixed --duration 600 --rate 10 --modulation bursts --period 120 -o bursty.csv
    """
    from traces.synthetic import generate as gen
    if (n_requests is None) == (duration_s is None):
        raise InputError("give exactly one of --requests N or --duration S")
    share_values = None
    if shares is not None:
        try:
            share_values = [float(x) for x in shares.split(",")]
        except ValueError:
            raise InputError(f"--shares must be four numbers separated by commas, got {shares!r}") from None
        if kind.lower() != "mixed":
            raise InputError("--shares applies to --kind mixed only")
    if duration_s is not None and duration_s * rate_per_s > MAX_REQUESTS:
        raise InputError(f"--duration {duration_s:g} s at --rate {rate_per_s:g}/s is about {duration_s * rate_per_s:,.3g} "
                         f"requests, more than {MAX_REQUESTS:,}; shorten --duration or lower --rate")
    t = gen(kind, n_requests=n_requests, duration_s=duration_s, rate_per_s=rate_per_s, cv=cv, seed=seed,
            profile=profile, thresholds=ClassThresholds(light_prompt, light_output),
            max_total_tokens=max_total_tokens, shares=share_values,
            modulation=RateModulation(modulation, period_s, amplitude, burst_factor, burst_s))
    _write(t, out)
    click.echo(f"wrote {len(t):,} requests over {t.span_s:,.1f} s ({t.rate_per_s:.3f} req/s) to {out}", err=True)


def _write(t, out) -> None:
    """The trace to `out` through a temporary file (planner.outputs): all of it or nothing."""
    from planner.outputs import atomic_path
    with atomic_path(out) as tmp:
        write_trace(t, tmp)


@trace.command()
@click.argument("src", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", type=OutFile(), required=True, help="Plain CSV to write.")
@trace_read_options
def convert(src, out, **read_kw):
    """Convert a trace in any supported format to the plain CSV
    (arrival_s,prompt_tokens,output_tokens + kept extra columns).

    \b
    Examples:
      planner trace convert traces/examples/burstgpt.csv -o plain.csv
      planner trace convert traces/examples/sharegpt_conversations.json --rate 2 -o sharegpt.csv
    """
    t = read_with_options(src, **read_kw)
    _write(t, out)
    report_read(t)
    click.echo(f"wrote {len(t):,} requests over {t.span_s:,.1f} s ({t.rate_per_s:.3f} req/s) to {out}", err=True)
