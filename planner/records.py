"""The request record shared by the simulator and the testbed, and the metrics on it.

One row per request, columns as in DESIGN.md. TTFT = first_token_s - arrival_s;
TPOT = (finish_s - first_token_s) / (output_tokens - 1) (undefined for one-token outputs);
JCT = finish_s - arrival_s.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from planner.errors import InputError

RECORD_COLUMNS = (
    "request_id", "arrival_s", "prompt_tokens", "output_tokens", "prefill_instance",
    "decode_instance", "prefill_start_s", "first_token_s", "kv_done_s", "decode_start_s",
    "finish_s", "predicted_bucket",
)
PERCENTILES = (50, 90, 99)
# Optional column (testbed records): what became of each request - "finished", "failed"
# (in the system when the run stopped: a worker died or hung, a corrupted transfer, Ctrl-C)
# or "not_sent" (the run stopped before its arrival). No request is dropped from a frame.
STATUS_COLUMN = "status"
FINISHED, FAILED, NOT_SENT = "finished", "failed", "not_sent"


def empty_records(n: int) -> pd.DataFrame:
    """A frame of n rows in the record schema, times NaN, instances -1."""
    df = pd.DataFrame({c: np.full(n, np.nan) for c in RECORD_COLUMNS})
    for c in ("request_id", "prompt_tokens", "output_tokens", "prefill_instance",
              "decode_instance", "predicted_bucket"):
        df[c] = np.full(n, -1, dtype=np.int64)
    df["request_id"] = np.arange(n, dtype=np.int64)
    return df


def check_records(df: pd.DataFrame, where: str = "records") -> pd.DataFrame:
    missing = [c for c in RECORD_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{where}: missing columns {', '.join(missing)}; expected {', '.join(RECORD_COLUMNS)}")
    return df


def latencies(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """TTFT, TPOT and JCT arrays in seconds over finished requests (TPOT over outputs > 1)."""
    done = df[np.isfinite(df["finish_s"].to_numpy(dtype=float))]
    ttft = (done["first_token_s"] - done["arrival_s"]).to_numpy(dtype=float)
    jct = (done["finish_s"] - done["arrival_s"]).to_numpy(dtype=float)
    multi = done[done["output_tokens"] > 1]
    tpot = ((multi["finish_s"] - multi["first_token_s"]) / (multi["output_tokens"] - 1)).to_numpy(dtype=float)
    return {"ttft_s": ttft, "tpot_s": tpot, "jct_s": jct}


def percentiles(values: np.ndarray, pcts=PERCENTILES) -> dict[str, float]:
    if len(values) == 0:
        return {f"p{p}": float("nan") for p in pcts}
    return {f"p{p}": float(v) for p, v in zip(pcts, np.percentile(values, pcts))}


def summarize(df: pd.DataFrame, slo_ttft_s: float | None = None, slo_tpot_s: float | None = None) -> dict:
    """Percentiles of TTFT/TPOT/JCT, throughput and SLO attainment of a record frame."""
    lat = latencies(df)
    finished = np.isfinite(df["finish_s"].to_numpy(dtype=float))
    out: dict = {k: percentiles(v) for k, v in lat.items()}
    out["requests"] = int(len(df))
    out["finished"] = int(finished.sum())
    if finished.any():
        start = float(df["arrival_s"].min())
        end = float(df.loc[finished, "finish_s"].max())
        dur = max(end - start, 1e-9)
        out["duration_s"] = dur
        out["requests_per_s"] = out["finished"] / dur
        toks = df.loc[finished, "output_tokens"].sum() + df.loc[finished, "prompt_tokens"].sum()
        out["tokens_per_s"] = float(toks) / dur
        out["output_tokens_per_s"] = float(df.loc[finished, "output_tokens"].sum()) / dur
    if slo_ttft_s is not None or slo_tpot_s is not None:
        done = df[finished]
        ok = np.ones(len(done), dtype=bool)
        if slo_ttft_s is not None:
            ok &= (done["first_token_s"] - done["arrival_s"]).to_numpy(dtype=float) <= slo_ttft_s
        if slo_tpot_s is not None:
            n = done["output_tokens"].to_numpy()
            tpot = np.where(n > 1, (done["finish_s"] - done["first_token_s"]).to_numpy(dtype=float)
                            / np.maximum(n - 1, 1), 0.0)
            ok &= tpot <= slo_tpot_s
        out["slo_attainment"] = float(ok.sum()) / max(len(df), 1)
    return out
