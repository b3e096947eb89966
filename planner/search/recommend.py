"""`recommend(trace, gpus, ...) -> Plan`: workload summary, candidate pools, the integer
program, then full predictions, cost and the verdict for the chosen plan and the baselines."""
from __future__ import annotations

import copy
import time

import numpy as np

from planner import catalog
from planner.search.candidates import (DEFAULT_CHUNKS, DEFAULT_SARATHI_BUDGETS, DEFAULT_TPS, KV_LATENCY_S, SLO, coupled_options, engine_for,
                         decode_options, kv_link_gb_s, perf_models, prefill_options, tp_problem)
from planner.errors import InfeasibleError, InputError
from planner.search.optimizer import Choice, MODE_CHOICES, infeasible_message, pair_ok as latency_pair_ok, pair_samples, solve
from planner.engines.config import EngineConfig
from planner.perf.profile import Efficiency
from planner.plan import Deployment, Plan, Policies, Role
from planner.search.budget import best_at, equal_budget
from planner.analytic.predict import predict
from planner.analytic.queueing import predict_disaggregated
from planner.search.verdict import compare
from planner.workload import DEFAULT_WINDOW_S, build_workload


def recommend(trace, gpus=("a100",), model: str = "opt-13b", slo: SLO = SLO(), *,
              price_kind: str = "on_demand", provider: str | None = None, price_overrides: dict | None = None,
              tps=DEFAULT_TPS, chunks=None, sarathi_budgets=DEFAULT_SARATHI_BUDGETS, mode: str = "auto",
              max_gpus: int | None = None, window_s: float = DEFAULT_WINDOW_S, efficiency: Efficiency | None = None,
              kv_link_override_gb_s: float | None = None, policies: Policies = Policies(), runners_up: int = 3,
              solver: str = "highs", dtype: str = "fp16", seed: int = 0,
              engine: EngineConfig = EngineConfig()) -> Plan:
    """Plan the cheapest deployment of `model` on `gpus` meeting `slo` for `trace`.

    Raises InfeasibleError (why, in numbers, and what would help) when nothing meets it."""
    t0 = time.perf_counter()
    if mode not in MODE_CHOICES:
        raise InputError(f"mode {mode!r} is not one of {', '.join(MODE_CHOICES)}")
    if slo.percentile not in (50, 90, 99):
        raise InputError(f"SLO percentile must be 50, 90 or 99, got {slo.percentile}")
    if not (slo.ttft_s > 0 and slo.tpot_s > 0) or (slo.jct_s is not None and not slo.jct_s > 0):
        raise InputError("SLO targets must be > 0 seconds")
    if runners_up < 0:
        raise InputError(f"--runners-up must be >= 0, got {runners_up}")
    if max_gpus is not None and max_gpus < 1:
        raise InputError(f"--max-gpus must be >= 1, got {max_gpus}")
    eff = efficiency
    spec_model = catalog.model(model)
    tp_notes = {tp: tp_problem(spec_model, tp) for tp in tps}
    if all(tp_notes.values()):
        raise InputError("no usable --tp: " + "; ".join(tp_notes.values())
                         + f" (usable: {', '.join(str(t) for t in range(1, 9) if not tp_problem(spec_model, t))})")
    tps = tuple(tp for tp, why in tp_notes.items() if why is None)
    tp_warnings = [f"{why}: not considered" for why in tp_notes.values() if why]
    gpu_names = list(dict.fromkeys(catalog.gpu(g).name for g in gpus))
    prices, price_src = {}, {}
    for g in gpu_names:
        prices[g], price_src[g] = catalog.price_usd_per_gpu_hour(g, price_kind, provider, price_overrides)
    wl = build_workload(trace, window_s=window_s, seed=seed)
    perfs = perf_models(gpu_names, model, tps, eff, dtype, engine)
    if not perfs:
        raise InfeasibleError(f"{spec_model.name} ({spec_model.weight_bytes(dtype) / 1e9:.1f} GB of weights) fits "
                              f"none of {', '.join(gpu_names)} at TP in {sorted(tps)}: allow a larger --tp or a bigger GPU")
    sat = {k: pm.saturation_chunk_tokens() for k, pm in perfs.items()}
    chunk_set = sorted(set(chunks or DEFAULT_CHUNKS) | (set() if chunks else {v for (g, tp), v in sat.items() if tp == 1}))

    kv_bytes_tok = next(iter(perfs.values())).kv_bytes_per_token
    kv_rate = float((wl.window_sum_prompt / wl.window_duration_s).max() * kv_bytes_tok / 1e9)
    if kv_link_override_gb_s:
        kv_rate_options = 0.0   # the link is the user's; size pools by the SLO only
    else:
        kv_rate_options = kv_rate
    rejections: list = []
    families: list = []
    pre, dec = [], []
    if mode in ("auto", "disaggregated"):
        pre = prefill_options(wl, perfs, slo, prices, chunk_set, policies.prefill_batch_limit, rejections,
                              kv_rate_options, families)
        dec = decode_options(wl, perfs, slo, prices, rejections, seed, kv_rate_options, families)
    cpl = []
    if mode != "disaggregated":
        cpl = coupled_options(wl, perfs, slo, prices, model, dtype, eff,
                              sarathi_budgets if mode in ("auto", "chunked_coupled") else (), rejections, seed,
                              families, engine)
        if mode == "coupled":
            cpl = [c for c in cpl if c.role == "coupled"]
            families = [f for f in families if f.role == "coupled"]

    pair_cache: dict = {}

    def pair_ok(p, d):
        key = (_key(p), _key(d))
        if key not in pair_cache:
            pair_cache[key] = latency_pair_ok(p, d, wl, kv_bytes_tok, KV_LATENCY_S, slo, kv_link_override_gb_s)
        return pair_cache[key]

    def pair_detail(pairs) -> str:
        """The best percentile TPOT (and JCT) any of `pairs` reaches, for the message."""
        q = slo.percentile
        best_tpot, best_jct = float("inf"), float("inf")
        for i, j in pairs:
            _, tpot, jct = pair_samples(pre[i], dec[j], wl, kv_bytes_tok, KV_LATENCY_S, kv_link_override_gb_s)
            if len(tpot):
                best_tpot = min(best_tpot, float(np.percentile(tpot, q)))
            best_jct = min(best_jct, float(np.percentile(jct, q)))
        text = f"the best pair reaches p{q} TPOT {best_tpot * 1e3:.1f} ms"
        return text + (f" and p{q} JCT {best_jct:.2f} s" if slo.jct_s is not None else "")

    if not ((pre and dec) or cpl):
        raise InfeasibleError(infeasible_message(slo, rejections, bool(pre), bool(dec), bool(cpl)))

    def run(runners: int):
        """Solve with the pair constraints generated lazily: a chosen (prefill, decode) pair
        that misses the TPOT (transfer included) or JCT target is cut, together with every
        other decode option that prefill pool fails with, and the ILP re-solved."""
        bad: set = set()
        checked: set = set()
        while True:
            sol = solve(pre, dec, cpl, kv_rate_gb_s=kv_rate_options, slo=slo, mode=mode, max_gpus=max_gpus,
                        bad_pairs=sorted(bad), runners_up=runners, solver=solver, pair_detail=pair_detail)
            found = [c for c in [sol.best, *sol.runners_up, sol.best_per_mode.get("disaggregated")]
                     if c is not None and c.prefill is not None]
            new = False
            for c in found:
                i = next(k for k, o in enumerate(pre) if o is c.prefill)
                j = next(k for k, o in enumerate(dec) if o is c.decode)
                if (i, j) in bad or pair_ok(pre[i], dec[j]):
                    continue
                new = True
                if i not in checked:
                    checked.add(i)
                    bad |= {(i, k) for k, d in enumerate(dec) if not pair_ok(pre[i], d)}
                bad.add((i, j))
            if not new:
                return sol

    # The candidates hold a few instance counts per family; plans of any other counts that
    # cost exactly the least cost join them, so the tie-break by headroom sees every plan at
    # that cost (they cannot lower the cost, only win the tie).
    least = run(0).best.usd_per_hour
    known = {_key(o) for o in pre + dec + cpl}
    for c in best_at(families, least, slo, kv_rate_options, max_gpus, pair_ok).values():
        for o, pool in ((c.prefill, pre), (c.decode, dec), (c.coupled, cpl)):
            if o is not None and _key(o) not in known:
                known.add(_key(o))
                pool.append(o)
    sol = run(runners_up)

    def deployment(c: Choice) -> Deployment:
        if c.coupled is not None:
            o = c.coupled
            return Deployment(o.role, spec_model.name, o.chunk_tokens, coupled=Role(o.gpu, o.instances, o.tp),
                              dtype=dtype, policies=policies, efficiency=eff,
                              engine=engine_for(engine, o.role, o.chunk_tokens))
        link = kv_link_override_gb_s or min(kv_link_gb_s(catalog.gpu(c.prefill.gpu), c.prefill.tp),
                                            kv_link_gb_s(catalog.gpu(c.decode.gpu), c.decode.tp))
        return Deployment("disaggregated", spec_model.name, c.prefill.chunk_tokens,
                          prefill=Role(c.prefill.gpu, c.prefill.instances, c.prefill.tp),
                          decode=Role(c.decode.gpu, c.decode.instances, c.decode.tp),
                          dtype=dtype, policies=policies, kv_link_gb_s=link, efficiency=eff, engine=engine)

    tokens_s = float((wl.prompt_tokens.sum() + wl.output_tokens.sum()) / max(wl.span_s, 1e-9))

    summaries: dict = {}

    def summary(c: Choice) -> dict:
        """Full prediction of a chosen deployment, once per deployment (the plan, its
        baselines, runners-up and the equal-budget pair often name the same one)."""
        key = tuple(None if o is None else _key(o) for o in (c.prefill, c.decode, c.coupled))
        if key not in summaries:
            dep = deployment(c)
            if c.coupled is not None and c.coupled.prediction is not None:
                pred = c.coupled.prediction   # the candidate's own prediction (same deployment, seed and SLO)
            elif c.prefill is not None and _reusable(c.prefill, dep, policies, kv_bytes_tok):
                # the prefill option's TTFT and KV-transfer samples are this deployment's
                pred = predict_disaggregated(dep, wl, seed, slo, known_ttft_s=c.prefill.ttft_sample,
                                             known_transfer_s=c.prefill.transfer_sample)
            else:
                pred = predict(dep, wl, seed=seed, slo=slo)
            summaries[key] = {"deployment": _dep_dict(dep), "usd_per_hour": c.usd_per_hour, "gpus": c.gpus,
                              "cost": _cost(c.usd_per_hour, tokens_s, wl), "predictions": _clean(pred)}
        return copy.deepcopy(summaries[key])

    best = summary(sol.best)
    baselines = [summary(c) | {"mode": m} for m, c in sol.best_per_mode.items() if m != sol.best.mode]
    runners = [summary(c) for c in sol.runners_up]
    same = equal_budget(sol.best_per_mode, families, slo, kv_rate_options, max_gpus, pair_ok)
    comparison = compare(sol, best, baselines, same, summary, slo)
    verdict = comparison["verdict"]
    warnings = tp_warnings + _warnings(wl, spec_model, best["predictions"])
    inputs = {
        "trace": wl.stats(), "model": spec_model.name, "dtype": dtype, "gpus": gpu_names,
        "prices": {g: {"usd_per_gpu_hour": prices[g], "source": price_src[g]} for g in gpu_names},
        "price_kind": price_kind, "slo": slo.as_dict(), "mode": mode, "max_gpus": max_gpus,
        "calibrated": eff is not None, "efficiency_source": perfs[next(iter(perfs))].source_name,
        "step_cost_sources": {f"{g}/tp{tp}": pm.source_name for (g, tp), pm in perfs.items()},
        "candidates": {"tp": sorted({tp for _, tp in perfs}), "chunks": chunk_set,
                       "sarathi_budgets": list(sarathi_budgets),
                       "saturation_chunk_tokens": {f"{g}/tp{tp}": v for (g, tp), v in sat.items()},
                       "prefill_options": len(pre), "decode_options": len(dec), "coupled_options": len(cpl)},
        "kv_rate_peak_gb_s": kv_rate,
        "optimizer": {"solver": sol.solver, "variables": sol.variables, "constraints": sol.constraints,
                      "solves": sol.solves, "solve_s": sol.solve_s,
                      "order": "least $/hour, then most SLO headroom (smallest max(TTFT/target, TPOT/target)), "
                               "then smallest sum of those ratios"},
        "warnings": warnings, "planning_s": time.perf_counter() - t0, "seed": seed,
    }
    return Plan(deployment(sol.best), inputs=inputs, predictions=best["predictions"], cost=best["cost"],
                baselines=tuple(baselines), runners_up=tuple(runners), verdict=verdict, comparison=comparison)


