"""Analytical (planner.queueing.predict) vs simulated (planner.sim.simulate) percentiles, for
docs/validation.md. Run:

    .venv/bin/python tests/benchmarks/validate_analytical.py [--gpu a100] [--model opt-13b]

For each workload (the five bundled class traces and both Azure traces) it plans a
disaggregated and a vLLM-style coupled deployment with `recommend(..., mode=...)` at the
trace's own rate, then replays the trace at rising loads (rate x 0.5, 1, 1.5, 2, 3,
stopping after the first load the analytical model calls saturated). Prints one Markdown row per run (p50/p90/p99 of TTFT, TPOT and
JCT, predicted / simulated and the prediction's error) and the median absolute error of
p90 TTFT and p90 TPOT over unsaturated runs (target <= 10%).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from planner.queueing import predict
from planner.recommend import recommend
from planner.sim import relative_errors, simulate
from traces import read_trace

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "traces"
WORKLOADS = [("LPLD", ROOT / "traces/lpld.csv"), ("LPHD", ROOT / "traces/lphd.csv"),
             ("HPLD", ROOT / "traces/hpld.csv"), ("HPHD", ROOT / "traces/hphd.csv"),
             ("Mixed", ROOT / "traces/mixed.csv"), ("Azure conv", SHARED / "azure2023_conv.csv"),
             ("Azure code", SHARED / "azure2023_code.csv")]
SCALES = (0.5, 1.0, 1.5, 2.0, 3.0)


def pool(dep) -> str:
    if dep.mode == "disaggregated":
        return f"{dep.prefill.instances}P+{dep.decode.instances}D TP{dep.prefill.tp}/{dep.decode.tp} c{dep.chunk_tokens}"
    return f"{dep.coupled.instances}x TP{dep.coupled.tp} {'vLLM' if dep.mode == 'coupled' else 'Sarathi'}"


def cell(pred: dict, sim: dict, err: dict, key: str, scale: float, unit: str) -> str:
    out = []
    for q in ("p50", "p90", "p99"):
        a, b, e = pred.get(key, {}).get(q), sim[key][q], err[key][q]
        a_s = "inf" if a is None or not math.isfinite(a) else f"{a * scale:.{3 if unit == 's' else 1}f}"
        e_s = "" if e is None else f" ({e:+.0%})"
        out.append(f"{a_s}/{b * scale:.{3 if unit == 's' else 1}f}{e_s}")
    return "<br>".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", default="a100")
    ap.add_argument("--model", default="opt-13b")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows, errs = [], {"ttft": [], "tpot": []}
    for name, path in WORKLOADS:
        if not path.exists():
            print(f"<!-- {name}: {path} not found, skipped -->")
            continue
        tr = read_trace(path)
        deps = [recommend(tr, gpus=(args.gpu,), model=args.model, mode=m, seed=args.seed).deployment
                for m in ("disaggregated", "coupled")]
        for dep in deps:
            for scale in SCALES:
                t = tr.time_scaled(1.0 / scale)
                pred = predict(dep, t, seed=args.seed)
                sim = simulate(dep, t, seed=args.seed).summary
                err = relative_errors(pred, sim)
                saturated = not pred.get("feasible", True)
                rows.append((name, pool(dep), scale, pred, sim, err, saturated))
                if not saturated:
                    for k, key in (("ttft", "ttft_s"), ("tpot", "tpot_s")):
                        if err[key]["p90"] is not None:
                            errs[k].append(abs(err[key]["p90"]))
                if saturated:
                    break
    print("| workload | deployment | load | TTFT s p50/p90/p99: predicted/simulated (error) | TPOT ms | JCT s | "
          "analytical says |")
    print("|---|---|---|---|---|---|---|")
    for name, p, scale, pred, sim, err, sat in rows:
        print(f"| {name} | {p} | x{scale:g} | {cell(pred, sim, err, 'ttft_s', 1, 's')} | "
              f"{cell(pred, sim, err, 'tpot_s', 1e3, 'ms')} | {cell(pred, sim, err, 'jct_s', 1, 's')} | "
              f"{'saturated: ' + '; '.join(pred.get('limits', [])) if sat else 'ok'} |")
    for k in ("ttft", "tpot"):
        v = np.array(errs[k])
        print(f"\nmedian |error| of p90 {k.upper()} over {len(v)} unsaturated runs: "
              f"{np.median(v):.1%} (mean {np.mean(v):.1%}, max {np.max(v):.1%})" if len(v) else f"\nno unsaturated runs for {k}")


if __name__ == "__main__":
    main()
