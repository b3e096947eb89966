"""The plan's prefill and decode processes as a request service for the HTTP front.

The launcher (`launcher.Cluster`), the global scheduler (`GlobalScheduler`: least-loaded
prefill routing, the plan's dispatcher), the worker configuration (`run.worker_config`)
and the workers are `testbed run`'s; what differs is where requests come from (HTTP
requests as they arrive, with their own token ids) and where tokens go (to each request's
stream as they are made: the prefill worker's first token, then every decode iteration's).

Everything runs on the server's asyncio loop: the workers' control connections are
watched with `loop.add_reader` (and a watchdog every 0.5 s for silent workers), so there
is no thread and no lock. A worker that dies, hangs or fails ends every request in flight
with an error and calls `on_failure` (the server then stops).
"""
from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field

import numpy as np

from .global_scheduler import GlobalScheduler
from .kv import NEEDS_GROUP
from .launcher import Cluster, ClusterSpec, WorkerFailed
from .run import RunOptions, _cpus_for, worker_config

WATCHDOG_S = 0.5


class Overloaded(RuntimeError):
    """More requests in flight than the server takes (HTTP 429)."""


class Unavailable(RuntimeError):
    """The processes failed or the server is stopping (HTTP 503)."""


@dataclass
class LiveRequest:
    rid: int
    prompt_tokens: int
    max_tokens: int
    min_tokens: int
    stop_ids: tuple[int, ...]
    predicted_tokens: int
    ids: list | None                  # prompt ids, until handed to the decode process
    events: asyncio.Queue = field(default_factory=asyncio.Queue)   # ("token", id) / ("done", None) / ("error", why)
    tokens: int = 0
    last_token: int | None = None
    finished: bool = False


