"""Simulator speed and memory: simulated requests per wall-second and peak memory on the
Azure conversation trace at its planned cluster size (the plan `recommend` makes for it, and
its baselines) and on a 1M-request synthetic trace. Run:

    .venv/bin/python tests/benchmarks/bench_sim.py [--requests 1000000] [--repeats 3]

Prints Markdown for docs/benchmarks.md. Each measurement is a fresh process (so peak RSS is
that run's own), best wall time of `repeats`. Target (issue 4): >= 20,000 simulated requests
per wall-second on one core on the Azure conv trace; modest memory on 1M requests.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "traces"

CHILD = r"""
import json, resource, sys, time
from planner.plan import deployment_from_dict
from planner.search.recommend import recommend
from planner.sim import simulate
from traces import read_trace
from traces.synthetic import generate
args = json.loads(sys.argv[1])
if args["trace"].startswith("synthetic:"):
    n, rate = args["trace"].split(":")[1:]
    trace = generate("mixed", n_requests=int(n), rate_per_s=float(rate), seed=7)
else:
    trace = read_trace(args["trace"])
plan = recommend(trace, gpus=("a100",), model="opt-13b")
deps = [("plan", plan.deployment)] + [(b["deployment"]["mode"], deployment_from_dict(b["deployment"]))
                                       for b in plan.baselines]
label, dep = deps[args["which"]]
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
best = None
for _ in range(args["repeats"]):
    t0 = time.perf_counter()
    res = simulate(dep, trace, seed=0)
    wall = time.perf_counter() - t0
    best = wall if best is None or wall < best else best
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
d = dep
pool = (f"{d.prefill.instances}P+{d.decode.instances}D {d.prefill.gpu} chunk {d.chunk_tokens}"
        if d.mode == "disaggregated" else f"{d.coupled.instances}x {d.coupled.gpu} TP{d.coupled.tp} chunk {d.chunk_tokens}")
print(json.dumps({"label": label, "mode": d.mode, "pool": pool, "requests": len(trace), "wall_s": best,
                  "req_per_s": len(trace) / best, "events": res.stats["events"],
                  "rss_before_mb": rss0 / 1024, "rss_peak_mb": rss1 / 1024,
                  "finished": res.summary["finished"], "tpot_p90_s": res.summary["tpot_s"]["p90"],
                  "ttft_p90_s": res.summary["ttft_s"]["p90"]}))
"""


def run(trace: str, which: int, repeats: int) -> dict | None:
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps({"trace": trace, "which": which, "repeats": repeats})],
                         cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        if "IndexError" in out.stderr:
            return None
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--rate", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-synthetic", action="store_true", help="only the Azure conversation trace")
    args = ap.parse_args()
    rows = []
    runs = [(str(SHARED / "azure2023_conv.csv"), args.repeats)]
    if not args.skip_synthetic:
        runs.append((f"synthetic:{args.requests}:{args.rate}", 1))
    for trace, reps in runs:
        for which in range(3):
            r = run(trace, which, reps)
            if r is None:
                break
            r["trace"] = "Azure conv" if "azure" in trace else f"synthetic mixed, {args.requests:,} req at {args.rate:g}/s"
            rows.append(r)
            print(json.dumps(r), file=sys.stderr)
    print("| trace | deployment | mode | requests | wall s | simulated req/s | events | peak RSS MB (before sim) "
          "| TTFT p90 / TPOT p90 (simulated) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['trace']} | {r['label']}: {r['pool']} | {r['mode']} | {r['requests']:,} | {r['wall_s']:.2f} | "
              f"{r['req_per_s']:,.0f} | {r['events']:,} | {r['rss_peak_mb']:.0f} ({r['rss_before_mb']:.0f}) | "
              f"{r['ttft_p90_s']:.2f} s / {r['tpot_p90_s'] * 1e3:.0f} ms |")


if __name__ == "__main__":
    main()
