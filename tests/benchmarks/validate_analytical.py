"""Analytical (planner.analytic.predict) vs simulated (planner.sim.simulate) percentiles, for
docs/validation.md. Run:

    .venv/bin/python tests/benchmarks/validate_analytical.py [--gpu a100] [--model opt-13b]

For each workload (the five bundled class traces and both Azure traces) it plans a
disaggregated, a vLLM-style coupled and a Sarathi-style chunked coupled deployment with
`recommend(..., mode=...)` at the trace's own rate (--modes to pick), then replays the
trace at rising loads (rate x 0.5, 1, 1.5, 2, 3,
stopping after the first load the analytical model calls saturated). Prints one Markdown row per run (p50/p90/p99 of TTFT, TPOT and
JCT, predicted / simulated and the prediction's error) and the median absolute error of
p90 TTFT and p90 TPOT over unsaturated runs (target <= 10%), overall and per mode.
--json FILE also writes every run (deployment, load, predicted and simulated summaries).
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

from planner.analytic.predict import predict
from planner.search.recommend import recommend
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
    return f"{dep.coupled.instances}x TP{dep.coupled.tp} " + ("vLLM" if dep.mode == "coupled" else f"Sarathi b{dep.chunk_tokens}")


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
    ap.add_argument("--modes", default="disaggregated,coupled,chunked_coupled")
    ap.add_argument("--workloads", default=None, help="comma-separated names (default: all)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    modes = args.modes.split(",")
    pick = None if args.workloads is None else {w.strip().lower() for w in args.workloads.split(",")}
    rows, errs, dump = [], {"ttft": [], "tpot": []}, []
    by_mode = {m: {"ttft": [], "tpot": []} for m in modes}
    for name, path in WORKLOADS:
        if pick is not None and name.lower() not in pick:
            continue
        if not path.exists():
            print(f"<!-- {name}: {path} not found, skipped -->")
            continue
        tr = read_trace(path)
        deps = [recommend(tr, gpus=(args.gpu,), model=args.model, mode=m, seed=args.seed).deployment
                for m in modes]
        for dep in deps:
            for scale in SCALES:
                t = tr.time_scaled(1.0 / scale)
                pred = predict(dep, t, seed=args.seed)
                sim = simulate(dep, t, seed=args.seed).summary
                err = relative_errors(pred, sim)
                saturated = not pred.get("feasible", True)
                rows.append((name, pool(dep), scale, pred, sim, err, saturated))
                dump.append({"workload": name, "deployment": asdict(dep), "scale": scale, "saturated": saturated,
                             "predicted": {k: pred.get(k) for k in ("ttft_s", "tpot_s", "jct_s")},
                             "simulated": {k: sim[k] for k in ("ttft_s", "tpot_s", "jct_s")}})
                if not saturated:
                    for k, key in (("ttft", "ttft_s"), ("tpot", "tpot_s")):
                        if err[key]["p90"] is not None:
                            errs[k].append(abs(err[key]["p90"]))
                            by_mode[dep.mode][k].append(abs(err[key]["p90"]))
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
        for m in modes:
            v = np.array(by_mode[m][k])
            if len(v):
                print(f"  {m}: {np.median(v):.1%} over {len(v)} (mean {np.mean(v):.1%}, max {np.max(v):.1%})")
    if args.json:
        args.json.write_text(json.dumps(dump, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
