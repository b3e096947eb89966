"""`planner recommend` on a 1M-request trace: wall time and peak memory of the whole CLI
(issue 14 target: under 10 s and 1 GB on 2 cores).

    .venv/bin/python tests/benchmarks/bench_recommend_1m.py [--repeats 3] [--requests 1000000]

Writes a synthetic mixed trace (plain CSV, Poisson arrivals at --rate) to a temporary
folder, then runs `python -m planner recommend --trace big.csv --gpu a100` from this
checkout (the planner next to this script, whatever is installed) in a fresh process per
repeat, each inside its own small Python parent so that its peak RSS and CPU time
(getrusage of the children) are its own. Prints one row per repeat - wall, user and system
CPU seconds, peak RSS, the load average - and the best, with the machine's CPU count and
the checkout's commit (the machine is shared: CPU seconds move less with others' load than
wall seconds do)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from traces import write_trace  # noqa: E402
from traces.synthetic import generate  # noqa: E402

RUN = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
       "r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True); "
       "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
       "print(json.dumps({'s': time.perf_counter() - t, 'rc': r.returncode, "
       "'first': ((r.stdout or r.stderr).splitlines() or [''])[0], 'user_s': u.ru_utime, 'sys_s': u.ru_stime, "
       "'rss_mb': u.ru_maxrss / 1024}))")


def once(trace: Path, gpu: str, extra: list[str]) -> dict:
    cmd = [sys.executable, "-c", RUN, sys.executable, "-m", "planner", "recommend", "--trace", str(trace),
           "--gpu", gpu, *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout)


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "planner", "traces"],
                               capture_output=True, text=True, cwd=ROOT).stdout.strip()
        return head + (" + uncommitted changes in planner/ or traces/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--gpu", default="a100")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trace", type=Path, default=None, help="Use this trace instead of writing one.")
    ap.add_argument("extra", nargs="*", help="More recommend flags (after --).")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = a.trace or Path(d) / "big.csv"
        if a.trace is None:
            write_trace(generate("mixed", n_requests=a.requests, rate_per_s=a.rate, seed=1), path)
        print(f"trace: {a.requests:,} requests at {a.rate:g} req/s, {path.stat().st_size / 2**20:.1f} MiB; "
              f"{os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}; checkout {ROOT} at {commit()}")
        rows = []
        for i in range(a.repeats):
            load = os.getloadavg()[0]
            r = once(path, a.gpu, a.extra)
            rows.append(r)
            print(f"run {i + 1}: {r['s']:.2f} s wall, {r['user_s']:.2f} s user + {r['sys_s']:.2f} s sys CPU, "
                  f"peak RSS {r['rss_mb']:.0f} MB, exit {r['rc']}, load {load:.2f}-{os.getloadavg()[0]:.2f}: "
                  f"{r['first'][:100]}")
        best = min(rows, key=lambda r: r["s"])
        print(f"best: {best['s']:.2f} s wall ({min(r['user_s'] + r['sys_s'] for r in rows):.2f} s CPU at best), "
              f"peak RSS {max(r['rss_mb'] for r in rows):.0f} MB (max over runs)")


if __name__ == "__main__":
    main()
