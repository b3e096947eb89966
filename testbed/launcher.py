"""The launcher: starts the worker processes, holds their control connections, relays
peer messages, watches their health and stops them all.

- The scheduler's listener binds port 0 on `host` (127.0.0.1 by default; 0.0.0.0 or an
  interface address for workers on other hosts) with a random per-run authkey; the
  TCPStore for torch.distributed backends also binds port 0 (or the user gives a
  `tcp://HOST:PORT` init method). Shared-memory arenas carry a per-run random prefix.
  So two testbeds can run side by side.
- Local workers are `python -m testbed.workers.main` processes (stdout/stderr in per-worker
  log files); `remote_prefill`/`remote_decode` of them are left for the user to start on
  other hosts with the printed command (`Cluster.remote_commands`).
- Health: a worker that exits, closes its connection, reports an error, or is silent for
  `heartbeat_timeout_s` (workers beat every 0.5 s between iterations) raises
  `WorkerFailed` with its log tail. `stop()` always ends every local process
  (stop message, then SIGTERM, then SIGKILL) and removes shared-memory leftovers; local
  workers also die with the launcher (PR_SET_PDEATHSIG) or when their connection closes.
"""
from __future__ import annotations

import os
import queue
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Listener, wait
from pathlib import Path

from .workers.proto import AUTHKEY_ENV, Channel, clock_offset, no_delay

ROOT = Path(__file__).resolve().parent.parent


class WorkerFailed(RuntimeError):
    """A worker died, hung or reported an error; the message says which and why."""


@dataclass(frozen=True)
class ClusterSpec:
    n_prefill: int
    n_decode: int
    host: str = "127.0.0.1"
    advertise: str | None = None          # address other hosts use to reach `host`
    remote_prefill: int = 0               # the last K prefill workers are started by the user
    remote_decode: int = 0
    needs_store: bool = False             # start a TCPStore for torch.distributed
    dist_init: str | None = None          # or use this init method (tcp://HOST:PORT)
    startup_timeout_s: float = 300.0
    heartbeat_timeout_s: float = 60.0
    log_dir: str | None = None


@dataclass
class WorkerHandle:
    name: str
    role: str
    index: int
    rank: int
    proc: subprocess.Popen | None = None
    chan: Channel | None = None
    pid: int | None = None
    host: str = ""
    offset_s: float = 0.0                 # worker clock minus launcher clock
    last_seen: float = 0.0
    log: Path | None = None
    bye: dict | None = None


