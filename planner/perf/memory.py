"""GPU memory of one instance: weights, KV bytes per token, activations and the KV capacity
an engine gets after them.

Weights: the model's parameters in its weight format (bf16/fp16 2 bytes, fp8 1, int4 0.5
plus a 16-bit scale per 128 weights, fp4 0.5 plus an 8-bit scale per 16), embeddings and
norms in 16 bit. KV: 2 (K and V) x layers x KV heads x head dim x the KV dtype's bytes.
Capacity: GPU memory x the engine's memory fraction, less weights, the activation peak of
the largest step (the engine's profile run: the token budget through the widest layer,
plus the logits of its largest batch) and the communication buffers of TP.

Layouts (planner.perf.layers.Layout): per GPU, attention and embeddings are split over the
rank's TP group (replicated across attention-DP ranks), routed experts over all tp x dp GPUs,
dense MLPs and shared experts over the MLP TP. MLA's latent cache is one "head": every GPU
of a TP group holds all of it. Capacity is per DP rank (each rank caches its own requests).
Approximations: sliding-window layers are counted as caching every token (an upper bound on
their KV), and linear-attention state (a fixed size per running sequence) is not reserved.
"""
from __future__ import annotations

from dataclasses import dataclass

from planner.catalog import GpuSpec, ModelSpec
from planner.catalog.models import WEIGHT_FORMAT_BYTES
from planner.perf.layers import Layout

WEIGHT_BYTES = {**WEIGHT_FORMAT_BYTES, "fp4": WEIGHT_FORMAT_BYTES["nvfp4"]}   # the catalog's formats; "fp4" = NVFP4
NCCL_BUFFER_BYTES = 2 * 2**30 / 8     # per GPU of a TP group: NCCL's channel buffers, about 256 MiB


@dataclass(frozen=True)
class Memory:
    weights_bytes: float          # per GPU
    activation_bytes: float       # per GPU
    kv_bytes_per_token: float     # per GPU
    kv_capacity_tokens: int       # per instance (every GPU of the TP group holds its heads' share)


def weight_bytes(model: ModelSpec, weight_dtype: str) -> float:
    """All weights of the model: linear layers in `weight_dtype`, the rest in 16 bit."""
    return sum(weight_parts(model, weight_dtype).values())


def weight_parts(model: ModelSpec, weight_dtype: str, moe_dtype: str = "") -> dict[str, float]:
    """Bytes by part (planner.catalog.models.PARTS): linear layers in `weight_dtype`, routed
    experts in `moe_dtype` (default the same), the rest in 16 bit. A dense uniform model keeps
    its one-line formula (biases and norms as "other")."""
    if model.uniform:
        linear = model.layers * model.layer_params - model.layers * 2 * model.hidden * (2 if model.bias else 1)
        return {"attention": 0.0, "dense_mlp": linear * WEIGHT_BYTES[weight_dtype], "shared_experts": 0.0,
                "experts": 0.0, "other": (model.params - linear) * 2.0}
    parts = model.param_breakdown()
    fmt = {"experts": moe_dtype or weight_dtype, "other": "bf16"}
    return {p: n * WEIGHT_BYTES[fmt.get(p, weight_dtype)] for p, n in parts.items()}


def weight_bytes_per_gpu(model: ModelSpec, layout: Layout, weight_dtype: str, moe_dtype: str = "") -> float:
    parts = weight_parts(model, weight_dtype, moe_dtype)
    return ((parts["attention"] + parts["other"]) / layout.tp + parts["experts"] / layout.gpus
            + (parts["dense_mlp"] + parts["shared_experts"]) / (layout.mlp_tp if model.experts else layout.tp))


def kv_bytes_per_token_per_gpu(model: ModelSpec, kv_dtype: str, tp: int) -> float:
    total = kv_bytes_per_token(model, kv_dtype)
    if model.is_mla:
        return total                                       # the latent is not split by heads
    return total / tp * max(1.0, tp / model.kv_heads)      # replicated KV heads


def kv_bytes_per_token(model: ModelSpec, kv_dtype: str) -> float:
    return model.kv_bytes_per_token(kv_dtype)


def activation_bytes(model: ModelSpec, tp: int, token_budget: int, max_seqs: int) -> float:
    """Peak activations of one step of `token_budget` tokens on one GPU: the widest layer's
    input, QKV and MLP outputs live at once, plus fp32 logits for `max_seqs` sequences."""
    up = (2 if model.mlp == "gated" else 1) * model.ffn / tp
    per_token = (2 * model.hidden + (model.q_dim + 2 * model.kv_dim) / tp + up) * 2.0
    return token_budget * per_token + max_seqs * model.vocab / tp * 4.0


def instance_memory(gpu: GpuSpec, model: ModelSpec, tp: int, weight_dtype: str, kv_dtype: str,
                    memory_fraction: float, token_budget: int, max_seqs: int, fraction_of_free: bool = False,
                    layout: Layout | None = None, moe_dtype: str = "") -> Memory:
    """`memory_fraction` of the whole GPU memory holds weights, activations and KV (vLLM's
    gpu_memory_utilization, SGLang's mem_fraction_static), or with `fraction_of_free` that
    fraction of what is free after weights and activations holds the KV (TensorRT-LLM's
    free_gpu_memory_fraction)."""
    layout = layout or Layout(tp=tp)
    w = weight_bytes_per_gpu(model, layout, weight_dtype, moe_dtype)
    act = activation_bytes(model, tp, token_budget, max_seqs)
    kv_tok = kv_bytes_per_token_per_gpu(model, kv_dtype, tp)
    comm = NCCL_BUFFER_BYTES if layout.gpus > 1 else 0.0
    if fraction_of_free:
        free = (gpu.memory_bytes - w - act - comm) * memory_fraction
    else:
        free = gpu.memory_bytes * memory_fraction - w - act - comm
    return Memory(w, act, kv_tok, int(max(free, 0.0) // kv_tok))
