"""Wall time of `planner recommend` (issue 3 targets: bundled mixed trace < 2 s; 100k and
1M-request synthetic traces < 10 s on a 2-core machine).

    .venv/bin/python tests/benchmarks/bench_recommend.py [--repeats 3]

Times the whole CLI in a fresh process (imports, trace reading, planning, rendering) and
the in-process `recommend()` on the synthetic traces (a fresh process per run too, so no
cache carries over). Each row is the best of `--repeats` runs (the machine is shared:
the 1-minute load average is printed with each row). Synthetic traces: the mixed class
generator, Poisson arrivals at a rate that keeps a few dozen GPUs busy."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from traces import write_trace  # noqa: E402
from traces.synthetic import generate  # noqa: E402

API = ("import sys, time; sys.path.insert(0, {root!r}); from planner.search.recommend import recommend; "
       "from traces.synthetic import generate; tr = generate('mixed', n_requests={n}, rate_per_s={rate}, seed=1); "
       "t = time.perf_counter(); plan = recommend(tr, gpus=['a100']); s = time.perf_counter() - t; "
       "print(plan.verdict, file=sys.stderr); print(s)")


def cli(args) -> float:
    t = time.perf_counter()
    subprocess.run([str(ROOT / ".venv/bin/planner"), "recommend", *args], check=True,
                   stdout=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - t


def api(n: int, rate: float) -> float:
    out = subprocess.run([sys.executable, "-c", API.format(root=str(ROOT), n=n, rate=rate)], check=True,
                         capture_output=True, text=True, cwd=ROOT)
    print(f"  {n:,}: {out.stderr.strip().splitlines()[-1]}", file=sys.stderr)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    mixed = ["--trace", "traces/mixed.csv"]
    runs = [("CLI, traces/mixed.csv, --gpu a100", lambda: cli(["--gpu", "a100", *mixed])),
            ("CLI, traces/mixed.csv, --gpu a100 --verify (plan + 2 baselines simulated)",
             lambda: cli(["--gpu", "a100", *mixed, "--verify"])),
            ("CLI, traces/mixed.csv, --gpu a100 --windows 300", lambda: cli(["--gpu", "a100", *mixed, "--windows", "300"])),
            ("CLI, traces/mixed.csv, --gpu a100 --gpu h100 --gpu l4",
             lambda: cli(["--gpu", "a100", "--gpu", "h100", "--gpu", "l4", *mixed]))]
    with tempfile.TemporaryDirectory() as tmp:
        for n, rate in ((100_000, 30.0), (1_000_000, 60.0)):
            path = Path(tmp) / f"syn{n}.csv"
            write_trace(generate("mixed", n_requests=n, rate_per_s=rate, seed=1), path)
            runs.append((f"recommend(), {n:,} requests at {rate:g} req/s, a100", lambda n=n, rate=rate: api(n, rate)))
            runs.append((f"CLI, {n:,}-request CSV, --gpu a100", lambda path=path: cli(["--gpu", "a100", "--trace", str(path)])))
        rows = []
        for name, run in runs:
            times = [run() for _ in range(args.repeats)]
            rows.append((name, min(times), times, os.getloadavg()[0]))
            print(f"{name}: {min(times):.2f} s (runs {', '.join(f'{t:.2f}' for t in times)}; load {rows[-1][3]:.1f})",
                  file=sys.stderr)
    print("| run | seconds (best of %d) | load average |" % args.repeats)
    print("|---|---|---|")
    for name, best, _, load in rows:
        print(f"| {name} | {best:.2f} | {load:.1f} |")


if __name__ == "__main__":
    main()
