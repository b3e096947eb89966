"""Everything a report shows, gathered by calling the planner and the simulator: one
recommendation per GPU option and for the best mix, its simulation, a load sweep, price
and predictor sensitivity, and the plan over time. Returns plain data (a JSON-able dict)
and the figures."""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import asdict, replace

import numpy as np

from planner import catalog
from planner.search.candidates import SLO
from planner.errors import InfeasibleError, InputError
from planner.plan import MODE_NAMES
from planner.analytic.predict import predict
from planner.search.recommend import recommend
from planner.search.verified import verified_recommend
from planner.workload import DEFAULT_OVERLONG, apply_overlong, overlong_text
from planner.search.schedule import plan_over_time, simulate_schedule
from planner.sim import simulate
from planner.report import plots
from planner.report.render import HOURS_PER_MONTH, Figure, fmt_pct, fmt_s, fmt_usd

DEFAULT_LOADS = (0.25, 0.5, 1.0, 2.0, 4.0)
DEFAULT_SIM_LOADS = (0.5, 2.0)        # simulated points on the latency-vs-load curves (1x is always)
DEFAULT_ACCURACIES = (0.5, 0.749, 0.9, 1.0)
MAX_SIM_REQUESTS = 20_000             # the simulations replay at most this many requests
MAX_SWEEP_SIM_REQUESTS = 5_000        # ... and fewer at the other loads
CDF_POINTS = 2_000


class _Steps:
    """A tqdm bar (stderr) over the report's steps, or nothing."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled:
            from planner.progress import progress_bar
            self.bar = progress_bar(total, "report", "step")

    def __call__(self, what: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(what[:40])
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _head(trace, n: int):
    return trace if len(trace) <= n else trace.head(n)


def describe(dep) -> str:
    """'2 x h100-sxm (TP 1) vLLM-style coupled, chunk 7437' and alike."""
    roles = "; ".join(f"{r} {x.instances} x {x.gpu} (TP {x.tp})" for r, x in dep.roles().items())
    return f"{MODE_NAMES[dep.mode]}: {roles}, chunk {dep.chunk_tokens} tokens"


def _short(dep) -> str:
    return " + ".join(f"{x.instances}x{x.gpu}" + (f"/tp{x.tp}" if x.tp > 1 else "") for x in dep.roles().values())


def _pcts(d: dict | None) -> dict:
    return {k: (d or {}).get(k) for k in ("p50", "p90", "p99")}


def _option_row(name: str, plan, sim_summary: dict | None) -> dict:
    dep = plan.deployment
    modes = {b["mode"]: b for b in plan.baselines}
    coupled = [b for m, b in modes.items() if m != "disaggregated"]
    cheapest_coupled = min(coupled, key=lambda b: b["usd_per_hour"]) if coupled else None
    if dep.mode != "disaggregated":
        cheapest_coupled = {"mode": dep.mode, "deployment": {"coupled": asdict(dep.coupled)},
                            "usd_per_hour": plan.cost["usd_per_hour"]}
    c = None
    if cheapest_coupled is not None:
        role = cheapest_coupled["deployment"]["coupled"]
        c = {"mode": MODE_NAMES[cheapest_coupled["mode"]], "instances": role["instances"], "gpu": role["gpu"],
             "tp": role["tp"], "usd_per_hour": cheapest_coupled["usd_per_hour"]}
    pol = dep.policies
    policies = {"prefill order": pol.prefill_order, "batch limit": pol.prefill_batch_limit,
                "dispatcher": pol.dispatcher, "decode admission": pol.decode_admission}
    sim = None
    if sim_summary:
        sim = {m: _pcts(sim_summary.get(m)) for m in ("ttft_s", "tpot_s", "jct_s")}
        sim["slo_attainment"] = sim_summary.get("slo_attainment")
    return {
        "name": name, "feasible": True, "reason": "", "mode": MODE_NAMES[dep.mode],
        "roles": [{"role": r, "gpu": x.gpu, "instances": x.instances, "tp": x.tp} for r, x in dep.roles().items()],
        "chunk_tokens": dep.chunk_tokens, "policies": policies, "describe": describe(dep),
        "usd_per_hour": plan.cost["usd_per_hour"], "usd_per_month": plan.cost["usd_per_hour"] * HOURS_PER_MONTH,
        "usd_per_million_tokens": plan.cost["usd_per_million_tokens"],
        "usd_per_million_output_tokens": plan.cost.get("usd_per_million_output_tokens"),
        "tokens_per_s_per_usd": plan.cost["tokens_per_s_per_usd_hour"],
        "predicted": {m: _pcts(plan.predictions.get(m)) for m in ("ttft_s", "tpot_s", "jct_s")},
        "simulated": sim, "coupled": c, "verdict": plan.verdict,
        "gpus": sum(x.gpus for x in dep.roles().values()),
        "verification": _verification_row(plan),
    }


def _verification_row(plan) -> dict:
    """How the option's plan was checked before it was chosen: on what, its margin, memory."""
    v = plan.verification or {}
    if not v.get("verified"):
        return {"verified": False, "text": v.get("note", "not verified")}
    sim = v["plan"]
    return {"verified": True, "on": v["trace"]["note"], "margin": (v.get("margin") or {}).get("text", ""),
            "kv_peak_fraction": sim["kv_peak_fraction"], "preempted_share": sim["preempted_share"],
            "preemption_flag": sim["preemption_flag"], "rejected": len(v.get("rejected") or ()),
            "next_size_up": (v.get("next_size_up") or {}).get("deployment")}


