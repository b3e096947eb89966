"""`PerfModel`: the one interface through which the analytical model and the simulator get
step times and memory, for one instance (a TP group) of a model on a GPU type and engine.

Its source is chosen per GPU and engine and named by `source_name`:
- a calibrated testbed profile (`eff` given): planner.perf.profile;
- measured kernel tables of this GPU and engine (the `silicon` extra): planner.perf.step
  over planner.perf.sources.Kernels;
- otherwise the roofline fitted to kernel tables: planner.perf.step over Roofline.
All time methods take numpy arrays as well as scalars.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from planner.catalog import GpuSpec, ModelSpec
from planner.errors import InputError
from planner.perf.layers import Layout
from planner.perf.memory import instance_memory, kv_bytes_per_token, weight_bytes
from planner.perf.profile import Efficiency, ProfileModel
from planner.perf.step import CpuCost, StepCost, StepModel

_SCALARS = (int, float, np.float64, np.int64)
WEIGHT_TO_GEMM = {"fp16": "bf16", "bf16": "bf16", "fp32": "bf16", "fp8": "fp8", "fp8_block": "fp8_block",
                  "fp4": "fp4", "nvfp4": "fp4", "mxfp4": "fp4", "int4": "bf16", "int8": "bf16"}


@dataclass(frozen=True)
class PerfModel:
    gpu: GpuSpec
    model: ModelSpec
    tp: int = 1
    dtype: str = "bf16"                 # weight format: bf16 | fp16 | fp8 | fp8_block | fp4 | int4 ...
    eff: Efficiency | None = None       # a calibrated testbed profile (then the profile source)
    engine: str = "vllm"                # whose kernel tables, CUDA graphs and step overhead
    kv_dtype: str | None = None         # None: 16-bit KV
    source: str = "auto"                # auto | kernels | roofline
    cpu: CpuCost = CpuCost()            # the engine's CPU time per step (planner.engines)
    graph_sizes: tuple = ()             # CUDA-graph batch sizes of decode-only steps
    graph_padding: bool = True          # a batch pads up to the next captured size (False: exact sizes only)
    piecewise_graphs: bool = False      # steps with prompt tokens, up to the largest captured size, replay
                                        # graphs around an eagerly launched attention (vLLM V1)
    memory_fraction: float = 0.90       # of GPU memory the engine may use
    token_budget: int = 8192            # the engine's largest step, for its activation peak
    max_seqs: int = 256
    fused_quant: bool = False           # the engine fuses activation quantisation before FP8/FP4 GEMMs
    memory_of_free: bool = False        # memory_fraction is of the memory left after weights (TensorRT-LLM)
    dp: int = 1                         # attention data-parallel ranks (planner.perf.layers.Layout)
    ep: int = 1                         # expert parallelism of the MoE layers
    moe_dtype: str = ""                 # routed experts' format when it differs from `dtype` ("": the same)
    moe_imbalance: float = 1.0          # busiest GPU's routed tokens over the mean (1: balanced routing)
    moe_kernel: str = ""                # routed experts' kernel family (planner.perf.moe_tables.MOE_KERNELS; "": fastest)
    spec_tokens: int = 0                # draft tokens per decode step (MTP / EAGLE chain; 0: none)
    spec_acceptance: float = 0.0        # each draft token's chance of acceptance given the one before

    def with_tp(self, tp: int) -> "PerfModel":
        return replace(self, tp=tp)

    # ---- which model ---------------------------------------------------------------------
    @cached_property
    def _profile(self) -> ProfileModel | None:
        if self.eff is None:
            return None
        if self.spec_tokens:
            raise InputError("speculative decoding is modelled on GPU step costs, not on a calibrated testbed profile")
        return ProfileModel(self.gpu, self.model, self.tp, "fp16" if self.dtype == "bf16" else self.dtype, self.eff)

    @cached_property
    def steps(self) -> StepModel | None:
        if self.eff is not None:
            return None
        return StepModel(self.gpu, self.model, self.tp, WEIGHT_TO_GEMM.get(self.dtype, "bf16"), self.kv_format,
                         self.engine, tuple(self.graph_sizes), self.cpu, self.source, self.fused_quant,
                         self.layout, self.moe_dtype or self.dtype, self.moe_imbalance, self.graph_padding,
                         self.spec_tokens, self.spec_acceptance, self.piecewise_graphs, self.moe_kernel)

    @property
    def layout(self) -> Layout:
        return Layout(self.tp, self.dp, self.ep)

    @property
    def kv_format(self) -> str:
        return self.kv_dtype or "bf16"

    @property
    def source_name(self) -> str:
        if self._profile is not None:
            return f"calibrated profile ({self.eff.source})"
        return self.steps.describe()

    # ---- memory --------------------------------------------------------------------------
    @cached_property
    def _memory(self):
        return instance_memory(self.gpu, self.model, self.tp, self.dtype, self.kv_format, self.memory_fraction,
                               self.token_budget, self.max_seqs, self.memory_of_free, self.layout, self.moe_dtype)

    @property
    def weight_bytes(self) -> float:
        """Per instance (all TP shards)."""
        return self._profile.weight_bytes if self._profile else weight_bytes(self.model, self.dtype)

    @property
    def kv_bytes_per_token(self) -> float:
        """Per instance (all TP shards together)."""
        return self._profile.kv_bytes_per_token if self._profile else kv_bytes_per_token(self.model, self.kv_format)

    @property
    def kv_capacity_tokens(self) -> int:
        """KV tokens one instance can hold after weights, activations and buffers."""
        return self._profile.kv_capacity_tokens if self._profile else self._memory.kv_capacity_tokens

    @property
    def fits(self) -> bool:
        return self.kv_capacity_tokens >= 1

    # ---- testbed-profile factors (1 / 0 for GPUs) ------------------------------------------
    @property
    def prefill_request_s(self) -> float:
        return self.eff.prefill_request_s if self.eff else 0.0

    @property
    def prefill_idle_factor(self) -> float:
        return self.eff.prefill_idle_factor if self.eff else 1.0

    # ---- step times ------------------------------------------------------------------------
    def mixed_time_s(self, prefill_tokens, cached_tokens, decode_batch, decode_context_tokens):
        """One step: `prefill_tokens` of prompt (on `cached_tokens` of context) with a decode
        batch of `decode_batch` requests holding `decode_context_tokens` of KV in total."""
        if self._profile is not None:
            return self._profile.mixed_time_s(prefill_tokens, cached_tokens, decode_batch, decode_context_tokens)
        return self._vector(prefill_tokens, cached_tokens, decode_batch, decode_context_tokens)

    def prefill_time_s(self, chunk_tokens, cached_tokens=0, requests=1):
        """One prefill step of `chunk_tokens` new tokens made of `requests` request slices,
        each over its own prefix: `cached_tokens` is the slices' prefixes weighted by their
        tokens (sum of slice tokens x prefix / chunk tokens; one request's prefix), and each
        slice attends over its own tokens only (several prompts in a step are not one long
        sequence)."""
        if self._profile is not None:
            return self._profile.prefill_time_s(chunk_tokens, cached_tokens, requests)
        return self._vector(chunk_tokens, cached_tokens, 0, 0, requests)

    def decode_time_s(self, batch, context_tokens):
        """One decode step: `batch` requests generate a token each, holding `context_tokens`
        of KV in total."""
        if self._profile is not None:
            return self._profile.decode_time_s(batch, context_tokens)
        return self._vector(0, 0, batch, context_tokens)

    def step_s(self, prefill_tokens: float, cached_tokens: float, decode_batch: int, decode_context_tokens: float,
               requests: int = 1) -> float:
        """Scalar `mixed_time_s`, fast (the simulator's hot path); `requests` prompt slices
        as in `prefill_time_s`."""
        if self._profile is not None:
            t = float(self._profile.mixed_time_s(prefill_tokens, cached_tokens, decode_batch, decode_context_tokens))
            return t + (requests - 1) * self.eff.prefill_request_s if prefill_tokens > 0 and requests > 1 else t
        return self.steps.mixed_s(prefill_tokens, cached_tokens, int(decode_batch), decode_context_tokens, requests)

    def step(self, new_tokens, cached_tokens) -> StepCost:
        """One step from its requests (tokens computed now, tokens cached), op by op."""
        if self._profile is not None:
            new, cached = np.asarray(new_tokens, float), np.asarray(cached_tokens, float)
            dec = (new == 1) & (cached > 0)
            t = self.step_s(float(new[~dec].sum()), float(cached[~dec].sum()), int(dec.sum()),
                            float(cached[dec].sum()))
            return StepCost(t, {"calibrated_step": t})
        return self.steps.step(new_tokens, cached_tokens)

    def _vector(self, p, k, b, ctx, requests=1):
        if all(type(x) in _SCALARS for x in (p, k, b, ctx, requests)):   # the simulator's calls: no numpy
            return self.steps.mixed_s(float(p), float(k), int(b), float(ctx), int(requests))
        arrays = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (p, k, b, ctx, requests)))
        if arrays[0].ndim == 0:
            return self.steps.mixed_s(*(float(a) for a in arrays[:2]), int(arrays[2]), float(arrays[3]),
                                      int(arrays[4]))
        return self.steps.mixed_v(*arrays)

    # ---- derived -----------------------------------------------------------------------------
    def prefill_throughput_tokens_s(self, chunk_tokens):
        c = np.asarray(chunk_tokens, dtype=float)
        return c / self.prefill_time_s(c)

    def saturation_chunk_tokens(self, fraction: float = 0.95, max_tokens: int = 16384) -> int:
        """Smallest chunk (multiple of 16) whose prefill throughput reaches `fraction` of
        the best throughput over chunks up to `max_tokens` (TetriInfer's ChunkSize)."""
        chunks = np.arange(16, max_tokens + 1, 16)
        thr = self.prefill_throughput_tokens_s(chunks)
        return int(chunks[np.argmax(thr >= fraction * thr.max())])

    def prompt_prefill_time_s(self, prompt_tokens, chunk_tokens: int):
        """Time to prefill one whole prompt alone, in chunks of `chunk_tokens`."""
        p = int(prompt_tokens)
        starts = np.arange(0, p, chunk_tokens)
        sizes = np.minimum(chunk_tokens, p - starts)
        return float(np.sum(self.prefill_time_s(sizes, starts)))


def kv_transfer_time_s(kv_bytes, link_gb_s: float, latency_s: float = 1e-4):
    """Request-level KV transfer: bytes over a link of `link_gb_s` (1e9 B/s) plus latency."""
    return latency_s + np.asarray(kv_bytes, dtype=float) / (link_gb_s * 1e9)
