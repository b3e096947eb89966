"""`testbed validate`: predicted (analytical queueing model), simulated (discrete-event
simulator) and measured (testbed) percentiles of one plan on one trace, side by side.

The three see the same deployment (role counts after any --prefill/--decode override),
the same trace (after --head and --time-scale), the same predictor labels (same seed)
and the simulator's dispatch and admission rules. Errors are model / measured - 1.
Throughput is finished requests per second from the first arrival to the last finish
(planner.records.summarize); the analytical model's figure is the trace's requests over
its span plus the predicted median JCT (it predicts latencies, not a makespan).

Plans over time: when the run follows the plan's windows, the simulator replays the same
windows on the same clock (`time_scale`), with new instances ready at once (the testbed's
processes are already running: start latency 0), and both scale logs are counted side by
side. The analytical column is "-": it predicts one static deployment per window, not a
replay whose counts change under it.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from planner.errors import InputError
from planner.records import summarize

METRICS = ("ttft_s", "tpot_s", "jct_s")
PCTS = ("p50", "p90", "p99")


def deployment_for(plan, opts):
    """The deployment the run serves: the plan's, with overridden counts (a static run),
    or without its windows when the run does not follow them."""
    from .run import follows_windows
    dep = plan.deployment
    if opts.instances is not None:
        p, d = opts.instances
        dep = replace(dep, prefill=replace(dep.prefill, instances=p), decode=replace(dep.decode, instances=d))
    if dep.windows and not follows_windows(dep, opts):
        dep = replace(dep, windows=())
    return dep


def refit(dep, profile_path: str, kv_backend: str | None = None):
    """The deployment with its performance model re-fitted to `profile_path` (e.g. a
    profile of the engine taken on this machine just now); the decision - roles, counts,
    chunk, policies - stays. The KV link is fitted on the path the testbed's connector
    takes: a same-host copy for shm / cuda-ipc, `calibrate`'s auto choice otherwise.
    Returns (deployment, note)."""
    from planner import catalog
    from planner.perf.calibrate import calibrate

    from .kv import SAME_HOST

    gpus = sorted({r.gpu for r in dep.roles().values()})
    if len(gpus) != 1:
        raise InputError(f"--profile re-fits one device; the plan uses {', '.join(gpus)}")
    path = "copy" if kv_backend in SAME_HOST else "auto"
    cal = calibrate(profile_path, gpus[0], dep.model, memory_gb=catalog.gpu(gpus[0]).memory_gb, kv_path=path)
    if cal.gpu.vendor == "local":
        catalog.register_gpu(cal.gpu)
    dep = replace(dep, efficiency=cal.efficiency, kv_link_gb_s=cal.kv_link_gb_s or dep.kv_link_gb_s,
                  kv_latency_s=dep.kv_latency_s if cal.kv_latency_s is None else max(cal.kv_latency_s, 1e-6))
    return dep, f"models re-fitted to {profile_path}: {cal.efficiency.source}; KV link {cal.kv_path or '-'} path"


def read_measured(path: str, trace) -> tuple:
    """(records, note) from a record CSV measured elsewhere (`testbed replay`, a simulator
    or testbed run); its rows must be the trace's requests (after --head)."""
    import pandas as pd

    from planner.records import STATUS_COLUMN, check_records
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise InputError(f"--records {path}: no such file") from None
    except (ValueError, OSError) as e:
        raise InputError(f"--records {path}: not a readable CSV ({str(e)[:150]})") from None
    check_records(df, where=f"--records {path}")
    for c in ("arrival_s", "prompt_tokens", "output_tokens", "first_token_s", "finish_s"):
        try:
            df[c] = pd.to_numeric(df[c])
        except (ValueError, TypeError):
            raise InputError(f"--records {path}: column {c} holds something that is not a number") from None
    if len(df) != len(trace):
        raise InputError(f"--records {path} has {len(df)} requests but the trace (after --head) has {len(trace)}; "
                         "give the trace, --head and --time-scale that were replayed")
    done = int(np.isfinite(df["finish_s"].to_numpy(dtype=float)).sum())
    kinds = ""
    if STATUS_COLUMN in df.columns:
        counts = df[STATUS_COLUMN].astype(str).value_counts()
        kinds = " (" + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")"
    return df, f"measured: {path}, {done} of {len(df)} requests finished{kinds}; not run here"


def _err(model, measured):
    if model is None or measured is None or not (math.isfinite(model) and math.isfinite(measured)) or measured <= 0:
        return None
    return model / measured - 1.0


def _actions(log) -> dict:
    if log is None or len(log) == 0:
        return {}
    return {str(k): int(v) for k, v in log["action"].value_counts().sort_index().items()}


