"""Predicted next to simulated: run a plan's deployment and its baselines through the
simulator and line the numbers up (what `planner recommend --verify` and
`planner simulate --baselines` print)."""
from __future__ import annotations

import math

from planner.plan import Plan, deployment_from_dict
from planner.sim.run import simulate

METRICS = ("ttft_s", "tpot_s", "jct_s")


def verify_plan(plan: Plan, trace, *, seed: int = 0, progress: bool = False, baselines: bool = True,
                **sim_kw) -> list[dict]:
    """One row per deployment (the plan's, then each baseline's): label, deployment,
    `predicted` (the plan's own percentiles), `simulated` (the simulator's summary) and
    `error` (predicted / simulated - 1 for each metric's p50/p90/p99: the prediction's
    error, the simulation taken as the truth)."""
    slo = plan.inputs.get("slo") or {}
    sim_kw.setdefault("slo_ttft_s", slo.get("ttft_s"))
    sim_kw.setdefault("slo_tpot_s", slo.get("tpot_s"))
    rows = [("plan", plan.deployment, plan.predictions)]
    if baselines:
        for i, b in enumerate(plan.baselines):
            if "deployment" in b:
                label = b.get("label") or b["deployment"].get("mode", f"baseline{i}")
                rows.append((label, deployment_from_dict(b["deployment"], f"plan.baselines[{i}]"),
                             b.get("predictions", {})))
    out = []
    for label, dep, pred in rows:
        res = simulate(dep, trace, seed=seed, progress=progress, **sim_kw)
        out.append({"label": label, "deployment": dep, "predicted": pred, "simulated": res.summary,
                    "error": relative_errors(pred, res.summary), "stats": res.stats})
    return out


def relative_errors(predicted: dict, simulated: dict) -> dict:
    """predicted / simulated - 1 per metric and percentile (None where either is missing
    or not finite)."""
    out = {}
    for m in METRICS:
        p, s = predicted.get(m) or {}, simulated.get(m) or {}
        out[m] = {}
        for q in ("p50", "p90", "p99"):
            a, b = p.get(q), s.get(q)
            ok = (a is not None and b is not None and math.isfinite(a) and math.isfinite(b) and b > 0)
            out[m][q] = (a / b - 1.0) if ok else None
    return out


PREEMPT_FLAG_SHARE = 0.005   # a plan preempting more than this share of its requests is flagged


def replay(dep, vt, slo, *, seed: int = 0, step_scale: float = 1.0, rate_scale: float = 1.0,
           progress: bool = False) -> dict:
    """Replay `vt` (a `planner.sim.sample.VerifyTrace`) against `dep` and judge it against
    `slo` (ttft_s, tpot_s, percentile, jct_s): percentiles (weighted when `vt` is a sample),
    SLO attainment, each target's ratio (simulated percentile / target), whether it meets
    every target with every counted request finished, and what memory did - the share of
    requests preempted at least once, the peak KV occupancy of the fullest instance and the
    headroom left (1 - peak). `step_scale` slows every engine step, `rate_scale` multiplies
    the arrival rate (the margin search)."""
    import numpy as np

    from planner.sim.sample import weighted_quantiles
    res = simulate(dep, vt.trace, seed=seed, progress=progress, step_scale=step_scale, rate_scale=rate_scale,
                   slo_ttft_s=slo.ttft_s, slo_tpot_s=slo.tpot_s)
    r = res.records
    arrival = r["arrival_s"].to_numpy(dtype=float)
    first = r["first_token_s"].to_numpy(dtype=float)
    finish = r["finish_s"].to_numpy(dtype=float)
    out_tok = r["output_tokens"].to_numpy()
    w = vt.weights
    counted = np.ones(len(r), dtype=bool) if w is None else w > 0
    done = np.isfinite(finish)
    multi = done & (out_tok > 1)
    ttft, jct = first - arrival, finish - arrival
    tpot = np.where(multi, (finish - first) / np.maximum(out_tok - 1, 1), np.nan)
    qs = (50, 90, 99)

    def pcts(x, mask):
        vals = weighted_quantiles(x[mask & counted], None if w is None else w[mask & counted], qs)
        return {f"p{q}": v for q, v in zip(qs, vals)}

    out = {"ttft_s": pcts(ttft, done), "tpot_s": pcts(tpot, multi), "jct_s": pcts(jct, done)}
    q = f"p{slo.percentile}"
    ok = done & (ttft <= slo.ttft_s) & (~multi | (tpot <= slo.tpot_s))
    wc = np.ones(len(r)) if w is None else w
    total_w = float(wc[counted].sum())
    out["slo_attainment"] = float(wc[counted & ok].sum() / total_w) if total_w > 0 else float("nan")
    ratios = {"ttft": out["ttft_s"][q] / slo.ttft_s, "tpot": out["tpot_s"][q] / slo.tpot_s}
    if getattr(slo, "jct_s", None) is not None:
        ratios["jct"] = out["jct_s"][q] / slo.jct_s
    ratios = {k: (float(v) if np.isfinite(v) else float("inf")) for k, v in ratios.items()}
    unfinished = int(np.count_nonzero(counted & ~done))
    preempted = int(res.stats.get("preempted_requests", 0))
    kv_peak = float(res.stats.get("kv_peak_fraction", 0.0))
    out.update({
        "percentile": q, "ratios": ratios, "worst_ratio": max(ratios.values()),
        "limited_by": max(ratios, key=ratios.get),
        "meets": unfinished == 0 and all(v <= 1.0 for v in ratios.values()),
        "requests": int(np.count_nonzero(counted)), "replayed": int(len(r)), "unfinished": unfinished,
        "preempted_requests": preempted, "preempted_share": preempted / len(r) if len(r) else 0.0,
        "preemptions": int(res.stats.get("preemptions", 0)), "kv_peak_fraction": kv_peak,
        "kv_headroom": 1.0 - kv_peak, "step_scale": float(step_scale), "rate_scale": float(rate_scale),
        "wall_s": float(res.stats.get("wall_s", 0.0)),
    })
    out["preemption_flag"] = out["preempted_share"] > PREEMPT_FLAG_SHARE
    return out


