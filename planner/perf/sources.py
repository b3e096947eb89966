"""Sources of op latencies behind the step-cost model: measured kernel tables (per GPU and
engine) or a roofline whose efficiency curves were fitted to such tables
(`planner/data/roofline_fits.csv`, made by `planner.perf.fit_roofline`).

Every source answers the same questions, in seconds, on one GPU of a TP group:
`gemm_s(m, n, k)`, `context_attention_s(batch, length)` (causal prefill of `length` tokens),
`generation_attention_s(batch, kv_length)`, `allreduce_s(bytes)` and `memory_s(bytes)`
(elementwise ops: norms, residuals, activations); for modern models `moe_s(tokens, geo)`
(the fused routed-expert kernel), `mla_context_s` / `mla_generation_s` (latent attention)
and `flops_s` (other compute: linear-attention kernels, sparse-attention indexers); plus
`describe()` for footnotes.
"""
from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from planner.catalog import GpuSpec
from planner.perf import gdn_tables, moe_tables, tables
from planner.perf.moe_tables import MoeGeometry


@dataclass(frozen=True)
class Geometry:
    """The attention geometry and formats one GPU of the TP group runs."""
    heads: int            # query heads per GPU
    kv_heads: int         # KV heads per GPU (replicated when TP exceeds the model's)
    head_dim: int
    gemm_dtype: str       # bf16 | fp8 | fp8_block | fp4
    kv_dtype: str         # bf16 | fp8
    tp: int
    fused_quant: bool = False   # the engine fuses activation quantisation into the op before each FP8/FP4 GEMM
    # MLA (0: none): the cached latent and RoPE key, the per-head query/key and value sizes
    kv_lora: int = 0
    rope_dim: int = 0
    qk_dim: int = 0
    v_dim: int = 0
    # gated delta-net layers (0: none): value and key heads per GPU, their size, and one
    # sequence's recurrent state per layer on one GPU (bytes)
    lin_v_heads: int = 0
    lin_k_heads: int = 0
    lin_head_dim: int = 0
    lin_state_bytes: float = 0.0
    moe_kernel: str = ""        # the routed experts' kernel family the engine runs ("": its fastest measured)


GPUS_PER_SERVER = 8     # GPUs sharing one server's links (PCIe GPUs have no NVLink domain)


def _compute_dtype(gemm_dtype: str) -> str:
    return {"fp8_block": "fp8", "nvfp4": "fp4"}.get(gemm_dtype, gemm_dtype)


def _weight_bytes(gemm_dtype: str) -> float:
    return {"fp8": 1.0, "fp8_block": 1.0, "fp4": 0.5625, "nvfp4": 0.5625, "mxfp4": 0.53125,
            "int4": 0.515625}.get(gemm_dtype, 2.0)  # 4-bit: + their scales


def _moe_compute_dtype(fmt: str) -> str:
    """The math a routed-expert kernel runs: FP8 / FP4 formats natively, weight-only 4-bit
    (MXFP4 on Hopper, AWQ/GPTQ int4) dequantised to 16 bit."""
    return {"fp8": "fp8", "fp8_block": "fp8", "fp4": "fp4", "nvfp4": "fp4"}.get(fmt, "bf16")


def _kv_bytes(kv_dtype: str) -> float:
    return 1.0 if kv_dtype == "fp8" else 2.0


@lru_cache(maxsize=1)
def roofline_fits() -> dict[tuple[str, str], dict]:
    """{(gpu or "*", curve): parameters} from planner/data/roofline_fits.csv."""
    text = resources.files("planner").joinpath("data", "roofline_fits.csv").read_text(encoding="utf-8")
    out = {}
    for r in csv.DictReader(text.splitlines()):
        out[(r["gpu"], r["curve"])] = {k: (float(v) if k.startswith(("p_", "rms")) else v) for k, v in r.items() if v != ""}
    return out


def _fit(gpu: str, curve: str) -> dict:
    fits = roofline_fits()
    return fits.get((gpu, curve)) or fits[("*", curve)]


