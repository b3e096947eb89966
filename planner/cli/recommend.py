"""`planner recommend` (plan a deployment for a trace) and `planner calibrate` (fit the
performance model to a measured profile)."""
from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import click

from planner import catalog
from planner.search.candidates import DEFAULT_CHUNKS, DEFAULT_TPS, SLO
from planner.cli.output import echo_json
from planner.cli.trace import read_with_options, report_read, trace_read_options
from planner.errors import InputError
from planner.search.optimizer import MODE_CHOICES
from planner.workload import DEFAULT_WINDOW_S
from planner.cli.params import (MAX_INSTANCES, MAX_SCALE, TPOT_BARE_BELOW_S, TTFT_BARE_BELOW_S, Float, Int, OutFile,
                                Percent, Seconds)
from planner.cli.plan_render import render_plan
from planner.search.verified import OBJECTIVES
from planner.workload import DEFAULT_OVERLONG, OVERLONG_POLICIES

MAX_SCHEDULE_WINDOWS = 2_000   # --windows: a few seconds of sizing per thousand windows


def _ints(text: str | None, what: str):
    if not text:
        return None
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--{what} {text!r}: expected comma-separated integers, e.g. 256,512,1024") from None
    if any(v < 1 for v in vals):
        raise InputError(f"--{what}: values must be >= 1")
    return vals


def _weight_format(dtype: str | None) -> str | None:
    from planner.perf.memory import WEIGHT_BYTES
    if dtype is None:
        return None
    key = dtype.strip().lower().replace("nvfp4", "fp4")
    if key not in WEIGHT_BYTES:
        raise InputError(f"--dtype {dtype!r} is not a weight format; use one of {', '.join(sorted(WEIGHT_BYTES))}")
    return key


@click.command()
@click.option("--trace", "trace_path", required=True, type=click.Path(dir_okay=False),
              help="Request trace in any format `planner trace stats` reads (plain CSV arrival_s,prompt_tokens,"
                   "output_tokens, Azure, Mooncake, BurstGPT; ShareGPT/Sarathi/length tables with --rate).")
@click.option("--gpu", "gpus", multiple=True, default=("a100",), show_default=True,
              help="GPU type; repeat or comma-separate (--gpu h100,l4) for a mix (prefill on one type, decode on "
                   "another) and the best plan on each type alone. 'local' plans for the profiled device (needs --profile).")
@click.option("--gpu-spec", "gpu_spec_files", multiple=True, type=click.Path(dir_okay=False),
              help="YAML or CSV file adding a GPU (memory_gb, memory_gb_s, fp16_tflops, ...; see "
                   "planner/catalog/gpu_spec.py); name it in --gpu.")
@click.option("--model", default=catalog.DEFAULT_MODEL, show_default=True,
              help="Catalog name, Hugging Face id (meta-llama/Llama-3.1-70B) or config.json path/folder.")
@click.option("--slo-ttft", type=Seconds(lo_open=True, bare_below=TTFT_BARE_BELOW_S), default=SLO.ttft_s,
              show_default=True, help="TTFT target: 0.5 (seconds), 500ms or 0.5s.")
@click.option("--slo-tpot", type=Seconds(lo_open=True, bare_below=TPOT_BARE_BELOW_S), default=SLO.tpot_s,
              show_default=True, help="TPOT target: 50ms, 0.05s or 0.05 (seconds).")
@click.option("--slo-jct", type=Seconds(lo_open=True), default=None, help="JCT target: 20 (seconds) or 20s (off by default).")
@click.option("--slo-percentile", type=click.Choice(["50", "90", "99"]), default="90", show_default=True,
              help="Percentile the targets apply to.")
@click.option("--mode", type=click.Choice(MODE_CHOICES), default="auto", show_default=True,
              help="auto: cheapest of disaggregated and coupled; or force one.")
@click.option("--for-testbed", is_flag=True,
              help="Write a plan `testbed run` can run: disaggregated (prefill and decode roles), as --mode "
                   "disaggregated.")
