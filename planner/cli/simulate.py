"""`planner simulate`: replay a trace against a plan in the discrete-event simulator."""
from __future__ import annotations

import click

from planner.cli.output import echo_json
from planner.errors import InputError
from planner.cli.params import (MAX_REQUESTS, MAX_SCALE, MAX_TOKENS, SEED, TPOT_BARE_BELOW_S, TTFT_BARE_BELOW_S,
                                Float, Int, OutFile, Seconds)


def _fmt(v, unit: str, scale: float = 1.0) -> str:
    if v is None or v != v:
        return "-"
    if v == float("inf"):
        return "inf"
    return f"{v * scale:.3f}{unit}" if unit == "s" else f"{v * scale:.1f}{unit}"


def render(label: str, summary: dict, stats: dict, predicted: dict | None = None) -> str:
    s = summary
    lines = [f"{label}: {s['finished']}/{s['requests']} requests finished"
             + (f", {s['aborted']} aborted (larger than an instance's KV memory)" if s.get("aborted") else "")
             + f", {s.get('preemptions', 0)} preemptions ({s.get('preempted_requests', 0)} requests), "
             f"{s.get('flips', 0)} flips" + (f"; KV memory peak {s['kv_peak_fraction']:.0%}" if "kv_peak_fraction" in s else ""),
             "            p50        p90        p99        mean" + ("      predicted p50/p90/p99" if predicted else "")]
    for name, key, unit, scale in (("TTFT", "ttft_s", "s", 1), ("TPOT", "tpot_s", "ms", 1e3), ("JCT", "jct_s", "s", 1)):
        v = s[key]
        row = f"  {name:<6}" + "".join(f"{_fmt(v.get(q), unit, scale):>11}" for q in ("p50", "p90", "p99", "mean"))
        if predicted and key in predicted:
            p = predicted[key]
            row += "      " + " / ".join(_fmt(p.get(q), unit, scale) for q in ("p50", "p90", "p99"))
        lines.append(row)
    if "requests_per_s" in s:
        lines.append(f"  throughput {s['requests_per_s']:.2f} req/s, {s['tokens_per_s']:.0f} tokens/s "
                     f"({s['output_tokens_per_s']:.0f} output tokens/s) over {s['duration_s']:.1f} s")
    if "slo_attainment" in s:
        lines.append(f"  SLO attainment (goodput share) {s['slo_attainment']:.1%}")
    b = s["busy_instance_s"]
    lines.append(f"  busy instance-seconds: prefill {b['prefill']:.0f}, decode {b['decode']:.0f}, "
                 f"coupled {b['coupled']:.0f}, flipping {b['flipping']:.0f}")
    lines.append(f"  cost ${s['usd_per_hour']:.2f}/h ({s['price_kind']}); run ${s['run_cost_usd']:.2f}, "
                 f"busy ${s['busy_cost_usd']:.2f}; perf/$ {s['perf_per_usd']:.4g} (1 / (mean JCT x busy $)); "
                 f"{s.get('requests_per_usd', float('nan')):.0f} requests per $")
    if s.get("windows"):
        bi = s["billed_instance_s"]
        lines.append("  billed instance-seconds (plan over time): "
                     + ", ".join(f"{r} {v:.0f}" for r, v in bi.items()) + f"; {stats.get('scale_events', 0)} scale events")
        lines.append("  window  start_s  instances        requests  TTFT p90   TPOT p90   SLO att.  billed inst-s  busy inst-s  cost")
        for w in s["windows"]:
            inst = "+".join(f"{n}{r[0].upper()}" for r, n in w["instances"].items())
            att = w.get("slo_attainment")
            lines.append(f"  {w['index']:>6}  {w['start_s']:>7.0f}  {inst:<15}  {w['requests']:>8}  "
                         f"{_fmt((w.get('ttft_s') or {}).get('p90'), 's'):>8}  "
                         f"{_fmt((w.get('tpot_s') or {}).get('p90'), 'ms', 1e3):>9}  "
                         f"{'-' if att is None else f'{att:.1%}':>8}  {sum(w['billed_instance_s'].values()):>13.0f}  "
                         f"{sum(w['busy_instance_s'].values()):>11.0f}  ${w['cost_usd']:.2f}")
    lines.append(f"  simulated in {stats['wall_s']:.2f} s wall ({stats['requests_per_wall_s']:.0f} requests/s, "
                 f"{stats['events']} events)")
    for role, source in (stats.get("step_costs") or {}).items():
        lines.append(f"  step costs ({role}): {source}")
    return "\n".join(lines)