def _reprice(dep, kind: str, provider, overrides) -> float | None:
    total = 0.0
    for r in dep.roles().values():
        try:
            usd, _ = catalog.price_usd_per_gpu_hour(r.gpu, kind, provider, overrides)
        except InputError:
            return None
        total += usd * r.gpus
    return total


def build_report(trace, gpus, *, model: str = "opt-13b", slo: SLO = SLO(), price_kind: str = "on_demand",
                 provider: str | None = None, overrides: dict | None = None, price_file: str | None = None,
                 loads=DEFAULT_LOADS, sim_loads=DEFAULT_SIM_LOADS, accuracies=DEFAULT_ACCURACIES,
                 window_s: float | None = 300.0, max_sim_requests: int = MAX_SIM_REQUESTS,
                 max_sweep_sim_requests: int = MAX_SWEEP_SIM_REQUESTS, seed: int = 0,
                 progress: bool = False, title: str | None = None, recommend_kw: dict | None = None,
                 overlong: str = DEFAULT_OVERLONG, verify: bool = True):
    """(report dict, figures) for `trace` on each of `gpus` and their best mix. Requests
    longer than the model's context are treated per `overlong` once, for every plan and
    simulation; each option's plan is verified in simulation (`verify`) with its frontier."""
    import time
    t_start = time.perf_counter()
    spec = catalog.model(model)
    trace, overlong_info = apply_overlong(trace, spec.max_context, overlong, spec.name)
    gpu_names = list(dict.fromkeys(catalog.gpu(g).name for g in gpus))
    if not gpu_names:
        raise InputError("give at least one --gpu")
    q = f"p{slo.percentile}"     # every latency figure at the SLO's percentile
    loads = sorted(set(float(x) for x in loads) | {1.0})
    if any(not x > 0 for x in loads):
        raise InputError("load scales must be > 0")
    kw = dict(model=model, slo=slo, price_kind=price_kind, provider=provider, price_overrides=overrides,
              seed=seed, overlong="keep", **(recommend_kw or {}))   # the trace is already treated
    options = [(g, [g]) for g in gpu_names] + ([("best mix", gpu_names)] if len(gpu_names) > 1 else [])
    n_opt = len(options)
    # per option: recommend, simulate, one re-plan per other load, the simulated loads, the
    # latency curve; then prices, each accuracy, the schedule ILP and its 4 simulations, figures
    steps = _Steps(n_opt * (3 + (len(loads) - 1) + len(sim_loads)) + 1 + len(accuracies)
                   + (5 if window_s else 0) + 1, progress)
    notes, timings = [], {}

    # 1. the cheapest plan per option, and its simulation at 1x
    plans, rows, sims = {}, [], {}
    sim_trace = _head(trace, max_sim_requests)
    slo_kw = {"slo_ttft_s": slo.ttft_s, "slo_tpot_s": slo.tpot_s}
    for name, g in options:
        try:
            plans[name] = verified_recommend(trace, g, runners_up=0, verify=verify, frontier=len(g) == 1, **kw)
        except InfeasibleError as e:
            plans[name] = None
            rows.append({"name": name, "feasible": False, "reason": str(e)})
        steps(f"recommend {name}")
        if plans[name] is not None:
            same = next((o for o in sims if _short(plans[o].deployment) == _short(plans[name].deployment)
                         and plans[o].deployment == plans[name].deployment), None)
            sims[name] = sims[same] if same else simulate(plans[name], sim_trace, seed=seed, **slo_kw)
            rows.append(_option_row(name, plans[name], sims[name].summary))
        steps(f"simulate {name}")
    timings["plans_and_simulations_s"] = time.perf_counter() - t_start
    feasible = [r for r in rows if r["feasible"]]
    best = min(feasible, key=lambda r: (r["usd_per_hour"], r["name"] == "best mix")) if feasible else None
    over = overlong_text(overlong_info)
    if over:
        notes.append(f"Context: {over}; every plan and simulation below uses the trace so treated.")
    if verify:
        notes.append("Each option's plan was replayed in the simulator before it was chosen: cheaper candidates that "
                     "missed the SLO there were passed over (the option table says how many, and the margin each "
                     "plan holds to).")
    if len(sim_trace) < len(trace):
        notes.append(f"Simulations replay the first {len(sim_trace):,} of the trace's {len(trace):,} requests "
                     f"(--max-sim-requests); predictions use the whole trace.")
    else:
        notes.append(f"Simulations replay all {len(trace):,} requests of the trace.")

    # 2. cost vs load (re-planned at each load) and latency vs load (the 1x plan under more load)
    t1 = time.perf_counter()
    sweep, curves = {}, {}
    for name, g in options:
        sweep[name] = []
        for f in loads:
            if f == 1.0:
                p = plans[name]
            else:
                try:
                    p = recommend(trace.time_scaled(1.0 / f), g, **kw)
                except InfeasibleError:
                    p = None
                steps(f"cost at {f}x {name}")
            sweep[name].append({"scale": f, "usd_per_hour": p.cost["usd_per_hour"] if p else None,
                                "deployment": _short(p.deployment) if p else None})
        if plans[name] is None:
            steps(f"latency vs load {name}")
            continue
        dep = plans[name].deployment
        curve = []
        for f in loads:
            pr = predict(dep, trace.time_scaled(1.0 / f), seed=seed)
            row = {"scale": f, f"pred_ttft_{q}_s": _finite(pr["ttft_s"][q]),
                   f"pred_tpot_{q}_s": _finite(pr["tpot_s"][q])}
            s = None
            if f == 1.0:
                s = sims[name].summary
            elif f in sim_loads:
                s = simulate(dep, _head(trace.time_scaled(1.0 / f), max_sweep_sim_requests), seed=seed,
                             **slo_kw).summary
                steps(f"simulate {f}x {name}")
            if s:
                row[f"sim_ttft_{q}_s"] = _finite(s["ttft_s"][q])
                row[f"sim_tpot_{q}_s"] = _finite(s["tpot_s"][q])
            curve.append(row)
        curves[name] = curve
        steps(f"latency vs load {name}")
    timings["load_sweep_s"] = time.perf_counter() - t1
    notes.append(f"Cost vs load: the plan is re-optimised at each load ({', '.join(f'{x:g}x' for x in loads)} the "
                 "trace's rate, arrivals compressed or stretched in time; the 1x plan verified in simulation, the "
                 "others by the queueing model). Latency vs load: the 1x plan kept fixed "
                 f"as load grows; predicted at every load, simulated at 1x and at "
                 f"{', '.join(f'{x:g}x' for x in sim_loads)} on the first {max_sweep_sim_requests:,} requests.")

    # 3. price sensitivity: each option's plan at on-demand, spot and reserved prices
    price_sens = {r["name"]: {k: _reprice(plans[r["name"]].deployment, k, provider, overrides)
                              for k in catalog.PRICE_KINDS} for r in feasible}
    steps("prices")
    cheapest_by_kind = {}
    for k in catalog.PRICE_KINDS:
        vals = {n: v[k] for n, v in price_sens.items() if v[k] is not None and n != "best mix"}
        if vals:
            cheapest_by_kind[k] = min(vals, key=vals.get)

    # 4. predictor accuracy: the best plan simulated with a worse or a perfect length predictor
    pred_rows, pred_subject = [], None
    if best is not None:
        dep, pred_subject = _predictor_subject(plans[best["name"]])
        for a in accuracies:
            d2 = replace(dep, policies=replace(dep.policies, predictor_accuracy=float(a)))
            s = simulate(d2, sim_trace, seed=seed, perfect_predictor=a >= 1.0, **slo_kw).summary
            pred_rows.append({"accuracy": float(a), f"ttft_{q}_s": _finite(s["ttft_s"][q]),
                              f"tpot_{q}_s": _finite(s["tpot_s"][q]),
                              f"jct_{q}_s": _finite(s["jct_s"][q]), "slo_attainment": s.get("slo_attainment")})
            steps(f"predictor {a}")

    if pred_subject:
        notes.append(pred_subject)

    # 5. plans over time for the best option
    schedule = None
    if best is not None and window_s:
        t2 = time.perf_counter()
        schedule = _schedule_section(trace, sim_trace, plans[best["name"]], sims[best["name"]].summary, window_s,
                                     price_kind, provider, overrides, seed, slo_kw, steps)
        timings["schedule_s"] = time.perf_counter() - t2
        notes.append(schedule.pop("note"))

    # 6. figures
    figures = _figures(rows, sweep, curves, sims, price_sens, pred_rows, schedule, slo, best, trace, window_s)
    steps("figures")
    frontiers = {name: [r for r in plans[name].frontier if r.get("on_frontier", True)]
                 for name, _ in options if plans.get(name) is not None and plans[name].frontier}
    if frontiers:
        figures.insert(1, Figure("frontier", "Cost-latency frontier",
                                 f"Per GPU option, the plans no other beats on $/hour, p{slo.percentile} TTFT and "
                                 f"p{slo.percentile} TPOT at once, each replayed in the simulator (those missing the "
                                 "SLO there dropped); ringed: the plan recommended for that option.",
                                 plots.frontier(frontiers, slo.ttft_s, slo.tpot_s, slo.percentile)))
    report = {
        "title": title or f"Capacity report: {getattr(trace, 'name', '') or 'trace'} on {', '.join(gpu_names)}",
        "generated": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "model": catalog.model(model).name,
        "slo": slo.as_dict(), "slo_text": _slo_text(slo), "gpus": gpu_names, "price_kind": price_kind,
        "trace": _trace_stats(trace), "options": rows, "best": best["name"] if best else None,
        "load_sweep": sweep, "latency_vs_load": curves, "price_sensitivity": price_sens,
        "cheapest_by_price_kind": cheapest_by_kind, "predictor_sensitivity": pred_rows, "schedule": schedule,
        "prices": _prices(gpu_names, plans, overrides, price_file),
        "overlong": overlong_info, "frontier": frontiers,
    }
    report["recommendation"], report["facts"] = _recommendation(report, plans)
    timings["total_s"] = time.perf_counter() - t_start
    report["timings_s"] = timings
    notes.append("Predictions: the queueing model (docs/model.md); simulations: the discrete-event simulator "
                 f"(planner/sim) with the paper's policies, seed {seed}. Report built in "
                 f"{timings['total_s']:.0f} s.")
    report["notes"] = notes
    steps.close()
    return report, figures


