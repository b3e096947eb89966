"""The testbed's inference engine: OPT forward passes written with plain torch ops over an
`OPTForCausalLM`'s weights, with per-request KV caches (`RequestKV`).

- `prefill(slices)`: one TetriInfer chunk. Slices of several requests (each continuing its
  own cached context) are packed into one batch of sum(len) tokens; every matrix multiply
  runs once over the packed tokens, attention runs per slice (causal over cached + new).
- `decode(items)`: one continuous-batching iteration over requests of different context
  lengths. The batch's K/V live in a persistent layer-major workspace
  (`decode_workspace.DecodeWorkspace`): a request is copied in once when it joins, each
  layer appends the new tokens' K/V with one `index_copy_` and runs one (masked, when the
  contexts differ) `scaled_dot_product_attention` over the workspace in place - on CPU,
  one per request when the contexts differ enough (`_split_attention`); the new K/V
  also go into every request's own cache (one `_foreach_copy_`), which stays the record
  and what a connector sends. `decode_path="gather"` keeps the previous decode (per layer,
  one `torch.cat` of the batch's caches into a padded tensor) for comparison.
- Logits come back as float32, `[n, vocab]`, for the last token of each slice / item.

No sampling here: callers pick tokens (greedy: `argmax`) and decide when to stop; the
testbed always generates exactly a request's output tokens.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from .decode_workspace import DecodeWorkspace
from .kv_cache import RequestKV

DECODE_PATHS = ("workspace", "gather")

# cuDNN's fused attention, which torch picks first on Hopper GPUs, builds an execution plan
# on the host for each new shape: measured on an H100 (torch 2.11) at ~2.2 ms of CPU per
# call for ~15 us of GPU work, i.e. ~45 ms per opt-1.3b decode step whatever the batch.
# The flash and memory-efficient kernels have no such cost, so the engine uses those.
_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def _fast_attention_backends(fn):
    """Run an engine step with attention restricted to `_SDPA_BACKENDS` on CUDA."""
    @functools.wraps(fn)
    def step(self, *args, **kwargs):
        if self.device.type != "cuda":
            return fn(self, *args, **kwargs)
        with sdpa_kernel(_SDPA_BACKENDS):
            return fn(self, *args, **kwargs)
    return step


# A ragged decode batch padded to its longest context costs batch x longest in attention,
# where a serving engine's variable-length kernel (vLLM's paged attention, FlashAttention's
# varlen) costs the sum of the contexts - what planner/perf.py charges. On CPU the engine
# then runs attention row by row over each request's own context, when that is cheaper:
# one call costs about as much as attending over SPLIT_CALL_TOKENS positions (measured:
# ~9 us per call, ~0.11 us per position and layer at hidden 256, one thread). On CUDA the
# padded batch stays (a launch per row would cost more than the padding).
SPLIT_CALL_TOKENS = 80


def _split_attention(device: torch.device, lens: list[int]) -> bool:
    if device.type != "cpu" or len(lens) < 2:
        return False
    padded = len(lens) * (max(lens) + 1)
    return sum(lens) + len(lens) * (1 + SPLIT_CALL_TOKENS) < padded


@dataclass(frozen=True)
class _Layer:
    ln1: tuple                  # (weight, bias, eps) of self_attn_layer_norm
    ln2: tuple                  # (weight, bias, eps) of final_layer_norm
    qkv: tuple                  # (weight [3*hidden, hidden], bias): Q, K and V in one GEMM
    o: tuple                    # (weight, bias) of out_proj
    fc1: tuple
    fc2: tuple
    act: object                 # the activation module (ReLU for OPT)


def _lin(m) -> tuple:
    return (m.weight, m.bias)


def _fuse_qkv(attn) -> tuple:
    """One [3*out, in] weight (and bias) for q_proj, k_proj and v_proj. The three modules'
    parameters are re-pointed at slices of it (same values), so the model keeps working
    and no memory is duplicated."""
    projs = (attn.q_proj, attn.k_proj, attn.v_proj)
    with torch.no_grad():
        w = torch.cat([p.weight for p in projs])
        b = None if projs[0].bias is None else torch.cat([p.bias for p in projs])
        o = 0
        for p in projs:
            n = p.weight.shape[0]
            p.weight.data = w[o:o + n]
            if b is not None:
                p.bias.data = b[o:o + n]
            o += n
    return (w, b)


def _ln(m) -> tuple | None:
    return None if m is None else (m.weight, m.bias, m.eps)


class Engine:
    def __init__(self, model, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                 decode_path: str = "workspace"):
        if decode_path not in DECODE_PATHS:
            raise ValueError(f"decode_path {decode_path!r} is not one of {', '.join(DECODE_PATHS)}")
        self.decode_path = decode_path
        if device is not None or dtype is not None:
            model = model.to(device=device, dtype=dtype)
        self.model = model.eval()
        cfg = model.config
        self.config = cfg
        dec = model.model.decoder
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.n_layers = cfg.num_hidden_layers
        self.heads = cfg.num_attention_heads
        self.kv_heads = self.heads              # OPT: multi-head attention, no GQA
        self.head_dim = cfg.hidden_size // self.heads
        self.hidden = cfg.hidden_size
        self.vocab = cfg.vocab_size
        self.max_positions = cfg.max_position_embeddings
        self.pre_norm = bool(cfg.do_layer_norm_before)
        self.embed_tokens = dec.embed_tokens.weight
        self.embed_positions = dec.embed_positions.weight
        self.pos_offset = int(getattr(dec.embed_positions, "offset", 2))
        self.project_in = None if dec.project_in is None else dec.project_in.weight
        self.project_out = None if dec.project_out is None else dec.project_out.weight
        self.final_norm = _ln(dec.final_layer_norm)
        self.lm_head = model.get_output_embeddings().weight
        self.layers = [
            _Layer(ln1=_ln(L.self_attn_layer_norm), ln2=_ln(L.final_layer_norm),
                   qkv=_fuse_qkv(L.self_attn), o=_lin(L.self_attn.out_proj), fc1=_lin(L.fc1), fc2=_lin(L.fc2), act=L.activation_fn)
            for L in dec.layers]
        self._arange = torch.arange(self.max_positions, device=self.device)
        self._workspace = DecodeWorkspace(self.n_layers, self.kv_heads, self.head_dim, self.dtype,
                                          self.device, self.max_positions)

    # -- KV caches ---------------------------------------------------------------------------
    @property
    def kv_bytes_per_token(self) -> int:
        return self.n_layers * 2 * self.kv_heads * self.head_dim * self.embed_tokens.element_size()

    def new_kv(self, capacity_tokens: int) -> RequestKV:
        if capacity_tokens > self.max_positions:
            raise ValueError(f"KV capacity {capacity_tokens} exceeds the model's "
                             f"{self.max_positions} positions")
        return RequestKV.allocate(capacity_tokens, self.n_layers, self.kv_heads, self.head_dim,
                                  self.dtype, self.device)

    # -- building blocks ---------------------------------------------------------------------
    def _embed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = F.embedding(ids, self.embed_tokens)
        if self.project_in is not None:
            x = F.linear(x, self.project_in)
        return x + F.embedding(positions + self.pos_offset, self.embed_positions)

    @staticmethod
    def _norm(x: torch.Tensor, ln: tuple) -> torch.Tensor:
        w, b, eps = ln
        return F.layer_norm(x, (x.shape[-1],), w, b, eps)

    def _qkv(self, x: torch.Tensor, w: _Layer) -> torch.Tensor:
        """[n, 3, heads, head_dim]: Q, K, V of every token (OPT: kv_heads == heads)."""
        h = self._norm(x, w.ln1) if self.pre_norm else x
        return F.linear(h, *w.qkv).view(x.shape[0], 3, self.heads, self.head_dim)

    def _finish_layer(self, x: torch.Tensor, attn: torch.Tensor, w: _Layer) -> torch.Tensor:
        x = x + F.linear(attn.reshape(x.shape[0], self.heads * self.head_dim), *w.o)
        if not self.pre_norm:
            x = self._norm(x, w.ln1)
        h = self._norm(x, w.ln2) if self.pre_norm else x
        x = x + F.linear(w.act(F.linear(h, *w.fc1)), *w.fc2)
        if not self.pre_norm:
            x = self._norm(x, w.ln2)
        return x

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        if self.final_norm is not None:
            h = self._norm(h, self.final_norm)
        if self.project_out is not None:
            h = F.linear(h, self.project_out)
        return F.linear(h, self.lm_head).float()

    def _check(self, kv: RequestKV, n: int, seen: set) -> None:
        if id(kv) in seen:
            raise ValueError("a request appears twice in one iteration")
        seen.add(id(kv))
        if kv.data.device != self.device or kv.data.dtype != self.dtype:
            raise ValueError(f"KV cache on {kv.data.device}/{kv.data.dtype}, engine on {self.device}/{self.dtype}")
        if kv.length + n > kv.capacity_tokens:
            raise ValueError(f"{kv.length} + {n} tokens overflow a KV cache of {kv.capacity_tokens}")
        if kv.length + n > self.max_positions:
            raise ValueError(f"{kv.length + n} tokens exceed the model's {self.max_positions} positions")

    # -- one prefill chunk -------------------------------------------------------------------
    @_fast_attention_backends
    @torch.inference_mode()
    def prefill(self, slices: list[tuple[RequestKV, torch.Tensor]]) -> torch.Tensor:
        """Run one chunk made of `slices` (request KV, its next prompt tokens); append each
        slice's K/V to its cache; return float32 logits of each slice's last token."""
        if not slices:
            raise ValueError("prefill needs at least one slice")
        seen: set = set()
        toks, spans = [], []            # spans: (kv, start position, offset in chunk, length)
        offset = 0
        for kv, t in slices:
            t = torch.as_tensor(t, dtype=torch.long).reshape(-1)
            n = t.numel()
            if n == 0:
                raise ValueError("a prefill slice has no tokens")
            self._check(kv, n, seen)
            toks.append(t)
            spans.append((kv, kv.length, offset, n))
            offset += n
        ids = torch.cat(toks).to(self.device, non_blocking=True)
        positions = torch.cat([self._arange[s:s + n] for _, s, _, n in spans])
        x = self._embed(ids, positions)
        for li, w in enumerate(self.layers):
            qkv = self._qkv(x, w)
            q, kv_new = qkv[:, 0], qkv[:, 1:]                         # [N, H, D], [N, 2, H, D]
            attn = torch.empty_like(q)
            for kv, s, o, n in spans:
                kv.data[s:s + n, li].copy_(kv_new[o:o + n])
                ctx = kv.data[:s + n, li]                             # [s+n, 2, H, D]
                qs = q[o:o + n].transpose(0, 1).unsqueeze(0)          # [1, H, n, D]
                ks = ctx[:, 0].transpose(0, 1).unsqueeze(0)           # [1, H, s+n, D]
                vs = ctx[:, 1].transpose(0, 1).unsqueeze(0)
                if s == 0:
                    out = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True)
                else:
                    mask = self._arange[:s + n][None, :] <= self._arange[s:s + n][:, None]
                    out = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask)
                attn[o:o + n] = out[0].transpose(0, 1)
            x = self._finish_layer(x, attn, w)
        for kv, s, _, n in spans:
            kv.length = s + n
        last = torch.tensor([o + n - 1 for _, _, o, n in spans], device=self.device)
        return self._logits(x[last])

    # -- one decode iteration ----------------------------------------------------------------
    def reset_decode_workspace(self) -> None:
        """Free the decode workspace (it is rebuilt, and caches copied in, on the next decode)."""
        self._workspace.release()

    def reserve_decode_workspace(self, requests: int, tokens: int) -> None:
        """Size the decode workspace for `requests` caches of up to `tokens` tokens now
        (a fresh one is sized exactly, rounded to 64 tokens), so decoding up to there
        never reallocates it. (No-op on the gather path, which has none.)"""
        if self.decode_path == "workspace":
            self._workspace.reserve(requests, min(tokens, self.max_positions))

    @_fast_attention_backends
    @torch.inference_mode()
    def decode(self, items: list[tuple[RequestKV, int]]) -> torch.Tensor:
        """One decode step for requests of any context lengths: each (KV, last token id)
        gets one token appended; returns float32 next-token logits `[n, vocab]`."""
        if not items:
            raise ValueError("decode needs at least one request")
        seen: set = set()
        for kv, _ in items:
            if kv.length < 1:
                raise ValueError("decode needs a prefilled KV cache (length >= 1)")
            self._check(kv, 1, seen)
        if self.decode_path == "gather":
            return self._decode_gather(items)
        ws = self._workspace
        slot_of = ws.sync([kv for kv, _ in items])
        B = len(items)
        order = [0] * B                  # row r of the batch (= slot r) holds item order[r]
        for i, s in enumerate(slot_of):
            order[s] = i
        kvs = [items[i][0] for i in order]
        lens = ws.lengths                # per slot, before this step = the new token's position
        max_ctx = max(lens) + 1
        ids = torch.tensor([int(items[i][1]) for i in order], dtype=torch.long).to(self.device, non_blocking=True)
        lens_t = torch.tensor(lens, dtype=torch.long).to(self.device, non_blocking=True)
        x = self._embed(ids, lens_t)
        mask = None
        split = _split_attention(self.device, lens)
        if min(lens) + 1 < max_ctx and not split:   # ragged batch: mask each row's positions past its own
            # attend over a multiple of 16 positions (within the workspace's capacity, a
            # multiple of 64): fused attention kernels want an aligned mask
            max_ctx = min(-(-max_ctx // 16) * 16, ws.capacity_tokens)
            valid = (self._arange[:max_ctx][None, :] <= lens_t[:, None]).view(B, 1, 1, max_ctx)
            mask = torch.zeros(valid.shape, dtype=self.dtype, device=self.device).masked_fill_(~valid, float("-inf"))
        flat = torch.arange(B, device=self.device) * ws.capacity_tokens + lens_t   # slot, position
        new = torch.empty((B, self.n_layers, 2, self.kv_heads, self.head_dim), dtype=self.dtype, device=self.device)
        for li, w in enumerate(self.layers):
            qkv = self._qkv(x, w)
            new[:, li] = qkv[:, 1:]
            layer = ws.data[li]                                          # [2, slots, T, H, D]
            layer.view(2, -1, self.kv_heads, self.head_dim).index_copy_(1, flat, qkv[:, 1:].transpose(0, 1))
            q = qkv[:, 0].unsqueeze(2)                                   # [B, H, 1, D]
            if split:    # each row over its own context: cost follows the sum of contexts
                out = torch.cat([F.scaled_dot_product_attention(
                    q[r:r + 1], layer[0, r:r + 1, :n + 1].transpose(1, 2), layer[1, r:r + 1, :n + 1].transpose(1, 2))
                    for r, n in enumerate(lens)])
            else:
                k = layer[0, :B, :max_ctx].transpose(1, 2)               # [B, H, S, D]
                v = layer[1, :B, :max_ctx].transpose(1, 2)
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = self._finish_layer(x, out.view(B, self.heads, self.head_dim), w)
        torch._foreach_copy_([kv.data[n] for kv, n in zip(kvs, lens)], list(new.unbind(0)))
        for kv, n in zip(kvs, lens):
            kv.length = n + 1
        ws.advance()
        return self._logits(x[torch.tensor(slot_of, device=self.device)])     # back to item order

    def _decode_gather(self, items: list[tuple[RequestKV, int]]) -> torch.Tensor:
        """The previous decode (`decode_path="gather"`, kept for comparison): per layer the
        batch's cached K/V are gathered into a padded tensor with one `torch.cat`."""
        B = len(items)
        lens = [kv.length for kv, _ in items]
        max_ctx = max(lens) + 1
        ids = torch.tensor([int(t) for _, t in items], dtype=torch.long).to(self.device, non_blocking=True)
        lens_t = torch.tensor(lens, dtype=torch.long).to(self.device, non_blocking=True)
        x = self._embed(ids, lens_t)
        cached = [kv.data[:n].unbind(1) for (kv, _), n in zip(items, lens)]   # per request: L views
        mask, pads = None, [None] * B
        if min(lens) + 1 < max_ctx:     # ragged batch: pad with zeros, mask the padding out
            valid = (self._arange[:max_ctx][None, :] <= lens_t[:, None]).view(B, 1, 1, max_ctx)
            mask = torch.zeros(valid.shape, dtype=self.dtype, device=self.device).masked_fill_(~valid, float("-inf"))
            pad = torch.zeros((max_ctx, 2, self.kv_heads, self.head_dim), dtype=self.dtype, device=self.device)
            pads = [pad[: max_ctx - n - 1] if n + 1 < max_ctx else None for n in lens]
        new = torch.empty((B, self.n_layers, 2, self.kv_heads, self.head_dim), dtype=self.dtype, device=self.device)
        for li, w in enumerate(self.layers):
            qkv = self._qkv(x, w)
            new[:, li] = qkv[:, 1:]
            new_rows = new[:, li:li + 1].unbind(0)                      # B x [1, 2, H, D]
            parts = []
            for b in range(B):
                parts.append(cached[b][li])
                parts.append(new_rows[b])
                if pads[b] is not None:
                    parts.append(pads[b])
            ctx = torch.cat(parts).view(B, max_ctx, 2, self.kv_heads, self.head_dim)
            out = F.scaled_dot_product_attention(
                qkv[:, 0].unsqueeze(2), ctx[:, :, 0].transpose(1, 2),
                ctx[:, :, 1].transpose(1, 2), attn_mask=mask)
            x = self._finish_layer(x, out.view(B, self.heads, self.head_dim), w)
        torch._foreach_copy_([kv.data[n] for (kv, _), n in zip(items, lens)], list(new.unbind(0)))
        for (kv, _), n in zip(items, lens):
            kv.length = n + 1
        return self._logits(x)

    # -- convenience -------------------------------------------------------------------------
    def generate_greedy(self, prompt: torch.Tensor, output_tokens: int,
                        chunk_tokens: int | None = None) -> list[int]:
        """Exactly `output_tokens` greedy tokens for one prompt (first from prefill, rest from
        decode), prefilling in chunks of `chunk_tokens` (all at once when None)."""
        prompt = torch.as_tensor(prompt, dtype=torch.long).reshape(-1)
        kv = self.new_kv(prompt.numel() + output_tokens)
        step = chunk_tokens or prompt.numel()
        for s in range(0, prompt.numel(), step):
            logits = self.prefill([(kv, prompt[s:s + step])])
        out = [int(logits[0].argmax())]
        while len(out) < output_tokens:
            out.append(int(self.decode([(kv, out[-1])])[0].argmax()))
        return out
