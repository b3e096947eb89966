"""The cost of one engine step, op by op: the one place step time is computed for GPUs.

A step is a set of requests, each computing `new` tokens over `cached` tokens already in
its KV cache (a prefill chunk: new > 1 or nothing cached; a decode: new = 1). Per layer:
QKV projection, attention (context: each chunk over its prefix; generation: the decode
batch over its KV lengths; costed separately, never folded into a max with the GEMMs),
output projection, MLP (gated or not), norms and elementwise ops, and two TP all-reduces;
per step: embedding, LM head, sampling and the engine's CPU time (CpuCost: added, or
hidden under the GPU's time by engines that overlap scheduling). GEMMs run on
the step's total tokens; a decode-only step of an engine with CUDA graphs pads its batch to
the next captured size.

Op latencies come from a source (planner.perf.sources): measured kernel tables or the fitted
roofline. For speed, the step's parts are tabulated once per (GPU, model, layout, engine):
linear ops by token count, attention by length and batch. The decode attention of a batch
of b is two lines in its total KV length T, max(floor_b, a_b + s_b T), through the source's
points at short and long KV, so a run of decode steps sums in closed form (planner.sim.costs).

Speculative decoding (MTP / EAGLE with a chain of `spec_tokens` = k draft tokens, as
TensorRT-LLM's MTP and SGLang's EAGLE run DeepSeek's next-token-prediction layer): a
decode-only step drafts k tokens per sequence, one draft pass at a time through the
model's MTP layer (one layer of the model plus the LM head, b tokens each), then verifies
k + 1 tokens per sequence in one pass of the whole model (GEMMs on b (k + 1) rows, attention
for b (k + 1) queries over each sequence's KV, the LM head on every row). Draft position i
survives with probability a^i (a = `spec_acceptance`: each draft token is accepted given
the one before it was), so a step yields L = 1 + a + ... + a^k tokens per sequence; decode
times are given per generated token (the step / L), so a simulator that advances every
sequence one token per decode step keeps its clock. Prefill steps also run the MTP layer
over the prompt (the first draft). A step that mixes prompt chunks with speculative
decodes (a coupled engine with chunked prefill) is charged its prompt part and its decodes'
verify rows and drafts over L (`_speculative_share`).
"""
from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from planner.catalog import GpuSpec, ModelSpec
from planner.errors import InputError
from planner.perf.layers import KERNEL_GPU_S, Layout, attention_layers, kernel_counts, layout_problem, linear_parts
from planner.perf.sources import Geometry, op_source

TOKENS_MAX = 16384      # linear ops tabulated per token count up to this; linear beyond
BATCH_MAX = 2048        # decode batches tabulated up to this; linear beyond
LENGTH_POINTS = 96      # context-attention samples (log-spaced) up to LENGTH_MAX
LENGTH_MAX = 1 << 20


@dataclass(frozen=True)
class CpuCost:
    """The engine's CPU time per step (scheduling, input preparation, sampling bookkeeping,
    detokenising and streaming): `per_step_s + per_seq_s * sequences in the step`. With
    `overlap` the engine prepares the next step while the GPU runs this one (SGLang's and
    TensorRT-LLM's overlap schedulers, vLLM's async scheduling): a step then takes
    max(GPU, CPU); otherwise GPU + CPU. Fitted per engine (planner.engines)."""
    per_step_s: float = 0.0
    per_seq_s: float = 0.0
    overlap: bool = False
    per_kernel_s: float = 0.0     # host time to launch one kernel of an eager step (no CUDA graph)

    def total(self, gpu_s, seqs):
        cpu = self.per_step_s + self.per_seq_s * seqs
        return np.maximum(gpu_s, cpu) if self.overlap else gpu_s + cpu


@dataclass(frozen=True)
class StepCost:
    seconds: float
    ops: dict            # op name -> seconds (sums to `seconds`)


class _Tables:
    """The tabulated parts of a step for one (GPU, model, layout, formats, engine, source)."""


