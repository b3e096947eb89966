"""Read a Hugging Face `config.json` (and a ModelOpt `hf_quant_config.json` beside it) into a
ModelSpec: dense, GQA/MQA, sliding-window and alternating attention, MoE, MLA, hybrid
linear attention, and the weight format of a quantized checkpoint.

Where transformers is installed and knows the `model_type`, the JSON is first passed through
its AutoConfig, which fills the keys a config leaves to the model's defaults and maps alias
names (GPT-2's n_embd, ...); keys the file states win. Otherwise (or when AutoConfig refuses
the file) the plain JSON is read, with the few family defaults below. transformers imports
torch when torch is installed, so the bundled catalog is always read as plain JSON
(tests/test_model_specs.py checks that both readings agree on every bundled config).
Architectures a ModelSpec cannot describe (Mamba/SSM hybrids, Kimi delta attention, Nemotron
NAS blocks, DeepSeek-V4 compressed attention, different head shapes per layer kind) are
refused by name (UNMODELLED_KEYS) rather than miscounted.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from planner.catalog.models import ModelSpec
from planner.checks import check_int, check_object
from planner.errors import InputError

REQUIRED = ("hidden_size", "num_attention_heads", "num_hidden_layers", "vocab_size")
MLA_REQUIRED = ("qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")
DELTANET_REQUIRED = ("linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim")
# Keys some families leave to their config class's defaults (used when transformers is absent).
FAMILY_DEFAULTS = {
    "gemma": {"tie_word_embeddings": True},
    "gemma2": {"tie_word_embeddings": True, "head_dim": 256, "sliding_window": 4096},
    "gemma3_text": {"tie_word_embeddings": True, "head_dim": 256, "vocab_size": 262208, "sliding_window": 4096,
                    "sliding_window_pattern": 6, "max_position_embeddings": 131072},
    "qwen3_next": {"attn_output_gate": True},
    "qwen3_5_text": {"attn_output_gate": True},
    "qwen3_5_moe_text": {"attn_output_gate": True},
}
LAYER_TYPE_NAMES = {"full_attention": "full", "attention": "full", "indexed_attention": "full",   # DSA: full + top-k
                    "sliding_attention": "sliding", "chunked_attention": "sliding", "linear_attention": "linear"}
# Keys of architectures the spec cannot describe: refused by name rather than miscounted.
UNMODELLED_KEYS = {
    "linear_attn_config": "Kimi delta-attention (KDA) layers",
    "hybrid_override_pattern": "Mamba/SSM hybrid layers",
    "layers_block_type": "Mamba/SSM hybrid layers",
    "block_configs": "per-layer NAS blocks (Nemotron NAS)",
    "compress_ratios": "compressed sparse attention (DeepSeek-V4)",
    "global_head_dim": "different head shapes in global and local layers",
    "swa_num_key_value_heads": "different head shapes in sliding and full layers",
}
UNMODELLED_TYPES = ("mamba", "jamba", "falcon_h1", "nemotron_h", "zamba", "bamba", "rwkv", "granitemoehybrid", "lfm2",
                    "recurrent_gemma", "xlstm")
AUTOCONFIG_KEYS = REQUIRED + ("num_key_value_heads", "head_dim", "intermediate_size", "max_position_embeddings",
                              "tie_word_embeddings", "layer_types", "sliding_window")
TEXT_KEYS_FROM_TOP = ("quantization_config", "tie_word_embeddings", "_name_or_path")


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; pass a model name, a Hugging Face id or a config.json path") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder; pass its config.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise InputError(f"{path}: not a valid JSON config ({str(e)[:200] or type(e).__name__})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    return check_object(data, str(path))


def model_from_hf_config(path: str | Path, *, use_transformers: bool = True, name: str | None = None,
                         source: str | None = None, quant_path: str | Path | None = None) -> ModelSpec:
    """A ModelSpec from a config.json (a file or the folder holding it). A ModelOpt
    `hf_quant_config.json` beside it (or at `quant_path`) gives the weight format when the
    config has no quantization_config. The name is `name`, else the config's _name_or_path,
    else the folder's name (capitals kept)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    raw = read_json(path)
    quant_path = Path(quant_path) if quant_path else path.parent / "hf_quant_config.json"
    hf_quant = read_json(quant_path) if quant_path.is_file() else None
    cfg = text_config(raw)
    note = ""
    if use_transformers:
        cfg, note = with_autoconfig(raw, cfg)
    label = cfg.get("_name_or_path") if isinstance(cfg.get("_name_or_path"), str) else ""
    name = name or label or path.parent.name or path.stem
    return spec_from_config(cfg, str(path), name=name, source=source or str(path), hf_quant=hf_quant, note=note)


