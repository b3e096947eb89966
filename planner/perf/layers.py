"""What one step of a model computes, part by part, for any layer mix: dense or MoE MLPs,
GQA / MQA, MLA, sliding-window and linear (gated delta-net) attention, in a parallel layout.

`Layout` is how one instance spreads over its GPUs (the columns of a serving benchmark):
- `tp`: tensor parallelism of attention (per DP rank);
- `dp`: attention data parallelism: `dp` ranks, each running attention at TP `tp` on its own
  requests and KV cache (SGLang's and TensorRT-LLM's attention DP for DeepSeek);
- `ep`: expert parallelism of the MoE layers, which span all tp x dp GPUs: each GPU holds
  experts / ep routed experts, each as a 1 / moe_tp slice (moe_tp = tp x dp / ep).
A step is costed on one DP rank holding `m` tokens; the MoE layers see the tokens of every
rank (M = m x dp, ranks assumed evenly loaded). With dp > 1 a MoE layer gathers the ranks'
tokens and scatters the results back (all-gather + reduce-scatter over tp x dp GPUs: costed
as one all-reduce of the gathered activations), and the dense MLPs and shared experts run
on the gathered tokens at TP tp x dp (SGLang's default dense TP); with dp = 1 every MLP ends
in the attention group's all-reduce, as in a dense model. Expert-parallel dispatch through
DeepEP-style all-to-all kernels is not modelled separately (its traffic is that same
gather / scatter).

`linear_parts(model, layout, src, m, ...)` gives, per part, the seconds of all layers over
per-rank token counts `m` (numpy arrays); `attention_kinds` which attention kernels a step
runs, with their layer counts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.catalog import ModelSpec
from planner.perf.moe_tables import MoeGeometry

ACT_BYTES = 2           # activations run in 16-bit
QK_VARIANCE_BYTES = 4   # a per-layer q / k norm reduces its variances in fp32


@dataclass(frozen=True)
class Layout:
    tp: int = 1
    dp: int = 1
    ep: int = 1

    @property
    def gpus(self) -> int:
        return self.tp * self.dp

    @property
    def moe_tp(self) -> int:
        return max(self.gpus // self.ep, 1)

    @property
    def mlp_tp(self) -> int:
        """TP of dense MLPs and shared experts."""
        return self.gpus if self.dp > 1 else self.tp

    def describe(self) -> str:
        parts = [f"TP{self.tp}"]
        if self.dp > 1:
            parts.append(f"DP{self.dp}")
        if self.ep > 1:
            parts.append(f"EP{self.ep}")
        return " x ".join(parts)


def layout_problem(model: ModelSpec, layout: Layout) -> str | None:
    """Why `layout` cannot run `model`, or None."""
    if min(layout.tp, layout.dp, layout.ep) < 1:
        return f"layout {layout} has a size below 1"
    if not model.experts and (layout.ep > 1 or layout.dp > 1):
        return f"{model.name} is dense: expert parallelism and attention DP need a MoE model (use more instances)"
    if layout.gpus % layout.ep:
        return f"EP {layout.ep} does not divide the {layout.gpus} GPUs of TP {layout.tp} x DP {layout.dp}"
    if model.experts and model.experts % layout.ep:
        return f"EP {layout.ep} does not divide {model.name}'s {model.experts} experts"
    return None


def _gqa(model: ModelSpec, src, m, tp: int, layers: int) -> dict:
    h = model.hidden
    q = model.q_dim * (2 if model.attn_output_gate else 1)
    return {"qkv_proj": layers * src.gemm_s(m, (q + 2 * model.kv_dim) / tp, h),
            "o_proj": layers * src.gemm_s(m, h, model.v_dim / tp)}


def _mla(model: ModelSpec, src, m, tp: int, layers: int) -> dict:
    """DeepSeek MLA projections: the fused q_a / kv_a down-projection (replicated over TP),
    q_b, kv_b (the absorbed decode runs the same weights as two batched GEMMs), o_proj; the
    sparse-attention indexer's projections where the model has one."""
    h = model.hidden
    qk = model.qk_nope_head_dim + model.qk_rope_head_dim
    v = model.v_head_dim or model.qk_nope_head_dim
    latent = model.kv_lora_rank + model.qk_rope_head_dim
    if model.q_lora_rank:
        qkv = src.gemm_s(m, model.q_lora_rank + latent, h) + src.gemm_s(m, model.heads * qk / tp, model.q_lora_rank)
    else:
        qkv = src.gemm_s(m, model.heads * qk / tp + latent, h)
    qkv = qkv + src.gemm_s(m, model.heads * (model.qk_nope_head_dim + v) / tp, model.kv_lora_rank)
    out = {"qkv_proj": layers * qkv, "o_proj": layers * src.gemm_s(m, h, model.heads * v / tp)}
    if model.index_heads:
        out["indexer_proj"] = layers * (src.gemm_s(m, model.index_heads * model.index_head_dim,
                                                   model.q_lora_rank or h)
                                        + src.gemm_s(m, model.index_head_dim + model.index_heads, h))
    return out


