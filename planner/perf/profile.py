"""Step costs calibrated from a testbed profile (`testbed profile` -> `planner calibrate`):
the source for a device measured end to end (the CPU testbed, a GPU testbed run), not for
catalog GPUs, which use measured kernels or the fitted roofline (planner.perf.step).

Roofline per iteration: the larger of FLOPs over effective compute and bytes over
effective memory bandwidth, plus a fixed per-iteration overhead and the tensor-parallel
all-reduce time. GEMM efficiency rises with the tokens in flight,
`eff(n) = compute_eff * n / (n + knee)`, which is why small chunks under-use the GPU and
the prefill throughput saturates at a chunk size (TetriInfer's ChunkSize).

All functions accept numpy arrays as well as scalars. No torch here.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from planner.catalog import GpuSpec, ModelSpec, dtype_bytes

ACT_BYTES_PER_TOKEN_LAYER = 24  # activation reads+writes per token and layer, in units of hidden*dtype
ALLREDUCE_LATENCY_S = 8e-6      # per all-reduce launch on NVLink-class links
MEMORY_UTILISATION = 0.90       # fraction of GPU memory the serving engine may use (vLLM default)
ACTIVATION_RESERVE_FRACTION = 0.04  # of GPU memory kept for activations and workspace
MIN_CORRECTED = 0.1             # a piecewise offset never takes an iteration below this share of its roofline time


@dataclass(frozen=True)
class Efficiency:
    """How far a profiled device is from its nominal figures, as `planner.perf.calibrate`
    fits them to a testbed profile (there is no default: catalog GPUs do not use this)."""
    compute_eff: float                 # of peak FLOP/s, large GEMMs
    memory_eff: float                  # of peak bandwidth, streaming weights and KV
    prefill_overhead_s: float          # per iteration: launch, scheduling, sampling
    decode_overhead_s: float
    knee_tokens: float | None = None   # None: the GPU catalog's gemm_knee_tokens
    calibrated: bool = True
    source: str = "calibrated from a profile"
    # False: overhead adds to the GPU time (an engine that launches ahead of the GPU still
    # pays a fixed cost per iteration). True: the overhead is CPU time that overlaps the
    # GPU's (a Python engine issuing kernels asynchronously), t = max(GPU time, overhead)
    # + all-reduce; `planner.perf.calibrate` picks whichever fits the profile better.
    overhead_overlaps: bool = False
    kv_traffic: float = 1.0            # bytes moved per KV byte read (an engine that gathers KV copies it)
    # Piecewise offsets (seconds), fitted jointly with the rest by `planner.perf.calibrate` where
    # they earn their place: ((batch, seconds), ...) added to a decode step of `batch`
    # requests (linear between the points, flat beyond), ((tokens, seconds), ...) to a
    # prefill chunk of `tokens` (linear in log tokens). They carry what a roofline cannot: a
    # BLAS library switching GEMM kernels with the matrix shape (on one CPU a batch-2 decode
    # step is faster than batch 1 and batch 4 jumps) - a cost of the linear layers, so an
    # offset independent of the context, which keeps the context's slope. An iteration
    # never drops below MIN_CORRECTED of its roofline time. Mixed iterations: none. Empty: none.
    decode_batch_offsets_s: tuple = ()
    prefill_chunk_offsets_s: tuple = ()
    # per request slice in a prefill chunk beyond the first (its own attention call, the
    # testbed's length classifier over a new prompt, sampling): fitted from a profile's
    # merged-chunk rows; 0 without them
    prefill_request_s: float = 0.0
    # a prefill chunk that starts an idle instance runs this many times as long as the same
    # chunk back to back (caches refilled, clocks ramping up): measured by the testbed
    # profiler's "idle" rows (chunks timed after an idle gap); 1.0 without them
    prefill_idle_factor: float = 1.0

    def __post_init__(self):
        for name in ("decode_batch_offsets_s", "prefill_chunk_offsets_s"):
            pts = tuple(sorted((float(x), float(v)) for x, v in getattr(self, name)))   # lists from a plan's JSON
            if any(not (x > 0 and np.isfinite(v)) for x, v in pts):
                raise ValueError(f"{name}: points need x > 0 and finite seconds, got {pts}")
            object.__setattr__(self, name, pts)

    def offset_s(self, prefill_tokens, decode_batch):
        """Seconds added to an iteration of `prefill_tokens` and `decode_batch` (0 if mixed)."""
        p = np.asarray(prefill_tokens, dtype=float)
        b = np.asarray(decode_batch, dtype=float)
        out = np.zeros(np.broadcast(p, b).shape)
        if self.decode_batch_offsets_s:
            x, y = zip(*self.decode_batch_offsets_s)
            out = np.where((p == 0) & (b > 0), np.interp(b, x, y), out)
        if self.prefill_chunk_offsets_s:
            x, y = zip(*self.prefill_chunk_offsets_s)
            out = np.where((b == 0) & (p > 0), np.interp(np.log(np.maximum(p, 1.0)), np.log(x), y), out)
        return out


@dataclass(frozen=True)
class ProfileModel:
    gpu: GpuSpec
    model: ModelSpec
    tp: int
    dtype: str
    eff: Efficiency

    def with_tp(self, tp: int) -> "ProfileModel":
        return replace(self, tp=tp)

    # ---- sizes -------------------------------------------------------------------
    @property
    def knee_tokens(self) -> float:
        return self.eff.knee_tokens if self.eff.knee_tokens is not None else self.gpu.gemm_knee_tokens

    @property
    def weight_bytes(self) -> float:
        """Per instance (all TP shards)."""
        return self.model.weight_bytes(self.dtype)

    @property
    def kv_bytes_per_token(self) -> float:
        """Per instance (all TP shards together)."""
        return self.model.kv_bytes_per_token(self.dtype)

    @property
    def kv_capacity_tokens(self) -> int:
        """KV tokens one instance can hold after weights and the activation reserve."""
        usable = self.tp * self.gpu.memory_bytes * (MEMORY_UTILISATION - ACTIVATION_RESERVE_FRACTION)
        free = usable - self.weight_bytes
        return int(max(free, 0.0) // self.kv_bytes_per_token)

    @property
    def fits(self) -> bool:
        return self.kv_capacity_tokens >= 1

    # ---- iteration times ---------------------------------------------------------
    def _gemm_rate(self, tokens):
        n = np.maximum(np.asarray(tokens, dtype=float), 1.0)
        eff = self.eff.compute_eff * n / (n + self.knee_tokens)
        return self.tp * self.gpu.peak_flops * eff

    def _mem_rate(self) -> float:
        return self.tp * self.gpu.memory_bytes_s * self.eff.memory_eff

    def _allreduce_s(self, tokens):
        if self.tp == 1:
            return 0.0 * np.asarray(tokens, dtype=float)
        m = self.model
        payload = np.asarray(tokens, dtype=float) * m.hidden * dtype_bytes(self.dtype)
        ring = 2.0 * (self.tp - 1) / self.tp * payload / (self.gpu.link_gb_s * 1e9)
        return 2 * m.layers * (ring + ALLREDUCE_LATENCY_S)

    def _act_bytes(self, tokens):
        m = self.model
        return (np.asarray(tokens, dtype=float) * m.hidden * dtype_bytes(self.dtype)
                * m.layers * ACT_BYTES_PER_TOKEN_LAYER)

    def prefill_time_s(self, chunk_tokens, cached_tokens=0, requests=1):
        """One prefill iteration of `chunk_tokens` new tokens whose requests already hold
        `cached_tokens` of context in the KV cache (for a merged chunk: the sum over its
        slices of slice_len * cached_len / chunk_tokens is the exact equivalent), made of
        `requests` request slices (each beyond the first costs `prefill_request_s`)."""
        t = self.mixed_time_s(chunk_tokens, cached_tokens, 0, 0)
        if self.eff.prefill_request_s:
            extra = self.eff.prefill_request_s * np.maximum(np.asarray(requests, dtype=float) - 1.0, 0.0)
            t = t + np.where(np.asarray(chunk_tokens) > 0, extra, 0.0)
            return t if np.ndim(t) else float(t)
        return t

    def decode_time_s(self, batch, context_tokens):
        """One decode iteration: `batch` requests generate one token each, holding
        `context_tokens` of KV in total (sum over the batch)."""
        return self.mixed_time_s(0, 0, batch, context_tokens)

    def mixed_time_s(self, prefill_tokens, cached_tokens, decode_batch, decode_context_tokens):
        """One Sarathi-style iteration: `prefill_tokens` of prompt (on `cached_tokens` of
        context) piggybacked on a decode step of `decode_batch` requests holding
        `decode_context_tokens` of KV in total. With no prefill tokens it equals
        `decode_time_s`, with no decode batch `prefill_time_s` (up to the overhead, which
        is the prefill one as soon as prefill tokens are present)."""
        m = self.model
        p = np.asarray(prefill_tokens, dtype=float)
        k = np.asarray(cached_tokens, dtype=float)
        b = np.asarray(decode_batch, dtype=float)
        t_ctx = np.asarray(decode_context_tokens, dtype=float)
        n = p + b
        heads = b + (p > 0)
        linear = 2.0 * m.layers * m.layer_params * n + 2.0 * m.vocab * m.hidden * heads
        attn = 4.0 * m.layers * m.q_dim * (p * (k + (p + 1) / 2) + t_ctx)
        mem = (self.weight_bytes + self.kv_bytes_per_token * (self.eff.kv_traffic * (k + t_ctx) + p + b)
               + self._act_bytes(n))
        t = np.maximum(linear / self._gemm_rate(n) + attn / (self.tp * self.gpu.peak_flops * self.eff.compute_eff),
                       mem / self._mem_rate())
        overhead = np.where(p > 0, self.eff.prefill_overhead_s, self.eff.decode_overhead_s)
        out = (np.maximum(t, overhead) if self.eff.overhead_overlaps else t + overhead) + self._allreduce_s(n)
        if self.eff.decode_batch_offsets_s or self.eff.prefill_chunk_offsets_s:
            out = np.maximum(out + self.eff.offset_s(p, b), MIN_CORRECTED * out)
        return np.where(n > 0, out, 0.0) if out.ndim else (float(out) if n > 0 else 0.0)
