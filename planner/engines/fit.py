"""Fit each engine's CPU and front-end times to measured benchmark rows and write
`planner/data/engine_fits.csv`:

    python -m planner.engines.fit --rows ../shared/silicon/dev.csv [--exclude-system b200_sxm] [-o FILE]

Per engine, six parameters: seconds per step and seconds per sequence in the step (the
scheduler's, sampler's and detokeniser's Python work), seconds per kernel launched by a step
run without a CUDA graph (prefill steps of engines that run them eagerly: a floor under such
a step of its kernel count x this, planner.perf.layers.kernels_per_step), the chunks per
second the streaming front end sends (planner.sim.frontend: the clients' tokens queue in
front of it once the engine outpaces it; only rows that stream tens of thousands of chunks
a second reveal it, so a limit is kept only if it lowers the objective by
MIN_STREAMING_GAIN, else none), and the front-end
seconds per request added to TTFT (HTTP, tokenising, streaming the first token), one for
aggregated rows and one for disaggregated (xPyD) rows, whose requests also pass a router
(Dynamo, SGLang's router) and the prefill-to-decode handoff: fitted together, a gap in one
kind of deployment would move the other's TTFT. Whether the CPU time
overlaps the GPU's is the engine's documented default (EngineConfig.overlap), not fitted.
The objective is, per kind of deployment (dense, MoE, xPyD), the median over its rows of
|log(predicted / measured)| for TPOT plus the same for TTFT, averaged over the kinds, on a
sample of the rows the performance model can predict: a time that only one kind's rows
reveal (SGLang's host time per sequence binds a small dense model at hundreds of clients,
while a MoE model's GPU step hides it) is set by them, not left at any value the majority
is indifferent to. Each parameter stays in
its physical range (GRIDS): a serving engine's host work per step is a few ms, per sequence
tens of us, a kernel launch from an eager forward 5-50 us (Triton's Python launcher alone
takes tens of us), the front end (HTTP, tokenising, first-token streaming) under 200 ms and
10-40 thousand streamed chunks a second (25-100 us of Python a chunk). A
parameter left free absorbs whatever the step-cost model misses (an earlier unbounded fit
put eager launches at 75-150 us a kernel, which floors every prefill step of a small
model); bounded, the residual shows as bias instead. The search is by coordinates over
those grids, two rounds from the middle, the front-end time by a line search at each point
(it only adds to TTFT). `--exclude-system` leaves one system out (leave-one-system-out
validation).
"""
from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from planner.bench.predict import INFERENCEMAX
from planner.bench.rows import read_rows, resolve
from planner.bench.run import predict_frame
from planner.engines.config import ENGINES
from planner.errors import InputError

# shorter closed loops while fitting (the first burst and three more rounds, weighted as in the
# full benchmark); the prediction simulates every round
FIT_CLIENT = replace(INFERENCEMAX, rounds=4)
MAX_FIT_ROWS = 100             # rows per engine: ~3 s an evaluation, a fit in minutes on 2 cores
MIN_PER_KIND = 20              # rows of each kind of deployment (dense, MoE, xPyD) in a sample
# parameter units: ms per step, 10 us per sequence, 10 us per kernel, 1000 streamed chunks per second
SCALE = np.array([1e-3, 1e-5, 1e-5, 1e3])
# each parameter's physical range, as the grid the coordinate search walks (SCALE units)
GRIDS = (np.array([0.0, 0.5, 1.0, 2.0, 3.0, 5.0]),      # ms per step
         np.array([0.0, 0.5, 1.0, 2.0, 3.0, 5.0]),      # 10 us per sequence
         np.array([0.0, 0.5, 1.0, 2.0, 3.0, 5.0]),      # 10 us per kernel launched eagerly
         # thousand chunks per second one front-end process streams (0: no limit; a Python
         # process spends 25-100 us of interpreter work on a chunk)
         np.array([0.0, 10.0, 12.5, 15.0, 17.5, 20.0, 25.0, 30.0, 40.0]))