class Cluster:
    def __init__(self, spec: ClusterSpec):
        self.spec = spec
        self.workers: dict[str, WorkerHandle] = {}
        self.authkey = secrets.token_bytes(16)
        self.shm_prefix = f"tb-{os.getpid()}-{secrets.token_hex(4)}"
        self.address: tuple[str, int] | None = None
        self.store = None
        self.log_dir: Path | None = None
        self._listener = None
        self._accepted: queue.Queue = queue.Queue()
        self._by_fd: dict[int, WorkerHandle] = {}
        self.relayed = 0

    # ---- start -----------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [f"p{i}" for i in range(self.spec.n_prefill)] + [f"d{j}" for j in range(self.spec.n_decode)]

    def connect_address(self) -> str:
        host = self.spec.advertise or self.address[0]
        return f"{host}:{self.address[1]}"

    def remote_commands(self) -> list[str]:
        return [f"{AUTHKEY_ENV}={self.authkey.hex()} testbed worker --connect {self.connect_address()} "
                f"--role {w.role} --index {w.index}" for w in self.workers.values() if w.proc is None]

    def start(self, make_config, on_remote=None) -> None:
        """Start local workers, wait for every worker's hello, configure them
        (`make_config(handle, extra)` returns a worker's config dict) and wait until all
        are ready. `on_remote(commands)` is called with the commands for remote workers."""
        s = self.spec
        self.log_dir = Path(s.log_dir) if s.log_dir else Path(tempfile.mkdtemp(prefix="testbed-logs-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._listener = Listener((s.host, 0), family="AF_INET", authkey=self.authkey)
        self.address = self._listener.address
        threading.Thread(target=self._accept_loop, daemon=True).start()
        extra: dict = {"shm_prefix": self.shm_prefix, "world_size": s.n_prefill + s.n_decode,
                       "startup_timeout_s": s.startup_timeout_s}
        if s.needs_store and s.dist_init is None:
            import torch.distributed as dist
            self.store = dist.TCPStore(s.host, 0, s.n_prefill + s.n_decode, True, wait_for_workers=False)
            extra.update(store_host=s.advertise or self.address[0], store_port=self.store.port)
        extra["dist_init"] = s.dist_init
        for rank, name in enumerate(self.names):
            role = "prefill" if name[0] == "p" else "decode"
            index = int(name[1:])
            self.workers[name] = WorkerHandle(name, role, index, rank)
        extra["ranks"] = {w.name: w.rank for w in self.workers.values()}
        remote = ({f"p{i}" for i in range(s.n_prefill - s.remote_prefill, s.n_prefill)}
                  | {f"d{j}" for j in range(s.n_decode - s.remote_decode, s.n_decode)})
        env = dict(os.environ, **{AUTHKEY_ENV: self.authkey.hex()})
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        for w in self.workers.values():
            if w.name in remote:
                continue
            w.log = self.log_dir / f"{w.name}.log"
            with open(w.log, "wb") as log:
                w.proc = subprocess.Popen(
                    [sys.executable, "-m", "testbed.workers.main", "--connect", self.connect_address(),
                     "--role", w.role, "--index", str(w.index), "--die-with-parent"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True)   # Ctrl-C reaches the launcher only; it stops them in order
            w.pid = w.proc.pid
        if remote and on_remote is not None:
            on_remote(self.remote_commands())
        self._handshake(make_config, extra)

    def _accept_loop(self) -> None:
        while True:
            try:
                conn = self._listener.accept()
            except (OSError, EOFError):
                return
            except Exception:   # noqa: BLE001 - a client with the wrong key: ignore it
                continue
            self._accepted.put(no_delay(conn))

    def _handshake(self, make_config, extra) -> None:
        deadline = time.monotonic() + self.spec.startup_timeout_s
        pending = set(self.workers)
        while pending:
            self._check_procs("while starting")
            try:
                conn = self._accepted.get(timeout=0.2)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise WorkerFailed(f"workers {', '.join(sorted(pending))} did not connect within "
                                       f"{self.spec.startup_timeout_s:.0f} s{self._log_hint()}") from None
                continue
            chan = Channel(conn)
            hello = chan.recv()
            name = ("p" if hello.get("role") == "prefill" else "d") + str(hello.get("index"))
            if hello.get("op") != "hello" or name not in pending:
                chan.close()
                continue
            w = self.workers[name]
            w.chan, w.pid, w.host = chan, hello["pid"], hello["host"]
            samples = []
            for _ in range(5):
                sent = time.monotonic()
                chan.send({"op": "ping", "sent": sent})
                pong = chan.recv()
                samples.append((sent, pong["t"], time.monotonic()))
            w.offset_s = clock_offset(samples)
            self._by_fd[chan.fileno()] = w
            chan.send({"op": "config", "config": make_config(w, dict(extra, name=w.name, role=w.role,
                                                                        index=w.index, rank=w.rank))})
            pending.discard(name)
        ready = set(self.workers)
        while ready:
            for name, msg in self.wait(0.2, deadline=deadline, starting=True):
                if msg["op"] == "ready":
                    ready.discard(name)
            if ready and time.monotonic() > deadline:
                raise WorkerFailed(f"workers {', '.join(sorted(ready))} were not ready within "
                                   f"{self.spec.startup_timeout_s:.0f} s{self._log_hint()}")
        now = time.monotonic()
        for w in self.workers.values():
            w.last_seen = now

    # ---- running ---------------------------------------------------------------
    def to_launcher_time(self, name: str, t_worker: float) -> float:
        return t_worker - self.workers[name].offset_s

    def send(self, name: str, msg: dict) -> None:
        try:
            self.workers[name].chan.send(msg)
        except OSError as e:
            raise self._failure(self.workers[name], f"its connection broke ({e})") from None

    def wait(self, timeout_s: float, deadline: float | None = None, starting: bool = False) -> list[tuple[str, dict]]:
        """Messages from workers (peer messages are relayed, heartbeats absorbed), waiting
        at most `timeout_s`. Raises WorkerFailed on a dead, silent or failing worker."""
        chans = [w.chan for w in self.workers.values() if w.chan is not None]
        out = []
        for conn in wait([c.conn for c in chans], timeout=max(timeout_s, 0.0)):
            w = self._by_fd[conn.fileno()]
            while True:
                try:
                    if not w.chan.poll(0):
                        break
                    msg = w.chan.recv()
                except (EOFError, OSError):
                    raise self._failure(w, "its connection closed") from None
                w.last_seen = time.monotonic()
                op = msg["op"]
                if op == "peer":
                    self.send(msg["dst"], {"op": "peer", "msg": msg["msg"]})
                    self.relayed += 1
                elif op == "error":
                    raise WorkerFailed(f"worker {w.name} (pid {w.pid}) failed:\n{msg['text'].rstrip()}")
                elif op == "hb":
                    continue
                else:
                    out.append((w.name, msg))
        self._check_procs("during the run" if not starting else "while starting")
        if not starting:
            now = time.monotonic()
            for w in self.workers.values():
                if now - w.last_seen > self.spec.heartbeat_timeout_s:
                    raise WorkerFailed(f"worker {w.name} (pid {w.pid}) sent nothing for "
                                       f"{now - w.last_seen:.1f} s (heartbeat timeout "
                                       f"{self.spec.heartbeat_timeout_s:g} s): hung{self._log_hint(w)}")
        return out

    def _check_procs(self, when: str) -> None:
        for w in self.workers.values():
            if w.proc is not None and w.proc.poll() is not None:
                raise self._failure(w, f"it exited with code {w.proc.returncode} {when}")

    def _failure(self, w: WorkerHandle, why: str) -> WorkerFailed:
        return WorkerFailed(f"worker {w.name} (pid {w.pid}) stopped: {why}{self._log_hint(w)}")

    def _log_hint(self, w: WorkerHandle | None = None) -> str:
        if w is not None and w.log is not None and w.log.exists():
            tail = w.log.read_text(errors="replace").strip().splitlines()[-8:]
            text = "\n  ".join(tail)
            return f"; log {w.log}" + (f":\n  {text}" if text else "")
        return f"; logs in {self.log_dir}" if self.log_dir else ""

    # ---- stop ------------------------------------------------------------------
    def stop(self, grace_s: float = 5.0) -> None:
        """Stop every worker (politely, then by force) and free ports and shm."""
        for w in self.workers.values():
            if w.chan is not None:
                try:
                    w.chan.send({"op": "stop"})
                except OSError:
                    pass
        deadline = time.monotonic() + grace_s
        for w in self.workers.values():
            while w.chan is not None and w.bye is None and time.monotonic() < deadline:
                try:
                    if w.chan.poll(0.05):
                        msg = w.chan.recv()
                        if msg.get("op") == "bye":
                            w.bye = msg
                except (EOFError, OSError):
                    break
        for w in self.workers.values():
            if w.proc is None:
                continue
            try:
                w.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                w.proc.terminate()
                try:
                    w.proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    w.proc.kill()
                    w.proc.wait()
        for w in self.workers.values():
            if w.chan is not None:
                w.chan.close()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.store = None
        from .kv.shm import remove_leftovers
        remove_leftovers(self.shm_prefix)

    def local_pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers.values() if w.proc is not None]