def _linear_attention(model: ModelSpec, src, m, tp: int, layers: int) -> dict:
    """Gated delta-net / lightning layers' projections (their recurrence is costed with
    attention: per prompt over its tokens, per decode over its state; planner.perf.step)."""
    h = model.hidden
    key = model.linear_key_heads * model.linear_key_head_dim
    value = model.linear_value_heads * model.linear_value_head_dim
    proj = src.gemm_s(m, (2 * key + 2 * value + 2 * model.linear_value_heads) / tp, h) + src.gemm_s(m, h, value / tp)
    return {"qkv_proj": layers * proj}


def linear_parts(model: ModelSpec, layout: Layout, src, m: np.ndarray, moe_dtype: str,
                 imbalance: float = 1.0) -> dict[str, np.ndarray]:
    """Seconds of every part whose cost follows the step's token count, summed over layers,
    for per-rank token counts `m`: projections, MLPs / experts, norms and communication."""
    h, tp = model.hidden, layout.tp
    gathered = m * layout.dp
    mlp_m = gathered if layout.dp > 1 else m
    out: dict[str, np.ndarray] = {}

    def add(parts: dict):
        for k, v in parts.items():
            out[k] = out.get(k, 0.0) + v

    kv_layers = model.count_layers("full") + model.count_layers("sliding")
    if kv_layers:
        add((_mla if model.is_mla else _gqa)(model, src, m, tp, kv_layers))
    if model.count_layers("linear"):
        add(_linear_attention(model, src, m, tp, model.count_layers("linear")))
    n_dense, n_moe = model.count_layers("dense"), model.count_layers("moe")
    up = 2 if model.mlp == "gated" else 1
    if n_dense:
        ffn = model.ffn
        add({"mlp_up": n_dense * src.gemm_s(mlp_m, up * ffn / layout.mlp_tp, h),
             "mlp_down": n_dense * src.gemm_s(mlp_m, h, ffn / layout.mlp_tp)})
    if n_moe:
        add({"router": n_moe * src.gemm16_s(m, model.experts, h)})
        if model.shared_experts:
            sf = model.shared_experts * model.shared_expert_ffn
            add({"shared_experts": n_moe * (src.gemm_s(mlp_m, 2 * sf / layout.mlp_tp, h)
                                            + src.gemm_s(mlp_m, h, sf / layout.mlp_tp))})
        geo = MoeGeometry(h, model.expert_ffn, model.experts_per_token, model.experts, layout.moe_tp, layout.ep,
                          moe_dtype, imbalance, model.expert_groups, model.expert_groups_per_token)
        add({"experts": n_moe * src.moe_s(gathered, geo)})
    L = model.layers
    # norms, residual adds, rotary embedding and (dense) MLP activation
    per_token = 2 * 2 * h + 2 * 3 * h + 2 * (model.q_dim + model.kv_dim) / tp * (kv_layers / L)
    act = (3 if model.mlp == "gated" else 2) * model.ffn / layout.mlp_tp * n_dense / L
    add({"norms_elementwise": L * src.memory_s(m * (per_token + act) * ACT_BYTES)})
    # communication: after attention in the TP group; after each MLP in the TP group (dp 1)
    # or gathered over all GPUs (dp > 1: all-gather + reduce-scatter ~ one all-reduce)
    comm = L * src.allreduce_s(m * h * ACT_BYTES)
    if model.qk_norm_per_layer and tp > 1:
        # the q / k norm over all heads: each token's two fp32 partial variances
        comm = comm + kv_layers * src.allreduce_s(m * 2 * QK_VARIANCE_BYTES)
    if layout.dp > 1:
        comm = comm + L * src.group_allreduce_s(gathered * h * ACT_BYTES, layout.gpus)
    else:
        comm = comm + L * src.allreduce_s(m * h * ACT_BYTES)
    add({"allreduce": comm})
    add({"embedding": src.memory_s(m * h * ACT_BYTES * 2)})
    return out