SEARCH_ORDER = (2, 0, 1, 3)     # the launch floor moves TTFT most, then the per-step and per-sequence times
# a streaming limit stays off unless it lowers the objective by this much: where no row streams
# near it, a limit only shifts first tokens by microseconds, and a median may still tip to it
MIN_STREAMING_GAIN = 0.005
FRONTEND_GRID_MS = np.arange(0.0, 200.0 + 1e-9, 2.5)


@lru_cache(maxsize=None)
def _has_experts(model_path: str) -> bool:
    from planner import catalog
    try:
        return bool(catalog.model(model_path).experts)
    except InputError:
        return True


def kinds(rows: pd.DataFrame) -> np.ndarray:
    """Each row's kind of deployment: "xpyd" (disaggregated), "moe" or "dense" (aggregated)."""
    moe = rows["model_path"].astype(str).map(_has_experts).to_numpy(bool)
    return np.where(rows["mode"].astype(str).to_numpy() == "disagg", "xpyd", np.where(moe, "moe", "dense"))


def objective(rows: pd.DataFrame, engine: str, params, with_frontend: bool = False):
    """The fit's objective at `params` (SCALE units: per step, per sequence, per kernel and,
    optional, the front end's streamed chunks per second; left out or 0: no limit)."""
    x = np.zeros(len(SCALE))
    x[:len(params)] = np.asarray(params, float)
    per_step, per_seq, per_kernel, chunks = x * SCALE
    pred = predict_frame(rows, {engine: {"cpu_per_step_s": per_step, "cpu_per_seq_s": per_seq,
                                         "cpu_per_kernel_s": per_kernel, "frontend_s": 0.0,
                                         "disagg_frontend_s": 0.0, "frontend_chunks_per_s": chunks}},
                         client=FIT_CLIENT)
    ok = pred[pred["status"] == "ok"]
    if ok.empty:
        return (float("inf"), {}) if with_frontend else float("inf")
    kind = kinds(ok)
    e_tpot = np.abs(np.log(ok["pred_tpot_ms"] / ok["silicon_tpot_ms"])).to_numpy(float)
    ttft, meas = ok["pred_ttft_ms"].to_numpy(float), ok["silicon_ttft_ms"].to_numpy(float)
    # each front end (aggregated rows', xPyD rows') by a line search on its own rows, each kind
    # of deployment weighed alike; then each kind's TPOT and TTFT medians, averaged over kinds
    e_ttft = np.empty(len(ok))
    fronts = {}
    for front, members in (("agg", ("dense", "moe")), ("disagg", ("xpyd",))):
        rows_of = np.isin(kind, members)
        if rows_of.any():
            e = np.abs(np.log((ttft[rows_of][None, :] + FRONTEND_GRID_MS[:, None]) / meas[rows_of][None, :]))
            k = kind[rows_of]
            i = int(np.argmin(np.mean([np.median(e[:, k == m], axis=1) for m in np.unique(k)], axis=0)))
            e_ttft[rows_of], fronts[front] = e[i], FRONTEND_GRID_MS[i] * 1e-3
    total = float(np.mean([np.median(e_tpot[kind == m]) + np.median(e_ttft[kind == m]) for m in np.unique(kind)]))
    return (total, fronts) if with_frontend else total


def sample(rows: pd.DataFrame, n: int = MAX_FIT_ROWS, seed: int = 0) -> pd.DataFrame:
    """Every kind x system x model x concurrency band once, each kind of deployment at least
    MIN_PER_KIND rows (all it has if fewer), the rest drawn at random: the sample keeps the
    rows' mix (a fit on a few rows per group lands in far-apart local minima) and each kind
    enough rows for its median to mean something."""
    if len(rows) <= n:
        return rows
    kind = pd.Series(kinds(rows), index=rows.index)
    band = pd.cut(rows["concurrency"], [0, 8, 32, 128, 1 << 20]).astype(str)
    key = kind + rows["system"].astype(str) + rows["model_path"].astype(str) + band
    first = rows.groupby(key, group_keys=False).sample(1, random_state=seed)
    topped = [first]
    for k in kind.unique():
        short = MIN_PER_KIND - int((kind[first.index] == k).sum())
        left = rows[(kind == k) & ~rows.index.isin(first.index)]
        if short > 0 and len(left):
            topped.append(left.sample(min(short, len(left)), random_state=seed))
    first = pd.concat(topped)
    rest = rows.drop(first.index)
    return pd.concat([first, rest.sample(max(n - len(first), 0), random_state=seed)])


