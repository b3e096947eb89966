"""`planner catalog gpus|models|prices`: what the planner knows, with sources."""
from __future__ import annotations

from dataclasses import asdict

import click

from planner import catalog as cat
from planner.catalog.model_catalog import hf_ids
from planner.cli.output import echo_json
from planner.errors import InputError


@click.group()
def catalog():
    """List the GPU, model and price catalogs.

    \b
    Examples:
      planner catalog gpus
      planner catalog prices --gpu h100
    """


def _table(rows: list[dict], cols: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    click.echo("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        click.echo("  ".join(str(r[c]).ljust(widths[c]) for c in cols))


@catalog.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def gpus(as_json):
    """GPU types: dense FP16 TFLOP/s, memory, bandwidths, datasheet source.

    \b
    Examples:
      planner catalog gpus
      planner catalog gpus --json
    """
    rows = [asdict(g) | {"aliases": ",".join(g.aliases)} for g in cat.gpus().values()]
    if as_json:
        return echo_json(rows)
    _table(rows, ["name", "aliases", "fp16_tflops", "memory_gb", "memory_gb_s", "link_gb_s", "network_gbit_s"])


@catalog.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--dtype", default=None,
              help="Weight dtype for weight_gb (fp16, bf16, fp8, int4, or a format: fp8_block, nvfp4, mxfp4); "
                   "default: as each checkpoint stores its weights.")
@click.option("--kv-dtype", default=None, help="KV-cache dtype for kv_bytes_per_token (default: --dtype if it is "
                                               "a KV dtype, else bf16).")
def models(as_json, dtype, kv_dtype):
    """Models: total and active parameters (per token), weight bytes and KV bytes per token
    (GQA- and MLA-aware), from models.csv and the bundled Hugging Face configs. Any of these
    names, a Hugging Face id (the hf_id column, any case) or a config.json path works as --model.

    \b
    Examples:
      planner catalog models
      planner catalog models --dtype fp8 --json
    """
    if dtype is not None and dtype not in cat.DTYPE_BYTES and dtype not in cat.WEIGHT_FORMAT_BYTES:
        known = dict.fromkeys([*cat.DTYPE_BYTES, *cat.WEIGHT_FORMAT_BYTES])
        raise InputError(f"--dtype {dtype!r}: use one of {', '.join(known)}")
    kv = kv_dtype or (dtype if dtype in cat.DTYPE_BYTES else "bf16")
    cat.dtype_bytes(kv)
    rows, written = [], hf_ids()
    for m in cat.models().values():
        ids = [written[a] for a in m.aliases if a in written]
        rows.append(asdict(m) | {"aliases": ",".join(m.aliases), "hf_id": ids[0] if ids else "", "kind": m.kind,
                                 "params_b": round(m.params / 1e9, 3), "active_b": round(m.active_params / 1e9, 3),
                                 "format": m.weight_format if dtype is None else dtype,
                                 "weight_gb": round(m.weight_bytes(dtype) / 1e9, 2),
                                 "kv_bytes_per_token": int(m.kv_bytes_per_token(kv))})
    if as_json:
        return echo_json(rows)
    _table(rows, ["name", "kind", "params_b", "active_b", "format", "weight_gb", "kv_bytes_per_token", "layers",
                  "hidden", "heads", "kv_heads", "max_context", "hf_id"])


@catalog.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--gpu", "gpu_name", default=None, help="Only this GPU type.")
@click.option("--provider", default=None, help="Only this provider's offers.")
@click.option("--prices", "prices_file", type=click.Path(dir_okay=False), default=None,
              help="Your own offers (CSV in the form of planner/data/prices.csv: gpu,provider,kind,usd_per_gpu_hour,"
                   "as_of[,source,note]), checked and listed in place of the catalog's for the GPUs it names - "
                   "as `recommend --prices` would price them.")
def prices(as_json, gpu_name, provider, prices_file):
    """Public GPU-hour prices by provider and kind (on-demand, spot, reserved), with dates;
    rows 6 months old or more are flagged in the age column. Plans price a GPU at the
    cheapest listed on-demand offer unless --provider, --price or --prices says otherwise.

    \b
    Examples:
      planner catalog prices --gpu h100
      planner catalog prices --provider aws --json
      planner catalog prices --prices docs/examples/my_prices.csv"""
    offers = list(cat.prices())
    if prices_file:
        own = cat.read_price_file(prices_file)
        if not any(isinstance(v, cat.OfferList) for v in own.values()):
            raise InputError(f"--prices {prices_file}: gpu,usd_per_gpu_hour rows are flat prices, not offers; "
                             "`recommend --prices` takes them as they are (add provider,kind,as_of columns to list them)")
        offers = [p for p in offers if p.gpu not in own] + [p for v in own.values() for p in v.offers]
    rows = [asdict(p) | {"age": (f"{cat.months_old(p.as_of)} months, STALE" if cat.price_age_note(p.as_of)
                                 else "current")} for p in offers]
    if gpu_name:
        name = cat.gpu(gpu_name).name
        rows = [r for r in rows if r["gpu"] == name]
    if provider:
        known = sorted({r["provider"] for r in rows})
        rows = [r for r in rows if r["provider"] == provider.lower()]
        if not rows:
            raise InputError(f"--provider {provider!r}: no offers listed from it here; providers: {', '.join(known)}")
    if as_json:
        return echo_json(rows)
    _table(rows, ["gpu", "provider", "kind", "usd_per_gpu_hour", "as_of", "age", "note"])