CAPACITY_CLIENTS_PER_BATCH = 1.25    # concurrent requests per instance, over its batch limit (the queue never empties)
CAPACITY_ROUNDS = 3                  # requests = rounds x clients


def capacity_per_s(dep, trace, *, seed: int = 0, decode_batch_limit: int = 256) -> float:
    """Requests per second the deployment completes when it is never short of work: a
    closed loop keeping 1.25x its batch limit of requests per (decode or coupled) instance
    in the system, lengths drawn from `trace`; the rate of completions over the middle
    third of them (after the ramp, before the tail). A coupled pool's instances share
    nothing (fewest-outstanding dispatch), so one instance is run and its rate multiplied
    by the count; a disaggregated plan runs with at most two decode instances and its
    prefill pool in proportion, the rate scaled back up."""
    import numpy as np
    from dataclasses import replace

    from planner.sim.run import simulate_closed_loop
    per_instance = int(CAPACITY_CLIENTS_PER_BATCH * decode_batch_limit)
    scale = 1.0
    if dep.coupled is not None and not dep.windows:
        scale = dep.coupled.instances
        dep = replace(dep, coupled=replace(dep.coupled, instances=1))
        clients = per_instance
    else:
        # a large disaggregated plan runs scaled down to at most two decode instances, its
        # prefill pool in proportion, and its rate is scaled back up by the smaller ratio
        p, d = dep.prefill.instances, dep.decode.instances
        k = max(1, d // 2)
        p2, d2 = max(1, round(p / k)), max(1, round(d / k))
        if k > 1 and not dep.windows:
            scale = min(p / p2, d / d2)
            dep = replace(dep, prefill=replace(dep.prefill, instances=p2), decode=replace(dep.decode, instances=d2))
        clients = per_instance * dep.decode.instances
    res = simulate_closed_loop(dep, clients=clients, requests=CAPACITY_ROUNDS * clients, trace=trace, seed=seed,
                               decode_batch_limit=decode_batch_limit)
    fin = np.sort(res.records["finish_s"].to_numpy(dtype=float))
    fin = fin[np.isfinite(fin)]
    if len(fin) < 6:
        return 0.0
    a, b = fin[len(fin) // 3], fin[2 * len(fin) // 3]
    return float(scale * (2 * len(fin) // 3 - len(fin) // 3) / (b - a)) if b > a else float("inf")


LONG_RUN_MAX_UTILISATION = 0.95     # of the saturated throughput, over the whole trace


def long_run(capacity_rps: float, window_requests, window_duration_s, slo) -> dict:
    """Whether the trace's load over its whole span stays within `capacity_rps`: a fluid
    queue of its windows' arrivals (a backlog carried from window to window, drained at the
    capacity) and the share of requests arriving to a backlog that alone would make them
    wait longer than the TTFT target. A plan whose share exceeds 100 - percentile % misses
    the TTFT target over the whole trace whatever short windows show (a queue growing by 2%
    of the load per second is invisible in a ten-second window and hours deep by the end).
    The fluid queue has no randomness, so the trace's mean load must also stay within
    LONG_RUN_MAX_UTILISATION of the throughput: 17 x A100 TP2 on the 1M-request trace ran at
    98% of its measured throughput and its full replay queued for minutes (p90 TTFT 141 s);
    18 x at 92% met the SLO (0.39 s)."""
    import numpy as np
    n = np.asarray(window_requests, dtype=float)
    d = np.asarray(window_duration_s, dtype=float)
    backlog = np.zeros(len(n))
    b = 0.0
    for i in range(len(n)):
        b = max(0.0, b + n[i] - capacity_rps * d[i])
        backlog[i] = b
    start = np.concatenate([[0.0], backlog[:-1]])
    wait_lo = np.minimum(start, backlog) / capacity_rps if capacity_rps > 0 else np.full(len(n), np.inf)
    late = float(n[wait_lo > slo.ttft_s].sum() / max(n.sum(), 1.0))
    rate = float(n.sum() / max(d.sum(), 1e-9))
    return {"capacity_per_s": capacity_rps, "mean_rate_per_s": rate,
            "peak_window_rate_per_s": float((n / np.maximum(d, 1e-9)).max()) if len(n) else 0.0,
            "utilisation": rate / capacity_rps if capacity_rps > 0 else float("inf"),
            "late_share": late, "final_backlog_requests": float(backlog[-1]) if len(n) else 0.0,
            "max_utilisation": LONG_RUN_MAX_UTILISATION,
            "meets": late <= (100 - slo.percentile) / 100.0 and rate <= LONG_RUN_MAX_UTILISATION * capacity_rps}


def capacity_job(vt, slo, seed, dep) -> float:
    """`capacity_per_s` of `dep` on the verification trace's lengths (a Replayer job)."""
    return capacity_per_s(dep, vt.trace, seed=seed)
