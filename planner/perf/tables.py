"""Measured kernel tables: GEMM, context and generation attention, all-reduce latencies per
GPU system and serving engine, read from the optional `aiconfigurator-core` package
(Apache-2.0; `pip install -e '.[silicon]'`). Only its kernel-level parquet tables under
`aiconfigurator_core/systems/data/<system>/<op>/<engine>/<version>/` are read; none of its
estimators are called.

Interpolation (tested on held-back points of the same tables, docs/perf-model.md):
- GEMM latency over (m, n, k): trilinear in (log m, log n, log k) on log latency, inside
  the measured grid; outside it, the nearest grid point scaled by the FLOP ratio (a GEMM
  larger than any measured one runs at the largest one's rate).
- attention: per (heads, KV heads, head dim) the nearest measured geometry, scaled by the
  head ratio; then bilinear in (log batch, log length) on log latency.
- all-reduce: linear in log message size on log latency, per GPU count.
Latencies in the tables are milliseconds; everything here returns seconds.

Points faster than physics are dropped when a table is built: GEMMs above the dtype's dense
peak FLOP/s (none in 0.12.0), and generation-attention rows that read more KV than any L2
holds faster than the memory bandwidth (A100 TensorRT-LLM 1.0.0). `*_held_back` rebuild a
table without one grid value and predict the points held back (tests, benchmarks).
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from statistics import median
from pathlib import Path

import numpy as np

ENGINES = ("vllm", "sglang", "trtllm")
# the GEMM kernel family each weight format runs (the tables' gemm_dtype)
GEMM_DTYPES = {"bf16": "bfloat16", "fp16": "bfloat16", "fp8": "fp8", "fp8_block": "fp8_block", "fp4": "nvfp4",
               "nvfp4": "nvfp4"}
KV_DTYPES = {"bf16": "bfloat16", "fp16": "bfloat16", "fp8": "fp8"}


@lru_cache(maxsize=1)
def data_root() -> Path | None:
    """The kernel tables' folder, or None without the `silicon` extra."""
    spec = importlib.util.find_spec("aiconfigurator_core")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "systems" / "data"
    return root if root.is_dir() else None


def package_version() -> str:
    from importlib.metadata import version
    return version("aiconfigurator-core")


def _version_key(v: str):
    parts = []
    for piece in v.replace("post", ".").replace("rc", ".-1.").split("."):
        parts.append(int(piece) if piece.lstrip("-").isdigit() else -2)
    return parts


def table_path(system: str, op: str, engine: str, filename: str) -> tuple[Path, str] | None:
    """(path, engine version) of the newest measured `filename` for this system and engine."""
    root = data_root()
    if root is None:
        return None
    base = root / system / op / engine
    if not base.is_dir():
        return None
    versions = sorted((d.name for d in base.iterdir() if (d / filename).is_file()), key=_version_key)
    return (base / versions[-1] / filename, versions[-1]) if versions else None


@lru_cache(maxsize=32)
def _read(path: Path, columns: tuple[str, ...]):
    """The named columns; a column an older table lacks reads as its default (window 0)."""
    import pandas as pd
    have = set(pd.read_parquet(path, columns=[]).columns) | _schema_names(path)
    frame = pd.read_parquet(path, columns=[c for c in columns if c in have])
    for c in columns:
        if c not in frame:
            frame[c] = 0
    return frame


def _schema_names(path: Path) -> set[str]:
    import pyarrow.parquet as pq
    return set(pq.read_schema(path).names)


def _log_interp(x, xs, ys):
    """Linear in log x on log y, clamped to the ends (callers scale beyond them)."""
    return np.exp(np.interp(np.log(x), np.log(xs), np.log(ys)))


