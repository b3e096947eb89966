"""OPT models for the testbed: catalog sizes, scaled variants, seeded random weights.

A model is transformers' own `OPTForCausalLM`, so the correctness tests can compare the
engine with Hugging Face on the very same weights. Only the weights are ours:

- `scaled_config(name, layers=..., hidden=...)` gives the `OPTConfig` of a catalog OPT model
  (`planner catalog models`), optionally with fewer layers or a narrower hidden size (the
  head size is kept, so heads shrink with the width; the FFN keeps its ratio). A scaled
  model's name says what was changed, e.g. `opt-6.7b-l8` or `opt-1.3b-l4-h512`, and the name
  is stored in the config (`_name_or_path`), so `write_config()` produces a `config.json`
  that `planner.catalog.model(path)` reads back as the same shape.
- `build_model(...)` fills every parameter from its own generator seeded by
  (seed, parameter name): two processes that build the same config with the same seed hold
  bit-identical weights, whatever else they did before. The random numbers are drawn on the
  target device's type (CPU or CUDA generators), then cast to the model dtype; weights built
  for CPU and for CUDA therefore differ - build every process of one testbed on one device
  type, or pass `init_device="cpu"` everywhere.
- `weights_dir=` loads real weights (safetensors or .bin, `save_pretrained` layout) instead.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from transformers import OPTConfig, OPTForCausalLM

from planner.catalog import model as catalog_model
from planner.errors import InputError

INIT_STD = 0.02          # OPT's init_std: embeddings and biases
LN_WEIGHT_STD = 0.1      # layer-norm gains drawn around 1 so the norms are exercised
# Projection matrices get std 1/sqrt(fan_in): each layer then adds unit-scale signal to the
# residual stream, so a random model's next token depends on its context (with OPT's 0.02 a
# random model echoes its last token forever, which would make greedy-token tests weak).

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
          "float16": torch.float16, "half": torch.float16, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype.lower()]
    except KeyError:
        raise InputError(f"unknown dtype {dtype!r}; use fp32, fp16 or bf16") from None


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


def scaled_config(name: str, layers: int | None = None, hidden: int | None = None, *,
                  heads: int | None = None, ffn: int | None = None, vocab: int | None = None,
                  max_context: int | None = None) -> OPTConfig:
    """The OPTConfig of catalog model `name` (or a config.json path), optionally scaled.

    `hidden` narrows the model keeping the head size (heads = hidden / head_dim) unless
    `heads` is given; the FFN width keeps its ratio to hidden unless `ffn` is given. The
    catalog's OPT shapes are used as pre-LN decoders without the 350m's 512-wide
    projection (as the planner's catalog counts them)."""
    spec = catalog_model(name)
    if spec.family != "opt":
        raise InputError(f"model {name!r} is a {spec.family} model; the testbed runs OPT models "
                         "(opt-125m ... opt-66b, see `planner catalog models`)")
    for flag, v in (("--layers", layers), ("--hidden", hidden), ("--heads", heads), ("--ffn", ffn),
                    ("--vocab", vocab), ("--max-context", max_context)):
        if v is not None and v < 1:
            raise InputError(f"{flag} must be >= 1, got {v}")
    n_layers = layers or spec.layers
    width = hidden or spec.hidden
    if heads is None:
        if width % spec.head_dim:
            raise InputError(f"--hidden {width} is not a multiple of {spec.name}'s head size "
                             f"{spec.head_dim}; pick a multiple or give --heads")
        heads = width // spec.head_dim
    if width % heads:
        raise InputError(f"hidden size {width} is not divisible by {heads} heads")
    ffn_dim = ffn or max(1, round(spec.ffn * width / spec.hidden))
    suffix = ""
    if n_layers != spec.layers:
        suffix += f"-l{n_layers}"
    if width != spec.hidden or heads != spec.heads:
        suffix += f"-h{width}" + (f"x{heads}" if heads * spec.head_dim != width else "")
    if ffn_dim != round(spec.ffn * width / spec.hidden):
        suffix += f"-f{ffn_dim}"
    if vocab is not None and vocab != spec.vocab:
        suffix += f"-v{vocab}"
    if max_context is not None and max_context != spec.max_context:
        suffix += f"-c{max_context}"
    cfg = OPTConfig(
        vocab_size=vocab or spec.vocab, hidden_size=width, num_hidden_layers=n_layers,
        ffn_dim=ffn_dim, num_attention_heads=heads,
        max_position_embeddings=max_context or spec.max_context, word_embed_proj_dim=width,
        do_layer_norm_before=True, enable_bias=spec.bias, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, activation_function="relu", tie_word_embeddings=True)
    cfg._name_or_path = spec.name + suffix
    return cfg


def config_name(config: OPTConfig) -> str:
    return getattr(config, "_name_or_path", "") or getattr(config, "name_or_path", "") or "opt-custom"


def write_config(config: OPTConfig, path: str | Path) -> Path:
    """Write `config.json` (a file path, or a folder to put it in); the planner reads it with
    `planner.catalog.model(path)`."""
    path = Path(path)
    if path.suffix != ".json":
        path = path / "config.json"
    from planner.outputs import make_dir, write_text
    make_dir(path.parent)
    d = config.to_dict()
    d["_name_or_path"] = config_name(config)
    d["model_type"] = "opt"
    write_text(path, json.dumps(d, indent=2, sort_keys=True, default=str) + "\n")
    return path


def _param_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _fill_seeded(model: torch.nn.Module, seed: int, init_device: torch.device) -> None:
    for name, p in model.named_parameters():   # tied weights appear once
        g = torch.Generator(device=init_device).manual_seed(_param_seed(seed, name))
        vals = torch.empty(p.shape, dtype=torch.float32, device=init_device)
        if name.endswith("layer_norm.weight"):
            vals.normal_(1.0, LN_WEIGHT_STD, generator=g)
        elif p.dim() == 2 and "embed" not in name:
            vals.normal_(0.0, p.shape[1] ** -0.5, generator=g)
        else:
            vals.normal_(0.0, INIT_STD, generator=g)
        with torch.no_grad():
            p.copy_(vals)


def build_model(name_or_config: str | OPTConfig, *, layers: int | None = None,
                hidden: int | None = None, seed: int = 0, dtype: str | torch.dtype = "fp32",
                device: str | torch.device = "cpu", weights_dir: str | Path | None = None,
                init_device: str | torch.device | None = None) -> OPTForCausalLM:
    """An `OPTForCausalLM` in eval mode on `device`.

    `name_or_config`: catalog name (scaled by `layers`/`hidden`), a config.json path, or an
    OPTConfig. With `weights_dir`, real weights are loaded from that folder (its own
    config.json wins); otherwise every parameter is drawn from a generator seeded by
    (seed, parameter name)."""
    torch_dtype = parse_dtype(dtype)
    device = torch.device(device)
    if weights_dir is not None:
        return _load_weights(Path(weights_dir), torch_dtype, device)
    if isinstance(name_or_config, OPTConfig):
        if layers is not None or hidden is not None:
            raise InputError("layers/hidden scale a catalog model; with an OPTConfig, set them in the config")
        config = name_or_config
    else:
        config = scaled_config(name_or_config, layers, hidden)
    with torch.device("meta"):
        model = OPTForCausalLM(config)
    model = model.to(dtype=torch_dtype).to_empty(device=device)
    model.tie_weights()
    init = torch.device(init_device) if init_device is not None else torch.device(device.type)
    _fill_seeded(model, seed, init)
    for name, buf in model.named_buffers():   # OPT has none today; keep any future ones sane
        raise RuntimeError(f"unexpected buffer {name} in OPTForCausalLM; seeded init does not cover it")
    return model.eval()


def _load_weights(folder: Path, dtype: torch.dtype, device: torch.device) -> OPTForCausalLM:
    from .checks import check_weights_dir
    check_weights_dir(folder)
    model = OPTForCausalLM.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
    return model.to(device).eval()


def model_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())
