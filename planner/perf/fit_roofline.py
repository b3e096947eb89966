"""Fit the roofline's efficiency curves to the measured kernel tables and write
`planner/data/roofline_fits.csv` (needs the `silicon` extra):

    python -m planner.perf.fit_roofline [-o planner/data/roofline_fits.csv]

Curves (each fitted per GPU that has tables, on its vLLM tables, least squares on log latency;
the "*" rows are the median over those GPUs and serve every other GPU):
- gemm_<bf16|fp8|fp4>: t = t0 + max(2mnk / (peak_dtype * eff * m / (m + knee)),
  (weights + activations bytes) / (bandwidth * bw))
- context_attention: t = t0 + 2 h d s^2 b / (peak_attn * eff * s / (s + knee))
- generation_attention: t = t0 + t_per_seq * b + KV bytes / (bandwidth * bw)
- allreduce: t = t0 + 2 (n - 1) / n * bytes / (link * bw)
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from planner import catalog
from planner.perf import tables
from planner.perf.sources import _kv_bytes, _weight_bytes

CURVES = {"gemm_bf16": ("p_eff", "p_knee", "p_bw", "p_t0"), "gemm_fp8": ("p_eff", "p_knee", "p_bw", "p_t0"),
          "gemm_fp4": ("p_eff", "p_knee", "p_bw", "p_t0"), "context_attention": ("p_eff", "p_knee", "p_t0"),
          "generation_attention": ("p_t0", "p_t_per_seq", "p_bw"), "allreduce": ("p_t0", "p_bw")}
ENGINE = "vllm"
ATTN_GEO = (32, 8, 128)   # Llama-3.1-8B at TP 1: the geometry every table has


def _fit(residual, x0, lo, hi):
    res = least_squares(residual, x0, bounds=(lo, hi), loss="soft_l1", f_scale=0.1)
    return res.x, float(np.sqrt(np.mean(residual(res.x) ** 2)))


def fit_gemm(gpu, dtype_table: str, compute: str):
    found = tables.gemm_table(gpu.kernel_system, ENGINE, dtype_table, gpu.peak_flops_for(compute))
    if found is None:
        return None
    g = found[0]
    mm, nn, kk = np.meshgrid(g.ms, g.ns, g.ks, indexing="ij")
    lat = np.exp(g.log_lat)
    keep = np.isfinite(lat) & (nn >= 256) & (kk >= 256)
    m, n, k, y = mm[keep], nn[keep], kk[keep], np.log(lat[keep])
    peak, bw = gpu.peak_flops_for(compute), gpu.memory_bytes_s
    wb = _weight_bytes(dtype_table if dtype_table != "nvfp4" else "fp4")

    def model(p):
        eff, knee, bwf, t0 = p
        return np.log(t0 * 1e-6 + np.maximum(2 * m * n * k / (peak * eff * m / (m + knee)),
                                             (n * k * wb + 2 * m * (n + k)) / (bw * bwf)))
    p, rms = _fit(lambda p: model(p) - y, [0.7, 64, 0.8, 5], [0.05, 1, 0.05, 0], [1.2, 4096, 1.2, 100])
    return {"p_eff": p[0], "p_knee": p[1], "p_bw": p[2], "p_t0": p[3] * 1e-6}, rms, found[1]


def _attention_points(gpu, generation: bool):
    """(batch, length, log latency, table version) of the measured attention points of the
    reference geometry, or None without a table."""
    found = tables.attention_table(gpu.kernel_system, ENGINE, *ATTN_GEO, "bf16", generation,
                                   gpu.memory_bytes_s if generation else None)
    if found is None:
        return None
    a = found[0]
    b, s = np.meshgrid(a.batches, a.lengths, indexing="ij")
    keep = np.isfinite(a.grid)
    return b[keep], s[keep], np.log(a.grid[keep]), found[1]


def fit_context(gpu):
    pts = _attention_points(gpu, generation=False)
    if pts is None:
        return None
    b, s, y, version = pts
    h, _, d = ATTN_GEO
    peak = gpu.peak_flops_for("bf16")

    def model(p):
        eff, knee, t0 = p
        return np.log(t0 * 1e-6 + 2 * h * d * s * s * b / (peak * eff * s / (s + knee)))
    p, rms = _fit(lambda p: model(p) - y, [0.5, 256, 10], [0.02, 1, 0], [1.2, 1e5, 200])
    return {"p_eff": p[0], "p_knee": p[1], "p_t0": p[2] * 1e-6}, rms, version


def fit_generation(gpu):
    pts = _attention_points(gpu, generation=True)
    if pts is None:
        return None
    b, s, y, version = pts
    _, g, d = ATTN_GEO
    bw = gpu.memory_bytes_s

    def model(p):
        t0, per_seq, bwf = p
        return np.log(t0 * 1e-6 + per_seq * 1e-6 * b + b * s * 2 * g * d * _kv_bytes("bf16") / (bw * bwf))
    p, rms = _fit(lambda p: model(p) - y, [10, 0.1, 0.7], [0, 0, 0.05], [200, 50, 1.2])
    return {"p_t0": p[0] * 1e-6, "p_t_per_seq": p[1] * 1e-6, "p_bw": p[2]}, rms, version


def fit_allreduce(gpu):
    xs, ys = [], []
    version = None
    for n in (2, 4, 8):
        found = tables.allreduce_table(gpu.kernel_system, ENGINE, n)
        if found is None:
            continue
        t, version = found
        xs.append(np.column_stack([np.full(len(t.sizes), n), t.sizes]))
        ys.append(np.log(t.lat))
    if not xs:
        return None
    x, y = np.vstack(xs), np.concatenate(ys)
    link = gpu.link_gb_s * 1e9

    def model(p):
        t0, bwf = p
        return np.log(t0 * 1e-6 + 2 * (x[:, 0] - 1) / x[:, 0] * x[:, 1] / (link * bwf))
    p, rms = _fit(lambda p: model(p) - y, [8, 0.5], [0.1, 0.01], [200, 3.0])
    return {"p_t0": p[0] * 1e-6, "p_bw": p[1]}, rms, version


def fit_all(progress=None) -> list[dict]:
    rows = []
    for gpu in catalog.gpus().values():
        if not gpu.kernel_system:
            continue
        jobs = [("gemm_bf16", lambda: fit_gemm(gpu, "bfloat16", "bf16")),
                ("gemm_fp8", lambda: fit_gemm(gpu, "fp8", "fp8")),
                ("gemm_fp4", lambda: fit_gemm(gpu, "nvfp4", "fp4")),
                ("context_attention", lambda: fit_context(gpu)),
                ("generation_attention", lambda: fit_generation(gpu)),
                ("allreduce", lambda: fit_allreduce(gpu))]
        for curve, job in jobs:
            got = job()
            if got is None:
                continue
            params, rms, version = got
            rows.append({"gpu": gpu.name, "curve": curve, **params, "rms_log": rms,
                         "fitted_on": f"{gpu.kernel_system} {ENGINE} {version}"})
            if progress:
                progress(f"{gpu.name} {curve}: rms(log) {rms:.3f}")
    for curve, names in CURVES.items():
        mine = [r for r in rows if r["curve"] == curve]
        if mine:
            med = {p: float(np.median([r[p] for r in mine])) for p in names}
            rows.append({"gpu": "*", "curve": curve, **med, "rms_log": float(np.median([r["rms_log"] for r in mine])),
                         "fitted_on": "median of " + ", ".join(r["gpu"] for r in mine)})
    return rows


def write(rows: list[dict], path: Path) -> None:
    cols = ["gpu", "curve", "p_eff", "p_knee", "p_bw", "p_t0", "p_t_per_seq", "rms_log", "fitted_on"]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: (f"{r[c]:.6g}" if isinstance(r.get(c), float) else r.get(c, "")) for c in cols})
    tmp.replace(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", default=str(Path(__file__).parents[1] / "data" / "roofline_fits.csv"))
    args = ap.parse_args(argv)
    if tables.data_root() is None:
        print("error: the kernel tables are not installed; run `pip install -e '.[silicon]'`", file=sys.stderr)
        return 2
    rows = fit_all(progress=lambda s: print(s, file=sys.stderr))
    write(rows, Path(args.output))
    print(f"wrote {len(rows)} curves to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
