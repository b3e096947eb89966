"""GPU memory of one instance: weights, KV bytes per token, activations and the KV capacity
an engine gets after them.

Weights: the model's parameters in its weight format (bf16/fp16 2 bytes, fp8 1, int4 0.5
plus a 16-bit scale per 128 weights, fp4 0.5 plus an 8-bit scale per 16), embeddings and
norms in 16 bit. KV: 2 (K and V) x layers x KV heads x head dim x the KV dtype's bytes.
Capacity: GPU memory x the engine's memory fraction, less weights, the activation peak of
the largest step (the engine's profile run: the token budget through the widest layer,
plus the logits of its largest batch) and the communication buffers of TP.
"""
from __future__ import annotations

from dataclasses import dataclass

from planner.catalog import GpuSpec, ModelSpec
from planner.catalog.models import WEIGHT_FORMAT_BYTES

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
    linear = model.layers * model.layer_params - model.layers * 2 * model.hidden * (2 if model.bias else 1)
    other = model.params - linear
    return linear * WEIGHT_BYTES[weight_dtype] + other * 2.0


def kv_bytes_per_token(model: ModelSpec, kv_dtype: str) -> float:
    return model.kv_bytes_per_token(kv_dtype)


def activation_bytes(model: ModelSpec, tp: int, token_budget: int, max_seqs: int) -> float:
    """Peak activations of one step of `token_budget` tokens on one GPU: the widest layer's
    input, QKV and MLP outputs live at once, plus fp32 logits for `max_seqs` sequences."""
    up = (2 if model.mlp == "gated" else 1) * model.ffn / tp
    per_token = (2 * model.hidden + (model.q_dim + 2 * model.kv_dim) / tp + up) * 2.0
    return token_budget * per_token + max_seqs * model.vocab / tp * 4.0


def instance_memory(gpu: GpuSpec, model: ModelSpec, tp: int, weight_dtype: str, kv_dtype: str,
                    memory_fraction: float, token_budget: int, max_seqs: int, fraction_of_free: bool = False) -> Memory:
    """`memory_fraction` of the whole GPU memory holds weights, activations and KV (vLLM's
    gpu_memory_utilization, SGLang's mem_fraction_static), or with `fraction_of_free` that
    fraction of what is free after weights and activations holds the KV (TensorRT-LLM's
    free_gpu_memory_fraction)."""
    w = weight_bytes(model, weight_dtype) / tp
    act = activation_bytes(model, tp, token_budget, max_seqs)
    kv_tok = kv_bytes_per_token(model, kv_dtype) / tp * max(1.0, tp / model.kv_heads)  # replicated KV heads
    comm = NCCL_BUFFER_BYTES if tp > 1 else 0.0
    if fraction_of_free:
        free = (gpu.memory_bytes - w - act - comm) * memory_fraction
    else:
        free = gpu.memory_bytes * memory_fraction - w - act - comm
    return Memory(w, act, kv_tok, int(max(free, 0.0) // kv_tok))
