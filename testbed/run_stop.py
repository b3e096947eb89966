"""What lets a testbed run stop in order and keep what finished, whatever stops it.

`StopSignals`: SIGINT and SIGTERM set a flag instead of raising KeyboardInterrupt (or
ending the process) wherever the main thread happens to be: an exception raised inside a
finaliser or callback is printed and lost (CPython), and the run would go on. The replay
loop checks the flag (it wakes at least every 0.5 s) and stops the run in order: records
written, workers stopped, shared memory freed. Only in the main thread; the previous
handlers come back with restore().

`Journal`: each finished request's record appended to a CSV as it finishes (header
first, flushed each time): what a launcher killed outright (SIGKILL) leaves for the user.
"""
from __future__ import annotations

import signal
import threading

import numpy as np

from planner.records import FINISHED, STATUS_COLUMN


class StopSignals:
    NAMES = {"SIGINT": "Ctrl-C", "SIGTERM": "SIGTERM"}

    def __init__(self):
        self.pressed = ""          # the signal's name once one came
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame):
        name = signal.Signals(signum).name
        self.pressed = self.NAMES.get(name, name)

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}


class Journal:
    def __init__(self, path: str | None, cols: dict):
        self.cols = cols
        self.f = None
        if path:
            self.f = open(path, "w", encoding="utf-8")
            self.f.write(",".join(list(cols) + [STATUS_COLUMN]) + "\n")
            self.f.flush()

    def add(self, rid: int) -> None:
        if self.f is not None:
            self.f.write(",".join(_cell(self.cols[c][rid]) for c in self.cols) + f",{FINISHED}\n")
            self.f.flush()

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


def _cell(v) -> str:
    return f"{v:.6f}" if isinstance(v, (float, np.floating)) else str(v)
