"""Trace-layer speed: load the real length/trace files, and generate, write, read and
summarise a 1M-request synthetic trace. Run:

    .venv/bin/python tests/benchmarks/bench_traces.py [--rows 1000000] [--repeats 3]

Prints a Markdown table (best of `repeats` wall-clock seconds) for docs/benchmarks.md.
Targets (issue 2): the 61k-row ShareGPT file well under 1 s; 1M rows in a few seconds.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from traces import read_trace, write_trace
from traces.stats import trace_stats
from traces.synthetic import generate

SHARED = Path(__file__).resolve().parents[3] / "shared" / "traces"


def best_of(repeats: int, fn):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for name, kw in (("azure2023_conv.csv", {}), ("azure2023_code.csv", {}),
                     ("sharegpt_v3_lengths_cl100k.csv", {"rate_per_s": 3.0}),
                     ("sarathi_sharegpt8k_lengths.csv", {"rate_per_s": 3.0})):
        path = SHARED / name
        if not path.exists():
            rows.append((f"read {name}", "skipped (no ../shared/traces)", ""))
            continue
        s, t = best_of(args.repeats, lambda: read_trace(path, **kw))
        rows.append((f"read_trace {name}", f"{s:.3f}", f"{len(t):,} requests"))
    n = args.rows
    s, t = best_of(args.repeats, lambda: generate("mixed", n_requests=n, rate_per_s=3.0, seed=1))
    rows.append((f"generate mixed, {n:,} requests", f"{s:.3f}", ""))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "big.csv"
        s, _ = best_of(args.repeats, lambda: write_trace(t, p))
        rows.append((f"write_trace {n:,} rows", f"{s:.3f}", f"{p.stat().st_size / 2**20:.1f} MiB"))
        s, back = best_of(args.repeats, lambda: read_trace(p))
        rows.append((f"read_trace {n:,} rows (plain CSV)", f"{s:.3f}", f"{len(back):,} requests"))
        gz = Path(d) / "big.csv.gz"
        write_trace(t, gz)
        s, _ = best_of(args.repeats, lambda: read_trace(gz))
        rows.append((f"read_trace {n:,} rows (gzip CSV)", f"{s:.3f}", f"{gz.stat().st_size / 2**20:.1f} MiB"))
        js = Path(d) / "mooncake.jsonl"
        m = min(n, 200_000)
        with js.open("w") as f:
            for i in range(m):
                f.write(json.dumps({"timestamp": int(t.arrival_s[i] * 1000), "input_length": int(t.prompt_tokens[i]),
                                    "output_length": int(t.output_tokens[i]), "hash_ids": list(range(i % 7))}) + "\n")
        s, _ = best_of(args.repeats, lambda: read_trace(js))
        rows.append((f"read_trace {m:,} lines (Mooncake JSONL)", f"{s:.3f}", "json.loads per line"))
    s, _ = best_of(args.repeats, lambda: trace_stats(t))
    rows.append((f"trace_stats {n:,} rows", f"{s:.3f}", ""))
    print(f"python {platform.python_version()}, best of {args.repeats}\n")
    print("| step | seconds | note |\n|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
