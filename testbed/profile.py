"""Profiler: time the engine's real iterations and KV copies on this machine, in the shared
profile format the planner calibrates from (`planner recommend --gpu local --profile ...`).

Rows (one per grid point; `seconds` is the median of all timed runs - `repeats` after
`warmup` untimed ones (`decode_warmup` for decode points), in each of `passes` sweeps over the grid, so that a burst of other
load on a shared machine spoils one sweep of a point, not the point; `repeats` in the row
is repeats x passes; `torch.cuda.synchronize()` around each run on a GPU):

- `prefill`: one chunk of `tokens` new tokens made of `batch` equal slices, each slice's
  request already holding `context_tokens` of cached KV (so `context_tokens` is the
  chunk's average cached context per new token, as `PerfModel.prefill_time_s` takes it);
  `bytes` = KV bytes the chunk appends; `path` "idle": timed after `prefill_idle_gap_s` idle
  (chunks of one fresh request), "" back to back. With the length classifier on (the testbed run's
  default), a fresh chunk (`context_tokens` 0) also runs it over each slice first, as the
  prefill worker does for every request that starts in a chunk.
- `decode`: one iteration of `batch` requests (`tokens` = batch new tokens) holding
  `context_tokens` of KV IN TOTAL over the batch (as `PerfModel.decode_time_s` takes it);
  `bytes` = the KV bytes the iteration reads. The requests hold different contexts, as a
  server's batch does: evenly spaced around the grid's context with coefficient of
  variation `decode_spread` (default 0.5; 0 = all equal, as profiles before 2026-11-25
  were taken). Consecutive iterations are timed (the batch stays in the engine's decode
  workspace, as in a run), the caches starting a few tokens short so that the timed
  steps' mean context is the grid's.
- `kv`: copying one request's filled KV of `tokens` tokens (`bytes`), along `path`:
  `copy` (same device: host memcpy on CPU, device-to-device on a GPU), `d2h` (GPU to pinned
  host memory), `h2d` (pinned host to GPU). `path` is an extra column after the shared ones.
"""
from __future__ import annotations

import csv
import platform
import statistics
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterable

import torch

from planner.errors import InputError

from .decode_workspace import TOKEN_ROUND
from .engine import Engine

COLUMNS = ("device", "model", "kind", "tokens", "batch", "context_tokens", "bytes", "seconds",
           "repeats", "path")
IDLE = "idle"       # a prefill row's path: timed after `prefill_idle_gap_s` of idle time


@dataclass(frozen=True)
class ProfileRow:
    device: str
    model: str
    kind: str               # prefill | decode | kv
    tokens: int
    batch: int
    context_tokens: int
    bytes: int
    seconds: float
    repeats: int
    path: str = ""          # kv rows: copy | d2h | h2d; prefill rows: "" or idle


MAX_SPREAD = 0.95 / 3 ** 0.5    # evenly spaced contexts within (0.05, 1.95) x the mean


def batch_contexts(mean_tokens: int, batch: int, spread: float) -> list[int]:
    """Per-request contexts of a decode batch: evenly spaced around `mean_tokens` with
    coefficient of variation `spread` (a server's batch holds requests of different
    lengths), whole tokens >= 1, summing to batch x mean_tokens."""
    if batch == 1 or spread == 0:
        return [mean_tokens] * batch
    # n evenly spaced points over mean x (1 +- h) have CV h * sqrt((n + 1) / (3 (n - 1)))
    half = spread * (3 * (batch - 1) / (batch + 1)) ** 0.5
    raw = [mean_tokens * (1 + half * (2 * i / (batch - 1) - 1)) for i in range(batch)]
    out = [max(1, round(x)) for x in raw]
    out[-1] += batch * mean_tokens - sum(out)
    return out


