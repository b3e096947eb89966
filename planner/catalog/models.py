"""`ModelSpec`: the shape of a decoder-only LLM, as the performance model needs it.

A spec says, layer by layer, what attention (full, sliding-window, linear; GQA/MQA or
DeepSeek's MLA) and what MLP (dense or mixture of experts) each layer has, and in what
format its weights are stored. From that it derives parameter counts (total and active per
token), weight bytes and KV-cache bytes. Specs come from planner/data/models.csv, the
bundled Hugging Face configs (planner/data/model_configs/) or any config.json
(planner.catalog.hf_config); lookups by name live in planner.catalog.model_catalog.
"""
from __future__ import annotations

from dataclasses import dataclass

from planner.errors import InputError

# Bytes per element of activations and caches (KV dtypes, and the legacy whole-model
# weight dtypes of `weight_bytes(dtype)`).
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "int8": 1, "int4": 0.5}

# Bytes per stored weight of a linear layer, scales included: FP8 block-wise has one fp32
# scale per 128x128 block, int4 (AWQ/GPTQ) one 16-bit scale per 128 weights, NVFP4 one FP8
# scale per 16, MXFP4 one E8M0 scale per 32 (the same figures as planner.perf.memory).
WEIGHT_FORMAT_BYTES = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "fp8_block": 1.0 + 4 / 128 ** 2,
                       "int8": 1.0, "int4": 0.5 + 2 / 128, "nvfp4": 0.5 + 1 / 16, "mxfp4": 0.5 + 1 / 32}

ATTENTION_KINDS = ("full", "sliding", "linear")   # values of ModelSpec.layer_types
MLP_KINDS = ("dense", "moe")                      # values of ModelSpec.mlp_types
PARTS = ("attention", "dense_mlp", "shared_experts", "experts", "other")


def dtype_bytes(dtype: str) -> float:
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise InputError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPE_BYTES)}") from None


def format_bytes(fmt: str) -> float:
    """Bytes per stored weight of `fmt` (a WEIGHT_FORMAT_BYTES key), scales included."""
    try:
        return WEIGHT_FORMAT_BYTES[fmt]
    except KeyError:
        raise InputError(f"unknown weight format {fmt!r}; use one of {', '.join(WEIGHT_FORMAT_BYTES)}") from None