def text_config(raw: dict) -> dict:
    """The language model's keys: a multimodal config's text_config (with the top level's
    quantization_config, tie_word_embeddings and name when it lacks them), else the config."""
    sub = raw.get("text_config")
    if isinstance(sub, dict) and not all(k in raw for k in REQUIRED):
        merged = dict(sub)
        for key in TEXT_KEYS_FROM_TOP:
            if key in raw and key not in merged:
                merged[key] = raw[key]
        merged.setdefault("model_type", raw.get("model_type", ""))
        return merged
    return dict(raw)


def with_autoconfig(raw: dict, cfg: dict) -> tuple[dict, str]:
    """`cfg` with the keys it lacks filled by transformers' AutoConfig, and a note when
    AutoConfig could not read it. Unchanged when transformers is absent or does not know
    the model_type."""
    model_type = raw.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        return cfg, ""
    try:
        import transformers
        from transformers import CONFIG_MAPPING, AutoConfig
    except Exception:  # noqa: BLE001 - an optional dependency, broken or absent
        return cfg, ""
    if model_type not in CONFIG_MAPPING:
        return cfg, ""
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        full = AutoConfig.for_model(model_type, **{k: v for k, v in raw.items() if k != "model_type"})
        text = full.get_text_config() if hasattr(full, "get_text_config") else full
        filled = text.to_dict()
        for key in AUTOCONFIG_KEYS:
            if key not in filled and hasattr(text, key):
                filled[key] = getattr(text, key)
    except Exception as e:  # noqa: BLE001 - AutoConfig validates; fall back to the plain JSON
        return cfg, f"transformers could not read it ({type(e).__name__}); read as plain JSON"
    finally:
        transformers.logging.set_verbosity(verbosity)
    return {**{k: v for k, v in filled.items() if v is not None}, **cfg}, ""


