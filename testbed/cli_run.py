"""`testbed run`, `testbed validate` and `testbed worker` (click). User errors print one
line and exit 2; a run that stops early (a worker died or hung, Ctrl-C) writes the
records so far, prints why and exits 1."""
from __future__ import annotations

import functools
import json
import sys

import click

from planner.cli.params import MAX_TOKENS, SEED, Float, Int, OutDir, OutFile, Seconds
from planner.errors import InputError

EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 1


def guarded(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_BAD_INPUT)
    return wrapper


def run_options(fn):
    """The options `run` and `validate` share."""
    opts = [
        click.option("--plan", "plan_path", required=True, type=click.Path(dir_okay=False),
                     help="Plan JSON (`planner recommend -o plan.json`): role counts, chunk size, policies."),
        click.option("--trace", "trace_path", required=True, type=click.Path(dir_okay=False),
                     help="Trace file (any format `planner trace stats` reads)."),
        click.option("--head", type=Int(lo=1, hi=100_000_000), default=None, help="Use only the first N requests."),
        click.option("--time-scale", type=Float(lo=0, hi=1e6, lo_open=True), default=1.0, show_default=True,
                     help="Stretch arrivals by this factor (>1 slower, <1 faster)."),
        click.option("--closed-loop", type=Int(lo=1, hi=100_000), default=None,
                     help="Closed loop: keep N requests in flight instead of replaying arrival times."),
        click.option("--model", default=None, help="OPT model to run instead of the plan's (e.g. opt-125m)."),
        click.option("--layers", type=Int(lo=1, hi=1000), default=None, help="Scale the model to N layers."),
        click.option("--hidden", type=Int(lo=1, hi=1_000_000), default=None, help="Scale the model to hidden size N."),
        click.option("--max-context", type=Int(lo=1, hi=MAX_TOKENS), default=None, help="Positions of the model (default the model's)."),
        click.option("--weights", "weights_dir", type=click.Path(file_okay=False), default=None,
                     help="Folder with real weights (save_pretrained); default seeded random weights."),
        click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True),
        click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N]."),
        click.option("--kv-backend", type=click.Choice(["reference", "gloo", "nccl", "shm", "cuda-ipc"]),
                     default=None, help="KV transfer backend [default: shm on cpu, cuda-ipc on cuda]."),
        click.option("--prefill", "n_prefill", type=Int(lo=1, hi=1024), default=None,
                     help="Override the plan's prefill instances (a static run: with --no-windows on a plan over time)."),
        click.option("--decode", "n_decode", type=Int(lo=1, hi=1024), default=None, help="Override the plan's decode instances."),
        click.option("--no-windows", is_flag=True,
                     help="A plan over time: run its role counts (each role's peak) for the whole trace instead of "
                          "following its time windows (to compare static vs scheduled)."),
        click.option("--scale-out", type=OutFile(), default=None,
                     help="Write the scale log (plans over time: time_s, window, instance (slot), action, "
                          "from_role, to_role, ready_s, worker) to this CSV."),
        click.option("--decode-kv-tokens", type=Int(lo=1, hi=1_000_000_000), default=None,
                     help="KV tokens a decode worker may hold [default: the plan's decode capacity]."),
        click.option("--classifier-layers", type=Int(lo=0, hi=1000), default=1, show_default=True,
                     help="Layers of the length classifier run on each prompt (0: none)."),
        click.option("--classifier-hidden", type=Int(lo=1, hi=1_000_000), default=128, show_default=True),
        click.option("--threads", type=Int(lo=1, hi=1024), default=1, show_default=True, help="torch threads per worker."),
        click.option("--pin-cpus", is_flag=True,
                     help="Pin each local worker to its own CPU (round robin over this process's CPUs); "
                          "keeps two workers off one core on a small machine."),
        click.option("--seed", type=SEED, default=0, show_default=True),
        click.option("--host", default="127.0.0.1", show_default=True,
                     help="Address the scheduler (and TCPStore) bind; 0.0.0.0 for workers on other hosts."),
        click.option("--advertise", default=None, help="Address other hosts reach the scheduler at."),
        click.option("--dist-init", default=None,
                     help="torch.distributed init method (tcp://HOST:PORT) instead of the launcher's TCPStore."),
        click.option("--remote-prefill", type=Int(lo=0, hi=1024), default=0, show_default=True,
                     help="Prefill workers started by hand on other hosts (the command is printed)."),
        click.option("--remote-decode", type=Int(lo=0, hi=1024), default=0, show_default=True),
        click.option("--heartbeat-timeout", type=Seconds(lo_open=True, hi=1e6), default=60.0, show_default=True,
                     help="Seconds of silence (or no progress) after which a worker counts as hung."),
        click.option("--log-dir", type=OutDir(), default=None,
                     help="Worker logs here [default: a temporary folder]."),
        click.option("--no-progress", is_flag=True, help="No progress bar."),
        click.option("--iterations-out", type=OutFile(), default=None,
                     help="Also write every worker iteration (worker, size, requests, "
                          "context_tokens, start_s, seconds) to this CSV."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def replan_command(plan, plan_path: str, trace_path: str) -> str:
    """The `planner recommend` command that wrote `plan`, with --for-testbed instead of any
    --mode, writing to `plan_path`; rebuilt from the plan's inputs when it has no command."""
    import shlex
    cmd = plan.inputs.get("command")
    if not cmd:
        i = plan.inputs
        dep = plan.deployment
        gpus = sorted({r.gpu for r in (dep.prefill, dep.decode, dep.coupled) if r is not None})
        cmd = ["planner", "recommend", "--trace", trace_path, "--model", str(i.get("model", "MODEL"))]
        for g in gpus or ["GPU"]:
            cmd += ["--gpu", g]
    out, skip = [], False
    for a in cmd:
        if skip:
            skip = False
            continue
        if a in ("--mode", "-o", "--output"):
            skip = True
            continue
        if a.startswith(("--mode=", "--output=")) or a in ("--json", "--for-testbed"):
            continue
        out.append(a)
    return shlex.join(out + ["--for-testbed", "-o", plan_path])


def _load(kw, run: bool = True):
    """(plan, trace, options). `run`: the testbed will run the plan (else only the models
    do, on records measured elsewhere: any mode goes)."""
    from planner.plan import read_plan
    from traces import read_trace

    from .run import RunOptions

    plan = read_plan(kw["plan_path"])
    trace = read_trace(kw["trace_path"])
    if kw["head"] is not None:   # counts and sizes are checked by their click types (planner.cli.params)
        trace = trace.head(kw["head"])
    dep = plan.deployment
    instances = None
    if kw["n_prefill"] or kw["n_decode"]:
        if dep.windows and not kw["no_windows"]:
            raise InputError(f"the plan has {len(dep.windows)} time windows and --prefill/--decode set static counts; "
                             "add --no-windows to run those counts for the whole trace")
        if dep.mode != "disaggregated" and not (kw["n_prefill"] and kw["n_decode"]):
            raise InputError("the plan is not disaggregated: give both --prefill and --decode")
        instances = (kw["n_prefill"] or dep.prefill.instances, kw["n_decode"] or dep.decode.instances)
    if dep.mode != "disaggregated" and instances is None and run:
        raise InputError(f"the plan is {dep.mode}; the testbed runs disaggregated plans (prefill and decode roles). "
                         f"Re-plan with: {replan_command(plan, kw['plan_path'], kw['trace_path'])} "
                         "- or give --prefill N --decode M to run that many of each role")
    if dep.windows and dep.mode == "disaggregated" and run:
        from .windows import summary
        if kw["no_windows"]:
            p, d = instances or (dep.prefill.instances, dep.decode.instances)
            click.echo(f"note: --no-windows: {p} prefill + {d} decode instances for the whole trace, not the "
                       f"plan's {len(dep.windows)} time windows", err=True)
        else:
            click.echo(summary(dep.windows) + " (all processes start at once; routing follows the schedule)",
                       err=True)
    opts = RunOptions(model=kw["model"], layers=kw["layers"], hidden=kw["hidden"], max_context=kw["max_context"],
                      dtype=kw["dtype"], device=kw["device"], weights_dir=kw["weights_dir"], seed=kw["seed"],
                      kv_backend=kw["kv_backend"], time_scale=kw["time_scale"], closed_loop=kw["closed_loop"],
                      decode_kv_tokens=kw["decode_kv_tokens"], classifier_layers=kw["classifier_layers"],
                      classifier_hidden=kw["classifier_hidden"], threads=kw["threads"], pin_cpus=kw["pin_cpus"],
                      host=kw["host"], advertise=kw["advertise"], dist_init=kw["dist_init"], remote_prefill=kw["remote_prefill"],
                      remote_decode=kw["remote_decode"], heartbeat_timeout_s=kw["heartbeat_timeout"],
                      log_dir=kw["log_dir"], instances=instances, follow_windows=not kw["no_windows"])
    return plan, trace, opts


def _execute(plan, trace, opts, progress: bool, output: str | None, iterations_out: str | None = None,
             scale_out: str | None = None):
    """Run; write records (also those of a failed run: every request, with its status);
    exit 1 on failure. While it runs, finished requests are appended to OUTPUT.partial,
    which is what a launcher killed outright (SIGKILL) leaves; it is removed once the
    records are written."""
    from dataclasses import replace

    from planner.outputs import write_csv

    from .run import RunFailed, records_or_nan, run_trace
    journal = f"{output}{JOURNAL_SUFFIX}" if output else None
    try:
        result = run_trace(plan.deployment, trace, replace(opts, journal_path=journal), progress=progress)
    except RunFailed as e:
        if output:
            write_csv(records_or_nan(e.result.records), output, index=False)
            _remove(journal)
            counts = e.result.records["status"].value_counts().to_dict()
            click.echo(f"records written to {output} (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")",
                       err=True)
        if scale_out:
            write_csv(e.result.scale, scale_out, index=False, float_format="%.6f")
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_RUN_FAILED)
    if output:
        write_csv(records_or_nan(result.records), output, index=False)
        _remove(journal)
    if iterations_out:
        import pandas as pd
        cols = ["worker", "size", "requests", "context_tokens", "start_s", "seconds"]
        write_csv(pd.DataFrame(result.iterations, columns=cols), iterations_out, index=False, float_format="%.6f")
    if scale_out:
        write_csv(result.scale, scale_out, index=False, float_format="%.6f")
    return result


