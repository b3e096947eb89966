"""Held-back error of the kernel-table interpolation (planner.perf.tables), per op and GPU,
and the speed checks issue 10 asks of the step-cost model. Run (needs the `silicon` extra):

    .venv/bin/python tests/benchmarks/bench_kernel_interp.py [--gpus h100_sxm,b200_sxm] [--skip-speed]

Held back: from each GPU's newest vLLM table, every interior grid value in turn (GEMM: each
value of m, of n and of k; attention: each prompt length (context) or KV length (generation)
for the Llama-3.1-8B and -70B geometries per GPU at TP 1 and 8; all-reduce: each message size
at 2, 4 and 8 GPUs) is removed, the interpolator rebuilt from the rest and evaluated at the
removed points. Error: |interpolated / measured - 1| per point; the table gives the median,
p90 and max over all points of an op. Then the step model's two-line form of decode
attention against the table it was drawn from. Markdown for docs/perf-model.md.

Speed (issue 10): simulated requests per wall-second on the Azure conversation trace at 5x
its arrival rate (../shared/traces, skipped if absent), at the plan `recommend` makes for it
(OPT-13B on A100, as tests/benchmarks/bench_sim.py) and its baselines, per wall-second and
per CPU-second of the simulating process (the second is steady on a shared machine); and the wall time of
`planner recommend --gpu a100 --trace traces/mixed.csv`. Targets: >= 20,000 req/s, < 5 s.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from planner import catalog
from planner.perf import tables

SYSTEMS = ("h100_sxm", "h200_sxm", "b200_sxm", "b300_sxm", "gb200", "gb300", "a100_sxm", "l40s", "rtx_pro_6000_server")
ENGINE = "vllm"
GEMM_DTYPES = (("bfloat16", "bf16"), ("fp8", "fp8"), ("nvfp4", "fp4"))
# (query heads, KV heads, head dim) per GPU: Llama-3.1-8B and -70B at TP 1, -70B at TP 8
GEOMETRIES = ((32, 8, 128), (64, 8, 128), (8, 1, 128))
SHARED = ROOT.parent / "shared" / "traces"


def gpu_of(system: str):
    return next(g for g in catalog.gpus().values() if g.kernel_system == system)


def gemm_errors(system: str, dtype: str, compute: str) -> dict[str, np.ndarray]:
    """{axis: relative errors} over every interior value of m, n and k held back in turn."""
    found = tables.gemm_frame(system, ENGINE)
    if found is None:
        return {}
    frame = found[0]
    frame = frame[frame.gemm_dtype == dtype]
    if frame.empty or min(frame.n.nunique(), frame.k.nunique()) < 5:   # a stub table (RTX PRO 6000 fp8_block)
        return {}
    peak = gpu_of(system).peak_flops_for(compute)
    out = {}
    for axis in ("m", "n", "k"):
        errs = []
        for v in tables.interior(frame[axis]):
            pred, meas = tables.gemm_held_back(frame, dtype, axis, v, peak)
            errs.append(pred / meas - 1.0)
        out[axis] = np.concatenate(errs)
    return out


def attention_errors(system: str, generation: bool) -> np.ndarray:
    found = tables.attention_frame(system, ENGINE, generation)
    if found is None:
        return np.array([])
    frame = found[0]
    length = "step" if generation else "isl"
    errs = []
    for h, g, d in GEOMETRIES:
        sel = frame[(frame.num_heads == h) & (frame.num_key_value_heads == g) & (frame.head_dim == d)
                    & (frame.window_size == 0)]
        if sel.empty:
            continue
        for v in tables.interior(sel[length]):
            pred, meas = tables.attention_held_back(frame, h, g, d, "bf16", generation, v)
            errs.append(pred / meas - 1.0)
    return np.concatenate(errs) if errs else np.array([])


def allreduce_errors(system: str) -> np.ndarray:
    frames = [f for f, _ in tables.allreduce_frames(system, ENGINE)]
    if not frames:
        return np.array([])
    sizes = np.unique(np.concatenate([f.message_size.to_numpy() for f in frames]))
    errs = []
    for n in (2, 4, 8):
        for v in sizes[1:-1]:
            got = tables.allreduce_held_back(frames, n, v)
            if got is not None:
                errs.append(got[0] / got[1] - 1.0)
    return np.concatenate(errs) if errs else np.array([])


def summary(err: np.ndarray) -> dict:
    a = np.abs(err)
    return {"points": int(a.size), "median": float(np.median(a)), "p90": float(np.quantile(a, 0.9)),
            "max": float(a.max())}


def held_back(systems) -> list[dict]:
    rows = []
    for s in systems:
        t0 = time.perf_counter()
        for dtype, compute in GEMM_DTYPES:
            by_axis = gemm_errors(s, dtype, compute)
            if not by_axis:
                continue
            for axis, e in by_axis.items():
                rows.append({"gpu": s, "op": f"GEMM {compute}, held-back {axis}", **summary(e)})
            rows.append({"gpu": s, "op": f"GEMM {compute}, all", **summary(np.concatenate(list(by_axis.values())))})
        for gen, name in ((False, "context attention"), (True, "generation attention")):
            e = attention_errors(s, gen)
            if e.size:
                rows.append({"gpu": s, "op": name, **summary(e)})
        e = allreduce_errors(s)
        if e.size:
            rows.append({"gpu": s, "op": "all-reduce (2/4/8 GPUs)", **summary(e)})
        print(f"{s}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return rows


def decode_line_errors(system: str) -> dict | None:
    """The step model tabulates a decode batch's attention as two lines in its total KV
    (planner.perf.step: the simulator sums runs of steps in closed form). Error of that
    against the table itself (L x generation_attention_s(b, KV per request)), for the
    attention alone and for the whole decode step, Llama-3.1-8B at TP 1 and -70B at TP 4,
    batches 8-512, KV 256-16384 tokens per request."""
    from planner.perf.model import PerfModel
    gpu = gpu_of(system)
    att, stp = [], []
    for model, tp in (("llama-3.1-8b", 1), ("llama-3.1-70b", 4)):
        p = PerfModel(gpu, catalog.model(model), tp=tp, source="kernels")
        layers = p.model.layers
        for b in (8, 32, 64, 128, 256, 512):
            for s in (256, 512, 1024, 2048, 4096, 8192, 16384):
                t = b * s
                lines = p.steps.decode_attention_s(b, t)
                direct = layers * float(np.ravel(p.steps.src.generation_attention_s(b, s))[0])
                step = p.decode_time_s(b, t)
                att.append(lines / direct - 1.0)
                stp.append(step / (step - lines + direct) - 1.0)
    att, stp = np.array(att), np.array(stp)
    return {"gpu": system, "att_median": float(np.median(np.abs(att))), "att_max": float(np.abs(att).max()),
            "step_median": float(np.median(np.abs(stp))), "step_p90": float(np.quantile(np.abs(stp), 0.9)),
            "step_min": float(stp.min()), "step_max": float(stp.max())}


SIM_CHILD = r"""
import json, sys, time
from planner.plan import deployment_from_dict
from planner.search.recommend import recommend
from planner.sim import simulate
from traces import read_trace
args = json.loads(sys.argv[1])
trace = read_trace(args["trace"]).time_scaled(1.0 / args["rate_scale"])
plan = recommend(trace, gpus=("a100",), model="opt-13b")
deps = [("plan", plan.deployment)] + [(b["deployment"]["mode"], deployment_from_dict(b["deployment"]))
                                       for b in plan.baselines]
