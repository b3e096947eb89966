"""The GPU time of a small kernel inside a CUDA graph, and the host time to launch one
eagerly: what an engine step of many small kernels (norms, rotary, activations, routing)
costs beyond its bytes. A chain of N dependent in-place adds on tensors of several sizes,
captured in one graph and replayed (GPU time per kernel), then launched eagerly (host time
per kernel, the GPU idle behind it).

    python tests/gpu/kernel_floor.py --out OUT/kernel_floor.csv
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import graph_ms  # noqa: E402  (this folder)

CHAIN = 2000
SIZES = (1024, 65536, 1 << 20, 1 << 23)      # elements (bf16): 2 KB to 16 MB


def graph_us(x: torch.Tensor) -> float:
    def chain():
        for _ in range(CHAIN):
            x.add_(1.0)
    return graph_ms(chain, budget_s=0.5)[0] * 1e3 / CHAIN


def eager_us(x: torch.Tensor) -> float:
    times = []
    for _ in range(5):
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(CHAIN):
            x.add_(1.0)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e6 / CHAIN)
    return statistics.median(times[1:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    rows = []
    for n in SIZES:
        x = torch.zeros(n, device="cuda", dtype=torch.bfloat16)
        g, e = graph_us(x), eager_us(x)
        bytes_moved = 2 * 2 * n
        rows.append({"elements": n, "bytes_per_kernel": bytes_moved, "graph_us_per_kernel": round(g, 3),
                     "eager_us_per_kernel": round(e, 3), "graph_gb_s": round(bytes_moved / g / 1e3, 1),
                     "device": torch.cuda.get_device_name(), "torch": torch.__version__})
        print(rows[-1], flush=True)
    with open(args.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
