"""`recommend(trace, gpus, ...) -> Plan`: the analytical plan (workload summary, candidate
pools, the integer program; `planner.search.space`), then full predictions, cost and the
verdict for the chosen plan and the baselines (`assemble`). Plans checked in the simulator
before they are returned: `planner.search.verified`."""
from __future__ import annotations

import copy
import time

import numpy as np

from planner import catalog
from planner.search.candidates import (DEFAULT_SARATHI_BUDGETS, DEFAULT_TPS, KV_LATENCY_S, SLO, engine_for,
                                       kv_link_gb_s)
from planner.search.optimizer import Choice
from planner.engines.config import EngineConfig
from planner.perf.profile import Efficiency
from planner.plan import Deployment, Plan, Policies, Role
from planner.search.budget import equal_budget
from planner.analytic.predict import predict
from planner.analytic.queueing import predict_disaggregated
from planner.search.kv_rule import real_memory
from planner.search.space import build_space, check_inputs, key_of as _key, solve_space
from planner.search.verdict import compare
from planner.workload import DEFAULT_OVERLONG, DEFAULT_WINDOW_S, apply_overlong


def recommend(trace, gpus=("a100",), model: str = "opt-13b", slo: SLO = SLO(), *,
              price_kind: str = "on_demand", provider: str | None = None, price_overrides: dict | None = None,
              tps=DEFAULT_TPS, chunks=None, sarathi_budgets=DEFAULT_SARATHI_BUDGETS, mode: str = "auto",
              max_gpus: int | None = None, window_s: float = DEFAULT_WINDOW_S, efficiency: Efficiency | None = None,
              kv_link_override_gb_s: float | None = None, policies: Policies = Policies(), runners_up: int = 3,
              solver: str = "highs", dtype: str | None = None, seed: int = 0,
              engine: EngineConfig = EngineConfig(), overlong: str = DEFAULT_OVERLONG,
              kv_rule: str = "gaussian", spare: int = 0) -> Plan:
    """Plan the cheapest deployment of `model` on `gpus` meeting `slo` for `trace`, by the
    analytical model alone (KV memory by the Gaussian rule unless `kv_rule` says otherwise).
    Requests longer than the model's context are treated per `overlong` (reject, truncate,
    keep); `spare` instances per role are added to (and priced into) every plan.

    Raises InfeasibleError (why, in numbers, and what would help) when nothing meets it."""
    t0 = time.perf_counter()
    check_inputs(slo, mode, runners_up, max_gpus, kv_rule, spare)
    spec_model = catalog.model(model)
    dtype = spec_model.formats(dtype)[0]
    trace, overlong_info = apply_overlong(trace, spec_model.max_context, overlong, spec_model.name)
    space = build_space(trace, gpus, model, slo, price_kind=price_kind, provider=provider,
                        price_overrides=price_overrides, tps=tps, chunks=chunks, sarathi_budgets=sarathi_budgets,
                        mode=mode, max_gpus=max_gpus, window_s=window_s, efficiency=efficiency,
                        kv_link_override_gb_s=kv_link_override_gb_s, policies=policies, solver=solver, dtype=dtype,
                        seed=seed, engine=engine, kv_rule=kv_rule, spare=spare)
    sol = solve_space(space, runners_up)
    return assemble(space, sol, sol.best, sol.runners_up, sol.best_per_mode, t0=t0, policies=policies,
                    efficiency=efficiency, dtype=dtype, seed=seed, engine=engine, price_kind=price_kind,
                    sarathi_budgets=sarathi_budgets, overlong_info=overlong_info)


class Summaries:
    """Full predictions of chosen deployments, once per deployment (the plan, its baselines,
    runners-up and the equal-budget pair often name the same one)."""

    def __init__(self, space, *, policies: Policies, efficiency, dtype: str, seed: int, engine: EngineConfig):
        self.space, self.policies, self.eff, self.dtype, self.seed, self.engine = (
            space, policies, efficiency, dtype, seed, engine)
        self.cache: dict = {}
        wl = space.wl
        self.tokens_s = float((wl.prompt_tokens.sum() + wl.output_tokens.sum()) / max(wl.span_s, 1e-9))

    def deployment(self, c: Choice) -> Deployment:
        s, spare = self.space, self.space.spare
        name = s.spec_model.name

        def role(o) -> Role:   # the pool's instances in the layout its performance model was chosen in
            return Role(o.gpu, o.instances + spare, o.tp, ep=s.perfs[(o.gpu, o.tp)].ep)
        moe_dtype = next(iter(s.perfs.values())).moe_dtype
        if c.coupled is not None:
            o = c.coupled
            return Deployment(o.role, name, o.chunk_tokens, coupled=role(o), dtype=self.dtype, moe_dtype=moe_dtype,
                              policies=self.policies, efficiency=self.eff,
                              engine=engine_for(self.engine, o.role, o.chunk_tokens))
        link = s.kv_link_override_gb_s or min(kv_link_gb_s(catalog.gpu(c.prefill.gpu), c.prefill.tp),
                                              kv_link_gb_s(catalog.gpu(c.decode.gpu), c.decode.tp))
        return Deployment("disaggregated", name, c.prefill.chunk_tokens, prefill=role(c.prefill),
                          decode=role(c.decode), dtype=self.dtype, moe_dtype=moe_dtype, policies=self.policies,
                          kv_link_gb_s=link, efficiency=self.eff, engine=self.engine)

    def __call__(self, c: Choice) -> dict:
        key = tuple(None if o is None else _key(o) for o in (c.prefill, c.decode, c.coupled))
        if key not in self.cache:
            s, wl, seed = self.space, self.space.wl, self.seed
            dep = self.deployment(c)
            if c.coupled is not None and c.coupled.prediction is not None and not s.spare:
                pred = c.coupled.prediction   # the candidate's own prediction (same deployment, seed and SLO)
                if s.kv_rule == "simulated":
                    pred = real_memory(pred, dep.perf("coupled"))
            elif c.prefill is not None and not s.spare and _reusable(c.prefill, dep, self.policies, s.kv_bytes_tok):
                # the prefill option's TTFT and KV-transfer samples are this deployment's
                pred = predict_disaggregated(dep, wl, seed, s.slo, known_ttft_s=c.prefill.ttft_sample,
                                             known_transfer_s=c.prefill.transfer_sample)
            else:
                pred = predict(dep, wl, seed=seed, slo=s.slo)
            self.cache[key] = {"deployment": _dep_dict(dep), "usd_per_hour": c.usd_per_hour, "gpus": dep.gpus,
                               "cost": _cost(c.usd_per_hour, self.tokens_s, wl), "predictions": _clean(pred)}
        return copy.deepcopy(self.cache[key])