def _capped_causal(causal: np.ndarray, s: np.ndarray, window: float) -> np.ndarray:
    """Causal attention over the first s tokens when each query sees at most `window` keys:
    the full cost up to the window, then each further token at the cost of one more token
    at the window (2 C(w) / w, C quadratic)."""
    cw = np.interp(window, s, causal)
    return np.where(s <= window, causal, cw + (s - window) * 2.0 * cw / window)


@lru_cache(maxsize=128)
def _tabulated(gpu: GpuSpec, model: ModelSpec, layout: Layout, gemm_dtype: str, kv_dtype: str, engine: str,
               source: str, fused_quant: bool = False, moe_dtype: str = "", moe_imbalance: float = 1.0,
               moe_kernel: str = "") -> dict:
    self = _Tables()
    tp = layout.tp
    if gemm_dtype in ("fp4", "nvfp4") and not gpu.fp4_tflops:
        gemm_dtype = "bf16"     # no FP4 tensor cores (Hopper): engines run these GEMMs in 16 bit
    kinds_geo = {}      # the attention kinds' own sizes: MLA's latent, gated delta-net's heads
    if model.is_mla:
        kinds_geo.update(kv_lora=model.kv_lora_rank, rope_dim=model.qk_rope_head_dim,
                         qk_dim=model.qk_nope_head_dim + model.qk_rope_head_dim,
                         v_dim=model.v_head_dim or model.qk_nope_head_dim)
    n_lin = model.count_layers("linear")
    if n_lin:       # gated delta-net layers (unsupported() refuses the other linear kinds)
        kinds_geo.update(lin_v_heads=max(1, model.linear_value_heads // tp),
                         lin_k_heads=max(1, model.linear_key_heads // tp), lin_head_dim=model.linear_value_head_dim,
                         lin_state_bytes=model.linear_state_bytes() / n_lin / tp)
    geo = Geometry(heads=max(1, model.heads // tp), kv_heads=max(1, model.kv_heads // tp),
                   head_dim=model.head_dim, gemm_dtype=gemm_dtype, kv_dtype=kv_dtype, tp=tp, fused_quant=fused_quant,
                   moe_kernel=moe_kernel if model.experts else "", **kinds_geo)
    src = self.src = op_source(gpu, geo, engine, source)
    self.geo = geo
    m = model
    n = np.arange(TOKENS_MAX + 1, dtype=float)
    n[0] = 1.0
    ops = linear_parts(m, layout, src, n, moe_dtype or gemm_dtype, moe_imbalance)
    self.kernels, small = kernel_counts(m, layout, gemm_dtype not in ("bf16", "fp16"), fused_quant)
    # the kernels no table measures cost at least a graph replay's per-kernel time each
    ops["norms_elementwise"] = ops["norms_elementwise"] + KERNEL_GPU_S * small
    for v in ops.values():
        v[0] = 0.0
    self._lin_ops = ops
    self._lin = sum(ops.values()).tolist()
    # LM head and sampling on the sequences that produce a token
    lm = src.gemm16_s(n, m.vocab / tp, m.hidden) + src.memory_s(n * m.vocab / tp * 4 * 2)
    lm[0] = 0.0
    self._head = lm.tolist()
    kinds = attention_layers(m)
    # context attention of one request: causal cost over its first s tokens, and the
    # memory floor of reading s tokens of KV once (a chunk over a long prefix)
    s = np.unique(np.round(np.geomspace(1, LENGTH_MAX, LENGTH_POINTS)))
    causal, floor_s = np.zeros_like(s), np.zeros_like(s)
    for kind, layers in kinds.items():
        if kind == "gqa":
            causal += layers * src.context_attention_s(1, s)
            floor_s += layers * src.generation_attention_s(1, s)
        elif kind == "sliding":
            w = float(m.sliding_window)
            causal += layers * _capped_causal(src.context_attention_s(1, s), s, w)
            floor_s += layers * src.generation_attention_s(1, np.minimum(s, w))
        else:   # mla / sparse
            c = src.mla_context_s(1, s)
            if kind == "sparse":
                k = float(m.index_topk)
                c = _capped_causal(c, s, k) + src.flops_s(m.index_heads * m.index_head_dim * s * s)
            causal += layers * c
            floor_s += layers * src.mla_generation_s(1, s)
    if n_lin:       # the linear layers' chunked recurrence over the prompt's tokens
        causal += n_lin * src.gdn_context_s(s)
    self._ctx_len, self._ctx_causal, self._ctx_floor = s, causal, floor_s
    self._ctx_lists = (s.tolist(), causal.tolist(), floor_s.tolist())
    # decode attention per batch: floor_b and the line through long-KV points of the layers
    # whose cost grows with the KV (the source at batches 1, 2, 4, ..., BATCH_MAX, log-linear
    # between them in batch, as the tables are interpolated between their power-of-two
    # batch rows), plus a per-batch constant: sliding layers read a window per sequence,
    # linear layers update their fixed state (measured kernels, else its bytes read and written)
    b = np.arange(1, BATCH_MAX + 1, dtype=float)
    grid = 2.0 ** np.arange(int(np.log2(BATCH_MAX)) + 1)

    def grows(bs, kv):
        out = np.zeros_like(bs)
        for kind, layers in kinds.items():
            if kind == "gqa":
                out = out + layers * src.generation_attention_s(bs, kv)
            elif kind in ("mla", "sparse"):
                out = out + layers * src.mla_generation_s(bs, kv)
                if kind == "sparse":
                    out = out + layers * src.memory_s(bs * kv * m.index_head_dim)
        return out

    def on_grid(kv):
        y = grows(grid, kv)
        return np.exp(np.interp(np.log(b), np.log(grid), np.log(y))) if (y > 0).all() else np.zeros_like(b)

    s_lo, s_hi1, s_hi2 = 1.0, 8192.0, 32768.0
    floor, y1, y2 = on_grid(s_lo), on_grid(s_hi1), on_grid(s_hi2)
    const = np.zeros_like(b)
    if "sliding" in kinds:
        const += kinds["sliding"] * src.generation_attention_s(b, float(m.sliding_window))
    if n_lin:
        const += n_lin * src.gdn_generation_s(b)
    slope = np.maximum((y2 - y1) / (b * (s_hi2 - s_hi1)), 0.0)
    self._dec_arrays = (np.concatenate([[0.0], floor + const]), np.concatenate([[0.0], slope]),
                        np.concatenate([[0.0], y1 - slope * b * s_hi1 + const]))
    self._dec_floor, self._dec_slope, self._dec_icpt = (a.tolist() for a in self._dec_arrays)
    self._lin_arr, self._head_arr = np.asarray(self._lin), np.asarray(self._head)
    return vars(self)


def unsupported(model: ModelSpec) -> str | None:
    """Why the step model cannot cost `model`, or None: lightning (MiniMax-Text-01) linear
    attention has no kernel model yet."""
    if model.count_layers("linear") and model.linear_attention not in ("gated_deltanet", ""):
        return (f"{model.name}: {model.linear_attention} linear attention is not modelled yet "
                "(gated delta-net is)")
    return None


class StepModel:
    def __init__(self, gpu: GpuSpec, model: ModelSpec, tp: int = 1, gemm_dtype: str = "bf16",
                 kv_dtype: str = "bf16", engine: str = "vllm", graph_sizes: tuple[int, ...] = (),
                 cpu: CpuCost = CpuCost(), source: str = "auto", fused_quant: bool = False,
                 layout: Layout | None = None, moe_dtype: str = "", moe_imbalance: float = 1.0,
                 graph_padding: bool = True, spec_tokens: int = 0, spec_acceptance: float = 0.0,
                 piecewise_graphs: bool = False, moe_kernel: str = ""):
        layout = layout or Layout(tp=tp)
        why = unsupported(model) or layout_problem(model, layout)
        if why:
            raise InputError(why)
        self.gpu, self.model, self.tp, self.layout = gpu, model, layout.tp, layout
        self.engine, self.graph_sizes, self.cpu = engine, tuple(sorted(graph_sizes)), cpu
        self.__dict__.update(_tabulated(gpu, model, layout, gemm_dtype, kv_dtype, engine, source, fused_quant,
                                        moe_dtype, moe_imbalance, moe_kernel))
        self._graph_arr = np.asarray(self.graph_sizes, dtype=float)
        self._graph_max = self.graph_sizes[-1] if self.graph_sizes else 0
        # without padding (TensorRT-LLM) only a batch of exactly a captured size replays a graph
        self._graph_padding = graph_padding
        self._graph_set = frozenset(self.graph_sizes)
        # an eager step cannot take less than the host's kernel launches (launched ahead,
        # asynchronously: the step takes the longer of the two)
        self._launch_s = self.kernels * cpu.per_kernel_s
        # piecewise graphs (vLLM V1's torch.compile graphs, split at attention): a step with
        # prompt tokens, up to the largest captured size, launches one attention kernel a
        # layer eagerly and replays the rest
        self._piece_max = self._graph_max if piecewise_graphs else 0
        self._piece_s = model.layers * cpu.per_kernel_s
        self.spec_k = int(spec_tokens)
        self.spec_tokens_per_step = sum(spec_acceptance ** i for i in range(self.spec_k + 1))
        self._draft_share = 1.0 / model.layers    # the MTP layer: one layer of the model

    # ---- scalar lookups (the simulator's hot path) ----------------------------------------------
    def _lin_s(self, tokens: float) -> float:
        if tokens <= TOKENS_MAX:
            i = int(tokens)
            if i == tokens:
                return self._lin[i]
            lo = self._lin[i]
            return lo + (self._lin[i + 1] - lo) * (tokens - i)
        tail = (self._lin[TOKENS_MAX] - self._lin[TOKENS_MAX // 2]) / (TOKENS_MAX / 2)
        return self._lin[TOKENS_MAX] + tail * (tokens - TOKENS_MAX)

    def _head_s(self, seqs: float) -> float:
        if seqs <= TOKENS_MAX:
            return self._head[int(seqs)]
        return self._head[TOKENS_MAX] * seqs / TOKENS_MAX

    def _causal_s(self, length: float) -> float:
        return self._at(length, 1) if length <= LENGTH_MAX else self._ctx_lists[1][-1] * (length / LENGTH_MAX) ** 2

    def _floor_s(self, length: float) -> float:
        return self._at(length, 2) if length <= LENGTH_MAX else self._ctx_lists[2][-1] * length / LENGTH_MAX

    def _at(self, x: float, which: int) -> float:
        xs, ys = self._ctx_lists[0], self._ctx_lists[which]
        i = bisect_right(xs, x)
        if i <= 0:
            return ys[0]
        if i >= len(xs):
            return ys[-1]
        x0, x1 = xs[i - 1], xs[i]
        return ys[i - 1] + (ys[i] - ys[i - 1]) * (x - x0) / (x1 - x0)

    def chunk_attention_s(self, new: float, cached: float) -> float:
        """Context attention of one chunk of `new` tokens over `cached` tokens of prefix: the
        causal cost of extending the sequence from `cached` to `cached + new` tokens, at least
        one read of its KV."""
        if new <= 0:
            return 0.0
        total = cached + new
        work = self._causal_s(total) - (self._causal_s(cached) if cached > 0 else 0.0)
        return max(work, self._floor_s(total))

    def decode_attention_s(self, batch: int, kv_tokens: float) -> float:
        if batch <= 0:
            return 0.0
        if batch > BATCH_MAX:
            return self.decode_attention_s(BATCH_MAX, kv_tokens * BATCH_MAX / batch) * batch / BATCH_MAX
        line = self._dec_icpt[batch] + self._dec_slope[batch] * kv_tokens
        floor = self._dec_floor[batch]
        return line if line > floor else floor

    def graphed(self, batch: int) -> bool:
        """Whether a decode-only step of `batch` replays a CUDA graph."""
        return batch <= self._graph_max if self._graph_padding else batch in self._graph_set

    def _launch_floor_s(self, tokens: float, prompt: bool, batch: int) -> float:
        """The host's launch time a step of `tokens` cannot go below: none for a decode
        step replayed from a graph, one attention kernel a layer for a step with a prompt
        that piecewise graphs cover, else every kernel of an eager step."""
        if not prompt:
            return 0.0 if self.graphed(batch) else self._launch_s
        return self._piece_s if tokens <= self._piece_max else self._launch_s

    def padded_batch(self, batch: int) -> int:
        if not self._graph_padding:
            return batch
        for size in self.graph_sizes:
            if size >= batch:
                return size
        return batch

    # ---- the step --------------------------------------------------------------------------------
    def mixed_s(self, prefill_tokens: float, cached_tokens: float, decode_batch: int, decode_kv_tokens: float,
                prefill_requests: int = 1) -> float:
        """A step of `prefill_tokens` (one chunk, or `prefill_requests` equal slices, each
        over its own prefix of `cached_tokens`, the slices' token-weighted prefix) and a
        decode batch holding `decode_kv_tokens` of KV."""
        if prefill_tokens <= 0 and decode_batch <= 0:
            return 0.0
        if prefill_tokens <= 0 and self.spec_k:
            return self._speculative_s(decode_batch, decode_kv_tokens)
        m = prefill_tokens + decode_batch
        if prefill_tokens <= 0:
            m = self.padded_batch(decode_batch)
        reqs = prefill_requests if prefill_tokens > 0 else 0
        if reqs > 1:
            per = prefill_tokens / reqs
            attn = reqs * self.chunk_attention_s(per, cached_tokens)
        else:
            attn = self.chunk_attention_s(prefill_tokens, cached_tokens)
        if self.spec_k and reqs:
            lin_p = self._lin_s(prefill_tokens)
            gpu = lin_p + attn + self._head_s(reqs) + self._draft_share * (lin_p + attn)   # + the MTP layer
            if decode_batch:
                gpu += self._speculative_share(prefill_tokens, lin_p, decode_batch, decode_kv_tokens)
        else:
            gpu = (self._lin_s(m) + attn + self.decode_attention_s(decode_batch, decode_kv_tokens)
                   + self._head_s(decode_batch + reqs))
        if self._launch_s:
            floor = self._launch_floor_s(m, reqs > 0, decode_batch)
            gpu = gpu if gpu > floor else floor
        cpu = self.cpu.per_step_s + self.cpu.per_seq_s * (decode_batch + reqs)
        if self.cpu.overlap:
            return gpu if gpu > cpu else cpu
        return gpu + cpu

    def _speculative_parts(self, b: int, kv: float) -> tuple[float, float]:
        """(verify pass, k draft passes) of one speculative decode step, GPU seconds."""
        q = self.spec_k + 1
        rows = self.padded_batch(b)
        verify = self._lin_s(rows * q) + self.decode_attention_s(b * q, kv * q) + self._head_s(b * q)
        one_draft = self._draft_share * (self._lin_s(rows) + self.decode_attention_s(b, kv)) + self._head_s(b)
        return verify, self.spec_k * one_draft

    def _speculative_share(self, p: float, lin_p: float, b: int, kv: float) -> float:
        """What the speculative decodes add to a step with `p` prompt tokens (whose linear
        ops take `lin_p`), per generated token: their verify rows (k + 1 per sequence) in
        the step's GEMMs, attention and LM head, and the k draft passes, over the tokens a
        step yields. The simulator advances each decode one token a step, so a step that
        yields L tokens is charged its prompt part and 1 / L of its decode part: per chunk
        and per token the cost is the engine's, while chunks and tokens interleave L times
        more finely than in the engine."""
        q = self.spec_k + 1
        verify = self._lin_s(p + b * q) - lin_p + self.decode_attention_s(b * q, kv * q) + self._head_s(b * q)
        draft = self.spec_k * (self._draft_share * (self._lin_s(b) + self.decode_attention_s(b, kv)) + self._head_s(b))
        return (verify + draft) / self.spec_tokens_per_step

    def _speculative_s(self, b: int, kv: float) -> float:
        """A speculative decode step per generated token (see the module's docstring)."""
        gpu = sum(self._speculative_parts(b, kv))
        if self._launch_s and gpu < self._launch_s and not self.graphed(b):
            gpu = self._launch_s
        return float(self.cpu.total(gpu, b)) / self.spec_tokens_per_step

    def mixed_v(self, p, k, b, ctx, reqs):
        """`mixed_s` over numpy arrays (the analytical model's path): the same tables."""
        b = np.asarray(b, dtype=float)
        any_p, any_b = bool((p > 0).any()), bool((b > 0).any())
        reqs = np.where(p > 0, np.maximum(reqs, 1.0), 0.0)
        m = np.where(p > 0, p + b, self._pad_v(b)) if any_b else p
        lin = self._interp_lin(self._lin_arr, m)
        gpu = lin + self._interp_lin(self._head_arr, b + reqs)
        if any_p:
            per = np.maximum(reqs, 1.0)
            attn = reqs * self._chunk_attention_v(p / per, k)
            gpu = gpu + attn
            if self.spec_k:   # prompt steps: as mixed_s, the prompt part + the MTP layer + the decodes' share
                lin_p = self._interp_lin(self._lin_arr, p)
                prompt = lin_p + self._interp_lin(self._head_arr, reqs) + attn + self._draft_share * (lin_p + attn)
                share = [self._speculative_share(float(pi), float(li), int(bi), float(t)) if pi > 0 and bi > 0 else 0.0
                         for pi, li, bi, t in zip(*(np.broadcast_to(a, gpu.shape).ravel() for a in (p, lin_p, b, ctx)))]
                gpu = np.where(p > 0, prompt + np.reshape(share, gpu.shape), gpu)
        if any_b:
            gpu = gpu + (self._decode_attention_v(b, ctx) if not (self.spec_k and any_p)
                         else np.where(p > 0, 0.0, self._decode_attention_v(b, ctx)))
        if self._launch_s:
            graphed = b <= self._graph_max if self._graph_padding else np.isin(b, self.graph_sizes)
            prompt_floor = np.where(m <= self._piece_max, self._piece_s, self._launch_s)
            gpu = np.maximum(gpu, np.where(p > 0, prompt_floor, np.where(graphed, 0.0, self._launch_s)))
        out = np.where((p > 0) | (b > 0), self.cpu.total(gpu, b + reqs), 0.0)
        if self.spec_k and any_b:
            decode_only = (p <= 0) & (b > 0)
            spec = [self._speculative_s(int(bi), float(t)) if d else 0.0
                    for bi, t, d in zip(np.broadcast_to(b, out.shape).ravel(), np.broadcast_to(ctx, out.shape).ravel(),
                                        decode_only.ravel())]
            out = np.where(decode_only, np.reshape(spec, out.shape), out)
        return out

    def _pad_v(self, b):
        if not len(self._graph_arr) or not self._graph_padding:
            return b
        i = np.searchsorted(self._graph_arr, b)
        return np.where(i < len(self._graph_arr), self._graph_arr[np.minimum(i, len(self._graph_arr) - 1)], b)

    @staticmethod
    def _interp_lin(arr, x):
        x = np.asarray(x, dtype=float)
        inside = np.interp(np.minimum(x, TOKENS_MAX), np.arange(len(arr)), arr)
        tail = (arr[TOKENS_MAX] - arr[TOKENS_MAX // 2]) / (TOKENS_MAX / 2)
        return inside + np.maximum(x - TOKENS_MAX, 0.0) * tail

    def _chunk_attention_v(self, new, cached):
        total = cached + new
        causal = np.interp(total, self._ctx_len, self._ctx_causal) - np.interp(cached, self._ctx_len, self._ctx_causal) \
            * (cached > 0)
        return np.where(new > 0, np.maximum(causal, np.interp(total, self._ctx_len, self._ctx_floor)), 0.0)

    def _decode_attention_v(self, b, kv):
        floor, slope, icpt = self._dec_arrays
        bi = np.clip(b, 0, BATCH_MAX).astype(int)
        scale = np.maximum(b / BATCH_MAX, 1.0)
        kv_per = kv / scale
        return np.maximum(icpt[bi] + slope[bi] * kv_per, floor[bi]) * scale

    def step(self, new_tokens, cached_tokens) -> StepCost:
        """One step given per request: tokens computed now and tokens already cached. Returns
        the seconds and their breakdown by op."""
        new = np.asarray(new_tokens, dtype=float)
        cached = np.asarray(cached_tokens, dtype=float)
        decode = (new == 1) & (cached > 0)
        chunks = ~decode & (new > 0)
        b = int(decode.sum())
        tokens = float(new.sum())
        if self.spec_k and b and not chunks.any():
            return self._speculative_step(b, float((cached[decode] + 1).sum()))
        m = tokens if chunks.any() else float(self.padded_batch(b)) if b else 0.0   # an empty step costs nothing
        spec_mixed = bool(self.spec_k and chunks.any())    # the decodes' share apart (mixed_s)
        if spec_mixed:
            m = float(new[chunks].sum())
        ops = {}
        for name, arr in self._lin_ops.items():
            ops[name] = float(self._interp_lin(arr, m))   # the same tail beyond TOKENS_MAX as mixed_s
        ops["attention_context"] = float(sum(self.chunk_attention_s(p, k) for p, k in zip(new[chunks], cached[chunks])))
        kv = float((cached[decode] + 1).sum())
        ops["attention_generation"] = 0.0 if spec_mixed else self.decode_attention_s(b, kv)
        ops["lm_head_sampling"] = self._head_s((0 if spec_mixed else b) + int(chunks.sum()))
        if spec_mixed:
            lin_p = float(self._interp_lin(self._lin_arr, m))
            ops["mtp_layer"] = self._draft_share * (lin_p + ops["attention_context"])
            ops["speculative_decodes"] = self._speculative_share(m, lin_p, b, kv) if b else 0.0
        gpu = math.fsum(ops.values())
        floor = self._launch_floor_s(tokens, bool(chunks.any()), b)
        ops["host_launch"] = max(floor - gpu, 0.0) if tokens > 0 else 0.0
        gpu += ops["host_launch"]
        seqs = b + int(chunks.sum())
        ops["engine_cpu"] = float(self.cpu.total(gpu, seqs)) - gpu if tokens > 0 else 0.0
        return StepCost(seconds=math.fsum(ops.values()), ops=ops)

    def _speculative_step(self, b: int, kv: float) -> StepCost:
        """A speculative decode step's ops, per generated token as `mixed_s` gives it."""
        per_token = 1.0 / self.spec_tokens_per_step
        verify, draft = self._speculative_parts(b, kv)
        launch = max(self._launch_s - verify - draft, 0.0) if not self.graphed(b) else 0.0
        ops = {"speculative_verify": verify * per_token, "speculative_draft": draft * per_token,
               "host_launch": launch * per_token}
        ops["engine_cpu"] = float(self.cpu.total(verify + draft + launch, b)) * per_token - math.fsum(ops.values())
        return StepCost(seconds=math.fsum(ops.values()), ops=ops)

    def describe(self) -> str:
        return self.src.describe()
