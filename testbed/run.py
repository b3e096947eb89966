"""`testbed run`: replay a trace against a plan on real worker processes.

Open loop: request i is released at `arrival_s[i]` (after `--time-scale`) on the wall
clock. Closed loop N: N requests in flight, the next released when one finishes (its
arrival is its release time). Records come back in the shared schema (planner.records),
times in seconds from the start of the replay on the launcher's clock (worker clocks are
converted with the offsets measured at start-up).

Plans over time (a plan with `deployment.windows`, unless `follow_windows` is off or the
role counts are overridden): every process the windows need is started with the cluster
and the routing follows the schedule - drains, flips, re-routes (testbed/windows.py,
testbed/follow.py); the changes come back in `RunResult.scale`.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from planner.errors import InputError
from planner.plan import Deployment
from planner.records import FAILED, FINISHED, NOT_SENT, STATUS_COLUMN, empty_records
from planner.sim.predictor import predictor_from_policies

from . import windows as tw
from .follow import FollowWindows
from .global_scheduler import GlobalScheduler
from .kv import BACKENDS, NEEDS_GROUP, default_backend
from .launcher import Cluster, ClusterSpec, WorkerFailed
from .run_stop import Journal, StopSignals

DEFAULT_DECODE_KV_TOKENS = 65536
RELEASE_EARLY_S = 1e-3
MAX_REPLAY_S = 30 * 86400.0      # an open-loop replay runs in real time: refuse one longer than this


@dataclass(frozen=True)
class RunOptions:
    model: str | None = None           # None: the plan's model
    layers: int | None = None
    hidden: int | None = None
    max_context: int | None = None
    dtype: str = "fp32"
    device: str = "cpu"
    weights_dir: str | None = None
    seed: int = 0                      # weights, prompts, predictor labels, dispatcher
    kv_backend: str | None = None      # None: the same-host fast path for the device
    arena_bytes: int | None = None
    time_scale: float = 1.0
    closed_loop: int | None = None
    decode_kv_tokens: int | None = None   # None: the plan's decode KV capacity
    block_tokens: int = 16
    decode_batch_limit: int = 256
    classifier_layers: int = 1
    classifier_hidden: int = 128
    threads: int = 1                   # torch threads per worker
    pin_cpus: bool = False             # local worker k on the launcher's k-th allowed CPU (mod count)
    host: str = "127.0.0.1"
    advertise: str | None = None
    dist_init: str | None = None
    remote_prefill: int = 0
    remote_decode: int = 0
    heartbeat_timeout_s: float = 60.0
    startup_timeout_s: float = 300.0
    log_dir: str | None = None
    return_tokens: bool = False
    instances: tuple[int, int] | None = None   # override (prefill, decode) counts (static run)
    follow_windows: bool = True        # follow the plan's time windows (when it has any)
    # append each finished request's record to this CSV as it finishes, so that they
    # survive even a SIGKILL of the launcher (the CLI removes it once the records are written)
    journal_path: str | None = None


@dataclass
class RunResult:
    records: pd.DataFrame
    transfers: dict = field(default_factory=dict)
    wall_s: float = 0.0
    error: str = ""
    tokens: dict = field(default_factory=dict)    # rid -> generated tokens (return_tokens)
    # one dict per worker iteration: worker, size (chunk tokens or decode batch), requests
    # (slices in the chunk or the batch), context_tokens (prefill: cached tokens per new
    # token; decode: KV tokens the batch held in total), start_s (run clock), seconds
    iterations: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    # plans over time: every drain / resume / ready / flip / stop / cancel (windows.py)
    scale: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(tw.TESTBED_SCALE_COLUMNS)))
    rerouted: int = 0                  # requests a draining (or busiest) prefill process gave back


class RunFailed(RuntimeError):
    """The run stopped early; `result` holds the records so far."""

    def __init__(self, message: str, result: RunResult):
        super().__init__(message)
        self.result = result


def follows_windows(dep: Deployment, opts: RunOptions) -> bool:
    """Whether a run of `dep` follows its time windows (not with overridden counts)."""
    return bool(dep.windows) and opts.follow_windows and opts.instances is None


def _counts(dep: Deployment, opts: RunOptions) -> tuple[int, int]:
    if opts.instances is not None:
        return opts.instances
    if dep.mode != "disaggregated":
        raise InputError(f"the plan is {dep.mode}; the testbed runs disaggregated plans "
                         "(prefill and decode roles)")
    if follows_windows(dep, opts):
        from planner.sim.scale import check_windows
        check_windows(dep)
        lay = tw.layout(dep.windows)
        return lay.prefill, lay.decode
    return dep.prefill.instances, dep.decode.instances


def decode_kv_tokens(dep: Deployment, opts: RunOptions) -> int:
    if opts.decode_kv_tokens is not None:
        return int(opts.decode_kv_tokens)
    try:
        cap = int(dep.perf("decode").kv_capacity_tokens)
    except Exception:   # noqa: BLE001 - a plan whose GPU/model the catalog cannot size
        cap = 0
    return cap if cap > 0 else DEFAULT_DECODE_KV_TOKENS


def worker_config(dep: Deployment, opts: RunOptions) -> dict:
    """What every worker is told (the launcher adds name, role, rank, rendezvous)."""
    from .checks import check_backend, check_device, check_weights_dir
    device = check_device(opts.device)
    backend = opts.kv_backend or default_backend(device)
    if backend not in BACKENDS:
        raise InputError(f"--kv-backend {backend!r} is not one of {', '.join(BACKENDS)}")
    check_backend(backend, device)
    if opts.weights_dir is not None:
        check_weights_dir(opts.weights_dir)
    pol = dep.policies
    return {
        "device": opts.device, "threads": opts.threads, "kv_backend": backend,
        "arena_bytes": opts.arena_bytes, "prompt_seed": opts.seed,
        "model": {"name": opts.model or dep.model, "layers": opts.layers, "hidden": opts.hidden,
                  "max_context": opts.max_context, "dtype": opts.dtype, "seed": opts.seed,
                  "weights_dir": opts.weights_dir},
        "prefill": {"chunk_tokens": dep.chunk_tokens, "batch_limit": pol.prefill_batch_limit,
                    "order": pol.prefill_order, "classifier_layers": opts.classifier_layers,
                    "classifier_hidden": opts.classifier_hidden},
        "decode": {"admission": pol.decode_admission, "capacity_tokens": decode_kv_tokens(dep, opts),
                   "block_tokens": opts.block_tokens, "batch_limit": opts.decode_batch_limit,
                   "return_tokens": opts.return_tokens},
    }


def _check_trace(trace, opts: RunOptions, dep: Deployment, local_workers: int = 0) -> None:
    from .checks import check_local_workers, check_model_memory
    from .model import scaled_config
    cfg = scaled_config(opts.model or dep.model, opts.layers, opts.hidden, max_context=opts.max_context)
    check_local_workers(local_workers)
    check_model_memory(cfg, opts.dtype, local_workers, opts.device)
    longest = int(np.max(trace.prompt_tokens + trace.output_tokens)) if len(trace) else 0
    if longest > cfg.max_position_embeddings:
        raise InputError(f"a request needs {longest} positions (prompt + output) but the model has "
                         f"{cfg.max_position_embeddings}; pass --max-context {longest} or filter the trace")


def run_trace(dep: Deployment, trace, opts: RunOptions = RunOptions(), *, progress: bool = True,
              echo=None, on_start=None) -> RunResult:
    """Run `trace` on a testbed for deployment `dep`. Raises RunFailed (with the records so
    far) when a worker dies or hangs, or on Ctrl-C. `on_start(cluster)` is called once all
    workers are ready, before the first request (monitoring, fault-injection tests)."""
    if len(trace) == 0:
        raise InputError("the trace has no requests")
    if not 0 < opts.time_scale <= 1e6:
        raise InputError(f"--time-scale must be > 0 and at most 1e6, got {opts.time_scale}")
    if not 0 < opts.heartbeat_timeout_s <= 1e6:
        raise InputError(f"--heartbeat-timeout must be > 0 and at most 1e6 s, got {opts.heartbeat_timeout_s}")
    if opts.closed_loop is not None and opts.closed_loop < 1:
        raise InputError(f"--closed-loop must be >= 1, got {opts.closed_loop}")
    n_p, n_d = _counts(dep, opts)
    base = worker_config(dep, opts)
    if opts.remote_prefill > n_p or opts.remote_decode > n_d:
        raise InputError(f"--remote-prefill {opts.remote_prefill} / --remote-decode {opts.remote_decode}: the run has "
                         f"{n_p} prefill and {n_d} decode workers in all")
    _check_trace(trace, opts, dep, n_p + n_d - opts.remote_prefill - opts.remote_decode)
    echo = echo or (lambda s: print(s, file=sys.stderr))
    arrivals = np.asarray(trace.arrival_s, dtype=float) * opts.time_scale
    span_s = float(arrivals[-1] - arrivals[0])
    if opts.closed_loop is None and not span_s <= MAX_REPLAY_S:
        raise InputError(f"the replay would take {span_s:.3g} s of wall time (arrivals x --time-scale), more than "
                         f"{MAX_REPLAY_S:.0f} s (30 days); use --head, a smaller --time-scale or --closed-loop")
    prompts = np.asarray(trace.prompt_tokens, dtype=np.int64)
    outputs = np.asarray(trace.output_tokens, dtype=np.int64)
    n = len(arrivals)
    predictor = predictor_from_policies(dep.policies)
    buckets = predictor.predict(outputs, seed=opts.seed)
    pred_tokens = predictor.lower_bound_tokens(buckets)
    rec = empty_records(n)
    rec["prompt_tokens"] = prompts
    rec["output_tokens"] = outputs
    cols = {c: rec[c].to_numpy().copy() for c in rec.columns}
    sched = GlobalScheduler(n_p, n_d, dispatcher=dep.policies.dispatcher,
                            decode_capacity_tokens=base["decode"]["capacity_tokens"], seed=opts.seed)
    spec = ClusterSpec(n_p, n_d, host=opts.host, advertise=opts.advertise, remote_prefill=opts.remote_prefill,
                       remote_decode=opts.remote_decode, needs_store=base["kv_backend"] in NEEDS_GROUP,
                       dist_init=opts.dist_init, startup_timeout_s=opts.startup_timeout_s,
                       heartbeat_timeout_s=opts.heartbeat_timeout_s, log_dir=opts.log_dir)
    cluster = Cluster(spec)
    result = RunResult(rec, config=base)
    lay = tw.layout(dep.windows) if follows_windows(dep, opts) else None
    follow = None
    if lay is not None:
        origin = float(arrivals[0]) if opts.closed_loop is None else 0.0
        schedule = tw.Schedule(dep.windows, time_scale=opts.time_scale, origin_s=origin,
                               flip_latency_s=dep.policies.flip_latency_s)

        def place(rid, p):
            cols["prefill_instance"][rid] = p
            _send_request(cluster, p, rid, prompts, outputs, buckets)
        follow = FollowWindows(schedule, sched, cluster.send, place)
        result.config["windows"] = tw.summary(dep.windows)
    bar = None
    finished = 0
    t0 = None
    ctrl_c = journal = None
    try:
        def on_remote(cmds):
            echo("start these workers on their hosts (same project checkout and Python environment):")
            for c in cmds:
                echo("  " + c)
        cluster.start(lambda w, extra: dict(base, **extra, cpus=_cpus_for(w, opts, lay)), on_remote=on_remote)
        ctrl_c = StopSignals()          # from here Ctrl-C and SIGTERM set a flag the loop checks
        journal = Journal(opts.journal_path, cols)
        if on_start is not None:
            on_start(cluster)
        if progress:
            from planner.progress import progress_bar
            bar = progress_bar(n, "requests", "req", leave=False)
        t0 = time.monotonic() + 0.05
        rel = lambda name, t: cluster.to_launcher_time(name, t) - t0   # noqa: E731
        next_i = 0
        in_flight = 0
        last_progress = time.monotonic()
        while finished < n:
            if ctrl_c.pressed:
                raise KeyboardInterrupt(ctrl_c.pressed)
            now = time.monotonic() - t0
            if follow is not None:          # window starts and flip ends before the arrivals
                follow.tick(now)
            # release arrivals
            while next_i < n and ((opts.closed_loop is None and arrivals[next_i] <= now)
                                  or (opts.closed_loop is not None and in_flight < opts.closed_loop)):
                i = next_i
                if opts.closed_loop is not None:
                    cols["arrival_s"][i] = max(now, 0.0)
                else:
                    cols["arrival_s"][i] = arrivals[i]
                p = sched.route(i, int(prompts[i]))
                cols["prefill_instance"][i] = p
                cols["predicted_bucket"][i] = int(buckets[i])
                _send_request(cluster, p, i, prompts, outputs, buckets)
                next_i += 1
                in_flight += 1
            if opts.closed_loop is None and next_i < n:
                # wake 1 ms early: the poll's timeout is rounded up to whole milliseconds, so
                # waiting the full gap would release requests up to 1 ms late
                timeout = min(max(arrivals[next_i] - now - RELEASE_EARLY_S, 0.0), 0.5)
            else:
                timeout = 0.5
            if follow is not None:
                timeout = min(timeout, max(follow.next_event_s() - now - RELEASE_EARLY_S, 0.0))
            for name, msg in cluster.wait(timeout):
                op = msg["op"]
                last_progress = time.monotonic()
                if op == "events":
                    for it in msg.get("iterations") or ([msg] if "t_start" in msg else []):
                        result.iterations.append({
                            "worker": name, "size": it.get("chunk_tokens", it.get("batch")),
                            "requests": it.get("slices", 0), "context_tokens": it.get("context_tokens", 0),
                            "start_s": rel(name, it["t_start"]), "seconds": it["t_end"] - it["t_start"]})
                    for ev in msg["items"]:
                        done = _on_event(ev, name, rel, cols, sched, cluster, dep, prompts, outputs,
                                         pred_tokens, result)
                        if done:
                            journal.add(int(ev["rid"]))
                            finished += 1
                            in_flight -= 1
                            if bar is not None:
                                bar.update(1)
                elif op == "given_back":
                    follow.on_given_back(msg)
                elif op == "kv_sent":
                    sched.kv_sent(int(name[1:]))
                    t = result.transfers.setdefault("sent", {"count": 0, "bytes": 0, "seconds": 0.0})
                    t["count"] += 1
                    t["bytes"] += int(msg["nbytes"])
                    t["seconds"] += float(msg["seconds"])
                    if msg["state"] != "done":
                        raise WorkerFailed(f"KV transfer {msg['xfer']} from {name} failed: {msg['error']}")
            if follow is not None:
                follow.check(time.monotonic() - t0)
            stalled = time.monotonic() - last_progress
            if in_flight and stalled > opts.heartbeat_timeout_s:
                raise WorkerFailed(f"no worker made progress for {stalled:.1f} s with {in_flight} requests "
                                   f"in flight (workers alive but stuck; logs in {cluster.log_dir})")
        result.wall_s = time.monotonic() - t0
    except (WorkerFailed, KeyboardInterrupt) as e:
        why = str(e) if isinstance(e, WorkerFailed) else f"interrupted ({e.args[0] if e.args else 'Ctrl-C'})"
        result.error = why
        _store(result, cols, t0, cluster)
        raise RunFailed(f"testbed run stopped after {finished} of {n} requests: {why}", result) from None
    finally:
        if ctrl_c is not None:
            ctrl_c.restore()
        if journal is not None:
            journal.close()
        if follow is not None:
            result.scale = follow.log_frame()
            result.rerouted = follow.rerouted
        if bar is not None:
            bar.close()
        cluster.stop(grace_s=1.0 if result.error else 5.0)
    _store(result, cols, t0, cluster)
    return result


def _cpus_for(worker, opts: RunOptions, lay=None) -> list[int] | None:
    """--pin-cpus: local workers (rank order: prefill, then decode) on distinct CPUs of the
    launcher's affinity set, round robin; remote workers keep theirs. Following windows
    (`lay`, windows.Layout), a worker sits on its slot's CPU (`Layout.cpu_rank` mod CPUs):
    a prefill and a decode process of one slot share it, like one instance that flips."""
    if not opts.pin_cpus or worker.proc is None or not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    k = worker.rank if lay is None else lay.cpu_rank(lay.slot(worker.role, worker.index))
    return [cpus[k % len(cpus)]]


def _send_request(cluster, p: int, rid: int, prompts, outputs, buckets) -> None:
    cluster.send(f"p{p}", {"op": "request", "rid": rid, "prompt_tokens": int(prompts[rid]),
                           "output_tokens": int(outputs[rid]), "label": int(buckets[rid])})


def _store(result: RunResult, cols: dict, t0, cluster: Cluster) -> None:
    result.records = pd.DataFrame(cols)
    done = np.isfinite(cols["finish_s"].astype(float))
    sent = np.isfinite(cols["arrival_s"].astype(float))
    result.records[STATUS_COLUMN] = np.where(done, FINISHED, np.where(sent, FAILED, NOT_SENT))
    result.transfers["backend"] = result.config.get("kv_backend")
    result.transfers["workers"] = {w.name: w.bye for w in cluster.workers.values() if w.bye}
    result.transfers["relayed_messages"] = cluster.relayed


def _on_event(ev, name, rel, cols, sched, cluster, dep, prompts, outputs, pred_tokens, result) -> bool:
    rid = int(ev["rid"])
    kind = ev["kind"]
    t = rel(name, ev["t"])
    if kind == "prefill_start":
        cols["prefill_start_s"][rid] = t
        sched.started(rid)
    elif kind == "prefilled":
        cols["first_token_s"][rid] = t
        sched.prefilled(rid)
        d = sched.dispatch(rid, int(prompts[rid]), int(pred_tokens[rid]))
        cols["decode_instance"][rid] = d
        cluster.send(f"d{d}", {"op": "expect", "rid": rid, "xfer": rid, "src": name, "shape": ev["shape"],
                               "dtype": ev["dtype"], "prompt_tokens": int(prompts[rid]),
                               "output_tokens": int(outputs[rid]), "first_token": ev["first_token"],
                               "predicted_tokens": int(pred_tokens[rid]), "checksum": ev.get("checksum")})
        cluster.send(name, {"op": "send_kv", "rid": rid, "xfer": rid, "dst": f"d{d}"})
    elif kind == "kv_done":
        cols["kv_done_s"][rid] = t
        r = result.transfers.setdefault("received", {"count": 0, "bytes": 0, "seconds": 0.0})
        r["count"] += 1
        r["bytes"] += int(ev["nbytes"])
        r["seconds"] += float(ev["seconds"])
    elif kind == "decode_start":
        cols["decode_start_s"][rid] = t
    elif kind == "finished":
        cols["finish_s"][rid] = t
        sched.finished(rid)
        if "tokens" in ev:
            result.tokens[rid] = ev["tokens"]
        return True
    return False


def records_or_nan(df: pd.DataFrame) -> pd.DataFrame:
    """Records as written: times rounded to microseconds, NaN where a step never happened."""
    out = df.copy()
    for c in ("arrival_s", "prefill_start_s", "first_token_s", "kv_done_s", "decode_start_s", "finish_s"):
        out[c] = out[c].astype(float).round(6)
    return out


__all__ = ["RunOptions", "RunResult", "RunFailed", "run_trace", "worker_config", "decode_kv_tokens",
           "records_or_nan", "follows_windows"]
