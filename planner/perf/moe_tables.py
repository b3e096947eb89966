"""Measured kernel tables of modern model parts: the fused MoE kernel (routed experts) and
MLA attention (DeepSeek's latent attention), read from the optional `aiconfigurator-core`
package like planner.perf.tables (kernel-level parquet tables only; none of its estimators).

MoE (`moe/<engine>/<version>/moe_perf.parquet`): one GPU's fused-MoE latency for a token
count, expert geometry (hidden, expert FFN, top-k, experts), layout (moe_tp x moe_ep),
weight format and routing distribution. What `num_tokens` counts differs between collector
versions, and each table file is read by what its rows show (`tokens_are_global`):
- the layer's tokens: the collector routes num_tokens tokens over all experts and the GPU
  computes the pairs that land on its 1 / moe_ep of them (num_tokens x top-k / moe_ep
  pairs; aiconfigurator's collect_moe with an expert map or rank-0 workload). A 1 x 8 row
  then costs about an eighth of the 1 x 1 row at the same count (H200 SGLang 0.5.14,
  TensorRT-LLM 1.3, vLLM 0.24: 1 x E over 1 x 1, times E, is a median 1.0-2.1);
- the tokens each EP rank brings (older collectors: H100 / H200 SGLang 0.5.10): the GPU
  computes num_tokens x top-k pairs, as many as the 1 x 1 row (1 x E over 1 x 1, times E,
  a median 6.6-7.7).
A step whose ranks hold M tokens in all queries M in the first kind, M / moe_ep in the second.
Interpolation: linear in log tokens on log latency; beyond the largest count, linear in
tokens. Only the exact geometry and layout are used (no scaling between models): missing
ones fall back to the fitted roofline, named in the source's footnote.

Several kernels of one format measured: the engine runs the fastest, unless its deployment
names a kernel family (`kernel`, MOE_KERNELS: vLLM with FlashInfer's and DeepGEMM's FP8 MoE
turned off runs its Triton fused_experts, the kernel the vLLM collector times as
"vllm_fused_moe"), then the newest table that measured that family.

MLA (`mla/<engine>/<version>/{context,generation}_mla_perf.parquet`): the attention kernel
alone, by query heads per GPU, batch and prompt (context) or KV length (generation), read
through planner.perf.tables.AttentionTable. vLLM ships only whole-module MLA tables, so a
vLLM plan uses SGLang's (then TensorRT-LLM's) kernel tables of the same GPU: the same
FlashMLA / FlashInfer kernel family; the footnote says so.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from planner.perf import routing, tables

# The table's moe_dtype for each weight format, then same-width alternatives where a table
# lacks it (gpt-oss ships MXFP4: its NVFP4 rows run the MXFP4 kernels).
MOE_DTYPES = {"bf16": ("bfloat16",), "fp16": ("bfloat16",), "fp8": ("fp8", "fp8_block"),
              "fp8_block": ("fp8_block", "fp8"), "fp4": ("nvfp4", "w4a8_mxfp4_mxfp8", "w4a16_mxfp4"),
              "nvfp4": ("nvfp4", "w4a8_mxfp4_mxfp8", "w4a16_mxfp4"),
              "mxfp4": ("w4a8_mxfp4_mxfp8", "w4a16_mxfp4", "nvfp4"), "int4": ("int4_wo", "w4a16_mxfp4")}
SHARED_MOE_KERNELS = ("nvfp4", "w4a8_mxfp4_mxfp8")
MOE_SHARED_FROM = ("trtllm", "sglang", "vllm")
DISTRIBUTION = "balanced"       # tokens spread evenly over the experts (see MoeGeometry.imbalance)
MLA_FALLBACK = {"vllm": ("sglang", "trtllm"), "sglang": ("sglang", "trtllm"), "trtllm": ("trtllm", "sglang")}
# kernel families an engine can be told to run: kernel_source names that belong to each
MOE_KERNELS = {"triton": ("triton", "vllm_fused_moe")}
_MOE_COLS = ("moe_dtype", "kernel_source", "num_tokens", "hidden_size", "inter_size", "topk", "num_experts",
             "moe_tp_size", "moe_ep_size", "distribution", "latency")
_MLA_COLS = ("kv_cache_dtype", "num_heads", "batch_size", "isl", "step", "latency")


@dataclass(frozen=True)
class MoeGeometry:
    hidden: int
    inter: int              # one routed expert's FFN width
    topk: int
    experts: int
    moe_tp: int
    ep: int
    dtype: str              # weight format (MOE_DTYPES key)
    imbalance: float = 1.0  # a stated skew on top of random routing (1: none; see busiest)
    groups: int = 1         # group-limited routing: expert groups, and how many a token
    groups_per_token: int = 1   # picks its top-k from (DeepSeek-V3: 8, 4)

    def busiest(self, tokens) -> tuple[np.ndarray, np.ndarray]:
        """(expert-token pairs, distinct experts) of the busiest EP rank when `tokens` tokens
        route at random (planner.perf.routing)."""
        return routing.busiest_gpu(tokens, self.experts, self.topk, self.ep, self.groups, self.groups_per_token)


class MoeTable:
    """Latency by the table's token count for one geometry and layout; `tokens_global`: the
    count is the layer's tokens (else each EP rank's, see the module docstring)."""

    def __init__(self, tokens: np.ndarray, latency_ms: np.ndarray, dtype: str, tokens_global: bool = True):
        self.tokens, self.lat, self.dtype, self.tokens_global = tokens, latency_ms * 1e-3, dtype, tokens_global

    def seconds(self, tokens) -> np.ndarray:
        x = np.maximum(np.asarray(tokens, dtype=float), self.tokens[0])
        xc = np.minimum(x, self.tokens[-1])
        return tables._log_interp(xc, self.tokens, self.lat) * np.maximum(x / xc, 1.0)


def tokens_are_global(frame) -> bool:
    """Whether a table file's num_tokens counts the layer's tokens (True) or each EP rank's.
    Per geometry with a 1 x 1 and a 1 x E row (E 4-8) at a common count of 2048 or more,
    E x lat(1 x E) / lat(1 x 1) at the largest such count is about 1-2 when a 1 x E GPU
    computes 1 / E of the pairs and about E when it computes them all; the file is read by
    its geometries' majority (below sqrt(1.5 E): the layer's tokens). A few geometries sit
    between (SGLang 0.5.14 and vLLM 0.24 DeepSeek 256-expert rows: 5.1-5.3 at E 8, in
    files whose other geometries give 1.0-2.0); dev.csv's end-to-end rows agree with their
    file's reading (SGLang DeepSeek TP 8 EP 8 TPOT: median error 8% read so, 21% read per
    rank). A file without such pairs is read as the current collectors' (layer's tokens)."""
    d = frame[(frame.distribution == DISTRIBUTION) & (frame.moe_tp_size == 1)]
    votes = []
    for _, g in d.groupby(["moe_dtype", "hidden_size", "inter_size", "topk", "num_experts"]):
        lat = g.groupby(["moe_ep_size", "num_tokens"]).latency.min()
        eps = sorted(e for e in lat.index.get_level_values(0).unique() if 4 <= e <= 8)
        if 1 not in lat.index.get_level_values(0) or not eps:
            continue
        e = eps[-1]
        common = sorted(set(lat.loc[1].index) & set(lat.loc[e].index))
        if common and common[-1] >= 2048:
            n = common[-1]
            votes.append(e * lat.loc[(e, n)] / lat.loc[(1, n)] < (1.5 * e) ** 0.5)
    return not votes or sum(votes) >= len(votes) / 2


@lru_cache(maxsize=32)
def _moe_frames(system: str, engine: str):
    """[(frame, version, tokens_global)] of every MoE table of this system and engine,
    newest first."""
    root = tables.data_root()
    if root is None:
        return []
    base = root / system / "moe" / engine
    if not base.is_dir():
        return []
    out = []
    for d in sorted(base.iterdir(), key=lambda p: tables._version_key(p.name), reverse=True):
        path = d / "moe_perf.parquet"
        if path.is_file():
            frame = tables._read(path, _MOE_COLS)
            out.append((frame, d.name, tokens_are_global(frame)))
    return out


@lru_cache(maxsize=256)
def moe_table(system: str, engine: str, geo: MoeGeometry, dtypes: tuple[str, ...] | None = None,
              kernel: str = "") -> tuple[MoeTable, str] | None:
    """The newest measured curve of this exact geometry and layout, in the first of the
    format's table dtypes (or of `dtypes`) that has it, of the `kernel` family if one is
    named (MOE_KERNELS); None when no table has it."""
    return _search(system, engine, geo, dtypes or MOE_DTYPES.get(geo.dtype, (geo.dtype,)), kernel)


def _search(system: str, engine: str, geo: MoeGeometry, dtypes, kernel: str = "") -> tuple[MoeTable, str] | None:
    names = MOE_KERNELS[kernel] if kernel else ()
    for frame, version, tokens_global in _moe_frames(system, engine):
        d = frame[(frame.hidden_size == geo.hidden) & (frame.inter_size == geo.inter) & (frame.topk == geo.topk)
                  & (frame.num_experts == geo.experts) & (frame.moe_tp_size == geo.moe_tp)
                  & (frame.moe_ep_size == geo.ep) & (frame.distribution == DISTRIBUTION)]
        if names:
            d = d[d.kernel_source.astype(str).str.contains("|".join(names))]
        for dt in dtypes:
            x = d[d.moe_dtype == dt]
            if len(x) >= 2:
                # several kernels measured: an engine runs the fastest it has
                g = x.groupby("num_tokens", as_index=False).latency.min().sort_values("num_tokens")
                return (MoeTable(g.num_tokens.to_numpy(float), g.latency.to_numpy(float), dt, tokens_global),
                        f"{version} {dt}" + (f" {kernel}" if kernel else "")
                        + ("" if tokens_global else " (tokens per EP rank)"))
    return None


def _mla_frame(system: str, engine: str, generation: bool):
    name = "generation_mla_perf.parquet" if generation else "context_mla_perf.parquet"
    for eng in MLA_FALLBACK.get(engine, (engine,)):
        found = tables.table_path(system, "mla", eng, name)
        if found is not None:
            frame = tables._read(found[0], _MLA_COLS).copy()
            frame["num_key_value_heads"] = frame["num_heads"]     # a latent head per query head
            frame["head_dim"] = 192
            frame["window_size"] = 0
            return frame, (found[1] if eng == engine else f"{eng} {found[1]}")
    return None


@lru_cache(maxsize=64)
def mla_table(system: str, engine: str, heads: int, kv_dtype: str, generation: bool):
    """(AttentionTable, version) of MLA attention with `heads` query heads per GPU."""
    found = _mla_frame(system, engine, generation)
    if found is None:
        return None
    return tables.AttentionTable(found[0], heads, heads, 192, tables.KV_DTYPES.get(kv_dtype, "bfloat16"),
                                 generation), found[1]


def moe_table_or_swap(system: str, engine: str, geo: MoeGeometry, kernel: str = ""):
    """((MoeTable, its EP size), version) of this layout, or of the measured layout with
    the same GPU count nearest in TP (moe_tp x ep GPUs each hold 1 / (moe_tp x ep) of the
    expert weights and, balanced, compute the same share of the expert-token pairs either
    way); None when neither is measured. An FP4 kernel that computes on FP4 / FP8 tensor
    cores (SHARED_MOE_KERNELS) that this engine's tables lack, ahead of the format it has,
    comes from another engine's tables of the same GPU: the engines run the same FlashInfer
    / TensorRT-LLM-gen kernels for those formats (vLLM's gpt-oss recipes on Blackwell select
    the MXFP4 x MXFP8 one), where a weight-only kernel of its own would compute in 16 bit.
    A named `kernel` family is the engine's own (none borrowed)."""
    dtypes = MOE_DTYPES.get(geo.dtype, (geo.dtype,))
    own = _exact_or_swap(system, engine, geo, dtypes, kernel)
    stop = dtypes.index(own[0][0].dtype) if own is not None else len(dtypes)
    if kernel:
        return own
    for dt in (d for d in dtypes[:stop] if d in SHARED_MOE_KERNELS):
        for other in (e for e in MOE_SHARED_FROM if e != engine):
            found = _exact_or_swap(system, other, geo, (dt,))
            if found is not None:
                return found[0], f"{other} {found[1]}"
    return own


def _exact_or_swap(system: str, engine: str, geo: MoeGeometry, dtypes: tuple[str, ...], kernel: str = ""):
    found = moe_table(system, engine, geo, dtypes, kernel)
    if found is not None:
        return (found[0], geo.ep), found[1]
    gpus = geo.moe_tp * geo.ep
    swaps = sorted((abs(np.log2(t) - np.log2(geo.moe_tp)), t) for t in _divisors(gpus) if t != geo.moe_tp)
    for _, t in swaps:
        alt = moe_table(system, engine, replace(geo, moe_tp=t, ep=gpus // t), dtypes, kernel)
        if alt is not None:
            return (alt[0], gpus // t), f"{alt[1]} as {t}x{gpus // t}"
    return None


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
