"""Audit of verified recommendations (issue 13): are returned plans met in the project's own
simulator, and how close to the cheapest plan the simulator accepts are they?

    .venv/bin/python tests/benchmarks/audit_plans.py [--gpus a100,h100] [--traces lpld,...] [--no-sweep]

Part 1, the audit set: the five TetriInfer class traces (traces/{lpld,lphd,hpld,hphd,mixed}.csv)
and the Azure code and conversation traces (../shared/traces/azure2023_{code,conv}.csv) on
each GPU, default SLO (p90 TTFT <= 1 s, p90 TPOT <= 100 ms), default flags (over-long
requests rejected, as engines do). For each case:
- `recommend`: `planner.search.verified.verified_recommend` as `planner recommend` runs it;
- `meets`: the returned plan replayed again, independently, on the whole (treated) trace;
- brute force: every plan of the candidate grid (vLLM-style coupled with the longest prompt
  as its batch, Sarathi-style coupled at budgets 512/1024/2048, disaggregated with prefill
  chunks 256/512/1024/2048 + the GPU's saturation chunk and any decode TP; TP 1/2/4/8
  where the weights fit; any instance counts) costing less than the recommendation,
  replayed in order of cost until one meets the SLO: the cheapest plan the simulator
  accepts. One pruning, from the simulator's structure: a disaggregated plan's TTFT is
  made by its prefill pool alone, so once a prefill pool (GPU, TP, chunk, count) misses
  the TTFT target every plan with that pool is skipped;
- ratio: recommended $/h over the cheapest's (1.00 when no cheaper plan meets it);
- for comparison, the analytical plan (`--no-verify`): its $/h over the cheapest, and
  whether it meets the SLO in the same replay.
Part 2, SLO sweep: the Azure traces on each GPU at SLOs from tight to loose; each returned
plan replayed again on the whole trace; the count of returned plans that miss.
Prints Markdown tables (docs/benchmarks.md) and writes --json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from planner import catalog  # noqa: E402
from planner.engines.config import EngineConfig  # noqa: E402
from planner.errors import InfeasibleError  # noqa: E402
from planner.perf.model import PerfModel  # noqa: E402
from planner.plan import Deployment, Role  # noqa: E402
from planner.search.candidates import (DEFAULT_CHUNKS, DEFAULT_SARATHI_BUDGETS, DEFAULT_TPS, SLO,  # noqa: E402
                                       kv_link_gb_s, tp_problem)
from planner.search.verified import verified_recommend  # noqa: E402
from planner.sim.parallel import Replayer, default_workers  # noqa: E402
from planner.sim.sample import verification_trace  # noqa: E402
from planner.workload import apply_overlong  # noqa: E402
from traces import read_trace  # noqa: E402

MODEL = "opt-13b"
DTYPE = "fp16"
CLASS_TRACES = ("lpld", "lphd", "hpld", "hphd", "mixed")
AZURE = ("azure2023_code", "azure2023_conv")
SWEEP_SLOS = ((0.25, 0.025), (0.5, 0.05), (1.0, 0.1), (2.0, 0.2), (5.0, 0.5))


def trace_path(name: str) -> Path:
    return ROOT / "traces" / f"{name}.csv" if name in CLASS_TRACES else ROOT.parent / "shared" / "traces" / f"{name}.csv"


def grid(trace, gpu: str, max_gpus: int):
    """Every grid plan with fewer than `max_gpus` GPUs, as (gpus, sort key, deployment)."""
    spec = catalog.model(MODEL)
    g = catalog.gpu(gpu).name
    eng = EngineConfig()
    tps = [tp for tp in DEFAULT_TPS if tp_problem(spec, tp) is None
           and PerfModel(catalog.gpu(g), spec, tp=tp, dtype=DTYPE, kv_dtype=eng.kv_dtype(DTYPE), **eng.perf_kwargs()).fits]
    sat = PerfModel(catalog.gpu(g), spec, tp=1, dtype=DTYPE, kv_dtype=eng.kv_dtype(DTYPE),
                    **eng.perf_kwargs()).saturation_chunk_tokens() if 1 in tps else None
    chunks = sorted(set(DEFAULT_CHUNKS) | ({sat} if sat else set()))
    longest = int(trace.prompt_tokens.max())
    out = []
    for tp in tps:
        for n in range(1, max_gpus):
            if n * tp >= max_gpus:
                break
            out.append((n * tp, ("coupled", tp, n, longest),
                        Deployment("coupled", MODEL, longest, coupled=Role(g, n, tp), dtype=DTYPE, engine=eng)))
            for b in DEFAULT_SARATHI_BUDGETS:
                out.append((n * tp, ("chunked", tp, n, b),
                            Deployment("chunked_coupled", MODEL, b, coupled=Role(g, n, tp), dtype=DTYPE,
                                       engine=replace(eng, token_budget=b))))
    for tp_p in tps:
        for tp_d in tps:
            link = min(kv_link_gb_s(catalog.gpu(g), tp_p), kv_link_gb_s(catalog.gpu(g), tp_d))
            for p in range(1, max_gpus):
                for d in range(1, max_gpus):
                    k = p * tp_p + d * tp_d
                    if k >= max_gpus:
                        break
                    for c in chunks:
                        out.append((k, ("disaggregated", tp_p, p, c, tp_d, d),
                                    Deployment("disaggregated", MODEL, c, prefill=Role(g, p, tp_p),
                                               decode=Role(g, d, tp_d), dtype=DTYPE, kv_link_gb_s=link, engine=eng)))
    out.sort(key=lambda x: (x[0], x[1]))
    return out


def cheapest_in_sim(trace, gpu: str, rec_gpus: int, slo: SLO, workers: int) -> dict:
    """The cheapest grid plan meeting the SLO in simulation among those with fewer GPUs
    than the recommendation (None when none does), and how many were replayed."""
    vt = verification_trace(trace, len(trace))
    plans = grid(trace, gpu, rec_gpus)
    ttft_fail: set = set()
    sims = 0
    with Replayer(vt, slo, 0, workers) as rp:
        by_k: dict = {}
        for k, key, dep in plans:
            by_k.setdefault(k, []).append((key, dep))
        for k in sorted(by_k):
            todo = []
            for key, dep in by_k[k]:
                if key[0] == "disaggregated" and key[1:4] in ttft_fail:
                    continue
                todo.append((key, dep, rp.submit(dep)))
            found = None
            for key, dep, h in todo:
                r = h.get()
                sims += 1
                if key[0] == "disaggregated" and r["ratios"]["ttft"] > 1:
                    ttft_fail.add(key[1:4])
                if r["meets"] and found is None:
                    found = (key, r)
            if found:
                return {"gpus": k, "plan": list(found[0]), "sims": sims}
    return {"gpus": None, "plan": None, "sims": sims}


def audit_case(name: str, gpu: str, workers: int) -> dict:
    t0 = time.perf_counter()
    raw = read_trace(trace_path(name))
    spec = catalog.model(MODEL)
    trace, info = apply_overlong(raw, spec.max_context, "reject", spec.name)
    slo = SLO()
    plan = verified_recommend(raw, [gpu], MODEL, slo, runners_up=0, margins=False)
    t_rec = time.perf_counter() - t0
    dep = plan.deployment
    from planner.sim.verify import replay
    check = replay(dep, verification_trace(trace, len(trace)), slo)
    price = plan.cost["usd_per_hour"] / dep.gpus
    analytic = verified_recommend(raw, [gpu], MODEL, slo, runners_up=0, verify=False)   # --no-verify
    a_check = replay(analytic.deployment, verification_trace(trace, len(trace)), slo)
    brute = cheapest_in_sim(trace, gpu, dep.gpus, slo, workers)
    cheapest = brute["gpus"] * price if brute["gpus"] else plan.cost["usd_per_hour"]
    q = "p90"
    return {"trace": name, "gpu": catalog.gpu(gpu).name, "overlong_rejected": info["requests"],
            "requests": len(trace), "recommended": _describe(dep), "usd_per_hour": plan.cost["usd_per_hour"],
            "gpus": dep.gpus, "meets": check["meets"], "sim_ttft_p90_s": check["ttft_s"][q],
            "sim_tpot_p90_s": check["tpot_s"][q], "preempted_share": check["preempted_share"],
            "cheapest_usd_per_hour": cheapest, "cheapest_plan": brute["plan"],
            "ratio": plan.cost["usd_per_hour"] / cheapest, "brute_force_sims": brute["sims"],
            "recommend_s": t_rec, "recommend_sims": plan.verification["sims"],
            "analytical_usd_per_hour": analytic.cost["usd_per_hour"], "analytical_plan": _describe(analytic.deployment),
            "analytical_meets": a_check["meets"], "analytical_sim_ttft_p90_s": a_check["ttft_s"][q],
            "rejected_in_sim": len(plan.verification["rejected"]), "wall_s": time.perf_counter() - t0}


def sweep_case(name: str, gpu: str, ttft: float, tpot: float) -> dict:
    raw = read_trace(trace_path(name))
    spec = catalog.model(MODEL)
    trace, _ = apply_overlong(raw, spec.max_context, "reject", spec.name)
    slo = SLO(ttft_s=ttft, tpot_s=tpot)
    row = {"trace": name, "gpu": catalog.gpu(gpu).name, "slo_ttft_s": ttft, "slo_tpot_s": tpot}
    try:
        plan = verified_recommend(raw, [gpu], MODEL, slo, runners_up=0, margins=False)
    except InfeasibleError as e:
        return {**row, "result": "infeasible (exit 3)", "why": str(e)[:160]}
    from planner.sim.verify import replay
    check = replay(plan.deployment, verification_trace(trace, len(trace)), slo)
    return {**row, "result": "plan", "recommended": _describe(plan.deployment),
            "usd_per_hour": plan.cost["usd_per_hour"], "meets": check["meets"],
            "sim_ttft_p90_s": check["ttft_s"]["p90"], "sim_tpot_p90_s": check["tpot_s"]["p90"]}


def _describe(dep) -> str:
    from dataclasses import asdict

    from planner.search.verdict import describe
    return describe(asdict(dep))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", default="a100,h100")
    ap.add_argument("--traces", default=",".join(CLASS_TRACES + AZURE))
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--workers", type=int, default=default_workers())
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    gpus = a.gpus.split(",")
    names = [n for n in a.traces.split(",") if trace_path(n).exists()]
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, workers {a.workers}", flush=True)
    rows = []
    print("| trace | GPU | recommended | $/h | meets in sim (p90 TTFT / TPOT, preempted) | cheapest meeting in sim "
          "| ratio | brute-force replays | recommend s | --no-verify plan: $/h, ratio, meets in sim |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in names:
        for g in gpus:
            r = audit_case(n, g, a.workers)
            rows.append(r)
            print(f"| {r['trace']} | {r['gpu']} | {r['recommended']} | {r['usd_per_hour']:.2f} | "
                  f"{'yes' if r['meets'] else 'NO'} ({r['sim_ttft_p90_s']:.3f} s / {r['sim_tpot_p90_s'] * 1e3:.1f} ms, "
                  f"{r['preempted_share']:.1%}) | {r['cheapest_usd_per_hour']:.2f} | {r['ratio']:.2f} | "
                  f"{r['brute_force_sims']} | {r['recommend_s']:.1f} | {r['analytical_usd_per_hour']:.2f}, "
                  f"{r['analytical_usd_per_hour'] / r['cheapest_usd_per_hour']:.2f}x, "
                  f"{'yes' if r['analytical_meets'] else 'NO'} ({r['analytical_sim_ttft_p90_s']:.3f} s) |", flush=True)
    misses = sum(not r["meets"] for r in rows)
    worst = max(r["ratio"] for r in rows) if rows else float("nan")
    print(f"\naudit: {len(rows)} cases, {misses} returned plans miss the SLO in simulation, "
          f"worst cost ratio {worst:.2f}, mean {sum(r['ratio'] for r in rows) / max(len(rows), 1):.3f}; "
          f"--no-verify: {sum(not r['analytical_meets'] for r in rows)} miss, worst ratio "
          f"{max((r['analytical_usd_per_hour'] / r['cheapest_usd_per_hour'] for r in rows), default=float('nan')):.2f}")
    sweep = []
    if not a.no_sweep:
        print("\n| trace | GPU | SLO p90 TTFT / TPOT | recommended | $/h | meets in sim (p90 TTFT / TPOT) |")
        print("|---|---|---|---|---|---|")
        for n in [x for x in AZURE if x in names]:
            for g in gpus:
                for ttft, tpot in SWEEP_SLOS:
                    r = sweep_case(n, g, ttft, tpot)
                    sweep.append(r)
                    if r["result"] != "plan":
                        print(f"| {n} | {r['gpu']} | {ttft:g} s / {tpot * 1e3:g} ms | {r['result']} | - | - |")
                    else:
                        print(f"| {n} | {r['gpu']} | {ttft:g} s / {tpot * 1e3:g} ms | {r['recommended']} | "
                              f"{r['usd_per_hour']:.2f} | {'yes' if r['meets'] else 'NO'} ({r['sim_ttft_p90_s']:.3f} s / "
                              f"{r['sim_tpot_p90_s'] * 1e3:.1f} ms) |", flush=True)
        planned = [r for r in sweep if r["result"] == "plan"]
        print(f"\nsweep: {len(sweep)} cases, {len(planned)} plans returned, "
              f"{sum(not r['meets'] for r in planned)} miss the SLO in simulation")
    if a.json:
        Path(a.json).write_text(json.dumps({"audit": rows, "sweep": sweep}, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