JOURNAL_SUFFIX = ".partial"


def _remove(path) -> None:
    import os
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _fmt_s(v) -> str:
    return "-" if v is None or v != v else f"{v * 1e3:.1f}ms"


@click.command("run")
@run_options
@click.option("-o", "--output", type=OutFile(), default=None,
              help="Write request records (CSV), one row per request with its status (finished, failed, not_sent).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@guarded
def run_cmd(output, as_json, **kw):
    """Replay a trace against a plan on real prefill and decode processes with real KV
    transfer, and write per-request records (the simulator's schema).

    \b
    Example:
      testbed run --plan plan.json --trace t.csv --model opt-125m --layers 4 --hidden 256 -o records.csv
    """
    from planner.records import summarize
    plan, trace, opts = _load(kw)
    result = _execute(plan, trace, opts, not kw["no_progress"], output, kw["iterations_out"], kw["scale_out"])
    summary = summarize(result.records)
    summary["transfers"] = {k: v for k, v in result.transfers.items() if k != "workers"}
    summary["wall_s"] = result.wall_s
    from .run import follows_windows
    following = follows_windows(plan.deployment, opts)
    if following:
        summary["scale"] = {str(k): int(v) for k, v in result.scale["action"].value_counts().sort_index().items()}
        summary["rerouted"] = result.rerouted
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=float))
        return
    click.echo(f"{summary['finished']}/{summary['requests']} requests in {result.wall_s:.1f} s "
               f"({summary.get('requests_per_s', 0):.2f} req/s, {summary.get('output_tokens_per_s', 0):.0f} output tok/s)")
    for m in ("ttft_s", "tpot_s", "jct_s"):
        p = summary[m]
        click.echo(f"  {m[:-2].upper():<5} p50 {_fmt_s(p['p50']):>10}  p90 {_fmt_s(p['p90']):>10}  p99 {_fmt_s(p['p99']):>10}")
    t = result.transfers.get("received")
    if t and t["count"]:
        click.echo(f"  KV    {t['count']} transfers ({result.transfers['backend']}), {t['bytes'] / 1e6:.1f} MB, "
                   f"mean {t['seconds'] / t['count'] * 1e3:.2f} ms send-to-arrival")
    if following:
        acts = ", ".join(f"{k} {v}" for k, v in summary["scale"].items()) or "no changes"
        click.echo(f"  scale {acts}; {result.rerouted} requests re-routed")
    if output:
        click.echo(f"records written to {output}")