out = []
for label, dep in deps:
    best = cpu = None
    for _ in range(args["repeats"]):
        t0, c0 = time.perf_counter(), time.process_time()
        res = simulate(dep, trace, seed=0)
        wall, used = time.perf_counter() - t0, time.process_time() - c0
        best = wall if best is None or wall < best else best
        cpu = used if cpu is None or used < cpu else cpu
    d = dep
    pool = (f"{d.prefill.instances}P+{d.decode.instances}D {d.prefill.gpu} chunk {d.chunk_tokens}"
            if d.mode == "disaggregated" else f"{d.coupled.instances}x {d.coupled.gpu} TP{d.coupled.tp} chunk {d.chunk_tokens}")
    out.append({"label": label, "pool": pool, "requests": len(trace), "wall_s": best, "req_per_s": len(trace) / best,
                "cpu_s": cpu, "req_per_cpu_s": len(trace) / cpu,
                "source": dep.perf(next(iter(dep.roles()))).source_name})
print(json.dumps(out))
"""


def sim_speed(rate_scale: float, repeats: int) -> list[dict]:
    trace = SHARED / "azure2023_conv.csv"
    if not trace.is_file():
        print(f"skipped: {trace} not found", file=sys.stderr)
        return []
    out = subprocess.run([sys.executable, "-c", SIM_CHILD, json.dumps({"trace": str(trace), "rate_scale": rate_scale,
                                                                       "repeats": repeats})],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def recommend_wall(repeats: int) -> list[float]:
    walls = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([str(ROOT / ".venv/bin/planner"), "recommend", "--gpu", "a100", "--trace", "traces/mixed.csv"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        walls.append(time.perf_counter() - t)
    return walls


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", default=",".join(SYSTEMS), help="kernel systems, comma-separated")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-held-back", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rate-scale", type=float, default=5.0)
    args = ap.parse_args()
    if not args.skip_held_back:
        if tables.data_root() is None:
            print("error: needs the kernel tables: pip install -e '.[silicon]'", file=sys.stderr)
            return 2
        print(f"aiconfigurator-core {tables.package_version()}, {ENGINE} tables\n")
        rows = held_back(args.gpus.split(","))
        print("| GPU (system) | op | held-back points | median abs error | p90 | max |")
        print("|---|---|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['gpu']} | {r['op']} | {r['points']:,} | {r['median']:.1%} | {r['p90']:.1%} | {r['max']:.0%} |")
        print()
        print("Decode attention as two lines in the batch's total KV (the step model) against the table "
              "(signed step error: model / op-by-op - 1)\n")
        print("| GPU (system) | attention: median abs | max abs | decode step: median abs | p90 | min | max |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for s in args.gpus.split(","):
            r = decode_line_errors(s)
            print(f"| {s} | {r['att_median']:.0%} | {r['att_max']:.0%} | {r['step_median']:.1%} | {r['step_p90']:.1%} "
                  f"| {r['step_min']:+.0%} | {r['step_max']:+.0%} |")
        print()
    if not args.skip_speed:
        sims = sim_speed(args.rate_scale, args.repeats)
        if sims:
            print(f"| Azure conv x{args.rate_scale:g} | requests | wall s (best of {args.repeats}) | simulated req/s "
                  "| CPU s | req per CPU-second | step costs |")
            print("|---|---:|---:|---:|---:|---:|---|")
            for r in sims:
                print(f"| {r['label']}: {r['pool']} | {r['requests']:,} | {r['wall_s']:.2f} | {r['req_per_s']:,.0f} "
                      f"| {r['cpu_s']:.2f} | {r['req_per_cpu_s']:,.0f} | {r['source']} |")
            print(f"\n(load average while it ran: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)\n")
            print()
        walls = recommend_wall(args.repeats)
        print(f"`planner recommend --gpu a100 --trace traces/mixed.csv`: best {min(walls):.2f} s, "
              f"runs {', '.join(f'{w:.2f}' for w in walls)} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
