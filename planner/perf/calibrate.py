"""Fit the performance model's efficiencies and overheads to a measured profile.

Profile CSV (DESIGN.md): device, model, kind (prefill|decode|kv), tokens, batch,
context_tokens, bytes, seconds, repeats. Prefill rows time one iteration of `tokens` new
tokens on `context_tokens` cached; decode rows one step of `batch` requests holding
`context_tokens` in all; kv rows a transfer of `bytes`.

Least squares (scipy) on relative errors, weighted by sqrt(repeats), over
(compute_eff, memory_eff, knee_tokens, prefill_overhead_s, decode_overhead_s), once with
the overhead added to the GPU time and once overlapping it (max), keeping the better, with
the seconds per extra request in a merged prefill chunk where the profile has such rows,
then per-batch / per-chunk offsets where they pass an F-test, and the cost of a chunk
that starts an idle instance from rows timed after an idle gap (docs/model.md); kv
rows fit a link bandwidth and latency by linear regression, per copy path (`path` column). For `gpu="local"` the datasheet
is unknown: the fit measures the achieved FLOP/s and bytes/s themselves and reports them
as the nominal numbers of a GPU named `local` (efficiencies 1.0), clearly calibrated.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from scipy.stats import f as f_dist

from planner import catalog
from planner.errors import InputError
from planner.perf.profile import Efficiency, ProfileModel

PROFILE_COLUMNS = ("device", "model", "kind", "tokens", "batch", "context_tokens", "bytes", "seconds", "repeats")
KINDS = ("prefill", "decode", "kv")
LOCAL = "local"
KV_TRAFFIC_MAX = 8.0   # bound on the fitted KV bytes moved per KV byte read
KV_TRAFFIC_GAIN = 0.10  # fit the KV read factor only if it cuts the RMS error by 10%
PIECEWISE_GAIN = 0.10   # keep per-batch / per-chunk offsets only if they cut a kind's RMS error by 10%
PIECEWISE_P = 0.01      # ... and explain more than noise (F-test at this significance)
N_BASE = 7              # fitted parameters before the piecewise offsets (see _efficiency)
HOST = "host"          # the d2h and h2d legs in series
ADDITIVE = "overhead added to GPU time"
OVERLAP = "overhead overlapping GPU time (max)"


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
    structure: str = ADDITIVE
    alternative: dict | None = None     # every structure tried -> its RMS errors
    kv_path: str | None = None
    kv_paths: dict | None = None        # path -> link fit

    def as_dict(self) -> dict:
        e = self.efficiency
        return {"gpu": self.gpu.name, "model": self.model, "devices": list(self.devices),
                "nominal": {"fp16_tflops": self.gpu.fp16_tflops, "memory_gb_s": self.gpu.memory_gb_s,
                            "memory_gb": self.gpu.memory_gb},
                "efficiency": {"compute_eff": e.compute_eff, "memory_eff": e.memory_eff,
                               "knee_tokens": e.knee_tokens, "prefill_overhead_s": e.prefill_overhead_s,
                               "decode_overhead_s": e.decode_overhead_s, "calibrated": e.calibrated,
                               "overhead_overlaps": e.overhead_overlaps, "kv_traffic": e.kv_traffic,
                               "prefill_request_s": e.prefill_request_s,
                               "prefill_idle_factor": e.prefill_idle_factor,
                               "decode_batch_offsets_s": [list(x) for x in e.decode_batch_offsets_s],
                               "prefill_chunk_offsets_s": [list(x) for x in e.prefill_chunk_offsets_s],
                               "source": e.source},
                "structure": self.structure, "alternative": self.alternative,
                "kv_path": self.kv_path, "kv_paths": self.kv_paths,
                "rows": self.rows, "rms_rel_error": self.rms_rel_error, "max_rel_error": self.max_rel_error,
                "kv_link_gb_s": self.kv_link_gb_s, "kv_latency_s": self.kv_latency_s}


# column: (lowest, highest, whole number) - a profile row the testbed could have written
PROFILE_LIMITS = {"tokens": (0, 1e9, True), "batch": (0, 1e7, True), "context_tokens": (0, 1e12, True),
                  "bytes": (0, 1e15, False), "seconds": (0, 1e6, False), "repeats": (1, 1e9, True)}


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
    for col, (lo, hi, integer) in PROFILE_LIMITS.items():   # every number finite, in range, counts whole
        raw = df[col]
        v = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(v) & (v >= lo) & (v <= hi) & ((v > 0) if col == "seconds" else True)
            if integer:
                ok &= v == np.round(v)
        if not ok.all():
            i = int(np.argmax(~ok))
            want = f"{'an integer' if integer else 'a finite number'} {'> 0' if col == 'seconds' else f'>= {lo:g}'}"
            raise InputError(f"{path}: row {i + 2}, column {col}: {str(raw.iloc[i])[:40]!r}; expected {want} "
                             f"(at most {hi:g})")
        df[col] = v.astype(np.int64) if integer else v
    compute = df["kind"].isin(("prefill", "decode")).to_numpy()
    for col in ("tokens", "batch"):   # a prefill or decode step of nothing cannot be timed
        bad = compute & (df[col].to_numpy() < 1)
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(f"{path}: row {i + 2}, column {col}: {df[col].iloc[i]} in a {df['kind'].iloc[i]} row; "
                             "expected an integer >= 1")
    return df


def _local_spec(memory_gb: float, link_gb_s: float) -> catalog.GpuSpec:
    """A placeholder of 1 TFLOP/s and 1 GB/s: the fitted efficiencies are then the
    achieved TFLOP/s and GB/s themselves."""
    return catalog.GpuSpec(name=LOCAL, vendor="local", fp16_tflops=1.0, memory_gb=memory_gb, memory_gb_s=1.0,
                           link_gb_s=link_gb_s, network_gbit_s=link_gb_s * 8, gemm_knee_tokens=32.0,
                           source="calibrated from a profile")


def calibrate(profile, gpu: str, model: str, memory_gb: float | None = None, where: str = "profile",
              kv_path: str = "auto") -> Calibration:
    """Fit the efficiencies of `model` on `gpu` (a catalog name or "local") to `profile`
    (a DataFrame from read_profile or a path): both overhead structures (additive and
    overlapping, `Efficiency.overhead_overlaps`), keeping the one with the smaller RMS
    relative error; the KV link from the rows of `kv_path` ("auto": see `_choose_path`)."""
    df = profile if isinstance(profile, pd.DataFrame) else read_profile(profile)
    if not isinstance(profile, pd.DataFrame):
        where = str(profile)
    spec_model = catalog.model(model)
    names = {model.lower(), spec_model.name.lower(), *spec_model.aliases}
    rows = df[df["model"].astype(str).str.lower().isin(names) | (df["kind"] == "kv")]
    pre, dec, kv = (rows[rows["kind"] == k] for k in KINDS)
    pre, idle = _split_idle(pre)
    if len(pre) < 3 or len(dec) < 3:
        raise InputError(f"{where}: need at least 3 prefill and 3 decode rows for model {spec_model.name} "
                         f"(found {len(pre)} and {len(dec)}); profile more chunk sizes and batches")
    is_local = gpu.strip().lower() == LOCAL
    spec = _local_spec(memory_gb or 16.0, 1.0) if is_local else catalog.gpu(gpu)
    if memory_gb and not is_local:
        spec = replace(spec, memory_gb=memory_gb)
    base = ProfileModel(spec, spec_model, 1, "fp16", eff=Efficiency(1.0, 1.0, 0.0, 0.0))   # every fit replaces eff
    ct, ck, cs, cw, cb = (pre[c].to_numpy(float) for c in ("tokens", "context_tokens", "seconds", "repeats", "batch"))
    cb = np.maximum(cb, 1.0)
    db, dc, ds, dw = (dec[c].to_numpy(float) for c in ("batch", "context_tokens", "seconds", "repeats"))
    w = np.sqrt(np.maximum(np.concatenate([cw, dw]), 1.0))
    fits = {(overlap, free): _fit(base, spec_model, is_local, overlap, free, (ct, ck, cs, cb), (db, dc, ds), w)
            for overlap in (False, True) for free in (False, True)}
    rms_of = {k: float(np.sqrt(np.mean(np.concatenate(v[1:]) ** 2))) for k, v in fits.items()}
    best = min(((o, False) for o in (False, True)), key=rms_of.get)
    richer = min(((o, True) for o in (False, True)), key=rms_of.get)
    if rms_of[richer] < (1.0 - KV_TRAFFIC_GAIN) * rms_of[best]:   # a sixth parameter must earn its place
        best = richer
    overlap = best[0]
    th, rel_p, rel_d, d_pts, p_pts = _with_offsets(base, spec_model, is_local, best, fits[best],
                                                   (ct, ck, cs, cb), (db, dc, ds), w)
    structure = (OVERLAP if overlap else ADDITIVE) + (f"; KV read {th[5]:.2f}x" if best[1] else "")
    rms_now = float(np.sqrt(np.mean(np.concatenate([rel_p, rel_d]) ** 2)))
    parts = [f"{k} by {x} ({len(v)} points)" for k, x, v in (("decode", "batch", d_pts), ("prefill", "chunk", p_pts)) if v]
    if parts:
        structure += "; piecewise offsets " + ", ".join(parts)
    idle_factor = _idle_factor(pre, idle)
    if idle_factor is not None:
        structure += f"; a chunk on an idle instance x{idle_factor:.2f} ({len(idle)} idle rows)"
    src = (f"fit to {where} ({len(pre)} prefill, {len(dec)} decode rows; {structure}; RMS error "
           + (f"{rms_of[best]:.1%} roofline, {rms_now:.1%} with offsets)" if parts else f"{rms_now:.1%})"))
    eff = replace(_efficiency(th, overlap, d_pts, p_pts), calibrated=True, source=src,
                  prefill_idle_factor=idle_factor or 1.0)
    if is_local:   # the achieved rates become the nominal ones
        spec = replace(spec, fp16_tflops=float(th[0]), memory_gb_s=float(th[1]))
        eff = replace(eff, compute_eff=1.0, memory_eff=1.0, source=src + "; nominal = achieved")
    rms = {"prefill": float(np.sqrt(np.mean(rel_p**2))), "decode": float(np.sqrt(np.mean(rel_d**2)))}
    mx = {"prefill": float(np.max(np.abs(rel_p))), "decode": float(np.max(np.abs(rel_d)))}
    alternative = {f"{OVERLAP if o else ADDITIVE}{'; KV read fitted' if f else ''}":
                   {"prefill": float(np.sqrt(np.mean(v[1] ** 2))), "decode": float(np.sqrt(np.mean(v[2] ** 2)))}
                   for (o, f), v in fits.items()}
    paths = _fit_paths(kv)
    chosen = _choose_path(paths, kv_path, where)
    link = lat = None
    if chosen is not None:
        link, lat = paths[chosen]["link_gb_s"], paths[chosen]["latency_s"]
        rms["kv"], mx["kv"] = paths[chosen]["rms_rel_error"], paths[chosen]["max_rel_error"]
    return Calibration(spec, spec_model.name, eff, {"prefill": len(pre), "decode": len(dec), "kv": len(kv)},
                       rms, mx, link, lat, tuple(sorted(set(df["device"].astype(str)))),
                       structure=structure, alternative=alternative, kv_path=chosen, kv_paths=paths)


def _efficiency(theta, overlap: bool, d_points=(), p_points=()) -> Efficiency:
    """theta = (compute, memory, knee, prefill overhead, decode overhead, KV read, seconds
    per extra request in a chunk, then one offset per decode point, then one per prefill point)."""
    nd = len(d_points)
    return Efficiency(compute_eff=theta[0], memory_eff=theta[1], knee_tokens=theta[2], prefill_overhead_s=theta[3],
                      decode_overhead_s=theta[4], overhead_overlaps=overlap,
                      kv_traffic=theta[5], prefill_request_s=theta[6],
                      decode_batch_offsets_s=tuple(zip(d_points, theta[N_BASE:N_BASE + nd])),
                      prefill_chunk_offsets_s=tuple(zip(p_points, theta[N_BASE + nd:])))


def _fit(base: ProfileModel, spec_model, is_local: bool, overlap: bool, free_kv: bool, prefill_rows, decode_rows, w,
         d_points=(), p_points=(), start=None):
    """Bounded least squares on relative errors; (theta, prefill errors, decode errors).
    With `d_points` / `p_points`, one additive offset per decode batch size / prefill chunk
    size is fitted jointly (`start`: the roofline's theta to begin from)."""
    ct, ck, cs, cb = prefill_rows
    db, dc, ds = decode_rows
    hi_eff = 1e7 if is_local else 1.0

    def model_times(theta):
        pm = replace(base, eff=_efficiency(theta, overlap, d_points, p_points))
        return pm.prefill_time_s(ct, ck, cb), pm.decode_time_s(db, dc)

    merged = bool(np.any(cb > 1))   # the per-request seconds are fitted only from merged-chunk rows

    def full(x):
        return x if merged else np.concatenate([x[:N_BASE - 1], [0.0], x[N_BASE - 1:]])

    def resid(x):
        tp_, td_ = model_times(full(x))
        return w * (np.concatenate([tp_ / cs, td_ / ds]) - 1.0)

    # an overlapping overhead is the floor of an iteration: start it at the fastest row
    share = 1.0 if overlap else 0.1
    x0 = np.array([0.5 * hi_eff if is_local else 0.6, 0.5 * hi_eff if is_local else 0.7,
                   base.knee_tokens, float(np.min(cs)) * share, float(np.min(ds)) * share, 1.0, 0.0])
    if is_local:  # start from the largest measured rates
        x0[0] = max(2.0 * spec_model.matmul_params * ct.max() / cs[np.argmax(ct)] / 1e12, 1e-6)
        x0[1] = max(base.weight_bytes / ds.min() / 1e9, 1e-6)
    lo = [1e-6, 1e-6, 0.0, 0.0, 0.0, 1.0, 0.0]
    hi = [hi_eff, hi_eff, 1e5, max(cs.max(), 1e-3), max(ds.max(), 1e-3), KV_TRAFFIC_MAX if free_kv else 1.0 + 1e-12,
          float(cs.max())]
    if start is not None:
        x0 = np.array(start[:N_BASE], dtype=float)
    span_d, span_p = float(ds.max()), float(cs.max())
    x0 = np.concatenate([np.clip(x0, lo, hi), np.zeros(len(d_points) + len(p_points))])
    lo = lo + [-span_d] * len(d_points) + [-span_p] * len(p_points)
    hi = hi + [span_d] * len(d_points) + [span_p] * len(p_points)
    keep = np.ones(len(x0), dtype=bool)
    keep[N_BASE - 1] = merged
    x0, lo, hi = x0[keep], np.asarray(lo)[keep], np.asarray(hi)[keep]
    th = full(least_squares(resid, x0, bounds=(lo, hi), x_scale="jac", max_nfev=2000).x)
    tp_, td_ = model_times(th)
    return th, tp_ / cs - 1.0, td_ / ds - 1.0


def _split_idle(pre: pd.DataFrame):
    """(back-to-back prefill rows, rows timed after an idle gap: `path` "idle")."""
    if "path" not in pre.columns:
        return pre, pre.iloc[0:0]
    is_idle = pre["path"].fillna("").astype(str) == "idle"
    return pre[~is_idle], pre[is_idle]


def _idle_factor(pre: pd.DataFrame, idle: pd.DataFrame) -> float | None:
    """`Efficiency.prefill_idle_factor`: the geometric mean of an idle row's time over the
    back-to-back row of the same chunk (tokens, batch, context); None without such pairs."""
    if idle.empty:
        return None
    key = ["tokens", "batch", "context_tokens"]
    pairs = idle.merge(pre, on=key, suffixes=("_idle", ""))
    if pairs.empty:
        return None
    return float(np.exp(np.mean(np.log(pairs["seconds_idle"].to_numpy(float) / pairs["seconds"].to_numpy(float)))))


def _earns_place(rms_new: float, rms_old: float, rows: int, points: int) -> bool:
    """Whether `points` fitted offsets explain more than noise: an F-test of the nested
    models at PIECEWISE_P (the offsets add points - 1 parameters: a common one is the
    roofline's overhead), and an RMS cut of at least PIECEWISE_GAIN."""
    extra, resid_df = points - 1, rows - points
    if extra < 1 or resid_df < 1 or rms_new >= (1.0 - PIECEWISE_GAIN) * rms_old:
        return False
    rss_new, rss_old = rows * rms_new ** 2, rows * rms_old ** 2
    if rss_new <= 0.0:
        return True
    return (rss_old - rss_new) / extra / (rss_new / resid_df) > f_dist.ppf(1.0 - PIECEWISE_P, extra, resid_df)


def _with_offsets(base, spec_model, is_local, best, fitted, prefill_rows, decode_rows, w):
    """Per-shape offsets on top of the chosen roofline (`Efficiency.decode_batch_offsets_s`,
    `prefill_chunk_offsets_s`), fitted jointly with it; each kind's kept only where it
    passes `_earns_place` and the profile has at least 3 distinct batch / chunk sizes.
    Returns (theta, prefill errors, decode errors, decode points, prefill points)."""
    th, rel_p, rel_d = fitted
    dpts = tuple(float(x) for x in np.unique(decode_rows[0]))
    ppts = tuple(float(x) for x in np.unique(prefill_rows[0]))
    rms = lambda r: float(np.sqrt(np.mean(r ** 2)))   # noqa: E731

    fits: dict = {}

    def fit(d, p):
        if (d, p) not in fits:
            fits[d, p] = _fit(base, spec_model, is_local, best[0], best[1], prefill_rows, decode_rows, w, d, p,
                              start=th)
        return fits[d, p]

    use_d = len(dpts) >= 3 and _earns_place(rms(fit(dpts, ())[2]), rms(rel_d), len(decode_rows[0]), len(dpts))
    use_p = len(ppts) >= 3 and _earns_place(rms(fit((), ppts)[1]), rms(rel_p), len(prefill_rows[0]), len(ppts))
    if not (use_d or use_p):
        return th, rel_p, rel_d, (), ()
    d, p = (dpts if use_d else ()), (ppts if use_p else ())
    return (*fit(d, p), d, p)     # one of the trials above unless both earned their place


def _fit_paths(kv: pd.DataFrame) -> dict:
    """Per KV copy path (the profile's `path` column; "" where it has none): bandwidth,
    latency and fit errors of seconds = latency + bytes / bandwidth."""
    out = {}
    col = kv["path"].fillna("").astype(str) if "path" in kv.columns else pd.Series([""] * len(kv), index=kv.index)
    for path in sorted(set(col)):
        rows = kv[col == path]
        link, lat = _fit_link(rows)
        if link is None:
            continue
        pred = lat + rows["bytes"].to_numpy(float) / (link * 1e9)
        rel = pred / rows["seconds"].to_numpy(float) - 1.0
        out[path] = {"link_gb_s": link, "latency_s": lat, "rows": int(len(rows)),
                     "rms_rel_error": float(np.sqrt(np.mean(rel**2))), "max_rel_error": float(np.max(np.abs(rel)))}
    if "d2h" in out and "h2d" in out:
        # a transfer between two GPUs staged through host memory: both legs in series
        a, b = out["d2h"], out["h2d"]
        out[HOST] = {"link_gb_s": 1.0 / (1.0 / a["link_gb_s"] + 1.0 / b["link_gb_s"]),
                     "latency_s": a["latency_s"] + b["latency_s"], "rows": a["rows"] + b["rows"],
                     "rms_rel_error": max(a["rms_rel_error"], b["rms_rel_error"]),
                     "max_rel_error": max(a["max_rel_error"], b["max_rel_error"])}
    return out


def _choose_path(paths: dict, kv_path: str, where: str) -> str | None:
    """`auto`: the host-staged path (d2h then h2d) where the profile has both legs - the
    path between two instances' GPUs without a peer link, which is what a disaggregated
    deployment's KV crosses - else the device copy, else rows without a path."""
    if kv_path != "auto":
        if kv_path not in paths:
            raise InputError(f"{where}: no kv rows for path {kv_path!r} with two distinct sizes; "
                             f"have {', '.join(sorted(paths)) or 'none'}")
        return kv_path
    for p in (HOST, "copy", ""):
        if p in paths:
            return p
    return next(iter(paths), None)


def _fit_link(kv: pd.DataFrame):
    """seconds = latency + bytes / bandwidth, least squares on relative errors (weights
    1/seconds, so small transfers count as much as large ones); None without 2 distinct sizes."""
    if len(kv) < 2 or kv["bytes"].nunique() < 2:
        return None, None
    b = kv["bytes"].to_numpy(float)
    s = kv["seconds"].to_numpy(float)
    slope, intercept = np.polyfit(b, s, 1, w=1.0 / s)
    if slope <= 0:
        return None, None
    return float(1.0 / slope / 1e9), float(max(intercept, 0.0))
