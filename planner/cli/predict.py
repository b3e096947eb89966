"""`planner predict`: what a closed-loop benchmark of a serving engine would measure."""
from __future__ import annotations

import difflib
import json
import math

import click

from planner.cli.params import MAX_TOKENS, Float, Int, OutFile
from planner.errors import InputError


def _assumed(row: dict, overrides: dict) -> str:
    """The engine defaults (for its version and the GPU) the prediction ran with, in the
    engine's own flag names; change them with --engine-setting."""
    from planner.bench.rows import resolve
    eng = resolve(row, overrides).engine
    flags = ", ".join(f"{k} {v}" for k, v in eng.settings().items())
    graphs = f"CUDA graphs up to batch {eng.graph_sizes[-1]}" if eng.graph_sizes else "no CUDA graphs"
    rate = eng.frontend_tokens_per_s
    front = ("front end streams without limit" if rate == float("inf") else
             f"front end streams at most {rate:,.0f} tokens/s (frontend_chunks_per_s x frontend_workers x "
             f"stream_interval)")
    return f"{eng.name}: {flags}, {graphs}, {front}"


def _engine_settings(items: tuple[str, ...]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--engine-setting {item!r}: expected NAME=VALUE, e.g. token_budget=16384")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


@click.command()
@click.option("--rows", "rows_path", type=click.Path(dir_okay=False), default=None,
              help="CSV of benchmark configurations (the columns of ../shared/silicon/dev.csv); measured "
                   "silicon_ttft_ms / silicon_tpot_ms columns are optional and, if present, scored.")
@click.option("-o", "--output", type=OutFile(), default=None,
              help="Write the rows with pred_ttft_ms, pred_tpot_ms, pred_tokens_per_s_per_gpu, source, status.")
@click.option("--model", default=None, help="One configuration: model (catalog name or Hugging Face id).")
@click.option("--gpu", default=None, help="GPU type or benchmark system name (h200, h200_sxm, b200, ...).")
@click.option("--engine", default="vllm", show_default=True, help="vllm | sglang | trtllm.")
@click.option("--dtype", "precision", default="bf16", show_default=True,
              help="Weight format: bf16, fp8 (per-tensor), fp8_block, fp4.")
@click.option("--tp", type=Int(lo=1, hi=4096), default=1, show_default=True,
              help="Tensor-parallel GPUs of attention (per attention-DP rank).")
@click.option("--dp", type=Int(lo=1, hi=4096), default=1, show_default=True,
              help="Attention data-parallel ranks (MoE models; the instance has tp x dp GPUs).")
@click.option("--ep", type=Int(lo=1, hi=4096), default=1, show_default=True,
              help="Expert-parallel size of the MoE layers (MoE TP = tp x dp / ep).")
@click.option("--moe-dtype", default=None,
              help="Routed experts' format when it differs from --dtype (fp8_block, fp4, mxfp4, int4).")
@click.option("--isl", type=Int(lo=1, hi=MAX_TOKENS), default=None, help="Input tokens per request.")
@click.option("--osl", type=Int(lo=1, hi=MAX_TOKENS), default=None, help="Output tokens per request.")
@click.option("--concurrency", type=Int(lo=1, hi=1_000_000), default=None, help="Closed-loop clients (requests in flight).")
@click.option("--prompts-per-client", type=Int(lo=1, hi=1000), default=10, show_default=True,
              help="Requests each client sends (the benchmark's --num-prompts / --max-concurrency); all "
                   "clients start at once and every request counts.")
@click.option("--range-ratio", type=Float(lo=0.0, hi=1.0, lo_open=True), default=0.8, show_default=True,
              help="Prompt and output lengths uniform in [r x ISL, ISL] and [r x OSL, OSL] "
                   "(benchmark_serving --random-range-ratio; 1: fixed lengths).")
@click.option("--engine-setting", "settings", multiple=True,
              help="Override an engine default, NAME=VALUE (token_budget, max_seqs, memory_fraction, "
                   "cpu_per_step_s, ...); repeat.")
@click.option("--literal-layout", is_flag=True,
              help="Take every row's parallel sizes as written. By default a row whose columns record an "
                   "engine's GPU count squared (tp_size 16, moe_tp_size 4, moe_ep_size 4: silicon-file rows "
                   "that repeat the TP4 EP4 measurements) is predicted as the 4-GPU engine; the layout "
                   "column says which.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def predict(rows_path, output, model, gpu, engine, precision, tp, dp, ep, moe_dtype, isl, osl, concurrency,
            prompts_per_client, range_ratio, settings, literal_layout, as_json):
    """Predict mean TTFT and TPOT of a closed-loop benchmark: N clients start at once and each
    sends its next request when the last one finishes, as InferenceMAX runs vLLM's
    benchmark_serving.py (--max-concurrency N --num-prompts 10N --random-range-ratio 0.8),
    the client behind ../shared/silicon/dev.csv.

    \b
    Examples:
      planner predict --model meta-llama/Llama-3.1-70B --gpu h200 --engine vllm --dtype fp8 \\
          --tp 4 --isl 1024 --osl 1024 --concurrency 64
      planner predict --model deepseek-ai/DeepSeek-R1 --gpu b200 --engine sglang --dtype fp8 \\
          --moe-dtype fp8_block --tp 1 --dp 8 --ep 8 --isl 1024 --osl 1024 --concurrency 256
      planner predict --rows ../shared/silicon/dev.csv -o predictions.csv
    Rows may be aggregated or disaggregated (xPyD: prefill_/decode_ columns); rows that
    cannot be predicted (pipeline parallelism, unknown models) keep a status saying why.
    """
    import pandas as pd

    from planner.bench.accuracy import render, table
    from planner.bench.predict import Client
    from planner.bench.rows import read_rows
    from planner.bench.run import predict_frame
    from planner.cli.output import echo_json

    overrides = _engine_settings(settings)
    if rows_path:
        df = read_rows(rows_path)
    else:
        missing = [n for n, v in (("--model", model), ("--gpu", gpu), ("--isl", isl), ("--osl", osl),
                                  ("--concurrency", concurrency)) if v is None]
        if missing:
            raise InputError(f"give --rows FILE, or one configuration with {', '.join(missing)}")
        for name, v in (("--tp", tp), ("--isl", isl), ("--osl", osl), ("--concurrency", concurrency)):
            if v < 1:
                raise InputError(f"{name} must be >= 1, got {v}")
        _check_names(model, gpu, engine)
        df = pd.DataFrame([{"id": "cli", "model_path": model, "system": gpu, "backend": engine,
                            "precision": precision.replace("_block", ""), "gemm_quant_mode": precision,
                            "moe_quant_mode": moe_dtype or precision, "mode": "agg", "isl": isl, "osl": osl,
                            "concurrency": concurrency, "tp_size": tp, "attention_dp_size": dp, "moe_ep_size": ep,
                            "pp_size": 1, "batch_size": -(-concurrency // dp)}])
    engines = {str(b).lower() for b in df["backend"]} if overrides else set()
    pred = predict_frame(df, {e: overrides for e in engines}, progress=len(df) > 1, literal_layout=literal_layout,
                        client=Client(prompts_per_client, range_ratio))
    reread = int(pred["layout"].str.contains("(file:", regex=False).sum())
    if output:
        from planner.outputs import write_csv
        write_csv(pred, output, index=False)
    rows = table(pred)
    if as_json:
        cols = ["id", "pred_ttft_ms", "pred_tpot_ms", "pred_tokens_per_s_per_gpu", "source", "status", "layout"]
        recs = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                for r in pred[cols].to_dict("records")]
        return echo_json({"rows": recs if len(pred) <= 50 or not output else len(pred), "accuracy": rows,
                          "statuses": pred["status"].value_counts().to_dict(), "layouts_reread": reread})
    if len(pred) == 1 and not rows:
        r = pred.iloc[0]
        if r["status"] != "ok":
            raise InputError(f"cannot predict this configuration: {r['status']}")
        click.echo(f"TTFT {r['pred_ttft_ms']:.1f} ms, TPOT {r['pred_tpot_ms']:.2f} ms, "
                   f"{r['pred_tokens_per_s_per_gpu']:.0f} output tokens/s per GPU")
        click.echo(f"client: {concurrency} clients at once, {prompts_per_client} requests each, lengths uniform in "
                   f"[{range_ratio:g} L, L] (--prompts-per-client, --range-ratio)")
        click.echo(f"step costs: {r['source']}")
        click.echo(f"engine settings assumed: {_assumed(df.iloc[0].to_dict(), overrides)}")
        return
    counts = pred["status"].where(pred["status"] == "ok", "not predicted: " + pred["status"]).value_counts()
    click.echo(f"{len(pred)} rows: " + "; ".join(f"{n} {s}" for s, n in counts.items()))
    if reread:
        click.echo(f"{reread} rows record an engine's GPU count squared (e.g. tp_size 16, moe_tp_size 4, "
                   "moe_ep_size 4): predicted as the engine of its square root (TP4 EP4), see the layout "
                   "column; --literal-layout takes them as written")
    if rows:
        click.echo(render(rows))
    if output:
        click.echo(f"wrote {output}")


def _check_names(model: str, gpu: str, engine: str) -> None:
    from planner import catalog
    from planner.engines.config import ALIASES, ENGINES
    key = engine.strip().lower()
    if key not in ENGINES and key not in ALIASES:
        close = difflib.get_close_matches(key, list(ENGINES) + list(ALIASES), n=3)
        raise InputError(f"unknown engine {engine!r}" + (f"; did you mean {', '.join(close)}?" if close else
                                                         f"; use one of {', '.join(ENGINES)}"))
    catalog.gpu(gpu)
    catalog.model(model)