@click.option("--tp", "tp_text", default=",".join(map(str, DEFAULT_TPS)), show_default=True,
              help="Tensor-parallel degrees to consider.")
@click.option("--chunks", "chunks_text", default=None,
              help=f"Prefill chunk sizes to consider [default: {','.join(map(str, DEFAULT_CHUNKS))} "
                   "plus each GPU's saturation chunk].")
@click.option("--max-gpus", type=Int(lo=1, hi=MAX_INSTANCES), default=None, help="GPU budget (all roles).")
@click.option("--window", "window_s", type=Seconds(lo_open=True, hi=1e9), default=DEFAULT_WINDOW_S, show_default=True,
              help="Time window (s) over which load is measured, so peaks are sized.")
@click.option("--price", "price_items", multiple=True, help="GPU=USD_PER_GPU_HOUR override, e.g. a100=1.79.")
@click.option("--prices", "prices_file", type=click.Path(dir_okay=False), default=None,
              help="CSV of gpu,usd_per_gpu_hour overrides.")
@click.option("--price-kind", type=click.Choice(catalog.PRICE_KINDS), default="on_demand", show_default=True)
@click.option("--provider", default=None,
              help="Price from this provider's catalog offers [default: the cheapest listed offer, named in the output].")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False), default=None,
              help="Profile CSV: calibrate the performance model before planning.")
@click.option("--memory-gb", type=Float(lo=0, hi=1e6, lo_open=True), default=None,
              help="Device memory for --gpu local (default 16).")
@click.option("--kv-link-gb-s", type=Float(lo=0, hi=1e6, lo_open=True), default=None,
              help="KV link per instance, GB/s [default: node network / 8 GPUs x TP].")
@click.option("--rate-scale", type=Float(lo=0, hi=MAX_SCALE, lo_open=True), default=1.0, show_default=True,
              help="Multiply the trace's arrival rate (2 = the same requests in half the time).")
@click.option("--runners-up", type=Int(lo=0, hi=1000), default=3, show_default=True)
@click.option("--solver", type=click.Choice(["highs", "cbc"]), default="highs", show_default=True)
@click.option("--engine", "engine_name", default="vllm", show_default=True,
              help="Serving engine the plan deploys with: vllm | sglang | trtllm (its scheduling, CUDA graphs, "
                   "CPU time; the plan names the settings to launch it with).")
@click.option("--dtype", default=None,
              help="Weight format to serve in: bf16, fp16, fp8, fp8_block, fp4 (NVFP4), mxfp4, int4. Default: as "
                   "the checkpoint stores it (its quantization_config; a MoE model's experts keep theirs).")
@click.option("--kv-dtype", default=None, type=click.Choice(["bf16", "fp16", "fp8"]),
              help="KV-cache format (vLLM's --kv-cache-dtype). Default: the engine's rule for the weight format.")
@click.option("-o", "--output", type=OutFile(), default=None, help="Write the plan JSON here.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan JSON instead of the table.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Replay the trace in the simulator against each candidate before returning it (the default; "
                   "--verify is accepted and changes nothing): never return a plan that misses the SLO there, "
                   "KV memory sized with the engine's preemption. --no-verify: the analytical plan alone, said so.")
@click.option("--verify-budget", "verify_budget_s", type=Seconds(lo_open=True, hi=3600), default=6.0,
              show_default=True,
              help="Seconds of simulation for the check; a trace too large to replay whole within it is checked on "
                   "a stated stratified sample of time windows (the busiest included).")
@click.option("--overlong", type=click.Choice(OVERLONG_POLICIES), default=DEFAULT_OVERLONG, show_default=True,
              help="Requests longer than the model's context (prompt + output): reject them as engines do, "
                   "truncate them to fit, or keep them as if the model took them. Counted in the output.")
@click.option("--headroom", type=Percent(hi=3.0), default=0.0, show_default=True,
              help="Size for a margin: the plan must also meet the SLO in simulation at this much more load and "
                   "with every step this much slower, e.g. 20%.")
@click.option("--spare", type=Int(lo=0, hi=8), default=0, show_default=True,
              help="Spare instances per role (1: n+1), costed, and the plan simulated with one instance of each "
                   "role removed.")