def compare(plan, trace, opts, measured_records, dep=None, iterations=None, scale=None) -> dict:
    """{metric: {pct: {predicted, simulated, measured, predicted_error, simulated_error}}},
    plus throughput rows, notes, request segments (simulated vs measured) and, given the
    run's `iterations`, measured iteration times against the model (`diagnose`). `dep`:
    the deployment the models see (default the plan's, with the run's role counts).
    `scale`: the run's scale log (RunResult.scale), counted against the simulator's."""
    from .diagnose import iteration_fit, segments
    from .speed import retimed

    if opts.closed_loop is not None:
        raise InputError("validate compares open-loop replays; drop --closed-loop")
    dep = dep or deployment_for(plan, opts)
    scaled = trace.time_scaled(opts.time_scale) if opts.time_scale != 1.0 else trace
    predicted, sim = _models(dep, trace, scaled, opts)
    simulated = sim.summary
    measured = summarize(measured_records)
    out: dict = {"metrics": _metrics(predicted, simulated, measured), "notes": []}
    jct50 = (predicted.get("jct_s") or {}).get("p50")
    span = float(scaled.span_s)
    pred_rps = len(scaled) / (span + jct50) if jct50 is not None and math.isfinite(jct50) else None
    thr = {"predicted": pred_rps, "simulated": simulated.get("requests_per_s"),
           "measured": measured.get("requests_per_s")}
    thr["predicted_error"] = _err(thr["predicted"], thr["measured"])
    thr["simulated_error"] = _err(thr["simulated"], thr["measured"])
    out["requests_per_s"] = thr
    out["finished"] = {"simulated": simulated.get("finished"), "measured": measured.get("finished"),
                       "requests": len(scaled)}
    out["segments"] = {"simulated": segments(sim.records), "measured": segments(measured_records)}
    if iterations:
        out["iterations"] = fit = iteration_fit(iterations, dep)
        if dep.mode == "disaggregated" and {"prefill", "decode"} <= set(fit):
            factors = {r: fit[r]["time_weighted"] for r in ("prefill", "decode")}
            p2, s2 = _models(retimed(dep, factors["prefill"], factors["decode"]), trace, scaled, opts)
            out["retimed"] = {"factors": factors, "metrics": _metrics(p2, s2.summary, measured)}
    if dep.windows:
        out["scale"] = {"simulated": _actions(sim.scale), "measured": _actions(scale)}
        out["notes"].append(f"predicted: - (the analytical model sizes one static deployment; this run follows "
                            f"{len(dep.windows)} time windows); simulated: the same windows, start latency 0")
    if not predicted.get("feasible", True):
        out["notes"].append("analytical model: infeasible (" + "; ".join(map(str, predicted.get("limits", []))) + ")")
    if opts.decode_kv_tokens is not None:
        out["notes"].append(f"testbed decode KV capacity {opts.decode_kv_tokens} tokens (--decode-kv-tokens); "
                            "the models use the plan's")
    return out


def _models(dep, trace, scaled, opts):
    """(analytical prediction, simulation) of `dep` on the trace."""
    from planner.analytic.predict import predict
    from planner.sim import simulate
    if dep.windows:
        # the windows' times scale with the arrivals: the simulator scales both
        return {}, simulate(dep, trace, seed=opts.seed, block_tokens=opts.block_tokens, time_scale=opts.time_scale,
                            decode_batch_limit=opts.decode_batch_limit, start_latency_s=0.0)
    return predict(dep, scaled, seed=opts.seed), simulate(dep, scaled, seed=opts.seed, block_tokens=opts.block_tokens,
                                                          decode_batch_limit=opts.decode_batch_limit)


def _metrics(predicted: dict, simulated: dict, measured: dict) -> dict:
    out = {}
    for m in METRICS:
        out[m] = {}
        for q in PCTS:
            a = (predicted.get(m) or {}).get(q)
            s = (simulated.get(m) or {}).get(q)
            x = (measured.get(m) or {}).get(q)
            out[m][q] = {"predicted": a, "simulated": s, "measured": x,
                         "predicted_error": _err(a, x), "simulated_error": _err(s, x)}
    return out


def _ms(v) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v * 1e3:9.2f}"


def _pct(v) -> str:
    return "-" if v is None else f"{v * 100:+6.1f}%"


def render(table: dict) -> str:
    lines = [f"{'metric':<10}{'predicted':>11}{'simulated':>11}{'measured':>11}{'pred err':>10}{'sim err':>10}",
             f"{'':<10}{'(ms)':>11}{'(ms)':>11}{'(ms)':>11}"]
    for m, rows in table["metrics"].items():
        for q, r in rows.items():
            lines.append(f"{m[:-2].upper() + ' ' + q:<10}{_ms(r['predicted']):>11}{_ms(r['simulated']):>11}"
                         f"{_ms(r['measured']):>11}{_pct(r['predicted_error']):>10}{_pct(r['simulated_error']):>10}")
    t = table["requests_per_s"]

    def f(v):
        return "-" if v is None else f"{v:9.3f}"
    lines.append(f"{'req/s':<10}{f(t['predicted']):>11}{f(t['simulated']):>11}{f(t['measured']):>11}"
                 f"{_pct(t['predicted_error']):>10}{_pct(t['simulated_error']):>10}")
    fin = table["finished"]
    lines.append(f"finished: simulated {fin['simulated']}/{fin['requests']}, measured {fin['measured']}/{fin['requests']}")
    if "scale" in table:
        def acts(d):
            return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"
        lines.append(f"scale log: simulated {acts(table['scale']['simulated'])}; "
                     f"measured {acts(table['scale']['measured'])}")
    lines.extend("note: " + n for n in table["notes"])
    rt = table.get("retimed")
    if rt:
        f = rt["factors"]
        lines.append(f"at the run's own speed (not a prediction: model iteration times x{f['prefill']:.2f} prefill, "
                     f"x{f['decode']:.2f} decode, the run's measured/model; what is left is queueing and hand-off), "
                     "errors pred/sim:")
        lines.append("  " + "   ".join(f"{m[:-2].upper()} {q} {_pct(r['predicted_error']).strip()}/"
                                       f"{_pct(r['simulated_error']).strip()}"
                                       for m, rows in rt["metrics"].items() for q, r in rows.items() if q != "p99"))
    from .diagnose import render as render_diagnosis
    extra = render_diagnosis(table)
    return "\n".join(lines + ([extra] if extra else []))