@dataclass(frozen=True)
class ProfileGrid:
    prefill_tokens: tuple[int, ...]
    prefill_context_tokens: tuple[int, ...]     # cached context per slice before the chunk
    prefill_slices: tuple[int, ...]             # requests merged into one chunk
    decode_batch: tuple[int, ...]
    decode_context_tokens: tuple[int, ...]      # per request
    kv_tokens: tuple[int, ...]
    repeats: int = 5
    warmup: int = 2
    # decode points run longer first: a run's decode worker steps back to back, and on a CPU
    # the first steps of a new batch shape are 10-20% slower than the steady ones (measured:
    # batch 1 at 128-256 tokens 4.7-4.9 ms after 2 untimed steps, 4.0-4.2 ms after 20)
    decode_warmup: int = 10
    # prefill chunks of one fresh request are also timed after this long idle (rows with
    # path "idle"): a lightly loaded prefill instance starts most chunks cold (this CPU: a
    # 96-token chunk 10.9 ms back to back, 12.0-12.5 ms after 20-300 ms idle); 0: no such rows
    prefill_idle_gap_s: float = 0.1
    memory_budget_bytes: int | None = None      # skip decode points whose KV would not fit
    passes: int = 1                             # sweeps over the grid; a row's median is over all
    decode_spread: float = 0.5                  # CV of the contexts in a decode batch (0: all equal)

    def __post_init__(self):
        for f in ("prefill_tokens", "prefill_slices", "decode_batch", "decode_context_tokens", "kv_tokens"):
            vals = getattr(self, f)
            if not vals or min(vals) < 1:
                raise InputError(f"profile grid {f} must be a non-empty list of integers >= 1, got {vals}")
        if not self.prefill_context_tokens or min(self.prefill_context_tokens) < 0:
            raise InputError("profile grid prefill_context_tokens must be integers >= 0")
        if not 0.0 <= self.decode_spread <= MAX_SPREAD:
            raise InputError(f"decode spread must be within 0 and {MAX_SPREAD:.2f}, got {self.decode_spread}")
        if self.prefill_idle_gap_s < 0:
            raise InputError(f"prefill idle gap must be >= 0 seconds, got {self.prefill_idle_gap_s}")
        if self.repeats < 1 or self.warmup < 0 or self.decode_warmup < 0 or self.passes < 1:
            raise InputError(f"repeats and passes must be >= 1 and warmup >= 0, got {self.repeats}, "
                             f"{self.passes}, {self.warmup}")


CPU_GRID = ProfileGrid(prefill_tokens=(16, 32, 64, 128, 256, 512), prefill_context_tokens=(0, 256),
                       prefill_slices=(1, 4), decode_batch=(1, 2, 4, 8, 16),
                       decode_context_tokens=(64, 256, 1024), kv_tokens=(16, 128, 512, 2048))
# OPT has 2048 positions: chunks above 2048 tokens are measured as 4 merged requests' slices
GPU_GRID = ProfileGrid(prefill_tokens=(16, 32, 64, 128, 256, 512, 768, 1024, 1536, 2048, 3072, 4096, 8192),
                       prefill_context_tokens=(0, 512, 1024), prefill_slices=(1, 4),
                       decode_batch=(1, 2, 4, 8, 16, 32, 64, 128, 256),
                       decode_context_tokens=(128, 512, 1024, 2048),
                       kv_tokens=(16, 64, 256, 1024, 2048), repeats=10, warmup=3)


def default_grid(device: torch.device) -> ProfileGrid:
    return GPU_GRID if device.type == "cuda" else CPU_GRID


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    n = torch.get_num_threads()
    return f"cpu {platform.machine()} {n} thread{'' if n == 1 else 's'}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_median_s(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int,
                  reset: Callable[[], object] | None = None) -> float:
    """Median wall time of `fn()` over `repeats` runs after `warmup` runs; `reset()` runs
    before each, untimed."""
    return statistics.median(time_runs_s(fn, device, repeats, warmup, reset))


def time_runs_s(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int,
                reset: Callable[[], object] | None = None) -> list[float]:
    """Wall times of `repeats` runs of `fn()` after `warmup` untimed ones."""
    times = []
    for i in range(warmup + repeats):
        if reset is not None:
            reset()
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


@dataclass(frozen=True)
class _Point:
    kind: str
    tokens: int
    batch: int
    context_tokens: int     # per slice / per request (the row holds the total for decode)
    path: str = ""


