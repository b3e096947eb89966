"""Fit the performance model's efficiencies and overheads to a measured profile.

Profile CSV (DESIGN.md): device, model, kind (prefill|decode|kv), tokens, batch,
context_tokens, bytes, seconds, repeats. Prefill rows time one iteration of `tokens` new
tokens on `context_tokens` cached; decode rows one step of `batch` requests holding
`context_tokens` in all; kv rows a transfer of `bytes`.

Least squares (scipy) on relative errors, weighted by sqrt(repeats), over
(compute_eff, memory_eff, knee_tokens, prefill_overhead_s, decode_overhead_s); kv rows
fit a link bandwidth and latency by linear regression. For `gpu="local"` the datasheet
is unknown: the fit measures the achieved FLOP/s and bytes/s themselves and reports them
as the nominal numbers of a GPU named `local` (efficiencies 1.0), clearly calibrated.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from . import catalog
from .errors import InputError
from .perf import Efficiency, PerfModel

PROFILE_COLUMNS = ("device", "model", "kind", "tokens", "batch", "context_tokens", "bytes", "seconds", "repeats")
KINDS = ("prefill", "decode", "kv")
LOCAL = "local"


@dataclass(frozen=True)
class Calibration:
    gpu: catalog.GpuSpec
    model: str
    efficiency: Efficiency
    rows: dict                      # kind -> rows used
    rms_rel_error: dict             # kind -> RMS relative error of the fitted model
    max_rel_error: dict
    kv_link_gb_s: float | None = None
    kv_latency_s: float | None = None
    devices: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        e = self.efficiency
        return {"gpu": self.gpu.name, "model": self.model, "devices": list(self.devices),
                "nominal": {"fp16_tflops": self.gpu.fp16_tflops, "memory_gb_s": self.gpu.memory_gb_s,
                            "memory_gb": self.gpu.memory_gb},
                "efficiency": {"compute_eff": e.compute_eff, "memory_eff": e.memory_eff,
                               "knee_tokens": e.knee_tokens, "prefill_overhead_s": e.prefill_overhead_s,
                               "decode_overhead_s": e.decode_overhead_s, "calibrated": e.calibrated,
                               "source": e.source},
                "rows": self.rows, "rms_rel_error": self.rms_rel_error, "max_rel_error": self.max_rel_error,
                "kv_link_gb_s": self.kv_link_gb_s, "kv_latency_s": self.kv_latency_s}


def read_profile(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such profile; write one with the testbed profiler") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a profile CSV ({e.__class__.__name__})") from None
    missing = [c for c in PROFILE_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing columns {', '.join(missing)}; expected {', '.join(PROFILE_COLUMNS)}")
    bad = ~df["kind"].isin(KINDS)
    if bad.any():
        raise InputError(f"{path}: row {int(np.argmax(bad.to_numpy())) + 2} has kind {df['kind'][bad].iloc[0]!r}; "
                         f"use one of {', '.join(KINDS)}")
    num = ["tokens", "batch", "context_tokens", "bytes", "seconds", "repeats"]
    df[num] = df[num].apply(pd.to_numeric, errors="coerce").fillna(0)
    if (df["seconds"] <= 0).any():
        raise InputError(f"{path}: row {int(np.argmax((df['seconds'] <= 0).to_numpy())) + 2} has seconds <= 0")
    return df


def _local_spec(memory_gb: float, link_gb_s: float) -> catalog.GpuSpec:
    """A placeholder of 1 TFLOP/s and 1 GB/s: the fitted efficiencies are then the
    achieved TFLOP/s and GB/s themselves."""
    return catalog.GpuSpec(name=LOCAL, vendor="local", fp16_tflops=1.0, memory_gb=memory_gb, memory_gb_s=1.0,
                           link_gb_s=link_gb_s, network_gbit_s=link_gb_s * 8, gemm_knee_tokens=32.0,
                           source="calibrated from a profile")


def calibrate(profile, gpu: str, model: str, memory_gb: float | None = None, where: str = "profile") -> Calibration:
    """Fit the efficiencies of `model` on `gpu` (a catalog name or "local") to `profile`
    (a DataFrame from read_profile or a path)."""
    df = profile if isinstance(profile, pd.DataFrame) else read_profile(profile)
    if not isinstance(profile, pd.DataFrame):
        where = str(profile)
    spec_model = catalog.model(model)
    names = {model.lower(), spec_model.name.lower(), *spec_model.aliases}
    rows = df[df["model"].astype(str).str.lower().isin(names) | (df["kind"] == "kv")]
    pre, dec, kv = (rows[rows["kind"] == k] for k in KINDS)
    if len(pre) < 3 or len(dec) < 3:
        raise InputError(f"{where}: need at least 3 prefill and 3 decode rows for model {spec_model.name} "
                         f"(found {len(pre)} and {len(dec)}); profile more chunk sizes and batches")
    link, lat = _fit_link(kv)
    is_local = gpu.strip().lower() == LOCAL
    spec = _local_spec(memory_gb or 16.0, link or 1.0) if is_local else catalog.gpu(gpu)
    if memory_gb and not is_local:
        spec = replace(spec, memory_gb=memory_gb)
    base = PerfModel(spec, spec_model)
    ct, ck, cs, cw = (pre[c].to_numpy(float) for c in ("tokens", "context_tokens", "seconds", "repeats"))
    db, dc, ds, dw = (dec[c].to_numpy(float) for c in ("batch", "context_tokens", "seconds", "repeats"))
    w = np.sqrt(np.maximum(np.concatenate([cw, dw]), 1.0))
    hi_eff = 1e7 if is_local else 1.0

    def model_times(theta):
        e = Efficiency(theta[0], theta[1], theta[2], theta[3], theta[4])
        pm = replace(base, eff=e)
        return pm.prefill_time_s(ct, ck), pm.decode_time_s(db, dc)

    def resid(theta):
        tp_, td_ = model_times(theta)
        return w * (np.concatenate([tp_ / cs, td_ / ds]) - 1.0)

    x0 = np.array([0.5 * hi_eff if is_local else 0.6, 0.5 * hi_eff if is_local else 0.7,
                   base.knee_tokens, float(np.min(cs)) * 0.1, float(np.min(ds)) * 0.1])
    if is_local:  # start from the largest measured rates
        x0[0] = max(2.0 * spec_model.matmul_params * ct.max() / cs[np.argmax(ct)] / 1e12, 1e-6)
        x0[1] = max(base.weight_bytes / ds.min() / 1e9, 1e-6)
    lo = [1e-6, 1e-6, 0.0, 0.0, 0.0]
    hi = [hi_eff, hi_eff, 1e5, max(cs.max(), 1e-3), max(ds.max(), 1e-3)]
    x0 = np.clip(x0, lo, hi)
    fit = least_squares(resid, x0, bounds=(lo, hi), x_scale="jac", max_nfev=2000)
    th = fit.x
    tp_, td_ = model_times(th)
    rel_p, rel_d = tp_ / cs - 1.0, td_ / ds - 1.0
    src = f"fit to {where} ({len(pre)} prefill, {len(dec)} decode rows; RMS error {np.sqrt(np.mean(np.concatenate([rel_p, rel_d])**2)):.1%})"
    if is_local:
        spec = replace(spec, fp16_tflops=float(th[0]), memory_gb_s=float(th[1]))
        eff = Efficiency(1.0, 1.0, float(th[2]), float(th[3]), float(th[4]), calibrated=True,
                         source=src + "; nominal = achieved")
    else:
        eff = Efficiency(float(th[0]), float(th[1]), float(th[2]), float(th[3]), float(th[4]), calibrated=True,
                         source=src)
    rms = {"prefill": float(np.sqrt(np.mean(rel_p**2))), "decode": float(np.sqrt(np.mean(rel_d**2)))}
    mx = {"prefill": float(np.max(np.abs(rel_p))), "decode": float(np.max(np.abs(rel_d)))}
    if link is not None:
        pred = lat + kv["bytes"].to_numpy(float) / (link * 1e9)
        rel = pred / kv["seconds"].to_numpy(float) - 1.0
        rms["kv"], mx["kv"] = float(np.sqrt(np.mean(rel**2))), float(np.max(np.abs(rel)))
    return Calibration(spec, spec_model.name, eff, {"prefill": len(pre), "decode": len(dec), "kv": len(kv)},
                       rms, mx, link, lat, tuple(sorted(set(df["device"].astype(str)))))


def _fit_link(kv: pd.DataFrame):
    """seconds = latency + bytes / bandwidth, least squares; None without 2 distinct sizes."""
    if len(kv) < 2 or kv["bytes"].nunique() < 2:
        return None, None
    b = kv["bytes"].to_numpy(float)
    s = kv["seconds"].to_numpy(float)
    slope, intercept = np.polyfit(b, s, 1)
    if slope <= 0:
        return None, None
    return float(1.0 / slope / 1e9), float(max(intercept, 0.0))