def _reusable(p, dep: Deployment, policies: Policies, kv_bytes_per_token: float) -> bool:
    """Whether a prefill option's samples are exactly what `predict_disaggregated` computes
    for `dep`: its transfer was made at the deployment's link, latency and KV size, with the
    same prefill batch limit."""
    return (p.transfer_fn is not None and p.ttft_sample is not None
            and dep.kv_link_gb_s == kv_link_gb_s(catalog.gpu(p.gpu), p.tp) and dep.kv_latency_s == KV_LATENCY_S
            and dep.perf("decode").kv_bytes_per_token == kv_bytes_per_token
            and dep.policies.prefill_batch_limit == policies.prefill_batch_limit)


def _key(o) -> tuple:
    return o.role, o.gpu, o.tp, o.instances, o.chunk_tokens


def _dep_dict(dep: Deployment) -> dict:
    from dataclasses import asdict
    d = asdict(dep)
    d.pop("efficiency", None)
    d.pop("policies", None)
    return d


def _cost(usd_per_hour: float, tokens_s: float, wl) -> dict:
    out_tok_s = float(wl.output_tokens.sum() / max(wl.span_s, 1e-9))
    return {"usd_per_hour": usd_per_hour,
            "usd_per_million_tokens": usd_per_hour / (3600.0 * tokens_s) * 1e6 if tokens_s > 0 else float("inf"),
            "usd_per_million_output_tokens": usd_per_hour / (3600.0 * out_tok_s) * 1e6 if out_tok_s > 0 else float("inf"),
            "tokens_per_s": tokens_s, "tokens_per_s_per_usd_hour": tokens_s / usd_per_hour}


def _clean(obj):
    """Infinities and NaN to None so the plan is strict JSON."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _warnings(wl, spec_model, pred) -> list[str]:
    out = []
    over = int(((wl.prompt_tokens + wl.output_tokens) > spec_model.max_context).sum())
    if over:
        out.append(f"{over} of {wl.requests} requests ({over / wl.requests:.0%}) exceed {spec_model.name}'s "
                   f"{spec_model.max_context}-token context; planned as given (the cost model does not depend on "
                   f"learned positions), a longer-context model would serve them faithfully")
    if wl.span_s < 10 * wl.window_s and wl.requests > 1 and wl.span_s < 60:
        out.append(f"the trace spans only {wl.span_s:.1f} s; tail percentiles rest on few requests")
    return out