@dataclass(frozen=True)
class ModelSpec:
    """The shape of a decoder-only model. Every field after `aliases` has a default that
    describes a plain dense GQA transformer, so the catalog's dense rows are unchanged.

    Dense shape (all models):
      layers, hidden, vocab, max_context
      heads, kv_heads, head_dim  query heads, K/V heads (kv_heads < heads: GQA, 1: MQA) and
                                 the query/key head size (MLA: qk_nope_head_dim + qk_rope_head_dim)
      ffn                        MLP width of a dense layer (config intermediate_size; in an
                                 all-MoE model the config's value, unused by its layers)
      mlp                        "gated" (3 matrices: SwiGLU, also every expert) or "dense" (2, OPT)
      bias                       OPT-style biases on every linear layer and LayerNorm
      tie_embeddings, positions  LM head shares the embedding; "learned" (OPT) or "rope"

    Attention:
      attention          "gqa" (standard multi-head / grouped-query / multi-query) or "mla"
      q_lora_rank        MLA: rank of the query down-projection (0: a plain q projection)
      kv_lora_rank       MLA: the compressed KV latent cached per token per layer
      qk_rope_head_dim   MLA: the decoupled RoPE key dims, cached alongside the latent
      qk_nope_head_dim   MLA: non-RoPE query/key dims per head
      v_head_dim         value head size when it differs from head_dim (MLA), else 0
      index_heads, index_head_dim, index_topk
                         DeepSeek sparse attention (V3.2, GLM-5): the lightning indexer's heads and
                         key size (its keys are cached per token too) and the tokens each query
                         attends to (0: dense attention)
      attn_output_gate   the query projection also produces a sigmoid output gate (Qwen3-Next, 3.5)
      qk_norm_per_layer  q and k are RMS-normalised over all heads at once (MiniMax-M2's
                         qk_norm_type "per_layer"), not per head: split over TP, each layer
                         all-reduces every token's two partial variances before the norm
      sliding_window     tokens a "sliding" layer attends to (0: none)
      layer_types        per layer "full" | "sliding" | "linear"; () means every layer "full"
                         (see attention_kinds). Gemma 2/3, gpt-oss: alternating sliding/full;
                         Mistral 7B v0.1: all sliding; Qwen3-Next/3.5, MiniMax-Text-01: linear
                         layers with a full-attention layer every 4th / 8th.
      linear_attention   kind of the "linear" layers: "gated_deltanet" (Qwen3-Next/3.5) or
                         "lightning" (MiniMax-Text-01/M1)
      linear_key_heads, linear_value_heads, linear_key_head_dim, linear_value_head_dim,
      linear_conv_kernel the linear layers' heads and sizes (lightning: heads x head_dim, no conv).
                         A linear layer caches no KV: it keeps a fixed state per sequence
                         (linear_state_bytes). Approximations: gated delta-net counts
                         in_proj_qkvz/ba, conv1d, dt_bias, A_log, the gated norm and out_proj
                         exactly; lightning counts qkv, output gate, out_proj and norm, and its
                         state as heads x head_dim^2 (the per-head decay is not a parameter).

    Mixture of experts (experts == 0: dense):
      experts            routed experts per MoE layer
      experts_per_token  routed experts each token goes to (top-k)
      expert_ffn         intermediate size of one routed expert (gated, 3 matrices)
      shared_experts     experts every token goes to, per MoE layer (DeepSeek, Kimi, GLM, Qwen3.5)
      shared_expert_ffn  intermediate size of one shared expert
      expert_groups      group-limited routing (DeepSeek-V3 n_group / topk_group): a token
      expert_groups_per_token  takes its top-k from its best groups only (1, 1: any expert)
      mlp_types          per layer "dense" | "moe"; () means every layer "moe" when experts > 0,
                         else "dense" (see mlp_kinds). DeepSeek-V3: 3 dense leading layers
                         (first_k_dense_replace) then MoE every moe_layer_freq-th layer.
      mtp_layers         multi-token-prediction layers shipped with the checkpoint (speculative
                         decoding); not counted in params (DeepSeek-V3's 671B excludes its 14B)

    Weight format (from quantization_config / hf_quant_config.json; WEIGHT_FORMAT_BYTES keys):
      weight_format        routed experts, and every linear layer not named below:
                           bf16 | fp16 | fp8 (per-tensor) | fp8_block (128x128 scales) | nvfp4 |
                           mxfp4 | int4 (AWQ/GPTQ/compressed-tensors) | int8
      attn_weight_format   attention (and linear-attention) projections when the checkpoint keeps
                           them in another format (gpt-oss MXFP4, NVFP4 exports: bf16); "" = same
      shared_weight_format shared experts and the MLPs of a MoE model's dense layers when kept in
                           another format (Kimi-K2.5 INT4, Qwen3.5 NVFP4: bf16); "" = same
      kv_cache_format      the KV-cache dtype the checkpoint was calibrated for ("fp8"), "" if none
      Embeddings, LM head, norms and routers count as 16-bit everywhere.

    For a step-cost model: attention_kinds / mlp_kinds per layer; attention_params(kind),
    dense_mlp_params, expert_params, shared_expert_params, router_params per layer;
    param_breakdown(active) and weight_bytes_by_part(active) by part; kv_bytes_per_token,
    kv_bytes(tokens) and linear_state_bytes for the cache. Vision towers, q/k norms and Gemma's
    extra norms are not counted (a few hundredths of a percent, vision ~0.4B).
    """
    name: str
    family: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    max_context: int
    mlp: str = "dense"          # dense (2 matrices, OPT) or gated (3 matrices, Llama)
    bias: bool = True
    tie_embeddings: bool = True
    positions: str = "learned"  # learned (OPT: table of max_context + 2 rows) or rope
    source: str = ""
    aliases: tuple[str, ...] = ()
    # attention
    attention: str = "gqa"
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    index_heads: int = 0
    index_head_dim: int = 0
    index_topk: int = 0
    attn_output_gate: bool = False
    qk_norm_per_layer: bool = False
    sliding_window: int = 0
    layer_types: tuple[str, ...] = ()
    linear_attention: str = ""
    linear_key_heads: int = 0
    linear_value_heads: int = 0
    linear_key_head_dim: int = 0
    linear_value_head_dim: int = 0
    linear_conv_kernel: int = 0
    # mixture of experts
    experts: int = 0
    experts_per_token: int = 0
    expert_ffn: int = 0
    shared_experts: int = 0
    shared_expert_ffn: int = 0
    expert_groups: int = 1
    expert_groups_per_token: int = 1
    mlp_types: tuple[str, ...] = ()
    mtp_layers: int = 0
    # weight and cache formats
    weight_format: str = "bf16"
    attn_weight_format: str = ""
    shared_weight_format: str = ""
    kv_cache_format: str = ""

    # ---- what kind of model ---------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def is_mla(self) -> bool:
        return self.attention == "mla"

    @property
    def attention_kinds(self) -> tuple[str, ...]:
        """Per layer: "full", "sliding" or "linear"."""
        return self.layer_types or ("full",) * self.layers

    @property
    def mlp_kinds(self) -> tuple[str, ...]:
        """Per layer: "dense" or "moe"."""
        return self.mlp_types or ("moe" if self.experts else "dense",) * self.layers

    @property
    def layer_kinds(self) -> tuple[tuple[str, str], ...]:
        """Per layer: (attention kind, MLP kind)."""
        return tuple(zip(self.attention_kinds, self.mlp_kinds))

    def count_layers(self, kind: str) -> int:
        """Layers of an attention kind ("full", "sliding", "linear") or MLP kind ("dense", "moe")."""
        kinds = self.mlp_kinds if kind in MLP_KINDS else self.attention_kinds
        return sum(k == kind for k in kinds)

    @property
    def kv_layers(self) -> int:
        """Layers that cache K/V per token (full and sliding attention)."""
        return self.count_layers("full") + self.count_layers("sliding")

    @property
    def dense_leading_layers(self) -> int:
        """Dense layers before the first MoE layer (DeepSeek's first_k_dense_replace)."""
        kinds = self.mlp_kinds
        return next((i for i, k in enumerate(kinds) if k == "moe"), len(kinds)) if self.experts else len(kinds)

    @property
    def kind(self) -> str:
        """One word for tables: dense, moe, plus mla / hybrid (linear layers) / swa (sliding)."""
        words = ["moe" if self.is_moe else "dense"]
        if self.is_mla:
            words.append("mla")
        if self.count_layers("linear"):
            words.append("hybrid")
        elif self.count_layers("sliding"):
            words.append("swa")
        return "+".join(words)

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def v_dim(self) -> int:
        """Attention output width: heads x value head size."""
        return self.heads * (self.v_head_dim or self.head_dim)

    # ---- parameters of one layer's parts (linear weights, then the rest) ----------------------
    def _attention_parts(self, kind: str) -> tuple[int, int]:
        h = self.hidden
        if kind == "linear":
            key = self.linear_key_heads * self.linear_key_head_dim
            value = self.linear_value_heads * self.linear_value_head_dim
            if self.linear_attention == "lightning":     # qkv, output gate, out_proj; a norm
                return h * (2 * key + value) + h * value + value * h, value
            conv = (2 * key + value) * self.linear_conv_kernel      # gated delta-net: depthwise conv1d,
            other = conv + 2 * self.linear_value_heads + self.linear_value_head_dim   # dt_bias, A_log, norm
            return h * (2 * key + 2 * value) + h * 2 * self.linear_value_heads + value * h, other
        if self.is_mla:
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            q = (h * self.q_lora_rank + self.q_lora_rank * self.heads * qk) if self.q_lora_rank else h * self.heads * qk
            kv = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank * self.heads * (
                self.qk_nope_head_dim + (self.v_head_dim or self.qk_nope_head_dim))
            index = 0
            if self.index_heads:    # DSA indexer: wq_b (from the q latent), wk, weights_proj; k norm
                index = (self.q_lora_rank or h) * self.index_heads * self.index_head_dim \
                    + h * self.index_head_dim + h * self.index_heads
            return q + kv + self.v_dim * h + index, self.q_lora_rank + self.kv_lora_rank + 2 * self.index_head_dim
        q = h * self.q_dim * (2 if self.attn_output_gate else 1)
        linear = q + 2 * h * self.kv_dim + self.v_dim * h
        return linear, (self.q_dim + 2 * self.kv_dim + h) if self.bias else 0

    def attention_params(self, kind: str = "full") -> int:
        """Weights of one layer's attention of `kind` ("full" and "sliding" are the same)."""
        return sum(self._attention_parts(kind))

    @property
    def dense_mlp_params(self) -> int:
        """Weights of one dense layer's MLP (biases included)."""
        biases = (self.ffn + self.hidden) if self.bias else 0
        return (3 if self.mlp == "gated" else 2) * self.hidden * self.ffn + biases

    @property
    def expert_params(self) -> int:
        """Weights of ONE routed expert (gated: gate, up, down)."""
        return 3 * self.hidden * self.expert_ffn

    @property
    def shared_expert_params(self) -> int:
        """Weights of all shared experts of one MoE layer."""
        return self.shared_experts * 3 * self.hidden * self.shared_expert_ffn

    @property
    def router_params(self) -> int:
        return self.hidden * self.experts

    @property
    def norm_params(self) -> int:
        """The two norms of one layer (LayerNorm with bias when `bias`)."""
        return 2 * self.hidden * (2 if self.bias else 1)

    def layer_breakdown(self, attention: str = "full", mlp: str = "dense", active: bool = False) -> dict[str, float]:
        """Weights of one layer by part (PARTS). `active`: only the experts_per_token routed
        experts a token goes to (fractional only in name: k/E of all experts, a whole count)."""
        attn_linear, attn_other = self._attention_parts(attention)
        out = dict.fromkeys(PARTS, 0)
        out["attention"] = attn_linear
        out["other"] = attn_other + self.norm_params
        if mlp == "moe":
            out["experts"] = (self.experts_per_token if active else self.experts) * self.expert_params
            out["shared_experts"] = self.shared_expert_params
            out["other"] += self.router_params
        else:
            out["dense_mlp"] = (3 if self.mlp == "gated" else 2) * self.hidden * self.ffn
            out["other"] += (self.ffn + self.hidden) if self.bias else 0
        return out

    def param_breakdown(self, active: bool = False) -> dict[str, int]:
        """Weights of the whole model by part: attention, dense_mlp, shared_experts, experts
        (linear layers) and other (norms, routers, biases, convs, embeddings, LM head)."""
        out = dict.fromkeys(PARTS, 0)
        cache: dict = {}
        for kinds in self.layer_kinds:
            if kinds not in cache:
                cache[kinds] = self.layer_breakdown(*kinds, active=active)
            for part, n in cache[kinds].items():
                out[part] += n
        out["other"] += self.embedding_params
        return out

    # ---- totals ----------------------------------------------------------------------------
    @property
    def uniform(self) -> bool:
        """Every layer alike: no MoE, no linear layers, no MLA (sliding windows allowed)."""
        return not self.experts and not self.is_mla and not self.count_layers("linear")

    @property
    def layer_params(self) -> int:
        """Weights of one decoder layer (attention, MLP, norms). Where layers differ (MoE,
        hybrid, MLA) the mean over layers, rounded down: `decoder_params` is exact."""
        if self.uniform:
            return self.attention_params("full") + self.dense_mlp_params + self.norm_params
        return self.decoder_params // self.layers

    @property
    def decoder_params(self) -> int:
        """Weights of all decoder layers (every routed expert counted)."""
        if self.uniform:
            return self.layers * self.layer_params
        return sum(n for p, n in self.param_breakdown().items()) - self.embedding_params

    @property
    def embedding_params(self) -> int:
        emb = self.vocab * self.hidden
        if self.positions == "learned":
            emb += (self.max_context + 2) * self.hidden
        if not self.tie_embeddings:
            emb += self.vocab * self.hidden
        return emb + self.hidden * (2 if self.bias else 1)  # final norm

    @property
    def params(self) -> int:
        """All weights (every routed expert; MTP layers and vision towers excluded)."""
        return self.decoder_params + self.embedding_params

    @property
    def active_params(self) -> int:
        """Weights one token touches: everything but the routed experts it is not sent to
        (embeddings and LM head included, as published "active" figures count them)."""
        if not self.experts:
            return self.params
        return sum(self.param_breakdown(active=True).values())

    @property
    def matmul_params(self) -> int:
        """Parameters touched by a matmul per token (decoder layers + LM head); for a MoE
        model only the routed experts a token goes to."""
        if self.uniform:
            return self.layers * self.layer_params + self.vocab * self.hidden
        return sum(self.param_breakdown(active=True).values()) - self.embedding_params + self.vocab * self.hidden

    # ---- bytes ------------------------------------------------------------------------------
    def format_of(self, part: str) -> str:
        """The stored format of a part (PARTS): "other" is always bf16."""
        if part == "attention":
            return self.attn_weight_format or self.weight_format
        if part == "shared_experts" or (part == "dense_mlp" and self.experts):
            return self.shared_weight_format or self.weight_format
        if part in ("dense_mlp", "experts"):
            return self.weight_format
        return "bf16"

    def weight_bytes_by_part(self, active: bool = False) -> dict[str, float]:
        """Stored bytes of each part in the checkpoint's formats (`active`: per token)."""
        return {part: n * format_bytes(self.format_of(part)) for part, n in self.param_breakdown(active).items()}

    def weight_bytes(self, dtype: str | None = "fp16") -> float:
        """Bytes of all weights. `dtype` None: as the checkpoint stores them (weight_format and
        friends, embeddings and norms in 16 bit); a DTYPE_BYTES dtype: every parameter in it (as
        before); a weight format (fp8_block, nvfp4, mxfp4): linear layers in it, the rest 16-bit."""
        if dtype is None:
            return sum(self.weight_bytes_by_part().values())
        if dtype in DTYPE_BYTES:
            return self.params * DTYPE_BYTES[dtype]
        parts = self.param_breakdown()
        return (self.params - parts["other"]) * format_bytes(dtype) + parts["other"] * 2.0

    def formats(self, dtype: str | None = None) -> tuple[str, str]:
        """(format of the attention / dense / shared-expert GEMMs, format of the routed
        experts) a deployment runs. None: as the checkpoint stores them (a 16-bit checkpoint
        as "fp16"); a format the checkpoint's non-expert layers already use keeps the experts
        as stored (gpt-oss: bf16 attention, MXFP4 experts); any other applies to both."""
        stored = self.attn_weight_format or self.weight_format
        if dtype is None:
            dtype = "fp16" if stored in ("bf16", "fp16") else stored
        keep = dtype == stored or (dtype in ("bf16", "fp16") and stored in ("bf16", "fp16"))
        experts = (self.weight_format if keep else dtype) if self.experts else ""
        return dtype, experts

    def kv_bytes_per_token(self, dtype: str = "fp16") -> float:
        """Cache bytes one token adds in every layer that caches per token (full and sliding
        attention; sliding layers stop growing past sliding_window: see kv_bytes). GQA: K and V,
        kv_heads x head_dim each; MLA: the latent (kv_lora_rank) and the RoPE key
        (qk_rope_head_dim); DeepSeek sparse attention adds its indexer key (index_head_dim).
        Linear-attention layers keep a fixed state instead (linear_state_bytes)."""
        per_layer = (self.kv_lora_rank + self.qk_rope_head_dim) if self.is_mla else 2 * self.kv_dim
        return self.kv_layers * (per_layer + self.index_head_dim) * dtype_bytes(dtype)

    def kv_bytes(self, tokens: int, dtype: str = "fp16", state_dtype: str = "fp32") -> float:
        """One sequence's cache at `tokens` of context: full layers hold every token, sliding
        layers at most sliding_window, linear layers their fixed state."""
        per_token = self.kv_bytes_per_token(dtype) / max(self.kv_layers, 1)
        window = min(tokens, self.sliding_window) if self.sliding_window else tokens
        held = self.count_layers("full") * tokens + self.count_layers("sliding") * window
        return held * per_token + self.linear_state_bytes(state_dtype)

    def linear_state_bytes(self, dtype: str = "fp32") -> float:
        """Recurrent state of all linear-attention layers for one sequence: gated delta-net
        value_heads x key_dim x value_dim in `dtype` plus its conv window ((kernel - 1) x conv
        channels, 16-bit); lightning heads x head_dim^2."""
        n = self.count_layers("linear")
        if not n:
            return 0.0
        state = self.linear_value_heads * self.linear_key_head_dim * self.linear_value_head_dim * dtype_bytes(dtype)
        channels = 2 * self.linear_key_heads * self.linear_key_head_dim \
            + self.linear_value_heads * self.linear_value_head_dim
        conv = max(self.linear_conv_kernel - 1, 0) * channels * 2.0
        return n * (state + conv)