class LiveCluster:
    def __init__(self, dep, opts: RunOptions, *, max_inflight: int = 256, echo=None):
        self.dep, self.opts = dep, opts
        self.max_inflight = int(max_inflight)
        self.echo = echo or (lambda s: print(s, file=sys.stderr))
        self.base = worker_config(dep, opts)
        self.base["decode"]["stream_tokens"] = True
        n_p, n_d = opts.instances or (dep.prefill.instances, dep.decode.instances)
        self.sched = GlobalScheduler(n_p, n_d, dispatcher=dep.policies.dispatcher,
                                     decode_capacity_tokens=self.base["decode"]["capacity_tokens"], seed=opts.seed)
        self.cluster = Cluster(ClusterSpec(n_p, n_d, host="127.0.0.1",
                                           needs_store=self.base["kv_backend"] in NEEDS_GROUP,
                                           startup_timeout_s=opts.startup_timeout_s,
                                           heartbeat_timeout_s=opts.heartbeat_timeout_s, log_dir=opts.log_dir))
        from planner.sim.predictor import predictor_from_policies
        self.predictor = predictor_from_policies(dep.policies)
        self.live: dict[int, LiveRequest] = {}
        self.next_rid = 0
        self.failed: str | None = None
        self.stopping = False
        self.on_failure = None
        self.counts = {"requests": 0, "finished": 0, "tokens": 0, "refused": 0}
        self._loop = None
        self._fds: list[int] = []
        self._watchdog = None
        self._stopped = False

    # ---- life cycle -----------------------------------------------------------------
    def start(self) -> None:
        """Start every process and wait until all are ready (blocking, before serving)."""
        self.cluster.start(lambda w, extra: dict(self.base, **extra, cpus=_cpus_for(w, self.opts)))

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch the workers from `loop` (the server's)."""
        self._loop = loop
        for w in self.cluster.workers.values():
            fd = w.chan.fileno()
            loop.add_reader(fd, self._pump)
            self._fds.append(fd)
        self._watchdog = loop.call_later(WATCHDOG_S, self._watch)

    def detach(self) -> None:
        if self._loop is not None:
            for fd in self._fds:
                self._loop.remove_reader(fd)
            self._fds = []
            if self._watchdog is not None:
                self._watchdog.cancel()
            self._loop = None

    def stop(self) -> None:
        """Stop every process (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self.detach()
        self.cluster.stop(grace_s=1.0 if self.failed else 5.0)

    @property
    def inflight(self) -> int:
        return len(self.live)

    # ---- requests -------------------------------------------------------------------
    def submit(self, ids: list[int], max_tokens: int, *, min_tokens: int = 0,
               stop_ids: tuple[int, ...] = ()) -> LiveRequest:
        """Send a request (its prompt's token ids) to the least-loaded prefill process."""
        if self.failed:
            raise Unavailable(f"the testbed's processes failed: {self.failed.splitlines()[0]}")
        if self.stopping:
            raise Unavailable("the server is shutting down")
        if len(self.live) >= self.max_inflight:
            self.counts["refused"] += 1
            raise Overloaded(f"{len(self.live)} requests in flight, the most this server takes "
                             f"(--max-inflight {self.max_inflight}); retry later")
        rid = self.next_rid
        self.next_rid += 1
        bucket = int(self.predictor.predict(np.array([max_tokens]), seed=self.opts.seed * 1_000_003 + rid)[0])
        req = LiveRequest(rid, len(ids), int(max_tokens), int(min_tokens), tuple(stop_ids),
                          int(self.predictor.lower_bound_tokens(bucket)), list(ids))
        p = self.sched.route(rid, len(ids))
        self.live[rid] = req
        self.counts["requests"] += 1
        try:
            self.cluster.send(f"p{p}", {"op": "request", "rid": rid, "prompt_tokens": len(ids),
                                        "output_tokens": int(max_tokens), "label": bucket, "ids": req.ids})
        except WorkerFailed as e:
            self._fail(str(e))
            raise Unavailable(str(e).splitlines()[0]) from None
        return req

    # ---- worker messages ------------------------------------------------------------
    def _watch(self) -> None:
        self._pump()
        if self._loop is not None and not self.failed:
            self._watchdog = self._loop.call_later(WATCHDOG_S, self._watch)

    def _pump(self) -> None:
        if self.failed or self._stopped:
            return
        try:
            for name, msg in self.cluster.wait(0):
                op = msg["op"]
                if op == "events":
                    for ev in msg["items"]:
                        self._on_event(name, ev)
                elif op == "tokens":
                    for rid, tok in zip(msg["rids"], msg["tokens"]):
                        self._token(int(rid), int(tok))
                elif op == "kv_sent":
                    self.sched.kv_sent(int(name[1:]))
                    if msg["state"] != "done":
                        raise WorkerFailed(f"KV transfer {msg['xfer']} from {name} failed: {msg['error']}")
        except WorkerFailed as e:
            self._fail(str(e))
        except Exception as e:  # noqa: BLE001 - a broken invariant: fail loudly, never serve on half-updated state
            self._fail(f"the server's scheduler failed: {type(e).__name__}: {e}")

    def _on_event(self, name: str, ev: dict) -> None:
        rid, kind = int(ev["rid"]), ev["kind"]
        req = self.live.get(rid)
        if kind == "prefill_start":
            self.sched.started(rid)
        elif kind == "prefilled":
            self.sched.prefilled(rid)
            d = self.sched.dispatch(rid, req.prompt_tokens, req.predicted_tokens)
            self.cluster.send(f"d{d}", {"op": "expect", "rid": rid, "xfer": rid, "src": name, "shape": ev["shape"],
                                        "dtype": ev["dtype"], "prompt_tokens": req.prompt_tokens,
                                        "output_tokens": req.max_tokens, "first_token": ev["first_token"],
                                        "predicted_tokens": req.predicted_tokens, "checksum": ev.get("checksum"),
                                        "prompt_ids": req.ids, "stop_ids": list(req.stop_ids),
                                        "min_tokens": req.min_tokens})
            self.cluster.send(name, {"op": "send_kv", "rid": rid, "xfer": rid, "dst": f"d{d}"})
            req.ids = None
            self._token(rid, int(ev["first_token"]))
        elif kind == "finished":
            self.sched.finished(rid)
            self.live.pop(rid, None)
            self.counts["finished"] += 1
            req.finished = True
            req.events.put_nowait(("done", None))

    def _token(self, rid: int, tok: int) -> None:
        req = self.live.get(rid)
        if req is None:
            return
        req.tokens += 1
        req.last_token = tok
        self.counts["tokens"] += 1
        req.events.put_nowait(("token", tok))

    def _fail(self, why: str) -> None:
        if self.failed:
            return
        self.failed = why
        self.echo(f"error: {why}")
        for req in self.live.values():
            req.events.put_nowait(("error", why.splitlines()[0]))
        self.live.clear()
        if self.on_failure is not None:
            self.on_failure(why)