class GemmTable:
    """Latency of an (m x k) @ (k x n) GEMM of one weight format, as measured."""

    def __init__(self, frame, dtype: str, peak_flops: float | None = None):
        d, self.dropped = _gemm_points(frame, dtype, peak_flops)
        if d.empty:
            raise KeyError(dtype)
        self.ms = np.sort(d.m.unique()).astype(float)
        self.ns = np.sort(d.n.unique()).astype(float)
        self.ks = np.sort(d.k.unique()).astype(float)
        grid = np.full((len(self.ms), len(self.ns), len(self.ks)), np.nan)
        grid[np.searchsorted(self.ms, d.m), np.searchsorted(self.ns, d.n), np.searchsorted(self.ks, d.k)] = d.latency
        self.log_lat = np.apply_along_axis(_monotone_median, 0, _fill_along_m(np.log(grid * 1e-3)))

    def seconds(self, m, n: float, k: float) -> np.ndarray:
        """Latency for each m (array) at one (n, k)."""
        m = np.atleast_1d(np.asarray(m, dtype=float))
        nc, kc = np.clip(n, self.ns[0], self.ns[-1]), np.clip(k, self.ks[0], self.ks[-1])
        mc = np.clip(m, self.ms[0], self.ms[-1])
        out = np.exp(_trilinear(self.log_lat, (self.ms, self.ns, self.ks), np.log(mc), np.log(nc), np.log(kc)))
        # beyond the grid: the nearest measured GEMM's rate, scaled by FLOPs
        return out * np.maximum(m / mc, 1.0) * (n * k) / (nc * kc)


def _gemm_points(frame, dtype: str, peak_flops: float | None):
    """The measured GEMMs of one format, one latency (ms) per (m, n, k), and how many points
    were dropped for beating `peak_flops` (a measurement error; none in the 0.12.0 tables
    with the catalog's datasheet peaks, tests/test_perf_tables.py)."""
    d = frame[frame.gemm_dtype == dtype]
    dropped = 0
    if peak_flops and not d.empty:
        fast = 2.0 * d.m * d.n * d.k / (d.latency * 1e-3) > peak_flops
        dropped = int(fast.sum())
        d = d[~fast]
    # several kernels may be measured for one format: an engine picks the fastest
    return d.groupby(["m", "n", "k"], as_index=False).latency.min(), dropped


def _fill_along_m(a: np.ndarray) -> np.ndarray:
    """Unmeasured cells (a few per table) from their neighbours along m."""
    if not np.isnan(a).any():
        return a
    out = a.copy()
    idx = np.arange(a.shape[0])
    for j in range(a.shape[1]):
        for k in range(a.shape[2]):
            col = out[:, j, k]
            ok = ~np.isnan(col)
            if ok.sum() >= 2 and not ok.all():
                out[:, j, k] = np.interp(idx, idx[ok], col[ok])
            elif ok.sum() == 1:
                out[:, j, k] = col[ok][0]
    return out


