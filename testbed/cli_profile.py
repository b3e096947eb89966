"""`testbed profile`: measure this machine's prefill, decode and KV-copy times for a (scaled)
OPT model and write the planner's profile CSV."""
from __future__ import annotations

import json
import sys
from dataclasses import replace

import click

from planner.cli.params import SEED, Float, Int, OutFile, Seconds, check_output_dir, check_output_file
from planner.errors import InputError

EXIT_BAD_INPUT = 2


def _int_list(text: str | None, flag: str, lo: int = 1, hi: int = 1_000_000) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        vals = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise InputError(f"{flag} {text!r}: expected comma-separated integers, e.g. 16,64,256") from None
    if not vals:
        raise InputError(f"{flag}: give at least one integer")
    bad = [v for v in vals if not lo <= v <= hi]
    if bad:
        raise InputError(f"{flag} {bad[0]}: each value must be an integer >= {lo} and <= {hi:,}")
    return vals


@click.command("profile")
@click.option("--model", "model_name", default="opt-125m", show_default=True,
              help="Catalog OPT model (opt-125m ... opt-66b) or a config.json path.")
@click.option("--layers", type=Int(lo=1, hi=1000), help="Scale down: keep this many decoder layers.")
@click.option("--hidden", type=Int(lo=1, hi=1_000_000), help="Scale down: this hidden size (a multiple of the head size).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]),
              help="Model dtype [default: fp32 on cpu, fp16 on cuda].")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Weight and input seed.")
@click.option("--weights-dir", type=click.Path(file_okay=False),
              help="Load real weights from this folder (save_pretrained layout) instead.")
@click.option("--prefill-tokens", help="Chunk sizes, e.g. 16,64,256,512 [default: by device].")
@click.option("--prefill-context", help="Cached context tokens before the chunk, e.g. 0,512.")
@click.option("--prefill-slices", help="Requests merged into one chunk, e.g. 1,4.")
@click.option("--decode-batch", help="Decode batch sizes, e.g. 1,8,64.")
@click.option("--decode-context", help="Context tokens per decoding request, e.g. 128,1024.")
@click.option("--kv-tokens", help="KV copy sizes in tokens, e.g. 16,512,2048.")
@click.option("--repeats", type=Int(lo=1, hi=1_000_000), help="Timed runs per point (median) [default: 5 cpu, 10 cuda].")
@click.option("--warmup", type=Int(lo=0, hi=1_000_000), help="Untimed runs per prefill/kv point first [default: 2 cpu, 3 cuda].")
@click.option("--decode-warmup", type=Int(lo=0, hi=1_000_000), help="Untimed steps per decode point first (steady state, as in a "
                                                "run) [default: 10].")
@click.option("--passes", type=Int(lo=1, hi=1000), default=1, show_default=True,
              help="Sweep the grid this many times; each row is the median over all passes "
                   "(robust to bursts of other load on a shared machine).")
@click.option("--prefill-idle-gap", type=Seconds(hi=3600), default=0.1, show_default=True,
              help="Also time chunks of one fresh request after this many seconds idle (rows with path "
                   "'idle': the planner's cost of a chunk that starts an idle instance); 0: none.")
@click.option("--decode-spread", type=Float(lo=0, hi=10), default=0.5, show_default=True,
              help="Coefficient of variation of the contexts within a decode batch (a server's "
                   "batch mixes lengths; 0: all equal, as profiles before 2026-11-25).")
@click.option("--threads", type=Int(lo=1, hi=1024), help="CPU threads for torch (default: torch's choice).")
@click.option("--classifier-layers", type=Int(lo=0, hi=1000), default=1, show_default=True,
              help="Length classifier run before each fresh prefill chunk's slices, as the "
                   "prefill worker does (testbed run's default); 0: profile prefill alone.")
@click.option("--classifier-hidden", type=Int(lo=1, hi=1_000_000), default=128, show_default=True,
              help="Hidden size of the length classifier (testbed run's default).")
@click.option("--decode-path", type=click.Choice(["workspace", "gather"]), default="workspace",
              show_default=True, help="Engine decode: the persistent batch workspace, or the "
                                      "previous per-layer gather (for comparison).")
@click.option("-o", "--output", required=True, type=OutFile(),
              help="Profile CSV to write.")
