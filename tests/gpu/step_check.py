"""Time real dense-transformer engine steps on a GPU, op group by op group, to check the
step-cost model (planner/perf/step.py) against a real forward pass.

A step is one forward pass of a Hugging Face dense GQA model's geometry (read from the
planner's catalog: Llama-3.1-8B / 70B by default) with seeded random weights, in the
layout of one GPU of a TP group (heads, KV heads, FFN and vocabulary split by TP; the
all-reduces are not run, there is one GPU): RMSNorm, QKV projection, rotary embedding,
attention, output projection, residual, gated MLP, LM head on each sequence's last token.
GEMMs run in bf16 (cuBLAS) or FP8 e4m3 with per-tensor scales (`torch._scaled_mm`, the
activation cast included, as a static-scale FP8 checkpoint runs). Attention is PyTorch's
scaled_dot_product_attention, the fastest of its cuDNN / flash / memory-efficient backends
for each shape (named in the output). Shapes:

- prefill: one request of n new tokens, causal;
- decode: a batch of B requests, one new token each over L cached tokens (KV in bf16);
- verify (--verify Q): a speculative decode's verify pass, B requests of Q new tokens each
  (the last token and Q - 1 drafts) over L cached tokens, the LM head on all B x Q rows;
  the step-cost model costs it as a decode of B x Q rows over the same per-request KV
  (planner/perf/step.py, speculative decoding).

Each step is captured in a CUDA graph and replayed (GPU time only, as engines run decode
steps; no host launch time), three times over: the whole step, its GEMMs alone and its
attention alone, so the rest (norms, rotary, activation, residuals, casts) is the
difference. Weight matrices cycle through 4 distinct layers (each layer's weights are far
larger than the 60 MB L2, so every layer still reads its weights from HBM) and one KV
buffer serves every layer (likewise), which keeps a 70B model within one GPU's memory.

Usage (on the GPU machine, repository root):
    python tests/gpu/step_check.py --out OUT/steps.csv \
        --config meta-llama/Llama-3.1-8B:fp8:1 --config meta-llama/Llama-3.1-70B:fp8:8
Compare with the model: python tests/gpu/step_check_compare.py OUT/steps.csv --gpu h200
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from planner.catalog import model as catalog_model  # noqa: E402  (stdlib-only package)
from timing import graph_ms, wall_ms  # noqa: E402  (this folder)

DISTINCT_LAYERS = 4
PREFILL = (128, 512, 1024, 2048, 4096, 8192)
DECODE_BATCH = (1, 8, 32, 64, 128, 256)
DECODE_CONTEXT = (1024, 4096)
BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
FIELDS = ["model", "dtype", "tp", "kind", "tokens", "batch", "context", "full_ms", "gemm_ms", "attention_ms",
          "other_ms", "attention_backend", "replays", "device"]


class Shard:
    """One GPU's share of a dense GQA model under TP `tp`."""

    def __init__(self, spec, tp: int, dtype: str, device: str, seed: int = 0):
        if spec.attention != "gqa" or spec.experts or spec.layer_types:
            raise SystemExit(f"{spec.name}: only dense full-attention GQA models are timed here")
        for what, n in (("heads", spec.heads), ("kv_heads", spec.kv_heads), ("ffn", spec.ffn)):
            if n % tp:
                raise SystemExit(f"{spec.name}: {what} {n} does not split over TP {tp}")
        self.spec, self.tp, self.dtype, self.device = spec, tp, dtype, device
        self.h, self.d = spec.hidden, spec.head_dim
        self.hq, self.hkv, self.ffn = spec.heads // tp, spec.kv_heads // tp, spec.ffn // tp
        self.vocab = math.ceil(spec.vocab / tp / 16) * 16
        gen = torch.Generator(device=device).manual_seed(seed)
        shapes = {"qkv": ((self.hq + 2 * self.hkv) * self.d, self.h), "o": (self.h, self.hq * self.d),
                  "gate_up": (2 * self.ffn, self.h), "down": (self.h, self.ffn)}
        self.layers = [{k: self._weight(s, gen) for k, s in shapes.items()} for _ in range(DISTINCT_LAYERS)]
        self.lm_head = self._weight((self.vocab, self.h), gen)
        self.norm = torch.ones(self.h, dtype=torch.bfloat16, device=device)
        self.one = torch.ones((), dtype=torch.float32, device=device)
        pos = torch.arange(1 << 16, device=device, dtype=torch.float32)
        inv = 1.0 / (500000.0 ** (torch.arange(0, self.d, 2, device=device, dtype=torch.float32) / self.d))
        ang = torch.outer(pos, inv)
        self.cos, self.sin = ang.cos().to(torch.bfloat16), ang.sin().to(torch.bfloat16)

    def _weight(self, shape, gen):
        w = torch.randn(shape, generator=gen, device=self.device, dtype=torch.float32).mul_(0.02)
        return w.to(torch.float8_e4m3fn) if self.dtype == "fp8" else w.to(torch.bfloat16)

    def linear(self, x, w):
        if self.dtype == "fp8":   # static per-tensor scales: cast the activation, one FP8 GEMM
            return torch._scaled_mm(x.to(torch.float8_e4m3fn), w.t(), scale_a=self.one, scale_b=self.one,
                                    out_dtype=torch.bfloat16)
        return x @ w.t()

    def rope(self, x, positions):
        cos, sin = self.cos[positions][:, None, :], self.sin[positions][:, None, :]
        x1, x2 = x[..., : self.d // 2], x[..., self.d // 2:]
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class Step:
    """Inputs and the three callables (whole step, GEMMs only, attention only) of one shape."""

    def __init__(self, m: Shard, kind: str, tokens: int, batch: int, context: int, backend):
        self.m, self.kind, self.backend = m, kind, backend
        dev = m.device
        self.x = torch.randn(tokens, m.h, device=dev, dtype=torch.bfloat16)
        if kind == "prefill":   # token-major [n, heads, d], as the projection leaves them
            self.positions = torch.arange(tokens, device=dev)
            self.q = torch.randn(tokens, m.hq, m.d, device=dev, dtype=torch.bfloat16)
            self.k = torch.randn(tokens, m.hkv, m.d, device=dev, dtype=torch.bfloat16)
            self.v = torch.randn_like(self.k)
            self.last = torch.tensor([tokens - 1], device=dev)
        else:   # decode (one new token per request) or verify (tokens // batch each)
            self.per = tokens // batch
            self.positions = (context - self.per + torch.arange(self.per, device=dev)).repeat(batch)
            self.q = torch.randn(batch, m.hq, self.per, m.d, device=dev, dtype=torch.bfloat16)
            self.k = torch.randn(batch, m.hkv, context, m.d, device=dev, dtype=torch.bfloat16)
            self.v = torch.randn_like(self.k)
            self.last = torch.arange(tokens, device=dev)
        self.xa = torch.randn(tokens, m.hq * m.d, device=dev, dtype=torch.bfloat16)
        self.xf = torch.randn(tokens, m.ffn, device=dev, dtype=torch.bfloat16)

    def attend(self, q=None, k=None, v=None):
        q = self.q if q is None else q
        k = self.k if k is None else k
        v = self.v if v is None else v
        if self.kind == "prefill":
            q, k, v = (t.transpose(0, 1)[None] for t in (q, k, v))
        with sdpa_kernel([self.backend]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=self.kind == "prefill", enable_gqa=True)

    def full(self):
        m, x = self.m, self.x
        n = x.shape[0]
        for i in range(m.spec.layers):
            w = m.layers[i % DISTINCT_LAYERS]
            y = F.rms_norm(x, (m.h,), m.norm, 1e-5)
            qkv = m.linear(y, w["qkv"])
            q, k, v = qkv.split([m.hq * m.d, m.hkv * m.d, m.hkv * m.d], dim=-1)
            q = m.rope(q.view(n, m.hq, m.d), self.positions)
            k = m.rope(k.view(n, m.hkv, m.d), self.positions)
            if self.kind == "prefill":
                a = self.attend(q, k, v.view(n, m.hkv, m.d))[0].transpose(0, 1).reshape(n, m.hq * m.d)
            else:   # write the new tokens' K/V into the cache, attend over the cache
                b, per = n // self.per, self.per
                self.k[:, :, -per:, :] = k.view(b, per, m.hkv, m.d).transpose(1, 2)
                self.v[:, :, -per:, :] = v.view(b, per, m.hkv, m.d).transpose(1, 2)
                qs = q.view(b, per, m.hq, m.d).transpose(1, 2).contiguous()
                a = self.attend(qs).transpose(1, 2).reshape(n, m.hq * m.d)
            x = x + m.linear(a, w["o"])
            y = F.rms_norm(x, (m.h,), m.norm, 1e-5)
            gu = m.linear(y, w["gate_up"])
            g, u = gu.chunk(2, dim=-1)
            x = x + m.linear(F.silu(g) * u, w["down"])
        y = F.rms_norm(x[self.last], (m.h,), m.norm, 1e-5)
        return m.linear(y, m.lm_head).argmax(dim=-1)

    def gemms(self):
        m = self.m
        out = None
        for i in range(m.spec.layers):
            w = m.layers[i % DISTINCT_LAYERS]
            m.linear(self.x, w["qkv"])
            m.linear(self.xa, w["o"])
            m.linear(self.x, w["gate_up"])
            out = m.linear(self.xf, w["down"])
        m.linear(self.x[self.last], m.lm_head)
        return out

    def attention(self):
        out = None
        for _ in range(self.m.spec.layers):
            out = self.attend()
        return out


def measure(m: Shard, kind: str, tokens: int, batch: int, context: int, budget_s: float) -> dict:
    timer = graph_ms if m.device == "cuda" else wall_ms
    ran = []
    names = ["cudnn", "flash", "efficient"] if m.device == "cuda" else ["math"]
    for name in names:   # each attention backend that runs this shape, fastest first
        try:
            step = Step(m, kind, tokens, batch, context, BACKENDS[name])
            step.attention()          # eagerly first: a backend that refuses must not fail a capture
            t, _ = timer(step.attention, budget_s / 4)
        except RuntimeError as exc:
            print(f"  {name} attention: {str(exc).splitlines()[0][:160]}", flush=True)
            continue
        ran.append((t, name))
        del step
    for attn, name in sorted(ran):
        step = Step(m, kind, tokens, batch, context, BACKENDS[name])
        try:
            step.full()
            break
        except RuntimeError as exc:
            print(f"  {name} in the whole step: {str(exc).splitlines()[0][:160]}", flush=True)
    else:
        raise RuntimeError(f"no attention backend ran {kind} tokens={tokens} batch={batch} context={context}")
    full, replays = timer(step.full, budget_s)
    gemm, _ = timer(step.gemms, budget_s / 2)
    return {"model": m.spec.name, "dtype": m.dtype, "tp": m.tp, "kind": kind, "tokens": tokens, "batch": batch,
            "context": context, "full_ms": round(full, 4), "gemm_ms": round(gemm, 4),
            "attention_ms": round(attn, 4), "other_ms": round(full - gemm - attn, 4), "attention_backend": name,
            "replays": replays, "device": torch.cuda.get_device_name() if m.device == "cuda" else "cpu"}


def shapes(m: Shard, max_prefill: int, kv_budget_gb: float, verify: tuple[int, ...] = (), only_verify=False):
    kv_token = 2 * m.hkv * m.d * 2
    if not only_verify:
        for n in PREFILL:
            if n <= max_prefill:
                yield "prefill", n, 1, 0
        for ctx in DECODE_CONTEXT:
            for b in DECODE_BATCH:
                if b * ctx * kv_token / 1e9 <= kv_budget_gb:
                    yield "decode", b, b, ctx
    for q in verify:
        for ctx in DECODE_CONTEXT:
            for b in DECODE_BATCH:
                if b * ctx * kv_token / 1e9 <= kv_budget_gb:
                    yield "verify", b * q, b, ctx


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="CSV written row by row")
    ap.add_argument("--config", action="append", required=True, help="MODEL:bf16|fp8:TP (repeatable)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--max-prefill", type=int, default=8192)
    ap.add_argument("--kv-gb", type=float, default=20.0, help="largest decode KV buffer (one layer's, reused)")
    ap.add_argument("--shape-budget-s", type=float, default=1.0, help="replay time per measurement")
    ap.add_argument("--deadline-s", type=float, default=420.0, help="stop starting new shapes after this")
    ap.add_argument("--layers", type=int, default=0, help="override the layer count (CPU smoke runs)")
    ap.add_argument("--scale", type=int, default=1, help="divide hidden / ffn / heads by this (CPU smoke runs)")
    ap.add_argument("--verify", type=int, action="append", default=[],
                    help="also time verify passes of this many tokens per request (repeatable: 2, 4)")
    ap.add_argument("--only-verify", action="store_true", help="time only the verify passes")
    args = ap.parse_args(argv)
    began = time.monotonic()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        writer.writeheader()
        for config in args.config:
            name, dtype, tp = config.rsplit(":", 2)
            spec = catalog_model(name)
            if args.layers or args.scale > 1:
                from dataclasses import replace
                s = args.scale
                spec = replace(spec, name=f"{spec.name}/{s}-{args.layers}L", layers=args.layers or spec.layers, hidden=spec.hidden // s, ffn=spec.ffn // s,
                               heads=max(spec.heads // s, spec.kv_heads), vocab=spec.vocab // s)
            shard = Shard(spec, int(tp), dtype, args.device)
            for kind, tokens, batch, ctx in shapes(shard, args.max_prefill, args.kv_gb, tuple(args.verify),
                                                   args.only_verify):
                if time.monotonic() - began > args.deadline_s:
                    print(f"deadline: stopped before {config} {kind} {tokens}x{ctx}", flush=True)
                    return 0
                try:
                    row = measure(shard, kind, tokens, batch, ctx, args.shape_budget_s)
                except (RuntimeError, torch.OutOfMemoryError) as exc:   # report, go on with the next shape
                    print(f"FAILED {config} {kind} {tokens}x{ctx}: {str(exc).splitlines()[0][:200]}", flush=True)
                    if args.device == "cuda":
                        torch.cuda.synchronize()
                        torch.cuda.empty_cache()
                    continue
                writer.writerow(row)
                fh.flush()
                print(" ".join(f"{k}={row[k]}" for k in FIELDS[:12]), flush=True)
            del shard
            if args.device == "cuda":
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