def _monotone_median(y: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to y in absolute deviation (isotonic median
    regression, pool-adjacent-violators on block medians).

    More rows never make a GEMM faster (the kernel for m + 1 rows runs m rows padded), yet
    the tables have single slow points: vLLM's B200 FP8 per-tensor GEMMs measure 27-38 us at
    m = 1, 2, 14 or 16 and 13-19 us at the m around them; cuBLAS heuristics alternate between
    m and m + 1. Medians of pooled neighbours drop such spikes without pulling the curve down
    to its fastest points, as a running minimum would."""
    blocks: list[list[float]] = []   # each block's median is its fitted value
    for v in y.tolist():
        blocks.append([v])
        while len(blocks) > 1 and median(blocks[-2]) > median(blocks[-1]):
            last = blocks.pop()
            blocks[-1] += last
    return np.concatenate([np.full(len(b), median(b)) for b in blocks])


def _trilinear(grid, axes, x, y, z):
    """Trilinear interpolation in log coordinates of a (len(ax0), len(ax1), len(ax2)) grid
    at points (x[i], y, z); y and z scalars, x an array; NaN cells are skipped by weight."""
    lx, ly, lz = (np.log(a) for a in axes)
    i = np.clip(np.searchsorted(lx, x) - 1, 0, len(lx) - 2)
    j = int(np.clip(np.searchsorted(ly, y) - 1, 0, len(ly) - 2))
    k = int(np.clip(np.searchsorted(lz, z) - 1, 0, len(lz) - 2))
    tx = np.clip((x - lx[i]) / (lx[i + 1] - lx[i]), 0, 1)
    ty = float(np.clip((y - ly[j]) / (ly[j + 1] - ly[j]), 0, 1))
    tz = float(np.clip((z - lz[k]) / (lz[k + 1] - lz[k]), 0, 1))
    acc = np.zeros_like(x)
    wsum = np.zeros_like(x)
    for di, wx in ((0, 1 - tx), (1, tx)):
        for dj, wy in ((0, 1 - ty), (1, ty)):
            for dk, wz in ((0, 1 - tz), (1, tz)):
                v = grid[i + di, j + dj, k + dk]
                w = wx * wy * wz * ~np.isnan(v)
                acc += w * np.nan_to_num(v)
                wsum += w
    return acc / np.where(wsum > 0, wsum, np.nan)


class AttentionTable:
    """Context (prefill) or generation (decode) attention latency for one head geometry,
    over (batch, length): `length` is the prompt (context) or the KV length (generation)."""

    def __init__(self, frame, heads: int, kv_heads: int, head_dim: int, kv_dtype: str, generation: bool,
                 bandwidth: float | None = None):
        d = _attention_rows(frame, kv_dtype)
        d = d[d.head_dim == _nearest(d.head_dim.unique(), head_dim)]
        # nearest measured KV-head count with the same grouping if possible, then heads
        kvs = d.num_key_value_heads.unique()
        g = _nearest(kvs, kv_heads)
        d = d[d.num_key_value_heads == g]
        h = _nearest(d.num_heads.unique(), heads * g / max(kv_heads, 1))
        d = d[d.num_heads == h]
        self.scale = (heads / h) if not generation else (kv_heads / g)
        self.geometry = (int(h), int(g), int(d.head_dim.iloc[0]))
        # a decode step that reads more KV than any L2 holds faster than the memory bandwidth
        # is a measurement error (A100 TensorRT-LLM 1.0.0 rows, tests/test_perf_tables.py)
        self.dropped = 0
        if generation and bandwidth:
            nbytes = generation_kv_bytes(d)
            fast = (nbytes > CACHE_BYTES) & (nbytes / (d.latency * 1e-3) > bandwidth)
            self.dropped = int(fast.sum())
            d = d[~fast]
        length = "step" if generation else "isl"
        d = d.groupby(["batch_size", length], as_index=False).latency.min()
        self.batches = np.sort(d.batch_size.unique()).astype(float)
        self.lengths = np.sort(d[length].unique()).astype(float)
        grid = np.full((len(self.batches), len(self.lengths)), np.nan)
        grid[np.searchsorted(self.batches, d.batch_size), np.searchsorted(self.lengths, d[length])] = d.latency * 1e-3
        self.grid = grid
        self.generation = generation

    def seconds(self, batch, length) -> np.ndarray:
        """Latency of `batch` sequences of `length` each (arrays broadcast)."""
        b = np.asarray(batch, dtype=float)
        s = np.asarray(length, dtype=float)
        b, s = np.broadcast_arrays(b, s)
        out = np.empty(b.shape)
        flat_b, flat_s, flat_o = b.ravel(), s.ravel(), out.reshape(-1)
        for i, (bi, si) in enumerate(zip(flat_b, flat_s)):
            flat_o[i] = self._one(bi, si)
        return out * self.scale

    def _one(self, b: float, s: float) -> float:
        bs, ls = self.batches, self.lengths
        bc, sc = min(max(b, bs[0]), bs[-1]), min(max(s, ls[0]), ls[-1])
        # each batch row's curve over length; rows that lack this length (large batch x long
        # sequence was not measured) are extended by the row's own slope
        i = int(np.clip(np.searchsorted(bs, bc) - 1, 0, len(bs) - 2)) if len(bs) > 1 else 0
        rows = [self._row(r, sc) for r in ((i, i + 1) if len(bs) > 1 else (0,))]
        if len(rows) == 2:
            t = (np.log(bc) - np.log(bs[i])) / (np.log(bs[i + 1]) - np.log(bs[i]))
            v = float(np.exp((1 - t) * np.log(rows[0]) + t * np.log(rows[1])))
        else:
            v = rows[0]
        # beyond the grid: linear in batch, and in length (generation: KV read) or its square
        v *= max(b / bc, 1.0)
        if s > sc:
            v *= s / sc if self.generation else (s / sc) ** 2
        return v

    def _row(self, r: int, s: float) -> float:
        row = self.grid[r]
        ok = ~np.isnan(row)
        ls = self.lengths[ok]
        vals = row[ok]
        if s <= ls[-1]:
            return float(_log_interp(s, ls, vals))
        # past the row's longest measured length: its last two points' log slope
        if len(ls) >= 2:
            slope = np.log(vals[-1] / vals[-2]) / np.log(ls[-1] / ls[-2])
            slope = max(slope, 1.0 if self.generation else 1.0)
            return float(vals[-1] * (s / ls[-1]) ** slope)
        return float(vals[-1] * s / ls[-1])


CACHE_BYTES = 128 * 2**20   # more than the L2 of any GPU with tables: beyond it, data comes from memory


def generation_kv_bytes(frame) -> np.ndarray:
    """A lower bound on the KV bytes a generation-attention row reads: batch x KV length x KV
    heads x (K at head_dim + V at min(head_dim, 128): MLA-style rows of head_dim 192 carry
    128-wide values) x the KV format's bytes."""
    kv = np.where(frame.kv_cache_dtype.astype(str).str.contains("fp8"), 1.0, 2.0)
    hd = frame.head_dim.to_numpy(float)
    return (frame.batch_size.to_numpy(float) * frame.step.to_numpy(float) * frame.num_key_value_heads.to_numpy(float)
            * (hd + np.minimum(hd, 128.0)) * kv)


def _attention_rows(frame, kv_dtype: str):
    """Full-attention rows of one KV format (any format if the table lacks it)."""
    d = frame[(frame.window_size == 0) & (frame.kv_cache_dtype == kv_dtype)]
    return d if not d.empty else frame[frame.window_size == 0]


def _nearest(values, x: float):
    values = np.asarray(values, dtype=float)
    return values[np.argmin(np.abs(np.log(values) - np.log(max(x, 1e-9))))]


SIXTEEN_BIT = ("half", "bfloat16", "float16", "fp16", "bf16")


class AllReduceTable:
    """All-reduce latency by message size in bytes for a GPU count, from the 16-bit rows
    (activations are all-reduced in 16 bit). The tables count a message in elements."""

    def __init__(self, frame, gpus: int):
        d = frame[(frame.op_name == "all_reduce") & (frame.num_gpus == gpus)] if "op_name" in frame else \
            frame[frame.num_gpus == gpus]
        dtype_col = "nccl_dtype" if "nccl_dtype" in d else "allreduce_dtype"
        d = d[d[dtype_col].astype(str).str.lower().isin(SIXTEEN_BIT)]
        if d.empty:
            raise KeyError(gpus)
        d = d.groupby("message_size", as_index=False).latency.min()
        self.sizes = d.message_size.to_numpy(float) * 2.0
        self.lat = d.latency.to_numpy(float) * 1e-3
        self.gpus = gpus

    def faster(self, other: "AllReduceTable") -> "AllReduceTable":
        """The per-size minimum of two tables, on the union of their sizes."""
        out = object.__new__(AllReduceTable)
        out.sizes = np.union1d(self.sizes, other.sizes)
        out.lat = np.minimum(self.seconds(out.sizes), other.seconds(out.sizes))
        out.gpus = self.gpus
        return out

    def seconds(self, message_bytes) -> np.ndarray:
        x = np.maximum(np.asarray(message_bytes, dtype=float), self.sizes[0])
        xc = np.minimum(x, self.sizes[-1])
        # beyond the largest message: the largest one's bandwidth
        return _log_interp(xc, self.sizes, self.lat) * np.maximum(x / xc, 1.0)


GEMM_COLS = ("gemm_dtype", "m", "n", "k", "latency")
_ATTN_COLS = ("batch_size", "isl", "step", "num_heads", "num_key_value_heads", "head_dim", "kv_cache_dtype",
              "window_size", "latency")


def gemm_frame(system: str, engine: str):
    """(frame, engine version) of the newest GEMM table for this system and engine, or None."""
    found = table_path(system, "gemm", engine, "gemm_perf.parquet")
    return None if found is None else (_read(found[0], GEMM_COLS), found[1])


def attention_frame(system: str, engine: str, generation: bool):
    name = "generation_attention_perf.parquet" if generation else "context_attention_perf.parquet"
    found = table_path(system, "attention", engine, name)
    return None if found is None else (_read(found[0], _ATTN_COLS), found[1])


def allreduce_frames(system: str, engine: str) -> list[tuple[object, str]]:
    """[(frame, "source version")]: the engine's own all-reduce table and NCCL's, where present."""
    out = []
    for op_engine, name, cols in ((engine, "custom_allreduce_perf.parquet",
                                   ("allreduce_dtype", "num_gpus", "message_size", "latency")),
                                  ("nccl", "nccl_perf.parquet", ("op_name", "nccl_dtype", "num_gpus", "message_size", "latency"))):
        found = table_path(system, "comm", op_engine, name)
        if found is not None:
            out.append((_read(found[0], cols), f"{op_engine} {found[1]}"))
    return out


@lru_cache(maxsize=64)
def gemm_table(system: str, engine: str, gemm_dtype: str, peak_flops: float | None = None) -> tuple[GemmTable, str] | None:
    """The table of one weight format; points faster than `peak_flops` are dropped."""
    found = gemm_frame(system, engine)
    if found is None:
        return None
    try:
        return GemmTable(found[0], gemm_dtype, peak_flops), found[1]
    except KeyError:
        return None


@lru_cache(maxsize=64)
def attention_table(system: str, engine: str, heads: int, kv_heads: int, head_dim: int, kv_dtype: str,
                    generation: bool, bandwidth: float | None = None) -> tuple[AttentionTable, str] | None:
    """The table of the nearest measured geometry; generation rows that read their KV faster
    than `bandwidth` (bytes/s) are dropped."""
    found = attention_frame(system, engine, generation)
    if found is None:
        return None
    return AttentionTable(found[0], heads, kv_heads, head_dim, KV_DTYPES.get(kv_dtype, "bfloat16"), generation,
                          bandwidth), found[1]


def _combined_allreduce(frames, gpus: int) -> tuple[AllReduceTable, list[int]] | None:
    """Per message size the faster of the given tables' all-reduce at `gpus` GPUs, and which
    of the frames had rows for it."""
    got, used = [], []
    for i, frame in enumerate(frames):
        try:
            got.append(AllReduceTable(frame, gpus))
            used.append(i)
        except KeyError:
            continue
    if not got:
        return None
    best = got[0]
    for other in got[1:]:
        best = best.faster(other)
    return best, used


@lru_cache(maxsize=64)
def allreduce_table(system: str, engine: str, gpus: int) -> tuple[AllReduceTable, str] | None:
    """All-reduce by message size: per size the faster of the engine's own (custom, for small
    messages) and NCCL's, as engines switch to NCCL where it wins."""
    sources = allreduce_frames(system, engine)
    found = _combined_allreduce([f for f, _ in sources], gpus)
    if found is None:
        return None
    return found[0], " + ".join(sources[i][1] for i in found[1])


# ---- held-back checks: rebuild a table without one grid value, predict the points held back ----

def interior(values) -> np.ndarray:
    """The sorted distinct grid values less the smallest and the largest."""
    v = np.unique(np.asarray(values))
    return v[1:-1]


def gemm_held_back(frame, dtype: str, axis: str, value: float, peak_flops: float | None = None):
    """(interpolated, measured) seconds at every measured GEMM of format `dtype` whose `axis`
    ("m", "n" or "k") equals `value`, the table rebuilt from the other points."""
    d = frame[frame.gemm_dtype == dtype]
    held = d[axis] == value
    table = GemmTable(d[~held], dtype, peak_flops)
    truth, _ = _gemm_points(d[held], dtype, peak_flops)
    pred, meas = [], []
    for (n, k), g in truth.groupby(["n", "k"]):
        pred.append(table.seconds(g.m.to_numpy(float), float(n), float(k)))
        meas.append(g.latency.to_numpy(float) * 1e-3)
    return np.concatenate(pred), np.concatenate(meas)


def attention_held_back(frame, heads: int, kv_heads: int, head_dim: int, kv_dtype: str, generation: bool,
                        value: float):
    """(interpolated, measured) seconds at every measured batch of one attention geometry at
    length `value` (the prompt for context attention, the KV length `step` for generation),
    the table rebuilt without that length. The geometry must be measured (KeyError if not)."""
    length = "step" if generation else "isl"
    kv = KV_DTYPES.get(kv_dtype, kv_dtype)
    table = AttentionTable(frame[frame[length] != value], heads, kv_heads, head_dim, kv, generation)
    if table.geometry != (heads, kv_heads, head_dim):
        raise KeyError((heads, kv_heads, head_dim))
    d = _attention_rows(frame, kv)
    d = d[(d.num_heads == heads) & (d.num_key_value_heads == kv_heads) & (d.head_dim == head_dim) & (d[length] == value)]
    d = d.groupby("batch_size", as_index=False).latency.min()
    b = d.batch_size.to_numpy(float)
    return table.seconds(b, np.full(len(b), float(value))), d.latency.to_numpy(float) * 1e-3


def allreduce_held_back(frames, gpus: int, message_size: float):
    """(interpolated, measured) seconds of a `gpus`-GPU all-reduce of `message_size` elements
    (16 bit), the faster-of-both tables rebuilt without that size; None if not measured."""
    held = _combined_allreduce([f[f.message_size == message_size] for f in frames], gpus)
    rest = _combined_allreduce([f[f.message_size != message_size] for f in frames], gpus)
    if held is None or rest is None:
        return None
    return rest[0].seconds(held[0].sizes), held[0].lat
