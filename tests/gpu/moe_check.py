"""Time one GPU's routed-expert (MoE) layer on a GPU and compare it with the step-cost
model's reading of the fused-MoE kernel tables (planner/perf/moe_tables.py, sources.py).

For a catalog MoE model's expert geometry (hidden, expert FFN, experts, top-k) in a layout
(moe_tp x ep: this GPU holds experts / ep experts, each a 1 / moe_tp slice of its FFN), a
layer routes T tokens (all ranks' tokens) uniformly at random to top-k experts; this GPU
computes the pairs that land on its experts: gather the tokens, gate/up grouped GEMM, SiLU
x up, down grouped GEMM, weighted scatter-add back (PyTorch's `torch._grouped_mm`, bf16,
CUTLASS grouped GEMMs on Hopper), captured in a CUDA graph with the routing fixed. The
grouped GEMMs alone are timed too. The comparison is with the model's `moe_s` for the same
geometry in bf16 per engine's tables (random routing), and with the fitted roofline.

    python tests/gpu/moe_check.py --out OUT/moe.csv            # on the GPU machine
    python tests/gpu/moe_check.py --compare docs/profiles/h200-moe.csv --gpu h200
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from planner.catalog import model as catalog_model  # noqa: E402  (stdlib-only package)
from timing import graph_ms, wall_ms  # noqa: E402  (this folder)

MODELS = ("deepseek-ai/DeepSeek-V3", "Qwen/Qwen3-235B-A22B", "MiniMaxAI/MiniMax-M2.5", "openai/gpt-oss-120b")
LAYOUTS = ((1, 1), (1, 8), (8, 1))          # (moe_tp, ep)
TOKENS = (1, 4, 16, 64, 256, 1024, 4096, 16384)
FIELDS = ["model", "moe_tp", "ep", "tokens", "pairs", "experts_hit", "layer_ms", "gemm_ms", "device"]


def measure(spec, moe_tp: int, ep: int, tokens: int, budget_s: float, seed: int = 0, dev: str = "cuda") -> dict:
    import torch
    import torch.nn.functional as F
    h, f, E, k = spec.hidden, spec.expert_ffn // moe_tp, spec.experts, spec.experts_per_token
    local = E // ep
    g = torch.Generator(device=dev).manual_seed(seed)
    w1 = torch.randn(local, 2 * f, h, device=dev, dtype=torch.bfloat16, generator=g).mul_(0.02)
    w2 = torch.randn(local, h, f, device=dev, dtype=torch.bfloat16, generator=g).mul_(0.02)
    x = torch.randn(tokens, h, device=dev, dtype=torch.bfloat16, generator=g)
    logits = torch.randn(tokens, E, device=dev, generator=g)
    weights, ids = logits.softmax(-1).topk(k, dim=-1)
    tok = torch.arange(tokens, device=dev).repeat_interleave(k)
    ids, weights = ids.reshape(-1), weights.reshape(-1).to(torch.bfloat16)
    mine = ids < local                                   # this rank holds experts [0, E / ep)
    ids, tok, weights = ids[mine], tok[mine], weights[mine]
    order = torch.argsort(ids, stable=True)
    ids, tok, weights = ids[order], tok[order], weights[order]
    counts = torch.bincount(ids, minlength=local)
    offs = counts.cumsum(0).to(torch.int32)
    pairs = int(ids.numel())
    hit = int((counts > 0).sum())
    out = torch.zeros(tokens, h, device=dev, dtype=torch.bfloat16)
    xs = x[tok]

    def gemms():
        up = torch._grouped_mm(xs, w1.transpose(-2, -1), offs=offs)
        return torch._grouped_mm(up[:, :f], w2.transpose(-2, -1), offs=offs)

    def layer():
        a = x.index_select(0, tok)
        up = torch._grouped_mm(a, w1.transpose(-2, -1), offs=offs)
        act = F.silu(up[:, :f]) * up[:, f:]
        down = torch._grouped_mm(act, w2.transpose(-2, -1), offs=offs)
        out.zero_()
        out.index_add_(0, tok, down * weights[:, None])
        return out

    row = {"model": spec.name, "moe_tp": moe_tp, "ep": ep, "tokens": tokens, "pairs": pairs, "experts_hit": hit,
           "device": torch.cuda.get_device_name() if dev == "cuda" else dev}
    if pairs == 0:
        return dict(row, layer_ms=0.0, gemm_ms=0.0)
    timer = graph_ms if dev == "cuda" else wall_ms
    row["layer_ms"] = round(timer(layer, budget_s)[0], 4)
    row["gemm_ms"] = round(timer(gemms, budget_s / 2)[0], 4)
    return row


def run(out: Path, deadline_s: float, budget_s: float) -> None:
    import torch
    began = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        writer.writeheader()
        for name in MODELS:
            spec = catalog_model(name)
            for moe_tp, ep in LAYOUTS:
                for t in TOKENS:
                    if time.monotonic() - began > deadline_s:
                        print("deadline reached", flush=True)
                        return
                    try:
                        row = measure(spec, moe_tp, ep, t, budget_s)
                    except (RuntimeError, torch.OutOfMemoryError) as exc:
                        print(f"FAILED {name} {moe_tp}x{ep} {t}: {str(exc).splitlines()[0][:200]}", flush=True)
                        continue
                    finally:
                        torch.cuda.empty_cache()
                    writer.writerow(row)
                    fh.flush()
                    print(" ".join(f"{k}={row[k]}" for k in FIELDS[:8]), flush=True)


def compare(path: Path, gpu_name: str) -> None:
    import pandas as pd
    from planner.catalog import gpu as catalog_gpu
    from planner.perf.moe_tables import MoeGeometry
    from planner.perf.sources import Geometry, op_source
    from planner.report.render import _md_table
    gpu = catalog_gpu(gpu_name)
    frame = pd.read_csv(path)
    frame = frame[frame.pairs > 0]
    geo = Geometry(heads=1, kv_heads=1, head_dim=128, gemm_dtype="bf16", kv_dtype="bf16", tp=1)
    rows = []
    for r in frame.itertuples():
        spec = catalog_model(r.model)
        mg = MoeGeometry(spec.hidden, spec.expert_ffn, spec.experts_per_token, spec.experts, int(r.moe_tp), int(r.ep),
                         "bf16")
        out = {"model": r.model, "layout": f"{r.moe_tp}x{r.ep}", "tokens": r.tokens, "measured_ms": r.layer_ms}
        for name, src in [(e, op_source(gpu, geo, e, "kernels")) for e in ("vllm", "sglang", "trtllm")] + \
                         [("roofline", op_source(gpu, geo, "vllm", "roofline"))]:
            s = float(src.moe_s(float(r.tokens), mg)) * 1e3
            tabled = name == "roofline" or src._moe.get(mg) is not None
            out[name] = f"{s / r.layer_ms - 1:+.0%}" + ("" if tabled else " (roofline)")
        rows.append(out)
    table = pd.DataFrame(rows)
    print(_md_table(list(table.columns), table.values.tolist()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="time on this machine's GPU, CSV written row by row")
    ap.add_argument("--compare", type=Path, help="compare a CSV of timings with the model")
    ap.add_argument("--gpu", default="h200")
    ap.add_argument("--deadline-s", type=float, default=300.0)
    ap.add_argument("--shape-budget-s", type=float, default=0.5)
    args = ap.parse_args(argv)
    if args.out:
        run(args.out, args.deadline_s, args.shape_budget_s)
    if args.compare:
        compare(args.compare, args.gpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