def spec_from_config(cfg: dict, where: str, *, name: str, source: str, hf_quant: dict | None = None,
                     note: str = "") -> ModelSpec:
    """A ModelSpec from a (text) config dict. Errors name `where` and the key."""
    model_type = cfg.get("model_type") or ""
    if not isinstance(model_type, str):
        raise InputError(f"{where}: model_type: expected a string, got {model_type!r}")
    cfg = {**FAMILY_DEFAULTS.get(model_type, {}), **{k: v for k, v in cfg.items() if v is not None}}
    unmodelled = next((k for k in UNMODELLED_KEYS if cfg.get(k) is not None), None)
    if unmodelled or model_type.startswith(UNMODELLED_TYPES):
        what = UNMODELLED_KEYS[unmodelled] if unmodelled else f"the layers of model_type {model_type!r}"
        raise InputError(f"{where}: {what}{f' ({unmodelled})' if unmodelled else ''} are not modelled; the planner "
                         "reads dense, GQA/MQA, sliding-window, MoE, MLA and gated delta-net or lightning hybrids")
    missing = [k for k in REQUIRED if k not in cfg]
    if missing:
        raise InputError(f"{where}: missing {', '.join(map(repr, missing))}; a decoder-only LM config needs "
                         f"{', '.join(REQUIRED)}")

    def count(key, default=None, lo=1, hi=1_000_000_000):
        v = cfg.get(key, default)
        return check_int(default if v is None else v, f"{where}: {key}", lo=lo, hi=hi)

    def first(*keys, default=0):
        for key in keys:
            if cfg.get(key) is not None:
                return count(key, lo=0)
        return default

    hidden, heads = count("hidden_size"), count("num_attention_heads")
    layers, vocab = count("num_hidden_layers", hi=100_000), count("vocab_size")
    is_opt = model_type == "opt"
    if hidden // heads < 1 and cfg.get("head_dim") is None:
        raise InputError(f"{where}: hidden_size {hidden} is smaller than num_attention_heads {heads}")
    notes = [note] if note else []
    shape = dict(
        name=name, family=model_type or "custom", layers=layers, hidden=hidden, heads=heads,
        kv_heads=count("num_key_value_heads", heads), head_dim=count("head_dim", hidden // heads),
        ffn=first("ffn_dim", "intermediate_size_mlp", "intermediate_size") or 4 * hidden,
        vocab=vocab, max_context=count("max_position_embeddings", 2048),
        mlp="dense" if is_opt else "gated",
        bias=bool(cfg.get("enable_bias", is_opt)) or bool(cfg.get("attention_bias", False)),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", is_opt)),
        positions="learned" if is_opt else "rope",
        attn_output_gate=bool(cfg.get("attn_output_gate", False)),
        qk_norm_per_layer=bool(cfg.get("use_qk_norm")) and cfg.get("qk_norm_type") == "per_layer")
    shape.update(_mla(cfg, where, count, first))
    shape.update(_attention_layers(cfg, where, model_type, layers, count, notes))
    shape.update(_moe(cfg, where, layers, count, first))
    shape["mtp_layers"] = first("num_nextn_predict_layers", "mtp_num_hidden_layers")
    if not shape["mtp_layers"] and cfg.get("use_mtp"):
        shape["mtp_layers"] = first("num_mtp_modules")
    formats = weight_formats(cfg.get("quantization_config"), hf_quant, where, notes)
    if notes:
        source = f"{source} ({'; '.join(notes)})"
    return ModelSpec(**shape, **formats, source=source)


def _mla(cfg, where, count, first) -> dict:
    if not cfg.get("kv_lora_rank"):
        return {}
    missing = [k for k in MLA_REQUIRED if cfg.get(k) is None]
    if missing:
        raise InputError(f"{where}: kv_lora_rank (MLA) needs {', '.join(map(repr, missing))} too")
    nope, rope = count("qk_nope_head_dim", lo=0), count("qk_rope_head_dim")
    out = dict(attention="mla", kv_lora_rank=count("kv_lora_rank"), q_lora_rank=first("q_lora_rank"),
               qk_rope_head_dim=rope, qk_nope_head_dim=nope, v_head_dim=count("v_head_dim"), head_dim=nope + rope)
    if cfg.get("index_n_heads") or cfg.get("index_head_dim"):
        out.update(index_heads=count("index_n_heads"), index_head_dim=count("index_head_dim"),
                   index_topk=first("index_topk"))
    return out


def _attention_layers(cfg, where, model_type, layers, count, notes) -> dict:
    """layer_types, sliding_window and the linear-attention shape."""
    window = cfg.get("sliding_window")
    window = count("sliding_window") if isinstance(window, int) and window > 0 else 0
    types = cfg.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != layers:
            raise InputError(f"{where}: layer_types: expected a list of {layers} layer types")
        unknown = sorted({t for t in types if t not in LAYER_TYPE_NAMES}, key=str)
        if unknown:
            raise InputError(f"{where}: layer_types: {unknown[0]!r} is not modelled; known: "
                             f"{', '.join(LAYER_TYPE_NAMES)}")
        kinds = [LAYER_TYPE_NAMES[t] for t in types]
        if "chunked_attention" in types:
            window = window or count("attention_chunk_size", 8192)
            notes.append("chunked attention counted as a sliding window of the chunk size")
    elif isinstance(cfg.get("attn_type_list"), list):        # MiniMax-Text-01: 1 softmax, 0 lightning
        att = cfg["attn_type_list"]
        if len(att) != layers or any(a not in (0, 1) for a in att):
            raise InputError(f"{where}: attn_type_list: expected {layers} entries of 0 or 1")
        kinds = ["full" if a == 1 else "linear" for a in att]
    elif cfg.get("attention_chunk_size") and model_type.startswith("llama4"):   # Llama 4: chunked, global every 4th
        n = count("no_rope_layer_interval", 4)
        rope = cfg.get("no_rope_layers") or [int((i + 1) % n != 0) for i in range(layers)]
        kinds = ["sliding" if r else "full" for r in rope]
        window = count("attention_chunk_size")
        notes.append("chunked attention counted as a sliding window of the chunk size")
    elif cfg.get("full_attention_interval"):                  # Qwen3-Next
        n = count("full_attention_interval")
        kinds = ["full" if (i + 1) % n == 0 else "linear" for i in range(layers)]
    elif window and model_type == "gemma2":
        kinds = ["sliding" if (i + 1) % 2 else "full" for i in range(layers)]
    elif window and model_type == "gemma3_text":
        n = count("sliding_window_pattern", 6)
        kinds = ["sliding" if (i + 1) % n else "full" for i in range(layers)]
    elif window and cfg.get("use_sliding_window", True):
        start = count("max_window_layers", 0, lo=0) if "use_sliding_window" in cfg else 0   # Qwen2 convention
        kinds = ["sliding" if i >= start else "full" for i in range(layers)]
    else:
        kinds = ["full"] * layers
    if window >= count("max_position_embeddings", 2048):
        kinds = ["full" if k == "sliding" else k for k in kinds]   # a window longer than any context
    out = {"layer_types": () if all(k == "full" for k in kinds) else tuple(kinds),
           "sliding_window": window if "sliding" in kinds else 0}
    if "linear" in kinds:
        out.update(_linear_attention(cfg, where, model_type, count))
    return out


def _linear_attention(cfg, where, model_type, count) -> dict:
    if cfg.get("attn_type_list") is not None or model_type.startswith("minimax"):
        heads, dim = count("num_attention_heads"), count("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
        return dict(linear_attention="lightning", linear_key_heads=heads, linear_value_heads=heads,
                    linear_key_head_dim=dim, linear_value_head_dim=dim, linear_conv_kernel=0)
    missing = [k for k in DELTANET_REQUIRED if cfg.get(k) is None]
    if missing:
        raise InputError(f"{where}: linear_attention layers need {', '.join(map(repr, missing))} "
                         "(gated delta-net; other linear-attention kinds are not modelled)")
    return dict(linear_attention="gated_deltanet", linear_key_heads=count("linear_num_key_heads"),
                linear_value_heads=count("linear_num_value_heads"), linear_key_head_dim=count("linear_key_head_dim"),
                linear_value_head_dim=count("linear_value_head_dim"),
                linear_conv_kernel=count("linear_conv_kernel_dim", 4))


def _moe(cfg, where, layers, count, first) -> dict:
    experts = first("n_routed_experts", "num_local_experts", "num_experts")
    if experts < 2:
        return {}
    top_k = first("num_experts_per_tok", "experts_per_token", "num_experts_per_token", "top_k_experts", "moe_top_k")
    if top_k < 1:
        raise InputError(f"{where}: {experts} experts but no 'num_experts_per_tok'; how many experts does a token use?")
    expert_ffn = first("moe_intermediate_size") or count("intermediate_size")
    shared, shared_ffn = 0, 0
    if cfg.get("n_shared_experts") or cfg.get("num_shared_experts"):   # DeepSeek, Kimi, GLM, Step: n of expert size
        shared = first("n_shared_experts", "num_shared_experts")
        shared_ffn = first("share_expert_dim") or expert_ffn
    elif str(cfg.get("model_type", "")).startswith("llama4"):  # Llama 4: one shared expert on every MoE layer
        shared, shared_ffn = 1, count("intermediate_size")
    elif cfg.get("shared_expert_intermediate_size"):         # Qwen2-MoE, Qwen3-Next, Qwen3.5: one, own size
        shared, shared_ffn = 1, count("shared_expert_intermediate_size")
    elif cfg.get("shared_intermediate_size"):                # MiniMax
        shared, shared_ffn = 1, count("shared_intermediate_size")
    if isinstance(cfg.get("moe_layer_freq"), list):          # one 0/1 per layer (MiniMax-M3, MiMo)
        freq = cfg["moe_layer_freq"]
        if len(freq) != layers:
            raise InputError(f"{where}: moe_layer_freq: expected {layers} entries, one per layer")
        kinds = ["moe" if f else "dense" for f in freq]
    elif cfg.get("first_k_dense_replace") is not None or cfg.get("moe_layer_freq") is not None:
        k, freq = first("first_k_dense_replace"), count("moe_layer_freq", 1)    # DeepSeek convention
        kinds = ["moe" if i >= k and i % freq == 0 else "dense" for i in range(layers)]
    else:                                                     # Qwen / Llama-4 convention
        step = count("decoder_sparse_step", cfg.get("interleave_moe_layer_step", 1))
        only = cfg.get("mlp_only_layers") or []
        if not isinstance(only, list):
            raise InputError(f"{where}: mlp_only_layers: expected a list of layer numbers")
        kinds = ["dense" if i in only or (i + 1) % step else "moe" for i in range(layers)]
    groups = first("n_group") or 1
    return dict(experts=experts, experts_per_token=top_k, expert_ffn=expert_ffn, shared_experts=shared,
                shared_expert_ffn=shared_ffn, expert_groups=groups,
                expert_groups_per_token=min(first("topk_group") or groups, groups),
                mlp_types=() if all(k == "moe" for k in kinds) else tuple(kinds))


# ---- weight formats -------------------------------------------------------------------------
MODELOPT_ALGOS = {"fp8": "fp8", "fp8_pb_wo": "fp8_block", "fp8_blockwise": "fp8_block",
                  "fp8_per_channel_per_token": "fp8", "mxfp8": "fp8", "nvfp4": "nvfp4", "w4a16_nvfp4": "nvfp4",
                  "nvfp4_awq": "nvfp4", "w4a8_nvfp4_fp8": "nvfp4",
                  "mxfp4": "mxfp4", "w4a16_awq": "int4", "w4a8_awq": "int4", "int4_awq": "int4", "int8_sq": "int8",
                  "w8a8": "int8", "int8_wo": "int8", "int4_wo": "int4"}
KNOWN_METHODS = ("fp8", "fbgemm_fp8", "mxfp4", "awq", "gptq", "awq_marlin", "gptq_marlin", "auto-round",
                 "compressed-tensors", "modelopt", "bitsandbytes")


def weight_formats(qcfg, hf_quant: dict | None, where: str, notes: list[str]) -> dict:
    """weight_format, attn_weight_format, shared_weight_format and kv_cache_format from a
    config's quantization_config, else a ModelOpt hf_quant_config.json."""
    if qcfg is None and hf_quant is not None:
        qcfg = {**check_object(hf_quant.get("quantization", hf_quant), f"{where}: hf_quant_config.json"),
                "quant_method": "modelopt"}
    if qcfg is None:
        return {}
    q = check_object(qcfg, f"{where}: quantization_config")
    method = str(q.get("quant_method", "")).lower()
    fmt, kv = _method_format(q, method, where, notes), ""
    if method in ("modelopt", "compressed-tensors"):
        kv = _kv_format(q.get("kv_cache_quant_algo") or q.get("kv_cache_scheme"))
    excluded = q.get("modules_to_not_convert") or q.get("ignore") or q.get("exclude_modules") \
        or q.get("ignored_layers") or []
    parts = _excluded_parts(excluded if isinstance(excluded, list) else [], notes, fmt)
    return dict(weight_format=fmt, attn_weight_format="bf16" if "attention" in parts else "",
                shared_weight_format="bf16" if parts & {"shared", "dense_mlp"} else "", kv_cache_format=kv)


def _method_format(q: dict, method: str, where: str, notes: list[str]) -> str:
    if method in ("fp8", "fbgemm_fp8"):
        return "fp8_block" if q.get("weight_block_size") else "fp8"
    if method == "mxfp4":
        return "mxfp4"
    if method in ("awq", "gptq", "awq_marlin", "gptq_marlin", "auto-round"):
        bits = q.get("bits", q.get("w_bit", 4))
        if bits not in (4, 8):
            raise InputError(f"{where}: quantization_config: {bits}-bit {method} weights are not modelled (4 or 8)")
        return "int4" if bits == 4 else "int8"
    if method == "bitsandbytes":
        notes.append("bitsandbytes weights counted as int4/int8")
        return "int4" if q.get("load_in_4bit") else "int8"
    if method == "modelopt" or q.get("quant_algo"):
        algo = str(q.get("quant_algo", "")).lower()
        if algo == "mixed_precision":
            layers = q.get("quantized_layers") or {}
            counts = Counter(str(v.get("quant_algo", "")).lower() for v in layers.values() if isinstance(v, dict))
            if not counts:
                raise InputError(f"{where}: quant_algo MIXED_PRECISION without quantized_layers")
            algo = counts.most_common(1)[0][0]
            notes.append(f"mixed-precision checkpoint counted as {MODELOPT_ALGOS.get(algo, algo)} "
                         "(its most common format)")
        if algo not in MODELOPT_ALGOS:
            raise InputError(f"{where}: quant_algo {algo.upper()!r} is not modelled; known: "
                             f"{', '.join(a.upper() for a in MODELOPT_ALGOS)}")
        return MODELOPT_ALGOS[algo]
    if method == "compressed-tensors":
        return _compressed_tensors_format(q, where)
    raise InputError(f"{where}: quantization_config.quant_method {method!r} is not modelled; known: "
                     f"{', '.join(KNOWN_METHODS)}")


def _compressed_tensors_format(q: dict, where: str) -> str:
    groups = q.get("config_groups")
    weights = [g.get("weights") for g in groups.values() if isinstance(g, dict)] if isinstance(groups, dict) else []
    weights = [w for w in weights if isinstance(w, dict)]
    if not weights:
        raise InputError(f"{where}: compressed-tensors quantization_config without config_groups weights")
    w = weights[0]
    bits, kind = w.get("num_bits"), str(w.get("type", "int"))
    fmt = str(q.get("format", "")) + str(next(iter(groups.values())).get("format", ""))
    if kind == "float" and bits == 8:
        return "fp8_block" if w.get("strategy") == "block" else "fp8"
    if kind == "float" and bits == 4:
        return "mxfp4" if "mxfp4" in fmt or w.get("group_size") == 32 else "nvfp4"
    if kind == "int" and bits in (4, 8):
        return "int4" if bits == 4 else "int8"
    raise InputError(f"{where}: compressed-tensors {bits}-bit {kind} weights are not modelled")


def _kv_format(value) -> str:
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, dict) and value.get("num_bits") == 8:
        return "fp8" if value.get("type", "float") == "float" else "int8"
    return ""


_ATTN = re.compile(r"(self_attn|linear_attn|\battn\b)")
_DENSE_MLP = re.compile(r"mlp\\?\.\(?(gate|up|down|gate_up)[|)_]")


def _excluded_parts(patterns: list, notes: list[str], fmt: str) -> set[str]:
    """Which parts a quantizer's exclusion list keeps in 16 bit: "attention" (the whole
    attention block, or its projections named one by one, o_proj among them), "shared"
    (shared experts), "dense_mlp" (dense MLPs). Routers, norms, embeddings, LM head, vision
    and MTP layers count as 16-bit anyway; whole single layers named alone are ignored."""
    parts, named = set(), set()
    for p in patterns:
        if not isinstance(p, str):
            continue
        p = p.removeprefix("re:").rstrip("$")
        m = _ATTN.search(p)
        if m:
            tail = p[m.end():]
            if re.fullmatch(r"[.*\\]*", tail):
                parts.add("attention")
            elif "norm" not in tail:
                named.add(tail.strip(".*"))
        elif "shared_expert" in p:
            parts.add("shared")
        elif _DENSE_MLP.search(p):
            parts.add("dense_mlp")
    if any("o_proj" in t for t in named):
        parts.add("attention")
    elif named and "attention" not in parts:
        notes.append(f"attention projections {', '.join(sorted(named))} kept in 16 bit are counted as {fmt}")
    return parts