def _predictor_subject(plan):
    """The deployment whose sensitivity to the length predictor is worth showing: the plan
    itself when disaggregated (the predictor steers dispatch and decode admission), else
    the cheapest disaggregated plan meeting the SLO (coupled modes do not use it)."""
    from planner.plan import deployment_from_dict
    dep = plan.deployment
    if dep.mode == "disaggregated":
        return dep, None
    dis = next((b for b in plan.baselines if b["mode"] == "disaggregated"), None)
    if dis is None:
        return dep, ("The recommended plan is coupled and no disaggregated plan meets the SLO: the length "
                     "predictor, which only disaggregated plans use, does not change its results.")
    d = deployment_from_dict(dis["deployment"], "baseline")
    d = replace(d, policies=dep.policies, efficiency=dep.efficiency)
    return d, (f"Predictor sensitivity is shown for the cheapest disaggregated plan ({describe(d)}, "
               f"${dis['usd_per_hour']:.2f}/h): the recommended plan is coupled and does not use the predictor.")


def _finite(v):
    return float(v) if v is not None and math.isfinite(v) else None


def _slo_text(slo: SLO) -> str:
    p = f"p{slo.percentile}"
    out = f"{p} TTFT <= {fmt_s(slo.ttft_s)}, {p} TPOT <= {fmt_s(slo.tpot_s)}"
    return out + (f", {p} JCT <= {fmt_s(slo.jct_s)}" if slo.jct_s else "")


