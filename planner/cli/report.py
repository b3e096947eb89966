"""`planner report`: a cost report to decide from (HTML or Markdown, figures included)."""
from __future__ import annotations

from pathlib import Path

import click

from planner import catalog
from planner.search.candidates import SLO
from planner.errors import InputError
from planner.cli.params import (MAX_REQUESTS, SEED, TPOT_BARE_BELOW_S, TTFT_BARE_BELOW_S, Int, OutDir, OutFile,
                                Seconds)


MAX_LOAD = 1e4   # load scales (x the trace's rate)


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not vals or any(not 0 < v <= MAX_LOAD for v in vals):
        raise InputError(f"{what}: expected numbers > 0 and at most {MAX_LOAD:g}, got {text!r}")
    return vals


def _price_file(value: str | None) -> str | None:
    """`--prices FILE` (as `recommend --prices`); a provider name is --provider's job."""
    if value is None or Path(value).is_file():
        return value
    providers = sorted({p.provider for p in catalog.prices()})
    if value.lower() in providers:
        raise InputError(f"--prices takes a CSV file; to price from {value.lower()}, pass --provider {value.lower()}")
    raise InputError(f"--prices {value!r}: no such file; give a CSV with columns gpu,usd_per_gpu_hour")


@click.command()
@click.option("--trace", "trace_path", required=True, type=click.Path(dir_okay=False),
              help="Request trace (any format `planner trace stats` reads).")
@click.option("--gpu", "gpus", multiple=True, required=True,
              help="GPU type to compare (repeat: --gpu a100 --gpu h100 --gpu l4); with several, the best mix too.")
@click.option("--gpu-spec", "gpu_spec_files", multiple=True, type=click.Path(dir_okay=False),
              help="YAML or CSV file adding a GPU the catalog lacks (as `recommend --gpu-spec`).")
@click.option("--model", default=catalog.DEFAULT_MODEL, show_default=True,
              help="Catalog name, Hugging Face id or config.json path (default: a current model, README).")
@click.option("--slo-ttft", type=Seconds(lo_open=True, bare_below=TTFT_BARE_BELOW_S), default=SLO.ttft_s,
              show_default=True, help="TTFT target: 0.5 (seconds), 500ms or 0.5s.")
@click.option("--slo-tpot", type=Seconds(lo_open=True, bare_below=TPOT_BARE_BELOW_S), default=SLO.tpot_s,
              show_default=True, help="TPOT target: 50ms, 0.05s or 0.05 (seconds).")
@click.option("--slo-jct", type=Seconds(lo_open=True), default=None, help="JCT target: 20 (seconds) or 20s (off by default).")
@click.option("--slo-percentile", type=click.Choice(["50", "90", "99"]), default="90", show_default=True)
@click.option("--prices", "prices_arg", default=None, metavar="FILE",
              help="CSV of gpu,usd_per_gpu_hour overrides.")
@click.option("--provider", default=None,
              help="Price from this provider's catalog offers [default: the cheapest listed offer].")
@click.option("--price", "price_items", multiple=True, help="GPU=USD_PER_GPU_HOUR override, e.g. a100=1.79.")
@click.option("--price-kind", type=click.Choice(catalog.PRICE_KINDS), default="on_demand", show_default=True)
@click.option("--loads", default="0.25,0.5,1,2,4", show_default=True,
              help="Load scales (x the trace's rate) for the cost-vs-load sweep.")
@click.option("--sim-loads", default="0.5,2", show_default=True,
              help="Loads (besides 1x) simulated on the latency-vs-load curves.")
@click.option("--windows", "window_s", type=Seconds(hi=1e9), default=300.0, show_default=True,
              help="Window of the plans over time, seconds (0: leave that section out).")
@click.option("--max-sim-requests", type=Int(lo=1, hi=MAX_REQUESTS), default=20_000, show_default=True,
              help="Simulations replay at most this many requests (the first ones).")
@click.option("--figures-dir", type=OutDir(), default=None,
              help="Also write the figures as PNG files here (Markdown output always does).")
@click.option("--title", default=None)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("-o", "--output", required=True, type=OutFile(),
              help="report.html (one self-contained file) or report.md (PNGs in report_figures/).")
@click.option("--json", "as_json", is_flag=True, help="Also print the report's data as JSON.")
@click.option("--overlong", type=click.Choice(["reject", "truncate", "keep"]), default="reject", show_default=True,
              help="Requests longer than the model's context: reject (as engines do), truncate or keep; applied "
                   "once, to every plan and simulation of the report.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Replay each option's candidates in the simulator before choosing (as `planner recommend`).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
def report(trace_path, gpus, model, slo_ttft, slo_tpot, slo_jct, slo_percentile, prices_arg, provider, price_items,
           price_kind, loads, sim_loads, window_s, max_sim_requests, figures_dir, title, seed, output, as_json,
           progress, gpu_spec_files=(), overlong="reject", verify=True):
    """Cost report for procurement: the cheapest plan per GPU type and for the best mix, with
    cost, latency (predicted and simulated), load and price sensitivity, and plans over time.

    \b
    Example:
      planner report --trace t.csv --gpu a100 --gpu h100 --gpu l4 -o report.html
    """
    from traces import read_trace

    from planner.cli.output import echo_json
    from planner.report import write_report
    from planner.report.gather import build_report

    out = Path(output)
    if out.suffix.lower() not in (".html", ".htm", ".md"):
        raise InputError(f"-o {output}: give a .html or .md file name")
    if max_sim_requests < 1:
        raise InputError("--max-sim-requests must be >= 1")
    if window_s < 0:
        raise InputError("--windows must be >= 0 seconds")
    price_file = _price_file(prices_arg)
    gpus = tuple(g.strip() for item in gpus for g in item.split(",") if g.strip())
    from planner.catalog.gpu_spec import specs_and_prices
    _, spec_prices = specs_and_prices(gpu_spec_files)
    overrides = {**spec_prices, **catalog.parse_price_overrides(price_items, price_file)}
    slo = SLO(ttft_s=slo_ttft, tpot_s=slo_tpot, percentile=int(slo_percentile), jct_s=slo_jct)
    if not (slo.ttft_s > 0 and slo.tpot_s > 0):
        raise InputError("SLO targets must be > 0 seconds")
    trace = read_trace(trace_path)
    data, figures = build_report(
        trace, gpus, model=model, slo=slo, price_kind=price_kind, provider=provider, overrides=overrides,
        price_file=price_file, loads=_floats(loads, "--loads"), sim_loads=_floats(sim_loads, "--sim-loads"),
        window_s=window_s or None, max_sim_requests=max_sim_requests, seed=seed, progress=progress, title=title,
        overlong=overlong, verify=verify)
    written = write_report(data, figures, out, figures_dir)
    if as_json:
        echo_json(data)
    else:
        click.echo(data["recommendation"])
        click.echo(f"wrote {', '.join(str(p) for p in written)}")