class Roofline:
    """Datasheet peaks times efficiency curves fitted to measured kernel tables: the GPU's
    own fit where it has tables, else the median fit of the GPUs that do ("*")."""

    def __init__(self, gpu: GpuSpec, geo: Geometry):
        self.gpu, self.geo = gpu, geo
        self.peak = gpu.peak_flops_for(_compute_dtype(geo.gemm_dtype))
        self.attn_peak = gpu.peak_flops_for("fp8" if geo.kv_dtype == "fp8" else "bf16")
        self.bw = gpu.memory_bytes_s
        self.g = _fit(gpu.name, f"gemm_{_compute_dtype(geo.gemm_dtype)}")
        self.c = _fit(gpu.name, "context_attention")
        self.d = _fit(gpu.name, "generation_attention")
        self.a = _fit(gpu.name, "allreduce")
        own = (gpu.name, f"gemm_{_compute_dtype(geo.gemm_dtype)}") in roofline_fits()
        self.name = "roofline fitted to " + (f"{gpu.name}'s kernel tables" if own
                                             else "other GPUs' kernel tables (median)")

    def gemm_s(self, m, n: float, k: float):
        return self._roofline_gemm(m, n, k, self.g, self.peak, _weight_bytes(self.geo.gemm_dtype))

    def gemm16_s(self, m, n: float, k: float):
        """A GEMM whose weights stay 16-bit in every checkpoint (MoE routers, the LM head)."""
        return self._roofline_gemm(m, n, k, _fit(self.gpu.name, "gemm_bf16"), self.gpu.peak_flops_for("bf16"), 2.0)

    def _roofline_gemm(self, m, n, k, g, peak, weight_bytes):
        m = np.asarray(m, dtype=float)
        eff = g["p_eff"] * m / (m + g["p_knee"])
        flops = 2.0 * m * n * k
        bytes_ = n * k * weight_bytes + 2.0 * m * (n + k)
        return g["p_t0"] + np.maximum(flops / (peak * eff), bytes_ / (self.bw * g["p_bw"]))

    def context_attention_s(self, batch, length):
        c, geo = self.c, self.geo
        s = np.asarray(length, dtype=float)
        flops = 2.0 * geo.heads * geo.head_dim * s * s * np.asarray(batch, dtype=float)  # causal: half of 4hds^2
        eff = c["p_eff"] * s / (s + c["p_knee"])
        return c["p_t0"] + flops / (self.attn_peak * eff)

    def generation_attention_s(self, batch, kv_length):
        d, geo = self.d, self.geo
        bytes_ = np.asarray(batch, dtype=float) * np.asarray(kv_length, dtype=float) * 2 * geo.kv_heads * geo.head_dim \
            * _kv_bytes(geo.kv_dtype)
        return d["p_t0"] + d["p_t_per_seq"] * np.asarray(batch, dtype=float) + bytes_ / (self.bw * d["p_bw"])

    def allreduce_s(self, message_bytes):
        return self.group_allreduce_s(message_bytes, self.geo.tp)

    def group_allreduce_s(self, message_bytes, gpus: int):
        """An all-reduce over `gpus` GPUs: a ring over the GPU's link inside one node (an
        8-GPU server, or a larger NVLink domain such as NVL72); beyond it the ring crosses the
        network, each GPU at its NIC's share."""
        a, n = self.a, gpus
        if n <= 1:
            return np.zeros_like(np.asarray(message_bytes, dtype=float))
        ring = 2.0 * (n - 1) / n * np.asarray(message_bytes, dtype=float)
        node = max(self.gpu.nvlink_domain, GPUS_PER_SERVER)
        link = self.gpu.link_gb_s if n <= node else min(self.gpu.link_gb_s, self.gpu.network_gbit_s / 8.0 / node)
        return a["p_t0"] + ring / (link * 1e9 * a["p_bw"])

    def memory_s(self, nbytes):
        return np.asarray(nbytes, dtype=float) / (self.bw * self.d["p_bw"])

    def flops_s(self, flops, nbytes=0.0):
        """A kernel of `flops` 16-bit operations reading `nbytes`, at the context-attention
        curve's best efficiency (linear-attention and indexer kernels: attention-like math)."""
        c = self.c
        return np.maximum(np.asarray(flops, dtype=float) / (self.attn_peak * c["p_eff"]),
                          np.asarray(nbytes, dtype=float) / (self.bw * self.d["p_bw"]))

    def moe_s(self, tokens, geo: MoeGeometry):
        """The fused routed-expert kernel on one GPU when the layer routes `tokens` (all its
        ranks' tokens): the busiest EP rank's expert-token pairs (tokens x top-k / ep on
        average; planner.perf.routing) / moe_tp, of 3 x hidden x expert FFN multiply-adds,
        over the weights of the experts they touch (each a 1 / moe_tp slice), at the GEMM
        curve of the kernel's math taken at all the GPU's pairs (one grouped GEMM)."""
        busiest_pairs, touched = geo.busiest(tokens)
        pairs = busiest_pairs / geo.moe_tp * geo.imbalance
        g = _fit(self.gpu.name, f"gemm_{_moe_compute_dtype(geo.dtype)}")
        peak = self.gpu.peak_flops_for(_moe_compute_dtype(geo.dtype))
        eff = g["p_eff"] * pairs / (pairs + g["p_knee"])    # a grouped GEMM fills the GPU with every expert's tiles
        flops = 2.0 * 3.0 * geo.hidden * geo.inter * pairs
        weights = touched * 3.0 * geo.hidden * geo.inter / geo.moe_tp * _weight_bytes(geo.dtype)
        acts = 2.0 * pairs * geo.hidden * 2.0
        return g["p_t0"] + np.maximum(flops / (peak * np.maximum(eff, 1e-6)), (weights + acts) / (self.bw * g["p_bw"]))

    def mla_context_s(self, batch, length):
        """Causal latent attention (not absorbed): per head q.k over qk_dim and p.v over v_dim."""
        c, geo = self.c, self.geo
        s = np.asarray(length, dtype=float)
        flops = geo.heads * (geo.qk_dim + geo.v_dim) * s * s * np.asarray(batch, dtype=float)
        eff = c["p_eff"] * s / (s + c["p_knee"])
        return c["p_t0"] + flops / (self.attn_peak * eff)

    def mla_generation_s(self, batch, kv_length):
        """Absorbed latent decode: every head reads the (latent + RoPE key) cache of its
        sequence; compute 2 x heads x (2 latent + rope) per cached token."""
        d, geo = self.d, self.geo
        n = np.asarray(batch, dtype=float) * np.asarray(kv_length, dtype=float)
        nbytes = n * (geo.kv_lora + geo.rope_dim) * _kv_bytes(geo.kv_dtype)
        flops = 2.0 * geo.heads * (2 * geo.kv_lora + geo.rope_dim) * n
        return d["p_t0"] + d["p_t_per_seq"] * np.asarray(batch, dtype=float) + np.maximum(
            nbytes / (self.bw * d["p_bw"]), flops / (self.attn_peak * self.c["p_eff"]))

    def gdn_context_s(self, tokens):
        """One prompt's chunked delta-rule recurrence over its first `tokens` tokens, one
        layer: per token and value head the key x value state updated and read (~6 d^2
        operations) and the 64-token chunk's attention (4 x 64 x 2d), heads of size d."""
        d = self.geo.lin_head_dim
        flops = np.asarray(tokens, dtype=float) * self.geo.lin_v_heads * (6.0 * d * d + 8.0 * 64 * d)
        return self.flops_s(flops)

    def gdn_generation_s(self, batch):
        """One decode step's state update, one layer: every sequence's state read and written."""
        return self.memory_s(2.0 * np.asarray(batch, dtype=float) * self.geo.lin_state_bytes)

    def describe(self) -> str:
        return self.name