def _trace_stats(trace) -> dict:
    from planner.workload import interarrival_cv
    p, o = trace.prompt_tokens, trace.output_tokens

    def pc(x):
        q = np.percentile(x, [50, 90, 99])
        return {"mean": float(x.mean()), "p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2])}
    return {"name": getattr(trace, "name", ""), "requests": len(trace), "span_s": trace.span_s,
            "rate_per_s": trace.rate_per_s, "interarrival_cv": interarrival_cv(trace.arrival_s),
            "prompt_tokens": pc(p), "output_tokens": pc(o)}


def _prices(gpu_names, plans, overrides, price_file) -> dict:
    used = []
    for plan in plans.values():
        if plan is None:
            continue
        for g, v in plan.inputs.get("prices", {}).items():
            row = {"gpu": g, "kind": plan.inputs.get("price_kind", "on_demand"),
                   "usd_per_gpu_hour": v["usd_per_gpu_hour"],
                   "source": v["source"] + (f" ({price_file})" if v["source"] == "user override" and price_file else "")}
            if row not in used:
                used.append(row)
    cat = [{"gpu": p.gpu, "provider": p.provider, "kind": p.kind, "usd_per_gpu_hour": p.usd_per_gpu_hour,
            "as_of": p.as_of, "source": p.source} for p in catalog.prices() if p.gpu in gpu_names]
    return {"used": used, "catalog": cat, "overrides": dict(overrides or {}), "file": price_file}


def _schedule_section(trace, sim_trace, plan, base_sim: dict, window_s, price_kind, provider, overrides, seed,
                      slo_kw, steps) -> dict:
    from planner.search.schedule import STRATEGIES
    # the schedule is planned and checked on the same requests the simulations replay
    timed = plan_over_time(sim_trace, plan, window_s, price_kind=price_kind, provider=provider,
                           overrides=overrides)
    steps("schedule ILP")
    sch = timed.cost["schedule"]
    rows, counts = [], {}
    for s in STRATEGIES:
        if s not in sch["strategies"]:
            steps(f"simulate {s}")
            continue
        d = sch["strategies"][s]
        p = plan_over_time(sim_trace, plan, window_s, strategy=s, price_kind=price_kind, provider=provider,
                           overrides=overrides) if s != sch["strategy"] else timed
        res = simulate_schedule(p.deployment, sim_trace, seed=seed, **slo_kw)["summary"]
        rows.append({**{k: d[k] for k in ("strategy", "usd_per_hour", "saved_vs_static", "instance_hours",
                                          "peak_instances", "flips", "starts", "reserved")},
                     "simulated": {"slo_attainment": res.get("slo_attainment"), "ttft_s": _pcts(res.get("ttft_s")),
                                   "tpot_s": _pcts(res.get("tpot_s"))}})
        counts[s] = d["counts"]
        steps(f"simulate {s}")
    recommended = {"strategy": "recommended plan (whole trace)", "usd_per_hour": plan.cost["usd_per_hour"],
                   "saved_vs_static": 1 - plan.cost["usd_per_hour"] / sch["strategies"]["static_peak"]["usd_per_hour"],
                   "instance_hours": sum(r.instances for r in plan.deployment.roles().values()) * sim_trace.span_s / 3600,
                   "peak_instances": {r: x.instances for r, x in plan.deployment.roles().items()},
                   "flips": 0, "starts": 0, "reserved": [],
                   "simulated": {"slo_attainment": base_sim.get("slo_attainment"),
                                 "ttft_s": _pcts(base_sim.get("ttft_s")), "tpot_s": _pcts(base_sim.get("tpot_s"))}}
    rows.insert(0, recommended)
    by = {r["strategy"]: r for r in rows}
    chosen = by[sch["strategy"]]
    static = by["static_peak"]
    summary = (f"The trace cut into {len(sch['requests'])} windows of {window_s:g} s; each window's instances "
               f"from the queueing model (its requests must meet the SLO within the window). Cheapest schedule: "
               f"{sch['strategy']} at {fmt_usd(chosen['usd_per_hour'])}/h, "
               f"{fmt_pct(chosen['saved_vs_static'])} less than one static plan sized for the peak window "
               f"({fmt_usd(static['usd_per_hour'])}/h); simulated SLO attainment "
               f"{fmt_pct(chosen['simulated']['slo_attainment'])} vs {fmt_pct(static['simulated']['slo_attainment'])}. "
               f"The recommended plan, sized for the trace as a whole, costs {fmt_usd(recommended['usd_per_hour'])}/h "
               f"with simulated attainment {fmt_pct(recommended['simulated']['slo_attainment'])}: it meets the SLO "
               f"over the whole trace, not in every window. "
               f"Flip latency {sch['flip_latency_s']:g} s, instance start-up {sch['startup_s']:g} s (billed), "
               f"{price_kind.replace('_', '-')} prices; reserved_burst reserves a base at the catalog's reserved "
               "price" + (" (none here: that price is not below the one used for on-demand)."
                          if "reserved_burst" in by and not any(by["reserved_burst"]["reserved"]) else "."))
    rate = [n / window_s for n in sch["requests"]]
    return {"window_s": window_s, "chosen": sch["strategy"], "summary": summary, "strategies": rows,
            "start_s": sch["strategies"][sch["strategy"]]["start_s"], "rate_per_s": rate, "counts": counts,
            "need": sch["need"], "last_window_s": sim_trace.span_s - sch["strategies"][sch["strategy"]]["start_s"][-1],
            "usd_per_hour": {r["strategy"]: r["usd_per_hour"] for r in rows if r["strategy"] in counts},
            "window_notes": list(sch.get("notes") or []),
            "note": (f"Plans over time: each {window_s:g} s window sized by the queueing model on its own requests; "
                     f"each schedule replayed in one simulation of the whole trace that follows it (instances "
                     f"started {sch['startup_s']:g} s ahead and billed from then, drains and flips taking the time "
                     f"they take, backlog carried from window to window).")}


def _figures(rows, sweep, curves, sims, price_sens, pred_rows, schedule, slo, best, trace, window_s) -> list[Figure]:
    figs = [Figure("cost_vs_load", "Cost vs load",
                   "$/hour of the cheapest plan meeting the SLO, re-optimised at each load; x marks a load no plan "
                   "of that option meets.", plots.cost_vs_load(sweep))]
    if curves:
        q = f"p{slo.percentile}"
        figs.append(Figure("latency_vs_load", f"{q} TTFT and TPOT vs load",
                           "Each option's 1x plan kept fixed as load grows: lines predicted by the queueing model, "
                           "open markers simulated; dashed: the SLO. Both axes are logarithmic.",
                           plots.latency_vs_load(curves, slo.ttft_s, slo.tpot_s, slo.percentile)))
        samples = {}
        for r in rows:
            if r["feasible"]:
                from planner.records import latencies
                lat = latencies(sims[r["name"]].records)
                samples[r["name"]] = {k: _thin(lat[k]) for k in ("ttft_s", "tpot_s")}
        figs.append(Figure("latency_cdfs", "Latency CDFs (simulated)",
                           "TTFT and TPOT of every simulated request per option (log time axis); dashed: the SLO, "
                           f"dotted: {slo.percentile}% of requests. A curve crossing the dotted line left of the dashed "
                           f"one meets the {q} target.",
                           plots.latency_cdfs(samples, slo.ttft_s, slo.tpot_s, slo.percentile)))
    if schedule:
        counts = {k: schedule["counts"][k] for k in schedule["counts"]}
        figs.append(Figure("instances_over_time", "Instances per role over the trace's time",
                           f"Request rate per {window_s:g} s window and the instances each strategy runs (solid), "
                           "with the fractional instances the queueing model says each window needs (dotted); "
                           "each panel's title gives the strategy's $/hour.",
                           plots.instances_over_time(schedule["start_s"], schedule["rate_per_s"], counts,
                                                     schedule["start_s"][-1] + schedule["last_window_s"],
                                                     usd_per_hour=schedule.get("usd_per_hour"),
                                                     need=schedule.get("need"))))
    if price_sens:
        figs.append(Figure("price_sensitivity", "Sensitivity to price",
                           "Each option's plan priced at the catalog's on-demand, spot and reserved prices "
                           "(each kind's median over the providers that list it, so a kind listed only by "
                           "dearer providers can cost more than on-demand; n/a: no such price listed).",
                           plots.price_sensitivity(price_sens)))
    if pred_rows:
        flat = all(len({round(r[k], 6) if r.get(k) is not None else None for r in pred_rows}) == 1
                   for k in (f"ttft_p{slo.percentile}_s", f"tpot_p{slo.percentile}_s", "slo_attainment"))
        figs.append(Figure("predictor_sensitivity", "Sensitivity to the length predictor",
                           f"The {best['name']} option's disaggregated plan simulated with output-length predictors of "
                           "several accuracies (1.0: perfect; the paper's classifier: 0.749)."
                           + (" The lines are flat: for this plan the predicted lengths change neither which decode "
                              "instance takes a request nor when it is admitted (a single decode instance, or KV "
                              "memory to spare)." if flat else ""),
                           plots.predictor_sensitivity(pred_rows, slo.ttft_s, slo.tpot_s, slo.percentile)))
    return figs


def _thin(x: np.ndarray) -> list[float]:
    x = np.sort(np.asarray(x, dtype=float))
    if len(x) > CDF_POINTS:
        x = x[np.linspace(0, len(x) - 1, CDF_POINTS).astype(int)]
    return x.tolist()


def _simulated_misses(row: dict, slo: dict) -> str:
    """'p90 TTFT 1.04 s against 1.00 s (+4%; predicted 891 ms)' for each simulated
    percentile over its target."""
    sim, q = row.get("simulated") or {}, f"p{slo.get('percentile', 90)}"
    out = []
    for key, name in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("jct_s", "JCT")):
        v, limit = (sim.get(key) or {}).get(q), slo.get(key)
        if v is not None and limit and v > limit:
            pred = ((row.get("predicted") or {}).get(key) or {}).get(q)
            out.append(f"{q} {name} {fmt_s(v)} against {fmt_s(limit)} ({v / limit - 1:+.0%}"
                       + (f"; predicted {fmt_s(pred)})" if pred is not None else ")"))
    return "; ".join(out)


