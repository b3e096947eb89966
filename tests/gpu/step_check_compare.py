"""Compare steps timed by tests/gpu/step_check.py with the step-cost model's GPU time for
the same shapes: per engine's kernel tables (and the fitted roofline), whole step, GEMMs,
attention and the rest, as model / measured - 1. The model's all-reduces, host launch and
engine CPU time are left out (the timed steps ran on one GPU, replayed from CUDA graphs).

    python tests/gpu/step_check_compare.py docs/profiles/h200-steps.csv --gpu h200 [--markdown]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from planner.catalog import gpu as catalog_gpu, model as catalog_model  # noqa: E402
from planner.perf.layers import Layout  # noqa: E402
from planner.perf.step import StepModel  # noqa: E402
from planner.report.render import _md_table  # noqa: E402

GEMM_OPS = ("qkv_proj", "o_proj", "mlp_up", "mlp_down", "lm_head_sampling")
ATTENTION_OPS = ("attention_context", "attention_generation")
LEFT_OUT = ("allreduce", "host_launch", "engine_cpu")


def predicted(row, gpu, source: str, engine: str) -> dict:
    spec = catalog_model(row.model)
    step = StepModel(gpu, spec, gemm_dtype=row.dtype, kv_dtype="bf16", engine=engine, source=source,
                     layout=Layout(tp=int(row.tp)))
    if row.kind == "prefill":
        ops = step.step([row.tokens], [0]).ops
    else:   # decode, or a verify pass: batch x tokens-per-request rows over each request's KV
        ops = step.step([1] * int(row.tokens), [row.context] * int(row.tokens)).ops
    gemm = sum(ops[k] for k in GEMM_OPS)
    attn = sum(ops[k] for k in ATTENTION_OPS)
    full = sum(v for k, v in ops.items() if k not in LEFT_OUT)
    return {"full": full * 1e3, "gemm": gemm * 1e3, "attention": attn * 1e3, "other": (full - gemm - attn) * 1e3}


def compare(frame: pd.DataFrame, gpu_name: str, sources: list[tuple[str, str]]) -> pd.DataFrame:
    gpu = catalog_gpu(gpu_name)
    rows = []
    for row in frame.itertuples():
        for source, engine in sources:
            p = predicted(row, gpu, source, engine)
            rows.append({"model": row.model, "dtype": row.dtype, "tp": row.tp, "kind": row.kind,
                         "shape": f"{row.tokens}" if row.kind == "prefill" else
                         f"{row.batch}x{row.context}" + (f" x{row.tokens // row.batch}q" if row.kind == "verify" else ""),
                         "model_src": f"{source}:{engine}" if source == "kernels" else source,
                         "measured_ms": row.full_ms, "predicted_ms": round(p["full"], 3),
                         **{f"{k}_err": p[k] / getattr(row, f"{k}_ms") - 1
                            for k in ("full", "gemm", "attention") if getattr(row, f"{k}_ms") > 0},
                         "other_meas_ms": row.other_ms, "other_pred_ms": round(p["other"], 3)})
    return pd.DataFrame(rows)


def _median(s) -> str:
    return f"{statistics.median(s):+.0%}"


def summary(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Median model / measured - 1 of the whole step, its GEMMs and its attention, and the
    median milliseconds of the rest (measured, modelled), per group."""
    return (table.groupby(by).agg(shapes=("full_err", "size"), step=("full_err", _median), gemm=("gemm_err", _median),
                                  attention=("attention_err", _median), other_ms_measured=("other_meas_ms", "median"),
                                  other_ms_model=("other_pred_ms", "median"))
            .round(2).reset_index())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("steps", type=Path)
    ap.add_argument("--gpu", default="h200")
    ap.add_argument("--engines", default="vllm,sglang,trtllm")
    ap.add_argument("--rows", action="store_true", help="print every shape, not only the summary")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    frame = pd.read_csv(args.steps)
    sources = [("kernels", e) for e in args.engines.split(",")] + [("roofline", "vllm")]
    table = compare(frame, args.gpu, sources)
    if args.rows:
        outs = [table.assign(**{c: table[c].map(lambda v: f"{v:+.0%}") for c in ("full_err", "gemm_err", "attention_err")})]
    else:
        first = sources[0][1]
        outs = [summary(table, ["model_src", "kind"]),
                summary(table[table.model_src == f"kernels:{first}"], ["model_src", "model", "dtype", "tp", "kind"])]
    for out in outs:
        print(_md_table(list(out.columns), out.values.tolist()) if args.markdown else out.to_string(index=False))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
