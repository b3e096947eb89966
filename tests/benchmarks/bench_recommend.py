"""Wall time of `planner recommend` (issue 3 targets: bundled mixed trace < 2 s; 100k and
1M-request synthetic traces < 10 s on a 2-core machine).

    .venv/bin/python tests/benchmarks/bench_recommend.py

Times the whole CLI in a fresh process (imports, trace reading, planning, rendering) and
the in-process `recommend()` on the synthetic traces. Synthetic traces: the mixed class
generator, Poisson arrivals at a rate that keeps a few dozen GPUs busy."""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from planner.recommend import recommend  # noqa: E402
from traces import write_trace  # noqa: E402
from traces.synthetic import generate  # noqa: E402


def cli(args) -> float:
    t = time.perf_counter()
    subprocess.run([str(ROOT / ".venv/bin/planner"), "recommend", *args], check=True,
                   stdout=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - t


def main():
    rows = [("CLI, traces/mixed.csv, --gpu a100", cli(["--gpu", "a100", "--trace", "traces/mixed.csv"]))]
    rows.append(("CLI, traces/mixed.csv, --gpu a100 --verify (plan + 2 baselines simulated)",
                 cli(["--gpu", "a100", "--trace", "traces/mixed.csv", "--verify"])))
    rows.append(("CLI, traces/mixed.csv, --gpu a100 --windows 300",
                 cli(["--gpu", "a100", "--trace", "traces/mixed.csv", "--windows", "300"])))
    rows.append(("CLI, traces/mixed.csv, --gpu a100 --gpu h100 --gpu l4",
                 cli(["--gpu", "a100", "--gpu", "h100", "--gpu", "l4", "--trace", "traces/mixed.csv"])))
    with tempfile.TemporaryDirectory() as tmp:
        for n, rate in ((100_000, 30.0), (1_000_000, 60.0)):
            tr = generate("mixed", n_requests=n, rate_per_s=rate, seed=1)
            t = time.perf_counter()
            plan = recommend(tr, gpus=["a100"])
            rows.append((f"recommend(), {n:,} requests at {rate:g} req/s, a100", time.perf_counter() - t))
            print(f"  {n:,}: {plan.verdict}", file=sys.stderr)
            path = Path(tmp) / f"syn{n}.csv"
            write_trace(tr, path)
            rows.append((f"CLI, {n:,}-request CSV, --gpu a100", cli(["--gpu", "a100", "--trace", str(path)])))
    for name, s in rows:
        print(f"| {name} | {s:.2f} |")


if __name__ == "__main__":
    main()