def _recommendation(report: dict, plans: dict) -> tuple[str, list[str]]:
    best = next((r for r in report["options"] if r["name"] == report["best"]), None)
    if best is None:
        reasons = "; ".join(f"{r['name']}: {r['reason']}" for r in report["options"])
        return f"No option meets {report['slo_text']}. {reasons}", []
    dep = plans[best["name"]].deployment
    sim = best.get("simulated") or {}
    text = (f"Recommendation: {describe(dep)}, at {fmt_usd(best['usd_per_hour'])}/hour "
            f"({fmt_usd(best['usd_per_month'])}/month, {fmt_usd(best['usd_per_million_tokens'])} per million tokens, prompt + output), "
            f"the cheapest option meeting {report['slo_text']}.")
    q = f"p{report['slo'].get('percentile', 90)}"
    facts = [f"Predicted {q} TTFT {fmt_s(best['predicted']['ttft_s'][q])}, {q} TPOT "
             f"{fmt_s(best['predicted']['tpot_s'][q])}; simulated {fmt_s((sim.get('ttft_s') or {}).get(q))} "
             f"and {fmt_s((sim.get('tpot_s') or {}).get(q))}, SLO attainment {fmt_pct(sim.get('slo_attainment'))}."]
    ver = best.get("verification") or {}
    if ver.get("verified"):
        facts.append(f"Checked in simulation before it was chosen ({ver['on']})"
                     + (f"; {ver['rejected']} cheaper or equal candidate(s) missed the SLO there" if ver["rejected"] else "")
                     + (f"; margin: {ver['margin']}" if ver.get("margin") else "") + ".")
        facts.append(f"KV memory (simulated): peak {fmt_pct(ver['kv_peak_fraction'])} of capacity, "
                     f"{fmt_pct(ver['preempted_share'])} of requests preempted"
                     + (f" - above 0.5%: the next size up is {ver['next_size_up']}" if ver.get("preemption_flag")
                        and ver.get("next_size_up") else "") + ".")
    else:
        facts.append(f"Not verified in simulation: {ver.get('text', '')}.")
    miss = _simulated_misses(best, report["slo"])
    if miss:
        facts.append(f"Caution: the simulator puts this plan over the target: {miss}. The queueing model that "
                     "sized it is inside; leave headroom, or compare the next option and the schedules below "
                     "(their simulated attainment is shown).")
    others = sorted((r for r in report["options"] if r["feasible"] and r["name"] not in (best["name"], "best mix")),
                    key=lambda r: r["usd_per_hour"])
    if others:
        o = others[0]
        facts.append(f"Next cheapest: {o['name']} at {fmt_usd(o['usd_per_hour'])}/hour "
                     f"({o['usd_per_hour'] / best['usd_per_hour'] - 1:+.0%}).")
    facts.append(f"Disaggregation: {best['verdict']}.")
    kinds = report.get("cheapest_by_price_kind") or {}
    if len(set(kinds.values())) > 1:
        facts.append("The cheapest single GPU type depends on the price kind: "
                     + ", ".join(f"{k} {v}" for k, v in kinds.items()) + ".")
    sch = report.get("schedule")
    if sch:
        facts.append(sch["summary"].split(". ", 1)[1] if ". " in sch["summary"] else sch["summary"])
    return text, facts