def grid_points(grid: ProfileGrid, max_positions: int, kv_bytes_per_token: int) -> list[_Point]:
    pts: list[_Point] = []
    for ctx in grid.prefill_context_tokens:
        for c in grid.prefill_tokens:
            for s in grid.prefill_slices:
                if c % s or ctx + c // s > max_positions or (s > 1 and ctx > 0):
                    continue        # merged chunks are profiled on fresh requests only
                pts.append(_Point("prefill", c, s, ctx))
                if grid.prefill_idle_gap_s > 0 and s == 1 and ctx == 0:
                    pts.append(_Point("prefill", c, 1, 0, IDLE))
    steps = grid.decode_warmup + grid.repeats
    for ctx in grid.decode_context_tokens:
        for b in grid.decode_batch:
            if ctx > max_positions or steps + 1 > max_positions:
                continue
            starts = [decode_start_tokens(c, grid, max_positions) for c in batch_contexts(ctx, b, grid.decode_spread)]
            end = max(starts) + steps
            # the caches plus the decode workspace's copy (its token capacity rounded up), +10%
            need = 1.1 * (sum(starts) + b * steps + b * -(-end // TOKEN_ROUND) * TOKEN_ROUND) * kv_bytes_per_token
            if grid.memory_budget_bytes is not None and need > grid.memory_budget_bytes:
                continue
            pts.append(_Point("decode", b, b, ctx))
    return pts


def _random_ids(n: int, vocab: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=gen)


def _measure_prefill(eng: Engine, p: _Point, grid: ProfileGrid, gen: torch.Generator,
                     classifier=None) -> float:
    """One chunk as the prefill worker runs it: with a `classifier`, its forward pass over
    each request that starts in the chunk (here: every slice of a fresh chunk) comes first."""
    per = p.tokens // p.batch
    kvs = [eng.new_kv(p.context_tokens + per) for _ in range(p.batch)]
    if p.context_tokens:
        for kv in kvs:
            eng.prefill([(kv, _random_ids(p.context_tokens, eng.vocab, gen))])
    ids = [_random_ids(per, eng.vocab, gen) for _ in kvs]
    starting = ids if classifier is not None and p.context_tokens == 0 else []

    def run():
        if starting:
            classifier.run(starting)
        return eng.prefill(list(zip(kvs, ids)))

    def reset():
        for kv in kvs:
            kv.length = p.context_tokens
        if p.path == IDLE:      # the instance sits idle before the chunk (untimed)
            _sync(eng.device)
            time.sleep(grid.prefill_idle_gap_s)
    return time_runs_s(run, eng.device, grid.repeats, grid.warmup, reset)


def decode_start_tokens(ctx: int, grid: ProfileGrid, max_positions: int) -> int:
    """Decode points time consecutive iterations (the batch's KV stays in the engine's
    decode workspace, as in a run): the caches start this much shorter than `ctx`, so
    that the timed steps' mean context is `ctx` (when it is long enough and the last step
    stays within the model's positions)."""
    steps = grid.decode_warmup + grid.repeats
    return max(1, min(ctx - grid.decode_warmup - (grid.repeats - 1) // 2, max_positions - steps))


def _measure_decode(eng: Engine, p: _Point, grid: ProfileGrid, gen: torch.Generator,
                    seed_kv: dict[int, object]) -> tuple[list[float], int]:
    """(timed seconds, total context tokens over the batch at the timed steps' mean). The
    batch's requests hold different contexts (`batch_contexts`, CV `grid.decode_spread`)."""
    starts = [decode_start_tokens(c, grid, eng.max_positions)
              for c in batch_contexts(p.context_tokens, p.batch, grid.decode_spread)]
    longest = max(starts)
    have = next(iter(seed_kv.values()), None)
    if have is None or have.length < longest:   # one real prefill, its prefixes cloned into the batch
        kv = eng.new_kv(longest)
        for s in range(0, longest, 1024):
            eng.prefill([(kv, _random_ids(min(1024, longest - s), eng.vocab, gen))])
        seed_kv.clear()
        seed_kv[longest] = have = kv
    src = have.view()
    steps = grid.decode_warmup + grid.repeats
    eng.reset_decode_workspace()
    eng.reserve_decode_workspace(p.batch, longest + steps)   # no growth (and no 2x peak) mid-point
    kvs = [eng.new_kv(n + steps) for n in starts]
    for kv, n in zip(kvs, starts):
        kv.receive(src[:n])
    toks = [int(t) for t in _random_ids(p.batch, eng.vocab, gen)]
    items = list(zip(kvs, toks))
    secs = time_runs_s(lambda: eng.decode(items), eng.device, grid.repeats, grid.decode_warmup)
    del items, kvs
    eng.reset_decode_workspace()
    mean_step = grid.decode_warmup + (grid.repeats - 1) / 2
    return secs, round(sum(starts) + p.batch * mean_step)


def _kv_paths(device: torch.device) -> tuple[str, ...]:
    return ("copy", "d2h", "h2d") if device.type == "cuda" else ("copy",)


def _measure_kv(eng: Engine, tokens: int, path: str, grid: ProfileGrid) -> float:
    kv = eng.new_kv(tokens)
    kv.data.normal_()
    kv.length = tokens
    src = kv.view()
    pinned = eng.device.type == "cuda"
    if path == "copy":
        dst = torch.empty_like(src)
        fn = lambda: dst.copy_(src)  # noqa: E731
    elif path == "d2h":
        dst = torch.empty(src.shape, dtype=src.dtype, pin_memory=pinned)
        fn = lambda: dst.copy_(src)  # noqa: E731
    else:
        host = torch.empty(src.shape, dtype=src.dtype, pin_memory=pinned).copy_(src)
        dst = torch.empty_like(src)
        fn = lambda: dst.copy_(host, non_blocking=True)  # noqa: E731
    return time_runs_s(fn, eng.device, grid.repeats, grid.warmup)


def profile(eng: Engine, grid: ProfileGrid, *, model_name: str, device_name: str | None = None,
            seed: int = 0, progress: bool = True, classifier=None) -> list[ProfileRow]:
    """Run the grid on `eng` and return one row per point (prefill, then decode, then kv).
    `classifier` (a `workers.classifier.LengthClassifier`): prefill rows of fresh requests
    include its forward pass over each slice, as the prefill worker's iterations do."""
    from planner.progress import progress_bar

    device_name = device_name or device_label(eng.device)
    kvb = eng.kv_bytes_per_token
    pts = grid_points(grid, eng.max_positions, kvb)
    kv_pts = [_Point("kv", t, 1, 0, path) for t in grid.kv_tokens if t <= eng.max_positions
              for path in _kv_paths(eng.device)]
    gen = torch.Generator().manual_seed(seed)
    seed_kv: dict[int, object] = {}
    everything = pts + kv_pts
    times: list[list[float]] = [[] for _ in everything]
    totals: dict[int, int] = {}
    bar = progress_bar(len(everything) * grid.passes, f"profile {model_name}", "pt", disable=not progress,
                       leave=False)
    for _ in range(grid.passes):       # sweeps: a burst of other load hits one pass of a point
        for i, p in enumerate(everything):
            bar.set_postfix_str(f"{p.kind} tokens={p.tokens} batch={p.batch} ctx={p.context_tokens}")
            if p.kind == "prefill":
                times[i] += _measure_prefill(eng, p, grid, gen, classifier)
            elif p.kind == "decode":
                t, totals[i] = _measure_decode(eng, p, grid, gen, seed_kv)
                times[i] += t
            else:
                times[i] += _measure_kv(eng, p.tokens, p.path, grid)
            bar.update(1)
    bar.close()
    n = grid.repeats * grid.passes
    rows: list[ProfileRow] = []
    for i, p in enumerate(everything):
        s = statistics.median(times[i])
        if p.kind == "prefill":
            rows.append(ProfileRow(device_name, model_name, "prefill", p.tokens, p.batch, p.context_tokens,
                                   p.tokens * kvb, s, n, p.path))
        elif p.kind == "decode":
            rows.append(ProfileRow(device_name, model_name, "decode", p.batch, p.batch, totals[i],
                                   totals[i] * kvb, s, n))
        else:
            rows.append(ProfileRow(device_name, model_name, "kv", p.tokens, 1, 0, p.tokens * kvb, s, n, p.path))
    return rows


def write_profile_csv(rows: Iterable[ProfileRow], path: str | Path) -> Path:
    from planner.outputs import atomic_open, make_dir
    path = Path(path)
    make_dir(path.parent)
    with atomic_open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            d = asdict(r)
            d["seconds"] = f"{r.seconds:.6e}"
            w.writerow(d)
    return path


def read_profile_csv(path: str | Path) -> list[ProfileRow]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such profile file") from None
    out = []
    types = {f.name: f.type for f in fields(ProfileRow)}
    for i, r in enumerate(csv.DictReader(text.splitlines()), start=2):
        try:
            out.append(ProfileRow(**{k: (int(r[k]) if types[k] == "int" else float(r[k]) if types[k] == "float"
                                         else (r.get(k) or "")) for k in types if k in r or k == "path"}))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{path} row {i}: not a profile row ({e}); columns: {', '.join(COLUMNS)}") from None
    return out


def summarize(rows: list[ProfileRow], saturation_fraction: float = 0.95) -> dict:
    """Headline figures: prefill tokens/s per chunk size on fresh requests (the best over
    the slice counts measured), the chunk where throughput first reaches
    `saturation_fraction` of its best, decode ms per batch and context, and KV copy GB/s per
    path at the largest size."""
    thr: dict[int, float] = {}
    for r in rows:
        if r.kind == "prefill" and r.context_tokens == 0:
            thr[r.tokens] = max(thr.get(r.tokens, 0.0), r.tokens / r.seconds)
    thr = dict(sorted(thr.items()))
    sat = None
    if thr:
        best = max(thr.values())
        sat = min(c for c, t in thr.items() if t >= saturation_fraction * best)
    decode = {}
    for r in rows:
        if r.kind == "decode":
            decode.setdefault(r.context_tokens // r.batch, {})[r.batch] = r.seconds * 1e3
    kv = {}
    for r in rows:
        if r.kind == "kv" and (r.path not in kv or r.bytes > kv[r.path]["bytes"]):
            kv[r.path] = {"bytes": r.bytes, "gb_s": r.bytes / r.seconds / 1e9}
    return {"prefill_tokens_s": thr, "saturation_chunk_tokens": sat,
            "decode_ms": {ctx: dict(sorted(v.items())) for ctx, v in sorted(decode.items())},
            "kv_copy": kv}
