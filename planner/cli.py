"""`planner` command: the entry point. Subcommands live in `cli_*.py`, one per concept.

Errors a user can fix (InputError) print one line and exit 2; an SLO no plan meets
(InfeasibleError) prints why and exits 3. Neither shows a traceback.
"""
from __future__ import annotations

import json
import sys

import click

from .errors import InfeasibleError, InputError

EXIT_BAD_INPUT = 2
EXIT_INFEASIBLE = 3


class GuardedGroup(click.Group):
    """A click group that turns the planner's user errors into one-line messages."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except InputError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except InfeasibleError as e:
            click.echo(f"infeasible: {e}", err=True)
            ctx.exit(EXIT_INFEASIBLE)
        except BrokenPipeError:  # `planner ... | head`
            sys.stderr.close()
            ctx.exit(0)


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=_json_default))


def _json_default(o):
    try:
        import numpy as np
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating):
            return float(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@click.group(cls=GuardedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="disagg-planner")
def main():
    """Capacity planner for disaggregated (prefill/decode) LLM serving.

    \b
    Typical use:
      planner trace stats traces/mixed.csv
      planner recommend --gpu a100 --trace traces/mixed.csv
      planner simulate --plan plan.json --trace traces/mixed.csv
      planner report --trace traces/mixed.csv --gpu a100 --gpu h100 -o report.html
    """


def _register() -> None:
    from . import cli_catalog, cli_trace
    main.add_command(cli_trace.trace)
    main.add_command(cli_catalog.catalog)
    for modname, attr in (("cli_recommend", "recommend"), ("cli_recommend", "calibrate"),
                          ("cli_simulate", "simulate"), ("cli_report", "report")):
        try:
            module = __import__(f"planner.{modname}", fromlist=[attr])
        except ModuleNotFoundError as e:
            if e.name != f"planner.{modname}":
                raise
            continue  # subcommand not built yet in this checkout
        if hasattr(module, attr):
            main.add_command(getattr(module, attr))


_register()