class Kernels(Roofline):
    """Measured kernel tables for this GPU system and engine; the fitted roofline for any op
    the tables lack (named in `missing`)."""

    def __init__(self, gpu: GpuSpec, geo: Geometry, engine: str):
        super().__init__(gpu, geo)
        sysname = gpu.kernel_system
        gd = tables.GEMM_DTYPES.get(geo.gemm_dtype, "bfloat16")
        self.missing: list[str] = []
        self.versions: dict[str, str] = {}
        self._gemm = self._take("gemm", tables.gemm_table(sysname, engine, gd, self.peak))
        found16 = tables.gemm_table(sysname, engine, "bfloat16", self.gpu.peak_flops_for("bf16"))
        self._gemm16 = found16[0] if found16 else None
        self.capped_gemm = self._slow_format(gd)
        self._ctx = self._take("context attention", tables.attention_table(
            sysname, engine, geo.heads, geo.kv_heads, geo.head_dim, geo.kv_dtype, False))
        self._gen = self._take("generation attention", tables.attention_table(
            sysname, engine, geo.heads, geo.kv_heads, geo.head_dim, geo.kv_dtype, True, gpu.memory_bytes_s))
        self._ar = self._take("all-reduce", tables.allreduce_table(sysname, engine, geo.tp) if geo.tp > 1 else None,
                              needed=geo.tp > 1)
        self.engine, self.system = engine, sysname
        if geo.kv_lora:
            self._mla_ctx = self._take("MLA context", moe_tables.mla_table(sysname, engine, geo.heads, geo.kv_dtype, False))
            self._mla_gen = self._take("MLA generation", moe_tables.mla_table(sysname, engine, geo.heads, geo.kv_dtype,
                                                                              True))
        self._gdn = None
        if geo.lin_v_heads:
            self._gdn = self._take("GDN", gdn_tables.gdn_table(
                sysname, engine, geo.lin_v_heads, geo.lin_k_heads, geo.lin_head_dim))
        self._moe: dict[MoeGeometry, object] = {}
        self._quant_excess = self._fused_quant_saving(sysname, engine, gd) if geo.fused_quant else 0.0

    def _fused_quant_saving(self, sysname: str, engine: str, gd: str) -> float:
        """Seconds a quantised GEMM's table entry carries for its separate activation-
        quantisation kernel: its smallest GEMM's latency less the 16-bit table's smallest.
        An engine that fuses the quantisation into the preceding norm does not pay it."""
        if gd == "bfloat16" or self._gemm is None:
            return 0.0
        plain = tables.gemm_table(sysname, engine, "bfloat16", self.gpu.peak_flops_for("bf16"))
        if plain is None:
            return 0.0
        g, b = self._gemm, plain[0]
        return float(max(g.seconds([1], g.ns[0], g.ks[0])[0] - b.seconds([1], b.ns[0], b.ks[0])[0], 0.0))

    def _slow_format(self, gd: str) -> float:
        """How much slower this format's table is than the engine's 16-bit table at decode
        sizes (m <= 64, median over shapes) when that exceeds 3x, else 0. Such a table (vLLM
        0.24's block-FP8 GEMMs: ~0.17 ms at any size on B200/B300, ~0.06 ms on H200, 5-18x its
        bf16 table) did not time the kernel the engine serves with: its GEMMs are then capped
        at the 16-bit table's."""
        if gd == "bfloat16" or self._gemm is None or self._gemm16 is None:
            return 0.0
        g, b = self._gemm, self._gemm16
        ms = g.ms[g.ms <= 64]
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)    # shapes one table lacks are NaN
            ratio = float(np.nanmedian([np.nanmedian(g.seconds(ms, n, k) / b.seconds(ms, n, k))
                                        for n in g.ns for k in g.ks]))
        return ratio if ratio > 3.0 else 0.0

    def _take(self, what: str, found, needed: bool = True):
        if found is None:
            if needed:
                self.missing.append(what)
            return None
        self.versions[what] = found[1]
        return found[0]

    def gemm_s(self, m, n, k):
        if not self._gemm:
            return super().gemm_s(m, n, k)
        t = self._gemm.seconds(m, n, k)
        if self.capped_gemm:
            t = np.minimum(t, self._gemm16.seconds(m, n, k))
        return np.maximum(t - self._quant_excess, 0.5 * t) if self._quant_excess else t

    def gemm16_s(self, m, n, k):
        return self._gemm16.seconds(m, n, k) if self._gemm16 else super().gemm16_s(m, n, k)

    def context_attention_s(self, batch, length):
        return self._ctx.seconds(batch, length) if self._ctx else super().context_attention_s(batch, length)

    def generation_attention_s(self, batch, kv_length):
        return self._gen.seconds(batch, kv_length) if self._gen else super().generation_attention_s(batch, kv_length)

    def allreduce_s(self, message_bytes):
        if self.geo.tp <= 1:
            return np.zeros_like(np.asarray(message_bytes, dtype=float))
        return self._ar.seconds(message_bytes) if self._ar else Roofline.group_allreduce_s(self, message_bytes,
                                                                                          self.geo.tp)

    def group_allreduce_s(self, message_bytes, gpus: int):
        if gpus == self.geo.tp and self._ar is not None:
            return self._ar.seconds(message_bytes)
        found = tables.allreduce_table(self.system, self.engine, gpus) if gpus > 1 else None
        if found is None:
            return Roofline.group_allreduce_s(self, message_bytes, gpus)
        self.versions.setdefault("all-reduce", found[1])
        return found[0].seconds(message_bytes)

    def moe_s(self, tokens, geo: MoeGeometry):
        if geo not in self._moe:
            self._moe[geo] = self._take(f"MoE {geo.moe_tp}x{geo.ep}", moe_tables.moe_table_or_swap(
                self.system, self.engine, geo, self.geo.moe_kernel))
        found = self._moe[geo]
        if found is None:
            return super().moe_s(tokens, geo)
        table, ep = found
        # the table's layout may trade TP for EP at the same GPU count (the same pairs per GPU)
        t = np.asarray(tokens, dtype=float)
        per = 1.0 if table.tokens_global else 1.0 / ep
        # the tables route balanced: at t tokens each of the ep GPUs computes t k / ep pairs over
        # min(E, t k) / ep experts. A batch of independent requests routes at random: one GPU
        # reaches E (1 - (1 - k / E)^t) experts on average (a decode batch of 32 on 128
        # experts, top 4: 81, not 128), and of ep GPUs the busiest holds more pairs and experts
        # than the mean (planner.perf.routing). The layer takes the busiest GPU's time: its
        # weights read as the balanced count that touches as many experts, its pairs beyond
        # all experts' as the balanced count with as many pairs
        full = geo.experts / geo.topk
        pairs, distinct = geo.busiest(t)
        x_pairs, x_weights = pairs * geo.ep / geo.topk, np.minimum(distinct * geo.ep / geo.topk, full)
        s = table.seconds(x_pairs * per) - table.seconds(np.minimum(x_pairs, full) * per) \
            + table.seconds(x_weights * per)
        return s * geo.imbalance

    def mla_context_s(self, batch, length):
        return self._mla_ctx.seconds(batch, length) if self._mla_ctx else super().mla_context_s(batch, length)

    def mla_generation_s(self, batch, kv_length):
        return self._mla_gen.seconds(batch, kv_length) if self._mla_gen else super().mla_generation_s(batch, kv_length)

    def gdn_context_s(self, tokens):
        return self._gdn.context_s(tokens) if self._gdn else super().gdn_context_s(tokens)

    def gdn_generation_s(self, batch):
        return self._gdn.generation_s(batch) if self._gdn else super().gdn_generation_s(batch)

    def describe(self) -> str:
        main = sorted({v for k, v in self.versions.items() if k in ("gemm", "context attention",
                                                                    "generation attention")})
        text = f"measured kernels, {self.engine} {'/'.join(main)} tables, {self.system}"
        extra = sorted({f"{k.split()[0]}: {v}" for k, v in self.versions.items()
                        if k.startswith(("MoE", "MLA", "GDN"))})
        if extra:
            text += f" ({'; '.join(extra)})"
        if "all-reduce" in self.versions:
            text += f" (all-reduce: {self.versions['all-reduce']})"
        if self.capped_gemm:
            text += f" ({self.geo.gemm_dtype} GEMM table {self.capped_gemm:.1f}x its bf16 one: capped at bf16)"
        if self.missing:
            text += f" ({', '.join(self.missing)}: {self.name})"
        return text


def op_source(gpu: GpuSpec, geo: Geometry, engine: str, prefer: str = "auto"):
    """The best source for this GPU and engine: measured kernels where the `silicon` extra
    has tables for it (and `prefer` is not "roofline"), else the fitted roofline."""
    if prefer != "roofline" and gpu.kernel_system and tables.data_root() is not None:
        src = Kernels(gpu, geo, engine)
        if src._gemm is not None:
            return src
    if prefer == "kernels":
        why = "no `silicon` extra installed" if tables.data_root() is None else f"no kernel tables for {gpu.name}"
        raise LookupError(f"measured kernels requested but {why} + {engine}")
    return Roofline(gpu, geo)
