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


# name -> (module:attribute, one-line help). Commands are imported only when run, so that
# `planner --help` does not pay for pandas, scipy and the solver (tests/test_cli_manners.py
# checks these lines against each command's own help).
COMMANDS = {
    "trace": ("planner.cli.trace:trace", "Inspect, generate and convert request traces."),
    "catalog": ("planner.cli.catalog:catalog", "List the GPU, model and price catalogs."),
    "recommend": ("planner.cli.recommend:recommend", "Plan prefill/decode instances, chunk size and TP for a trace."),
    "calibrate": ("planner.cli.recommend:calibrate", "Fit the performance model to a measured profile CSV."),
    "simulate": ("planner.cli.simulate:simulate", "Replay a trace against a plan in the simulator."),
    "report": ("planner.cli.report:report", "Cost report for procurement (HTML or Markdown)."),
    "predict": ("planner.cli.predict:predict", "What a closed-loop benchmark of an engine measures; score it."),
    "export": ("planner.cli.export:export", "Launch commands and manifests for a plan (vLLM, SGLang, Dynamo, k8s)."),
    "explain": ("planner.cli.explain:explain", "What a term in the output means (TTFT, TPOT, chunk, ...)."),
}


class LazyGroup(GuardedGroup):
    """Lists COMMANDS without importing them; imports one when it is run or asked for help."""

    def list_commands(self, ctx):
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx, name):
        if name in self.commands:
            return self.commands[name]
        if name not in COMMANDS:
            return None
        import importlib
        module, attr = COMMANDS[name][0].split(":")
        cmd = getattr(importlib.import_module(module), attr)
        self.add_command(cmd, name)
        return cmd

    def format_commands(self, ctx, formatter):
        rows = [(n, COMMANDS[n][1] if n in COMMANDS else self.commands[n].get_short_help_str())
                for n in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="disagg-planner")
def main():
    """Capacity planner for disaggregated (prefill/decode) LLM serving.

    \b
    Typical use:
      planner trace stats traces/mixed.csv
      planner recommend --gpu a100 --trace traces/mixed.csv -o plan.json
      planner simulate --plan plan.json --trace traces/mixed.csv
      planner export --plan plan.json --to vllm -o deploy/
      planner report --trace traces/mixed.csv --gpu a100 --gpu h100 -o report.html
    \b
    Terms (TTFT, TPOT, chunk, TP, ...): `planner explain TERM`, or docs/glossary.md.
    """
