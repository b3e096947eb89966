"""Measured gated delta-net kernels (Qwen3-Next / Qwen3.5 linear-attention layers) from the
aiconfigurator-core tables (`linear_attention/<engine>/<version>/gdn_perf.parquet`): per
layer and GPU, the decode step's state update (causal_conv1d_update + the fused recurrent
kernel) over the batch, and a prompt's chunked recurrence (causal_conv1d_fn + the chunked
delta rule) over its tokens. Looked up by the heads one GPU holds (the tables time 2-64
value heads of 128 x 128); a head count between measured ones scales the nearest linearly.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from planner.perf import tables

# an engine without its own table reads the GPU's table of the engine with the same kernels
# nearest its own (vLLM and SGLang both run the flash-linear-attention kernels)
GDN_FALLBACK = {"vllm": ("vllm", "sglang", "trtllm"), "sglang": ("sglang", "vllm", "trtllm"),
                "trtllm": ("trtllm", "sglang", "vllm")}
_COLS = ("phase", "kernel_source", "batch_size", "seq_len", "d_model", "num_k_heads", "head_k_dim",
         "num_v_heads", "head_v_dim", "latency")


class GdnTable:
    """One GPU's gated delta-net kernels for `v_heads` value and `k_heads` key heads."""

    def __init__(self, frame, v_heads: int, k_heads: int, head_dim: int):
        d = frame[(frame.head_k_dim == head_dim) & (frame.head_v_dim == head_dim)]
        if d.empty:
            raise LookupError(f"no gated delta-net rows of head size {head_dim}")
        vs = np.sort(d.num_v_heads.unique())
        v = int(vs[np.argmin(np.abs(np.log(vs / v_heads)))])
        d = d[d.num_v_heads == v]
        ks = np.sort(d.num_k_heads.unique())
        d = d[d.num_k_heads == int(ks[np.argmin(np.abs(ks - k_heads * v / v_heads))])]
        self.scale = v_heads / v
        self.heads = (v, int(d.num_k_heads.iloc[0]))
        # the kernels' sum per batch (decode) and per prompt length (one prompt), over the
        # models measured with this geometry: their fastest (the kernels see only the heads)
        gen = d[d.phase == "generation"].groupby(["kernel_source", "batch_size"]).latency.min()
        gen = gen.groupby("batch_size").sum().sort_index()
        ctx = d[(d.phase == "context") & (d.batch_size == 1)].groupby(["kernel_source", "seq_len"]).latency.min()
        ctx = ctx.groupby("seq_len").sum().sort_index()
        if len(gen) < 2 or len(ctx) < 2:
            raise LookupError("gated delta-net table without decode or prompt rows")
        self._gen = (gen.index.to_numpy(float), gen.to_numpy(float) * 1e-3)
        self._ctx = (ctx.index.to_numpy(float), ctx.to_numpy(float) * 1e-3)

    @staticmethod
    def _curve(xs, ys, x) -> np.ndarray:
        """Log-log interpolation; proportional to x beyond the last point, flat below the first."""
        x = np.maximum(np.asarray(x, dtype=float), xs[0])
        inside = np.exp(np.interp(np.log(np.minimum(x, xs[-1])), np.log(xs), np.log(ys)))
        return np.where(x > xs[-1], ys[-1] * x / xs[-1], inside)

    def generation_s(self, batch) -> np.ndarray:
        """One decode step of `batch` sequences, one layer."""
        return self._curve(*self._gen, batch) * self.scale

    def context_s(self, tokens) -> np.ndarray:
        """One prompt's first `tokens` tokens, one layer."""
        return self._curve(*self._ctx, tokens) * self.scale


@lru_cache(maxsize=64)
def gdn_table(system: str, engine: str, v_heads: int, k_heads: int, head_dim: int) -> tuple[GdnTable, str] | None:
    """(GdnTable, version) for this GPU system and engine (or the nearest engine's), or None."""
    for eng in GDN_FALLBACK.get(engine, (engine,)):
        found = tables.table_path(system, "linear_attention", eng, "gdn_perf.parquet")
        if found is None:
            continue
        try:
            table = GdnTable(tables._read(found[0], _COLS), v_heads, k_heads, head_dim)
        except LookupError:
            continue
        return table, (found[1] if eng == engine else f"{eng} {found[1]}")
    return None