def fit_engine(rows: pd.DataFrame, engine: str, progress=None) -> dict | None:
    mine = rows[rows["backend"].astype(str).str.lower() == engine]
    mine = mine[[not isinstance(resolve(r), str) for r in mine.to_dict("records")]]   # rows the model covers
    if mine.empty:
        return None
    fit_rows = sample(mine)
    seen: dict[tuple, float] = {}

    def score(x) -> float:
        key = tuple(float(v) for v in x)
        if key not in seen:
            seen[key] = objective(fit_rows, engine, key)
        return seen[key]

    x = [1.0, 1.0, 1.0, 0.0]
    for _ in range(2):                  # two rounds of coordinate search over the grids
        for i in SEARCH_ORDER:
            x[i] = float(min(GRIDS[i], key=lambda v: (score([*x[:i], v, *x[i + 1:]]), v)))
    if x[3] and score([*x[:3], 0.0]) - score(x) < MIN_STREAMING_GAIN:
        x[3] = 0.0
    best = score(x)
    per_step, per_seq, per_kernel, chunks = np.asarray(x) * SCALE
    _, fronts = objective(fit_rows, engine, x, with_frontend=True)
    frontend = fronts.get("agg", fronts.get("disagg", 0.0))
    disagg = fronts.get("disagg")
    if progress:
        progress(f"{engine}: {per_step * 1e3:.2f} ms/step + {per_seq * 1e6:.1f} us/seq, eager launches "
                 f"{per_kernel * 1e6:.1f} us/kernel, front end {frontend * 1e3:.1f} ms"
                 + (f" (xPyD {disagg * 1e3:.1f} ms)" if disagg is not None else "")
                 + (f", streaming {chunks:.0f} chunks/s" if chunks else ", streaming unlimited")
                 + f" (objective {best:.3f} on {len(fit_rows)} rows, {len(seen)} evaluations)")
    return {"engine": engine, "per_step_s": float(per_step), "per_seq_s": float(per_seq),
            "per_kernel_s": float(per_kernel), "frontend_s": float(frontend),
            "disagg_frontend_s": None if disagg is None else float(disagg), "frontend_chunks_per_s": float(chunks),
            "objective": float(best), "fit_rows": len(fit_rows),
            "fitted_on": ";".join(sorted(mine["system"].astype(str).unique()))}


def fit_all(rows: pd.DataFrame, exclude_system: str | None = None, progress=None,
            engines: tuple[str, ...] = ENGINES) -> list[dict]:
    from planner.engines.config import DEFAULTS
    if exclude_system:
        rows = rows[rows["system"].astype(str) != exclude_system]
    out = []
    for engine in engines:
        got = fit_engine(rows, engine, progress)
        if got is not None:
            got["overlap"] = int(DEFAULTS[engine].overlap)
            out.append(got)
    return out


def write(fits: list[dict], path: Path) -> None:
    cols = ["engine", "per_step_s", "per_seq_s", "per_kernel_s", "frontend_s", "disagg_frontend_s",
            "frontend_chunks_per_s", "overlap",
            "objective", "fit_rows", "fitted_on"]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in fits:
            w.writerow({c: (f"{r[c]:.6g}" if isinstance(r.get(c), float) else r.get(c)) for c in cols})
    tmp.replace(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default=str(Path(__file__).resolve().parents[2].parent / "shared" / "silicon" / "dev.csv"))
    ap.add_argument("--exclude-system", default=None)
    ap.add_argument("-o", "--output", default=str(Path(__file__).resolve().parents[1] / "data" / "engine_fits.csv"))
    args = ap.parse_args(argv)
    rows = read_rows(args.rows)
    fits = fit_all(rows, args.exclude_system, progress=lambda s: print(s, file=sys.stderr))
    write(fits, Path(args.output))
    print(f"wrote {len(fits)} engine fits to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