def assemble(space, sol, best_choice: Choice, runner_choices, best_per_mode, *, t0: float, policies: Policies,
             efficiency, dtype: str, seed: int, engine: EngineConfig, price_kind: str, sarathi_budgets,
             overlong_info: dict | None = None, summaries: Summaries | None = None) -> Plan:
    """The Plan of `best_choice`: its full prediction and cost, the runners-up, each mode's
    best as a baseline, the verdict (at an equal budget where one exists) and the inputs."""
    summary = summaries or Summaries(space, policies=policies, efficiency=efficiency, dtype=dtype, seed=seed,
                                     engine=engine)
    slo, wl = space.slo, space.wl
    sol.best, sol.best_per_mode = best_choice, dict(best_per_mode)
    best = summary(best_choice)
    baselines = [summary(c) | {"mode": m} for m, c in best_per_mode.items() if m != best_choice.mode]
    runners = [summary(c) for c in runner_choices]
    same = None if space.spare else equal_budget(best_per_mode, space.families, slo, space.kv_rate_options,
                                                 space.max_gpus, space.pair_ok)
    comparison = compare(sol, best, baselines, same, summary, slo)
    warnings = space.tp_warnings + _warnings(wl, best["predictions"])
    perfs = space.perfs
    inputs = {
        "trace": wl.stats(), "model": space.spec_model.name, "dtype": dtype, "gpus": space.gpu_names,
        "prices": {g: {"usd_per_gpu_hour": space.prices[g], "source": space.price_src[g]} for g in space.gpu_names},
        "price_kind": price_kind, "slo": slo.as_dict(), "mode": space.mode, "max_gpus": space.max_gpus,
        "calibrated": efficiency is not None, "efficiency_source": perfs[next(iter(perfs))].source_name,
        "step_cost_sources": {f"{g}/tp{tp}": pm.source_name for (g, tp), pm in perfs.items()},
        "candidates": {"tp": sorted({tp for _, tp in perfs}), "chunks": space.chunk_set,
                       "sarathi_budgets": list(sarathi_budgets),
                       "saturation_chunk_tokens": {f"{g}/tp{tp}": v for (g, tp), v in space.sat.items()},
                       "prefill_options": len(space.pre), "decode_options": len(space.dec),
                       "coupled_options": len(space.cpl)},
        "kv_rate_peak_gb_s": space.kv_rate, "kv_rule": space.kv_rule, "spare_per_role": space.spare,
        "overlong": overlong_info or {},
        "optimizer": {"solver": sol.solver, "variables": sol.variables, "constraints": sol.constraints,
                      "solves": sol.solves, "solve_s": sol.solve_s,
                      "order": "least $/hour, then most SLO headroom (smallest max(TTFT/target, TPOT/target)), "
                               "then smallest sum of those ratios"},
        "warnings": warnings, "planning_s": time.perf_counter() - t0, "seed": seed,
    }
    return Plan(summary.deployment(best_choice), inputs=inputs, predictions=best["predictions"], cost=best["cost"],
                baselines=tuple(baselines), runners_up=tuple(runners), verdict=comparison["verdict"],
                comparison=comparison)


def _reusable(p, dep: Deployment, policies: Policies, kv_bytes_per_token: float) -> bool:
    """Whether a prefill option's samples are exactly what `predict_disaggregated` computes
    for `dep`: its transfer was made at the deployment's link, latency and KV size, with the
    same prefill batch limit."""
    return (p.transfer_fn is not None and p.ttft_sample is not None
            and dep.kv_link_gb_s == kv_link_gb_s(catalog.gpu(p.gpu), p.tp) and dep.kv_latency_s == KV_LATENCY_S
            and dep.perf("decode").kv_bytes_per_token == kv_bytes_per_token
            and dep.policies.prefill_batch_limit == policies.prefill_batch_limit)


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


def _warnings(wl, pred) -> list[str]:
    out = []
    if wl.span_s < 10 * wl.window_s and wl.requests > 1 and wl.span_s < 60:
        out.append(f"the trace spans only {wl.span_s:.1f} s; tail percentiles rest on few requests")
    return out