@click.option("--config-out", type=click.Path(),
              help="Also write the model's config.json here (file or folder) for "
                   "`planner ... --model PATH` to read a scaled model's shape.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def profile_cmd(model_name, layers, hidden, device, dtype, seed, weights_dir, prefill_tokens,
                prefill_context, prefill_slices, decode_batch, decode_context, kv_tokens, repeats,
                warmup, decode_warmup, passes, prefill_idle_gap, decode_spread, threads, classifier_layers, classifier_hidden, decode_path, output, config_out,
                as_json, quiet):
    """Time real prefill chunks, decode iterations and KV copies; write PROFILE CSV.

    \b
    Rows: device, model, kind (prefill|decode|kv), tokens, batch, context_tokens, bytes,
    seconds, repeats, path. The `model` column is the catalog name or the scaled name
    (e.g. opt-1.3b-l4-h512); --config-out writes that model's config.json.

    \b
    Examples:
      testbed profile --model opt-125m --layers 4 -o profile.csv --config-out opt-125m-l4.json
      testbed profile --model opt-1.3b --device cuda -o h100-opt-1.3b.csv
    """
    try:
        if config_out is not None:   # a .json file, or a folder to write config.json into
            (check_output_file if str(config_out).endswith(".json") else check_output_dir)(config_out, "--config-out")
        if weights_dir is not None:
            from .checks import check_weights_dir
            check_weights_dir(weights_dir)
        _run(model_name, layers, hidden, device, dtype, seed, weights_dir,
             dict(prefill_tokens=_int_list(prefill_tokens, "--prefill-tokens"),
                  prefill_context_tokens=_int_list(prefill_context, "--prefill-context", lo=0),
                  prefill_slices=_int_list(prefill_slices, "--prefill-slices", hi=4096),
                  decode_batch=_int_list(decode_batch, "--decode-batch", hi=100_000),
                  decode_context_tokens=_int_list(decode_context, "--decode-context"),
                  kv_tokens=_int_list(kv_tokens, "--kv-tokens"), repeats=repeats, warmup=warmup, decode_warmup=decode_warmup,
                  passes=passes, decode_spread=decode_spread, prefill_idle_gap_s=prefill_idle_gap),
             threads, output, config_out, as_json, quiet,
             classifier=(classifier_layers, classifier_hidden), decode_path=decode_path)
    except InputError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_BAD_INPUT)


def _run(model_name, layers, hidden, device, dtype, seed, weights_dir, overrides, threads, output,
         config_out, as_json, quiet, classifier=(1, 128), decode_path="workspace"):
    import torch

    from .engine import Engine
    from .model import build_model, config_name, write_config
    from .profile import default_grid, profile, summarize, write_profile_csv

    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is visible to torch here; use --device cpu")
    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    dtype = dtype or ("fp16" if device == "cuda" else "fp32")
    dev = torch.device(device)
    model = build_model(model_name, layers=layers, hidden=hidden, seed=seed, dtype=dtype, device=dev,
                        weights_dir=weights_dir)
    eng = Engine(model, decode_path=decode_path)
    name = config_name(model.config)
    cls = None
    c_layers, c_hidden = classifier
    if c_layers < 0 or c_hidden < 1:
        raise InputError(f"--classifier-layers must be >= 0 and --classifier-hidden >= 1, got {c_layers}, {c_hidden}")
    if c_layers > 0:
        from .workers.classifier import LengthClassifier
        cls = LengthClassifier(layers=c_layers, hidden=c_hidden, seed=seed, device=device, dtype=dtype)
    grid = default_grid(dev)
    grid = replace(grid, **{k: v for k, v in overrides.items() if v is not None})
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        grid = replace(grid, memory_budget_bytes=int(0.8 * free))
    rows = profile(eng, grid, model_name=name, seed=seed, progress=not quiet, classifier=cls)
    path = write_profile_csv(rows, output)
    cfg_path = write_config(model.config, config_out) if config_out else None
    summary = summarize(rows)
    if as_json:
        click.echo(json.dumps({"profile": str(path), "config": str(cfg_path) if cfg_path else None,
                               "model": name, "device": rows[0].device if rows else device,
                               "dtype": dtype, "rows": len(rows), **summary}, indent=2))
        return
    click.echo(f"{len(rows)} rows -> {path}" + (f"; config -> {cfg_path}" if cfg_path else ""))
    click.echo(f"model {name} ({dtype}) on {rows[0].device if rows else device}")
    click.echo("prefill tokens/s by chunk: " + ", ".join(
        f"{c}: {t:,.0f}" for c, t in summary["prefill_tokens_s"].items()))
    click.echo(f"saturation chunk (95% of best tokens/s): {summary['saturation_chunk_tokens']}")
    for ctx, by_batch in summary["decode_ms"].items():
        click.echo(f"decode ms at {ctx} context tokens/request, by batch: " + ", ".join(
            f"{b}: {ms:.2f}" for b, ms in by_batch.items()))
    for p, v in summary["kv_copy"].items():
        click.echo(f"kv {p}: {v['gb_s']:.2f} GB/s at {v['bytes']:,} bytes")
