"""Progress on stderr that suits where it goes: a live tqdm bar on a terminal; in a log
file or pipe, one plain line every few seconds (no carriage-return frames).

`progress_bar(total, desc, unit)` has the slice of tqdm's API the planner and the testbed
use (update, set_postfix_str, close, n): every command's bars go through it (the testbed's
request loops and profiler too), so none writes carriage-return frames into a log.
`working(what)` reports a step with no count (planning) once it has run longer than
`after_s`.
"""
from __future__ import annotations

import sys
import threading
import time

LINE_EVERY_S = 5.0
WORKING_AFTER_S = 2.0


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class LineProgress:
    """A line such as `simulate: 1,200/6,000 req (20%), 3.1 s` at most every `every_s` seconds."""

    def __init__(self, total: int, desc: str, unit: str, stream=None, every_s: float = LINE_EVERY_S):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.n = 0
        self.postfix = ""
        self.t0 = self.last = time.monotonic()
        self.printed = False

    def _line(self, now: float) -> str:
        pct = f" ({self.n / self.total:.0%})" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {self.n:,}/{self.total:,} {self.unit}{pct}, {now - self.t0:.1f} s{extra}"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self.printed = True
            print(self._line(now), file=self.stream, flush=True)

    def set_postfix_str(self, s: str) -> None:
        self.postfix = s

    def close(self) -> None:
        if self.printed:  # short runs stay silent in logs
            print(self._line(time.monotonic()) + " - done", file=self.stream, flush=True)


class NoProgress:
    """The same API, saying nothing (`--no-progress`)."""

    def __init__(self, total: int = 0):
        self.total, self.n = total, 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, unit: str, stream=None, disable: bool = False, **tqdm_kw):
    """A tqdm bar on a terminal (`tqdm_kw` go to it, e.g. leave=False), a `LineProgress`
    elsewhere, `NoProgress` if `disable`. All three count in `.n`."""
    if disable:
        return NoProgress(total)
    stream = stream or sys.stderr
    if _is_tty(stream):
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, unit=unit, file=stream, **tqdm_kw)
    return LineProgress(total, desc, unit, stream)


class working:
    """Context manager: after `after_s`, say `what` is still running - an updating line on a
    terminal, a line every LINE_EVERY_S otherwise - and how long it took at the end."""

    def __init__(self, what: str, stream=None, after_s: float = WORKING_AFTER_S, every_s: float | None = None):
        self.what, self.stream, self.after_s = what, stream or sys.stderr, after_s
        self.tty = _is_tty(self.stream)
        self.every_s = every_s if every_s is not None else (0.5 if self.tty else LINE_EVERY_S)
        self.done = threading.Event()
        self.spoke = False

    def _run(self) -> None:
        if self.done.wait(self.after_s):
            return
        while True:
            self.spoke = True
            msg = f"{self.what}... {time.monotonic() - self.t0:.0f} s"
            if self.tty:
                print("\r" + msg, end="", file=self.stream, flush=True)
            else:
                print(msg, file=self.stream, flush=True)
            if self.done.wait(self.every_s):
                return

    def __enter__(self):
        self.t0 = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        if self.spoke:
            end = "\r" if self.tty else ""
            print(f"{end}{self.what}: {time.monotonic() - self.t0:.1f} s", file=self.stream, flush=True)
        return False