@click.option("--frontier", "show_frontier", is_flag=True,
              help="Also give the cost-latency frontier: the plans no other beats on $/hour, TTFT and TPOT "
                   "(simulated), in the table and the JSON.")
@click.option("--objective", type=click.Choice(OBJECTIVES), default="cost", show_default=True,
              help="Which plan meeting the SLO to return: the cheapest, the fastest on the frontier (latency), or "
                   "the most SLO-meeting tokens/s per $/hour (tokens-per-dollar).")
@click.option("--windows", "schedule_window_s", type=Seconds(lo_open=True, hi=1e9), default=None,
              help="Also plan over time in windows of this many seconds (planner.search.schedule): per-window instances "
                   "(deployment.windows) and the cost of each strategy.")
@click.option("--schedule", "schedule_strategy", default="best", show_default=True,
              type=click.Choice(["best", "static_peak", "fixed_fleet", "autoscale", "reserved_burst"]),
              help="With --windows: the scheduling strategy (best = the cheapest dynamic one).")
@trace_read_options
def recommend(trace_path, gpus, model, slo_ttft, slo_tpot, slo_jct, slo_percentile, mode, tp_text, chunks_text,
              max_gpus, window_s, price_items, prices_file, price_kind, provider, profile_path, memory_gb,
              kv_link_gb_s, rate_scale, runners_up, solver, engine_name, dtype, kv_dtype, output, as_json, verify,
              verify_budget_s, overlong, headroom, spare, show_frontier, objective, schedule_window_s,
              schedule_strategy, for_testbed=False, gpu_spec_files=(), **read_kw):
    """Plan prefill/decode instances, chunk size and TP for a trace at the least $/hour
    that meets the SLO, and say whether disaggregation pays against coupled serving.

    The trace options are those of `planner trace stats`; --seed seeds both the drawn
    arrivals and the queueing model's sampling. Durations take units: 500ms, 0.5s.

    \b
    Every plan returned is first replayed in the simulator (--no-verify skips it, and says
    so) and states its margin: the slowdown of kernels and the load it holds to.

    \b
    Examples:
      planner recommend --trace traces/mixed.csv --gpu a100 -o plan.json
      planner recommend --trace traces/lphd.csv --gpu h100,l4 --slo-ttft 0.5 --slo-tpot 0.05
      planner recommend --trace traces/mixed.csv --headroom 20% --spare 1 --frontier
      planner recommend --trace traces/mixed.csv --gpu h200 --model openai/gpt-oss-120b --kv-dtype fp8
      planner recommend --trace bench.json --gpu a100 --for-testbed
    Terms: `planner explain TERM` (TTFT, TPOT, chunk, TP, ...)."""
    from planner.engines.config import engine_config
    from planner.search.verified import verified_recommend as plan_for

    seed = read_kw["seed"]
    if for_testbed:
        if mode not in ("auto", "disaggregated"):
            raise InputError(f"--for-testbed plans a disaggregated deployment; drop --mode {mode}")
        mode = "disaggregated"
    gpus = tuple(g.strip() for item in gpus for g in item.split(",") if g.strip())
    from planner.catalog.gpu_spec import specs_and_prices
    extra_specs, spec_prices = specs_and_prices(gpu_spec_files)
    trace = read_with_options(trace_path, **read_kw)
    report_read(trace)
    if rate_scale != 1.0:
        if not rate_scale > 0:
            raise InputError(f"--rate-scale must be > 0, got {rate_scale}")
        trace = trace.time_scaled(1.0 / rate_scale)
    eff, gpu_specs = None, {}
    if profile_path:
        from planner.perf.calibrate import calibrate as fit
        if len(gpus) != 1:
            raise InputError("--profile calibrates one device: give exactly one --gpu with it")
        cal = fit(profile_path, gpus[0], model, memory_gb=memory_gb)
        eff = cal.efficiency
        if cal.gpu.name == "local":
            catalog.register_gpu(cal.gpu)
            gpu_specs["local"] = asdict(cal.gpu)
        if kv_link_gb_s is None and cal.kv_link_gb_s:
            kv_link_gb_s = cal.kv_link_gb_s
    elif any(g.strip().lower() == "local" for g in gpus):
        raise InputError("--gpu local needs --profile PROFILE.csv (the fit defines the device)")
    overrides = {**spec_prices, **catalog.parse_price_overrides(price_items, prices_file)}  # after "local" is known
    slo = SLO(slo_ttft, slo_tpot, int(slo_percentile), slo_jct)
    plan_kw = dict(model=model, slo=slo, price_kind=price_kind, provider=provider, price_overrides=overrides,
                   tps=_ints(tp_text, "tp") or DEFAULT_TPS, chunks=_ints(chunks_text, "chunks"), mode=mode,
                   max_gpus=max_gpus, window_s=window_s, efficiency=eff, kv_link_override_gb_s=kv_link_gb_s,
                   runners_up=runners_up, solver=solver, seed=seed, dtype=_weight_format(dtype),
                   engine=engine_config(engine_name, kv_cache_dtype=kv_dtype),
                   verify=verify, verify_budget_s=verify_budget_s, overlong=overlong, headroom=headroom, spare=spare,
                   objective=objective, frontier=show_frontier)
    from planner.progress import working
    with working("planning"):
        plan = plan_for(trace, gpus=gpus, **plan_kw)
        per_gpu_rows = None
        if len({catalog.gpu(g).name for g in gpus}) > 1:
            from planner.search.per_gpu import per_gpu
            per_gpu_rows = per_gpu(trace, list(dict.fromkeys(gpus)), plan, plan_for,
                                   **{**plan_kw, "frontier": False, "objective": "cost"})
    gpu_specs.update(extra_specs)
    if gpu_specs:
        plan.inputs["gpu_specs"] = gpu_specs
    plan.inputs["command"] = command_line()
    d = plan.to_dict()
    if per_gpu_rows is not None:
        d["per_gpu"] = per_gpu_rows
    sched_sim = None
    if schedule_window_s is not None:
        if not schedule_window_s > 0:
            raise InputError(f"--windows must be > 0 seconds, got {schedule_window_s}")
        span_s = float(trace.arrival_s[-1] - trace.arrival_s[0]) if len(trace.arrival_s) else 0.0
        if span_s / schedule_window_s > MAX_SCHEDULE_WINDOWS:
            raise InputError(f"--windows {schedule_window_s:g} s splits the {span_s:,.1f} s trace into "
                             f"{span_s / schedule_window_s:,.4g} windows, more than {MAX_SCHEDULE_WINDOWS:,} "
                             f"(each is sized on its own): use --windows >= {span_s / MAX_SCHEDULE_WINDOWS:.3g}")
        from planner.search.schedule import plan_over_time
        from planner.workload import apply_overlong
        spec = catalog.model(model)
        trace, _ = apply_overlong(trace, spec.max_context, overlong, spec.name)   # as the plan was made
        plan = plan_over_time(trace, plan, schedule_window_s, strategy=schedule_strategy, price_kind=price_kind,
                              provider=provider, overrides=overrides)
        d.update({k: v for k, v in plan.to_dict().items() if k in ("deployment", "cost")})
        if verify:
            from planner.cli.verify_render import schedule_verification
            sched_sim = schedule_verification(plan, trace, seed=seed)
            d["schedule_verification"] = sched_sim
    if output:
        from planner.outputs import write_text
        write_text(output, json.dumps(d, indent=2, default=float) + "\n")
    if as_json:
        return echo_json(d)
    click.echo(render_plan(plan))
    if per_gpu_rows is not None:
        from planner.search.per_gpu import render_per_gpu
        click.echo("\n" + "\n".join(render_per_gpu(per_gpu_rows)))
    if schedule_window_s is not None:
        from planner.cli.verify_render import render_schedule
        click.echo("\n" + render_schedule(plan, sched_sim))
    if output:
        click.echo(f"plan written to {output}")


