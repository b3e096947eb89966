"""`planner catalog gpus|models|prices`: what the planner knows, with sources."""
from __future__ import annotations

from dataclasses import asdict

import click

from planner import catalog as cat
from planner.cli.output import echo_json


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
@click.option("--dtype", default="fp16", show_default=True, help="Weight/KV dtype for the byte columns.")
def models(as_json, dtype):
    """Models: parameters, weight bytes and KV bytes per token (GQA-aware).

    \b
    Examples:
      planner catalog models
      planner catalog models --dtype fp8 --json
    """
    rows = []
    for m in cat.models().values():
        rows.append(asdict(m) | {"aliases": ",".join(m.aliases), "params_b": round(m.params / 1e9, 3),
                                 "weight_gb": round(m.weight_bytes(dtype) / 1e9, 2),
                                 "kv_bytes_per_token": int(m.kv_bytes_per_token(dtype))})
    if as_json:
        return echo_json(rows)
    _table(rows, ["name", "params_b", "weight_gb", "kv_bytes_per_token", "layers", "hidden", "heads",
                  "kv_heads", "max_context"])


@catalog.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--gpu", "gpu_name", default=None, help="Only this GPU type.")
def prices(as_json, gpu_name):
    """Public GPU-hour prices by provider and kind (on-demand, spot, reserved), with dates;
    rows 6 months old or more are flagged in the age column.

    \b
    Examples:
      planner catalog prices --gpu h100
      planner catalog prices --json"""
    rows = [asdict(p) | {"age": (f"{cat.months_old(p.as_of)} months, STALE" if cat.price_age_note(p.as_of)
                                 else "current")} for p in cat.prices()]
    if gpu_name:
        name = cat.gpu(gpu_name).name
        rows = [r for r in rows if r["gpu"] == name]
    if as_json:
        return echo_json(rows)
    _table(rows, ["gpu", "provider", "kind", "usd_per_gpu_hour", "as_of", "age", "note"])