def attention_layers(model: ModelSpec) -> dict[str, int]:
    """Layers per attention kernel: "gqa" / "mla" (full), "sliding" (GQA capped at the
    window), "sparse" (MLA with DeepSeek sparse attention: at most index_topk keys per query)."""
    full, sliding = model.count_layers("full"), model.count_layers("sliding")
    out = {}
    if model.is_mla:
        out["sparse" if model.index_topk else "mla"] = full + sliding
    else:
        if full:
            out["gqa"] = full
        if sliding:
            out["sliding"] = sliding
    return out


# GPU time of one small kernel replayed from a CUDA graph, beyond its bytes: a chain of
# dependent 2 KB - 4 MB elementwise kernels took 0.83 us + bytes / HBM bandwidth each on an
# H200 (docs/profiles/h200-kernel-floor.csv, tests/gpu/kernel_floor.py); used for every GPU
KERNEL_GPU_S = 0.8e-6


def kernels_per_step(model: ModelSpec, layout: Layout, quantized: bool, fused_quant: bool = False) -> int:
    """GPU kernels one eager forward pass launches (a step run without a CUDA graph: any
    step with a prefill chunk, or a decode batch beyond the captured sizes), counted per
    layer from its parts: two fused add + norm, and per part the kernels engines launch for
    it - GQA: QKV GEMM, RoPE, KV-cache write, attention, output GEMM (5); MLA: fused down-
    projection, two latent norms, q_b and kv_b GEMMs, RoPE, two split / concat copies, cache
    write, attention, output GEMM (11); gated delta-net: projections, conv, gating, the chunked
    recurrence and its norm (8); dense MLP: up GEMM, activation, down GEMM (3); MoE: router
    GEMM, top-k, token sort / align, two grouped GEMMs, activation, combine (7), shared
    experts 3 more; a q / k norm over all heads (MiniMax-M2) 2 more, and its all-reduce
    when attention is split over GPUs; an activation-quantisation kernel before each FP8 /
    FP4 GEMM unless the engine fuses it; one collective after attention and one after the
    MLP when the layer is split over GPUs. Plus embedding, final norm, LM head and sampling
    (4)."""
    return kernel_counts(model, layout, quantized, fused_quant)[0]


def small_kernels_per_step(model: ModelSpec, layout: Layout, quantized: bool, fused_quant: bool = False) -> int:
    """The kernels of `kernels_per_step` whose time no kernel table measures (norms, RoPE,
    cache writes, copies, activations, top-k, token sort and combine, activation quantisation,
    linear-attention recurrences, embedding, sampling): each costs at least KERNEL_GPU_S on
    top of its bytes, CUDA graph or not."""
    return kernel_counts(model, layout, quantized, fused_quant)[1]


def kernel_counts(model: ModelSpec, layout: Layout, quantized: bool, fused_quant: bool = False) -> tuple[int, int]:
    """(kernels_per_step, small_kernels_per_step) in one pass over the layers."""
    total, small = 4, 3                                  # embedding, final norm, LM head, sampling
    gemms_attn = {"gqa": 2, "mla": 4, "linear": 2}
    for attention, mlp in model.layer_kinds:
        kind = "linear" if attention == "linear" else ("mla" if model.is_mla else "gqa")
        n = {"gqa": 5, "mla": 11, "linear": 8}[kind]
        gemms = gemms_attn[kind]
        tabled = gemms + (2 if kind == "linear" else 1)  # attention costed apart (conv + recurrence if linear)
        if mlp == "moe":
            n += 7 + (3 if model.shared_experts else 0)
            tabled += 3 + (2 if model.shared_experts else 0)   # router GEMM, the two grouped GEMMs
            gemms += 2 * (2 if model.shared_experts else 0) + 1     # shared up / down, the experts' input
        else:
            n += 3
            gemms += 2
            tabled += 2
        n += 2                                           # the two fused add + norm
        if model.qk_norm_per_layer and kind != "linear":
            n += 2                                       # q / k variances, then the norm
            if layout.tp > 1:
                n += 1                                   # their all-reduce over the TP group
                tabled += 1
        if quantized and not fused_quant:
            n += gemms
        if layout.gpus > 1:
            n += 2
            tabled += 2
        total += n
        small += n - tabled
    return total, small
