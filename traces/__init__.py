"""The request-trace layer: one in-memory Trace, readers for the formats users bring, a
synthetic generator for TetriInfer's workload classes, and trace statistics."""
from .io import FORMAT_NAMES, read_trace, write_trace
from .trace import Trace

__all__ = ["Trace", "read_trace", "write_trace", "FORMAT_NAMES"]
