"""TetriInfer vs vLLM-style coupled serving in the simulator, on the paper's setup (OPT-13B,
V100-32GB, ChunkSize 512, the same total instances), for docs/paper-reproduction.md. Run:

    .venv/bin/python tests/benchmarks/paper_reproduction.py [--instances 4] [--seed 0]

For each bundled class trace (traces/{lpld,lphd,hpld,hphd,mixed}.csv, rescaled in rate) and
each load, it simulates vLLM-style coupled serving on N instances and TetriInfer (chunked
prefill, length predictor at 74.9%, power-of-two dispatch, reserve-dynamic admission) on
every split P prefill + (N - P) decode, and prints mean TTFT, mean JCT and perf/$ (1 /
(mean JCT x busy GPU cost)) of TetriInfer relative to vLLM, as the paper reports them.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from planner.plan import Deployment, Policies, Role
from planner.sim import simulate
from traces import read_trace

ROOT = Path(__file__).resolve().parents[2]
GPU = "v100"
PAPER = {"lpld": ("-44%", "-40%", "1.4x"), "lphd": ("-97%", "-47%", "2.4x"), "hpld": ("-9%", "-23%", "worse"),
         "hphd": ("marginal", "marginal", "marginal"), "mixed": ("-85%", "-50%", "1.9x")}
# per workload: a moderate load (vLLM keeps up) and a heavy one (vLLM queues), req/s
LOADS = {"lpld": (1.0, 4.0), "lphd": (0.5, 1.0), "hpld": (0.5, 1.0), "hphd": (0.2, 0.5), "mixed": (0.4, 1.0)}


def tetri(P: int, D: int, flip_idle_s=None) -> Deployment:
    return Deployment(mode="disaggregated", model="opt-13b", chunk_tokens=512, prefill=Role(GPU, P),
                      decode=Role(GPU, D), policies=Policies(flip_idle_s=flip_idle_s))


def vllm(N: int) -> Deployment:
    return Deployment(mode="coupled", model="opt-13b", chunk_tokens=512, coupled=Role(GPU, N))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gpu", default="v100", help="v100 (the paper's) or another catalog GPU")
    ap.add_argument("--load-factor", type=float, default=1.0, help="multiply every load in LOADS")
    args = ap.parse_args()
    global GPU
    GPU = args.gpu
    N = args.instances
    print(f"| workload | load req/s | vLLM {N}x: TTFT / JCT (s) | best TetriInfer split | TTFT | JCT | perf/$ "
          f"| {N // 2}P+{N - N // 2}D: TTFT / JCT / perf/$ | paper TTFT / JCT / perf/$ |")
    print("|---|---|---|---|---|---|---|---|---|")
    for w in ("lpld", "lphd", "hpld", "hphd", "mixed"):
        tr = read_trace(ROOT / "traces" / f"{w}.csv")
        for rate in (r * args.load_factor for r in LOADS[w]):
            scale = rate / tr.rate_per_s
            v = simulate(vllm(N), tr, rate_scale=scale, seed=args.seed).summary
            rows = {}
            for P in range(1, N):
                t = simulate(tetri(P, N - P), tr, rate_scale=scale, seed=args.seed).summary
                rows[P] = (t["ttft_s"]["mean"] / v["ttft_s"]["mean"] - 1, t["jct_s"]["mean"] / v["jct_s"]["mean"] - 1,
                           t["perf_per_usd"] / v["perf_per_usd"])
            best = min(rows, key=lambda p: rows[p][1])
            b, h = rows[best], rows[N // 2]
            print(f"| {w.upper()} | {rate:g} | {v['ttft_s']['mean']:.2f} / {v['jct_s']['mean']:.1f} | "
                  f"{best}P+{N - best}D | {b[0]:+.0%} | {b[1]:+.0%} | {b[2]:.2f}x | "
                  f"{h[0]:+.0%} / {h[1]:+.0%} / {h[2]:.2f}x | {' / '.join(PAPER[w])} |")


if __name__ == "__main__":
    main()
