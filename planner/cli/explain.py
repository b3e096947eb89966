"""`planner explain TERM`: what a term in the output means."""
from __future__ import annotations

import click

from planner.errors import InputError


@click.command()
@click.argument("term", nargs=-1)
def explain(term):
    """Explain TERM (TTFT, TPOT, chunk, TP, disaggregated, ...); without TERM, list them all.
    The same list is docs/glossary.md.

    \b
    Examples:
      planner explain TPOT
      planner explain chunked coupled
      planner explain
    """
    from planner.glossary import TERMS, lookup, suggestions
    if not term:
        for name, (_, text) in TERMS.items():
            click.echo(f"{name}: {text}\n")
        return
    words = " ".join(term)
    hit = lookup(words)
    if hit is None:
        near = suggestions(words)
        raise InputError(f"no glossary entry for {words[:60]!r}" + (f"; did you mean {', '.join(near)}?" if near else "")
                         + " - `planner explain` lists every term")
    click.echo(f"{hit[0]}: {hit[1]}")
