"""Capacity planner for disaggregated (prefill/decode) LLM serving. The command is
`planner` (planner.cli); `python -m planner` runs it too."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("disagg-planner")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
