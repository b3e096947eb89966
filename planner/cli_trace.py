"""`planner trace stats|generate|convert` (built out in the trace-layer work)."""
import click


@click.group()
def trace():
    """Inspect, generate and convert request traces."""
