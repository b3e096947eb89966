"""Replays of one verification trace, run on the machine's cores.

`Replayer(vt, slo, seed, workers)` submits replays (`planner.sim.verify.replay` of a
deployment, optionally at a load or step-cost factor) and margin searches, and hands back
handles whose `get()` waits for the result. With `workers` > 1 a pool of forked processes
runs them (the trace is inherited at the fork, not copied per job; results are small
dicts); with 1, or where fork is unavailable, a handle computes its replay when first
asked, so a speculative submission that is never asked for costs nothing. Every replay is
deterministic (seeded), so results do not depend on the number of workers.

A pool that fails - a worker that dies (the pool reports it broken) or a result that does
not come within `RESULT_TIMEOUT_S` - is shut down and every replay from then on, that one
included, runs in this process: the answer is the same, only slower.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

from planner.sim.verify import replay

_STATE: dict = {}
DEFAULT_WORKERS = 2
RESULT_TIMEOUT_S = 120.0


def default_workers() -> int:
    """PLANNER_JOBS if set, else min(DEFAULT_WORKERS, the CPUs this process may use)."""
    env = os.environ.get("PLANNER_JOBS")
    if env and env.strip().isdigit():
        return max(1, int(env))
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(DEFAULT_WORKERS, cpus))


def _replay_job(dep, kw):
    return replay(dep, _STATE["vt"], _STATE["slo"], seed=_STATE["seed"], **kw)


def _call_job(fn, args):
    return fn(_STATE["vt"], _STATE["slo"], _STATE["seed"], *args)


class _Lazy:
    def __init__(self, fn):
        self.fn, self.done, self.value = fn, False, None

    def get(self):
        if not self.done:
            self.value, self.done = self.fn(), True
        return self.value


class _Pooled:
    """A pool future, with the same work done here if the pool fails."""

    def __init__(self, owner, future, local):
        self.owner, self.future, self.local = owner, future, local
        self.done, self.value = False, None

    def get(self):
        if not self.done:
            try:
                if self.owner.pool is None:
                    raise BrokenProcessPool("pool shut down")
                self.value = self.future.result(timeout=RESULT_TIMEOUT_S)
            except (BrokenProcessPool, FutureTimeout, OSError):
                self.owner.abandon()
                self.value = self.local()
            self.done = True
        return self.value


class Replayer:
    def __init__(self, vt, slo, seed: int = 0, workers: int = 1):
        self.vt, self.slo, self.seed = vt, slo, seed
        self.workers = workers
        self.pool = None
        self.submitted = 0
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            _STATE.update(vt=vt, slo=slo, seed=seed)
            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))

    def _local_replay(self, dep, kw):
        return lambda: replay(dep, self.vt, self.slo, seed=self.seed, **kw)

    def submit(self, dep, **kw):
        """A handle on the replay of `dep` (kw: step_scale, rate_scale)."""
        self.submitted += 1
        return self._handle(local=self._local_replay(dep, kw), job=_replay_job, args=(dep, kw))

    def call(self, fn, *args):
        """A handle on fn(vt, slo, seed, *args) (a module-level function: a margin search)."""
        def local():
            return fn(self.vt, self.slo, self.seed, *args)
        return self._handle(local=local, job=_call_job, args=(fn, args))

    def _handle(self, local, job, args):
        """The pool's future of job(*args), or `local` run here when there is no pool or it broke."""
        if self.pool is None:
            return _Lazy(local)
        try:
            return _Pooled(self, self.pool.submit(job, *args), local)
        except (BrokenProcessPool, RuntimeError):
            self.abandon()
            return _Lazy(local)

    def abandon(self) -> None:
        """Stop using the pool (it failed): what is left runs in this process."""
        self._stop()

    def close(self) -> None:
        self._stop()
        _STATE.clear()

    def _stop(self) -> None:
        """Shut the pool down now: queued replays cancelled, running ones (speculative, no
        longer wanted) stopped, the workers reaped."""
        pool, self.pool = self.pool, None
        if pool is None:
            return
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            try:
                p.terminate()
            except (OSError, AttributeError):
                pass
        for p in procs:
            try:
                p.join(timeout=2.0)
            except (OSError, AttributeError, AssertionError):
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