def command_line() -> list[str] | None:
    """This invocation's arguments (`planner recommend ...`), kept in the plan so that a
    tool refusing the plan can say exactly what to run instead; None when not run from a shell."""
    argv = sys.argv
    if len(argv) > 1 and Path(argv[0]).name in ("planner", "__main__.py") and argv[1] == "recommend":
        return ["planner", *argv[1:]]
    return None


@click.command()
@click.argument("profile", type=click.Path(dir_okay=False))
@click.option("--gpu", default="local", show_default=True,
              help="Catalog GPU the profile was measured on, or 'local' to derive its numbers from the fit.")
@click.option("--model", default="opt-13b", show_default=True, help="Model whose rows to fit.")
@click.option("--memory-gb", type=Float(lo=0, hi=1e6, lo_open=True), default=None, help="Device memory (for 'local').")
@click.option("--kv-path", default="auto", show_default=True,
              help="KV copy path whose rows give the link: auto (host-staged d2h+h2d if profiled, else the "
                   "device copy), host, copy, d2h or h2d.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def calibrate(profile, gpu, model, memory_gb, kv_path, as_json):
    """Fit compute/memory efficiency, GEMM knee and per-iteration overheads to a profile
    CSV (device, model, kind, tokens, batch, context_tokens, bytes, seconds, repeats).

    \b
    Examples:
      planner calibrate docs/profiles/cpu-opt-125m-l4-h256-fp32.csv --model docs/profiles/opt-125m-l4-h256.config.json
      planner calibrate docs/profiles/h100-opt-13b-fp16.csv --model opt-13b --gpu h100-sxm --json
    """
    from planner.perf.calibrate import calibrate as fit
    cal = fit(profile, gpu, model, memory_gb=memory_gb, kv_path=kv_path)
    d = cal.as_dict()
    if as_json:
        return echo_json(d)
    e = d["efficiency"]
    click.echo(f"calibrated {d['model']} on {d['gpu']} (devices in profile: {', '.join(d['devices'])})")
    click.echo(f"  nominal        {d['nominal']['fp16_tflops']:.3g} TFLOP/s, {d['nominal']['memory_gb_s']:.4g} GB/s"
               + ("  (achieved, from the fit)" if d["gpu"] == "local" else "  (datasheet)"))
    click.echo(f"  compute_eff    {e['compute_eff']:.3f}")
    click.echo(f"  memory_eff     {e['memory_eff']:.3f}")
    click.echo(f"  knee_tokens    {e['knee_tokens']:.1f}")
    click.echo(f"  overheads      prefill {e['prefill_overhead_s'] * 1e3:.3f} ms, decode {e['decode_overhead_s'] * 1e3:.3f} ms"
               + (f"; {e['prefill_request_s'] * 1e3:.3f} ms per extra request in a chunk" if e["prefill_request_s"] else "")
               + (f"; a chunk on an idle instance x{e['prefill_idle_factor']:.2f}"
                  if e["prefill_idle_factor"] != 1.0 else ""))
    click.echo(f"  structure      {d['structure']}")
    for key, x in (("decode_batch_offsets_s", "batch"), ("prefill_chunk_offsets_s", "chunk")):
        if e[key]:
            click.echo(f"  {key.split('_')[0]} offsets ".ljust(17)
                       + ", ".join(f"{x} {v:g}: {s * 1e3:+.2f} ms" for v, s in e[key]))
    if d["kv_link_gb_s"]:
        click.echo(f"  kv link        {d['kv_link_gb_s']:.3g} GB/s + {d['kv_latency_s'] * 1e6:.0f} us "
                   f"(path {d['kv_path'] or 'unlabelled'}; profiled: "
                   + ", ".join(f"{k or 'unlabelled'} {v['link_gb_s']:.3g} GB/s" for k, v in d["kv_paths"].items()) + ")")
    for k in d["rms_rel_error"]:
        click.echo(f"  error {k:<8} RMS {d['rms_rel_error'][k]:.1%}, max {d['max_rel_error'][k]:.1%} "
                   f"over {d['rows'][k]} rows")