@click.command("validate")
@run_options
@click.option("-o", "--output", type=OutFile(), default=None, help="Write the measured records (CSV).")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False), default=None,
              help="Re-fit the plan's performance model to this profile (e.g. `testbed profile` of the "
                   "engine on this machine) before predicting and simulating; the plan's decision stays.")
@click.option("--records", "records_path", type=click.Path(dir_okay=False), default=None,
              help="Measured records to compare (e.g. `testbed replay -o` against a live endpoint) instead of "
                   "running the testbed; --trace, --head and --time-scale must describe what was replayed.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@guarded
def validate_cmd(output, profile_path, records_path, as_json, **kw):
    """Run the plan on the testbed (or take --records measured elsewhere) and print
    predicted (analytical), simulated and measured p50/p90/p99 TTFT, TPOT, JCT and
    throughput side by side, with errors against measured.

    \b
    Examples:
      testbed validate --plan plan.json --trace t.csv --model opt-125m --layers 4 --hidden 256 --pin-cpus
      testbed validate --plan plan.json --trace t.csv --records measured.csv
    """
    from .kv import default_backend
    from .validate import compare, deployment_for, read_measured, refit, render
    plan, trace, opts = _load(kw, run=records_path is None)
    dep, note = deployment_for(plan, opts), None
    if profile_path:    # before the run: a bad profile fails in seconds, not after the replay
        dep, note = refit(dep, profile_path, opts.kv_backend or default_backend(opts.device))
    if records_path:
        records, read_note = read_measured(records_path, trace)
        table = compare(plan, trace, opts, records, dep=dep)
        table["notes"].append(read_note)
    else:
        result = _execute(plan, trace, opts, not kw["no_progress"], output, kw["iterations_out"], kw["scale_out"])
        table = compare(plan, trace, opts, result.records, dep=dep, iterations=result.iterations, scale=result.scale)
    if note:
        table["notes"].append(note)
    if as_json:
        click.echo(json.dumps(table, indent=2, default=float))
    else:
        click.echo(render(table))


@click.command("worker")
@click.option("--connect", required=True, help="The scheduler's HOST:PORT (printed by `testbed run --remote-...`).")
@click.option("--role", required=True, type=click.Choice(["prefill", "decode"]))
@click.option("--index", required=True, type=Int(lo=0, hi=1023))
@guarded
def worker_cmd(connect, role, index):
    """Join a running testbed from another host (authkey in $TESTBED_AUTHKEY).

    \b
    Example (the command `testbed run --remote-decode 1 ...` prints):
      TESTBED_AUTHKEY=... testbed worker --connect 10.0.0.5:7555 --role decode --index 0
    """
    import os

    from .workers.main import main as worker_main
    from .workers.proto import AUTHKEY_ENV, parse_address
    try:
        _, port = parse_address(connect)
    except ValueError as e:
        raise InputError(f"--connect: {e}") from None
    if not 0 < port < 65536:
        raise InputError(f"--connect {connect}: port {port} is not in 1..65535")
    key = os.environ.get(AUTHKEY_ENV, "")
    try:
        ok = len(bytes.fromhex(key)) > 0
    except ValueError:
        ok = False
    if not ok:
        raise InputError(f"${AUTHKEY_ENV} is {'not set' if not key else 'not a hex key'}: copy it from the command "
                         "the launcher printed (TESTBED_AUTHKEY=... testbed worker --connect ...)")
    sys.exit(worker_main(["--connect", connect, "--role", role, "--index", str(index)]))


COMMANDS = (run_cmd, validate_cmd, worker_cmd)
