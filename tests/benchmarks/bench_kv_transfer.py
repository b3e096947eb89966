"""KV transfer throughput of each backend between two real processes on one host, against a
plain same-host tensor copy of the same bytes (`dst.copy_(src)`, warm destination, one
thread, as the workers run).

A transfer is timed on the receiver from "ready for transfer i" (it has posted the receive
and told the sender over a pipe) to the moment its connector hands over a tensor with the
bytes; that includes one pipe message (~50 us), so small payloads understate every backend
alike. Median of `--repeats` transfers per size.

    .venv/bin/python tests/benchmarks/bench_kv_transfer.py                 # CPU: reference, gloo, shm
    python3 tests/benchmarks/bench_kv_transfer.py --device cuda --backends cuda-ipc,nccl
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from testbed.kv.pair import payload_tensor, run_pair  # noqa: E402

# KV of opt-1.3b in fp16 is 24 layers x 2 x 32 heads x 64 x 2 bytes = 196,608 bytes a token
TOKEN_SHAPE = (24, 2, 32, 64)


def plain_copy_gb_s(nbytes: int, device: str, repeats: int) -> float:
    n = nbytes // 2
    src = torch.randn(n, device=device).to(torch.float16)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        dst.copy_(src)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return nbytes / statistics.median(times) / 1e9


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backends", default="reference,gloo,shm")
    ap.add_argument("--tokens", default="8,128,512,1024", help="KV tokens per transfer (opt-1.3b fp16 layout)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", dest="json_path", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    tokens = [int(x) for x in args.tokens.split(",")]
    per_token = 1
    for s in TOKEN_SHAPE:
        per_token *= s
    per_token *= 2
    max_bytes = max(tokens) * per_token
    rows = []
    for t in tokens:
        nbytes = t * per_token
        base = plain_copy_gb_s(nbytes, args.device, args.repeats)
        row = {"tokens": t, "bytes": nbytes, "plain_copy_gb_s": base}
        for backend in args.backends.split(","):
            payloads = [((t,) + TOKEN_SHAPE, "float16", 100 + i) for i in range(args.repeats + 1)]
            out = run_pair(backend, payloads, device=args.device, arena_bytes=2 * max_bytes + (1 << 20),
                           verify=False, timeout_s=600)
            secs = [r[2] for r in out["recv"][1:]]           # the first one warms up
            gb_s = nbytes / statistics.median(secs) / 1e9
            row[backend] = {"gb_s": gb_s, "of_copy": gb_s / base}
            print(f"{t:5d} tokens {nbytes / 2**20:8.1f} MiB  {backend:9s} {gb_s:7.2f} GB/s "
                  f"({gb_s / base * 100:5.1f}% of copy {base:.2f} GB/s)", file=sys.stderr, flush=True)
        rows.append(row)
    backends = args.backends.split(",")
    print("| KV tokens | MiB | plain copy GB/s | " + " | ".join(f"{b} GB/s (% of copy)" for b in backends) + " |")
    print("|---:|---:|---:|" + "---:|" * len(backends))
    for r in rows:
        cells = " | ".join(f"{r[b]['gb_s']:.2f} ({r[b]['of_copy'] * 100:.0f}%)" for b in backends)
        print(f"| {r['tokens']} | {r['bytes'] / 2**20:.1f} | {r['plain_copy_gb_s']:.2f} | {cells} |")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(rows, indent=2))
    # the byte check the tests do, once more at benchmark size for the fast path
    p = [((tokens[-1],) + TOKEN_SHAPE, "float16", 7)]
    fast = "cuda-ipc" if args.device.startswith("cuda") else "shm"
    if fast in backends:
        from testbed.kv import checksum
        got = run_pair(fast, p, device=args.device, arena_bytes=2 * max_bytes)["recv"][0][4]
        ok = got == checksum(payload_tensor(p[0][0], torch.float16, 7, args.device))
        print(f"{fast} bytes verified at {tokens[-1]} tokens: {ok}", file=sys.stderr)
        if not ok:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
