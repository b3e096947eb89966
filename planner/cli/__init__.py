"""`planner` command: the entry point. Subcommands live in `planner/cli/*.py`, one per concept.

Errors a user can fix (InputError) print one line and exit 2; an SLO no plan meets
(InfeasibleError) prints why and exits 3. Neither shows a traceback.
"""
from __future__ import annotations

import sys

import click

from planner.errors import InfeasibleError, InputError

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
    from planner.cli import catalog, export, predict, recommend, report, simulate, trace
    for command in (trace.trace, catalog.catalog, recommend.recommend, recommend.calibrate,
                    simulate.simulate, report.report, predict.predict, export.export):
        main.add_command(command)


_register()