@click.command()
@click.option("--plan", "plan_path", required=True, type=click.Path(dir_okay=False),
              help="Plan JSON written by `planner recommend -o`.")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False), default=None,
              help="Trace to replay (any format `planner trace` reads). Optional with --closed-loop.")
@click.option("--records", "records_path", type=OutFile(), default=None,
              help="Write one row per request (shared record schema) to this CSV.")
@click.option("--flips", "flips_path", type=OutFile(), default=None,
              help="Write the instance-flip log to this CSV.")
@click.option("--scale-log", "scale_path", type=OutFile(), default=None,
              help="Plans over time: write every instance start, drain, flip and stop to this CSV.")
@click.option("--start-latency", "start_latency_s", type=Seconds(hi=1e6), default=None,
              help="Plans over time: seconds from starting an instance to its serving "
                   "[default: 120, boot and weight load].")
@click.option("--start-ahead/--start-at-window", default=False, show_default=True,
              help="Plans over time: start a window's new instances --start-latency before the window "
                   "(as a planned schedule would) instead of at its start.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--time-scale", type=Float(lo=0, hi=MAX_SCALE, lo_open=True), default=1.0, show_default=True,
              help="Multiply arrival times (2 = half the rate).")
@click.option("--rate-scale", type=Float(lo=0, hi=MAX_SCALE, lo_open=True), default=1.0, show_default=True,
              help="Multiply the request rate (2 = twice the rate).")
@click.option("--closed-loop", "clients", type=Int(lo=1, hi=1_000_000), default=None,
              help="Closed loop with N concurrent clients instead of replaying arrivals.")
@click.option("--requests", "n_requests", type=Int(lo=1, hi=MAX_REQUESTS), default=None,
              help="Closed loop: requests to send in all [default: the trace's length, or 1000].")
@click.option("--prompt-tokens", type=Int(lo=1, hi=MAX_TOKENS), default=None, help="Closed loop: fixed prompt length.")
@click.option("--output-tokens", type=Int(lo=1, hi=MAX_TOKENS), default=None, help="Closed loop: fixed output length.")
@click.option("--think-s", type=Seconds(hi=1e6), default=0.0, show_default=True, help="Closed loop: pause between requests.")
@click.option("--baselines", is_flag=True, help="Also simulate the plan's coupled baselines.")
@click.option("--slo-ttft", type=Seconds(lo_open=True, bare_below=TTFT_BARE_BELOW_S), default=None,
              help="TTFT target: 0.5 (seconds), 500ms or 0.5s [default: the plan's].")
@click.option("--slo-tpot", type=Seconds(lo_open=True, bare_below=TPOT_BARE_BELOW_S), default=None,
              help="TPOT target: 50ms, 0.05s or 0.05 (seconds) [default: the plan's].")
@click.option("--confusion", type=click.Path(dir_okay=False), default=None,
              help="Length predictor confusion matrix CSV (rows true bucket, columns predicted).")
@click.option("--perfect-predictor", is_flag=True, help="Predict every output length bucket right.")
@click.option("--block-tokens", type=Int(lo=1, hi=1_000_000), default=16, show_default=True, help="KV block size, tokens.")
@click.option("--decode-batch-limit", type=Int(lo=1, hi=10_000_000), default=256, show_default=True,
              help="Most requests in one decode batch (vLLM max_num_seqs).")
@click.option("--price-kind", type=click.Choice(["on_demand", "spot", "reserved"]), default="on_demand",
              show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--overlong", type=click.Choice(["reject", "truncate", "keep"]), default=None,
              help="Requests longer than the model's context: reject, truncate or keep [default: as the plan was "
                   "made (its inputs.overlong), keep for plans that do not say].")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Progress bar on stderr for long runs.")
def simulate(plan_path, trace_path, records_path, flips_path, scale_path, start_latency_s, start_ahead, as_json, time_scale, rate_scale, clients, n_requests,
             prompt_tokens, output_tokens, think_s, baselines, slo_ttft, slo_tpot, confusion, perfect_predictor,
             block_tokens, decode_batch_limit, price_kind, seed, progress, overlong=None):
    """Replay a trace against a plan in the discrete-event simulator (TetriInfer's
    policies: chunked prefill, length prediction, power-of-two dispatch, reserve-dynamic
    decode admission, flips) and report TTFT/TPOT/JCT percentiles, throughput, SLO
    attainment, busy instance-seconds and cost, next to the plan's predictions. A plan
    over time (`planner recommend --windows`) changes its instance counts at each window's
    start: instances drain, flip or stop, new ones serve after --start-latency; the cost
    follows the instances billed, per window.

    \b
    Examples:
      planner simulate --plan plan.json --trace traces/mixed.csv
      planner simulate --plan plan.json --trace traces/mixed.csv --records out.csv --baselines --json
    """
    from planner.plan import deployment_from_dict, read_plan
    from planner.sim import simulate as run_open, simulate_closed_loop

    plan = read_plan(plan_path)
    trace = None
    overlong_info = None
    if trace_path:
        from traces import read_trace
        trace = read_trace(trace_path)
        from planner import catalog
        from planner.workload import apply_overlong, overlong_text
        policy = overlong or (plan.inputs.get("overlong") or {}).get("policy") or "keep"
        spec = catalog.model(plan.deployment.model)
        trace, overlong_info = apply_overlong(trace, spec.max_context, policy, spec.name)
        if overlong_text(overlong_info) and not as_json:
            click.echo(f"context: {overlong_text(overlong_info)}")
    elif clients is None:
        raise InputError("--trace is required (or use --closed-loop N with --prompt-tokens and --output-tokens)")
    kw = dict(seed=seed, progress=progress, slo_ttft_s=slo_ttft, slo_tpot_s=slo_tpot, block_tokens=block_tokens,
              decode_batch_limit=decode_batch_limit, confusion=confusion, perfect_predictor=perfect_predictor,
              price_kind=price_kind, start_latency_s=start_latency_s, start_ahead=start_ahead)
    slo = plan.inputs.get("slo") or {}
    kw["slo_ttft_s"] = slo_ttft if slo_ttft is not None else slo.get("ttft_s")
    kw["slo_tpot_s"] = slo_tpot if slo_tpot is not None else slo.get("tpot_s")
    targets = [("plan", plan.deployment, plan.predictions)]
    if baselines:
        for i, b in enumerate(plan.baselines):
            if "deployment" in b:
                targets.append((b["deployment"].get("mode", f"baseline {i}"),
                                deployment_from_dict(b["deployment"], f"{plan_path}: baselines[{i}]"),
                                b.get("predictions")))
    results = []
    for label, dep, pred in targets:
        if clients is not None:
            n = n_requests or (len(trace) if trace is not None else 1000)
            res = simulate_closed_loop(dep, clients=clients, requests=n, trace=trace, prompt_tokens=prompt_tokens,
                                       output_tokens=output_tokens, think_s=think_s, **kw)
        else:
            res = run_open(dep, trace, time_scale=time_scale, rate_scale=rate_scale, **kw)
        results.append((label, dep, pred, res))
    main_res = results[0][3]
    from planner.outputs import write_csv
    if records_path:
        write_csv(main_res.records, records_path, index=False)
    if flips_path:
        write_csv(main_res.flips, flips_path, index=False)
    if scale_path:
        write_csv(main_res.scale, scale_path, index=False)
    if as_json:
        return echo_json([{"label": label, "mode": dep.mode, "summary": res.summary, "stats": res.stats,
                           "predicted": pred or {}} for label, dep, pred, res in results]
                         if baselines else {"summary": main_res.summary, "stats": main_res.stats,
                                            "predicted": plan.predictions, "overlong": overlong_info})
    for label, dep, pred, res in results:
        click.echo(render(f"{label} ({dep.mode})", res.summary, res.stats,
                          {k: pred[k] for k in ("ttft_s", "tpot_s", "jct_s") if pred and k in pred}))
        click.echo("")
    if records_path:
        click.echo(f"records written to {records_path}")
