"""Two real processes moving tensors through one backend: the harness behind the
byte-exactness tests and the transfer benchmark.

`run_pair(backend, payloads)` spawns a sender and a receiver process. Their connectors
exchange control messages over a pipe; for gloo/nccl they form a 2-rank group on a TCPStore
bound to a free port. Transfers go one at a time: the sender makes payload i and says so; the
receiver posts the receive, stamps `time.monotonic()` and tells the sender to go; it stamps arrival (same host, same clock), checksums the bytes (CRC32),
releases the buffer and acknowledges. Payload tensors are drawn from seeds, so the parent
computes the expected checksums itself (`payload_tensor`).
"""
from __future__ import annotations

import os
import secrets
import time

import torch
import torch.multiprocessing as mp

from .base import checksum


def payload_tensor(shape, dtype: torch.dtype, seed: int, device="cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(tuple(shape), generator=g, dtype=torch.float32)
    return (t * 100).to(dtype).to(device)


def _child(role, backend, payloads, device, conn, store_port, prefix, arena_bytes, verify, out_q):
    from . import NEEDS_GROUP, make_connector
    torch.set_num_threads(1)
    me, peer = ("p0", "d0") if role == "send" else ("d0", "p0")
    ranks = {"p0": 0, "d0": 1}
    if backend in NEEDS_GROUP:
        import torch.distributed as dist

        from .dist import init_group
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device).index or 0)
        store = dist.TCPStore("127.0.0.1", store_port, is_master=False)
        init_group(backend, ranks[me], 2, store=store)
    conn_ = make_connector(backend, me, lambda dst, msg: conn.send(("kv", msg)), ranks=ranks, prefix=prefix,
                           arena_bytes=arena_bytes)
    results = []
    try:
        if role == "send":
            conn_.prepare([peer])
            for i, (shape, dtype_name, seed) in enumerate(payloads):
                t = payload_tensor(shape, getattr(torch, dtype_name), seed, device)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                conn.send(("have", i))             # the payload exists: the clock may start
                while True:                        # wait for the receiver's "ready for i"
                    kind, msg = conn.recv()
                    if kind == "kv":
                        conn_.on_message(msg)
                    elif kind == "ready" and msg == i:
                        break
                conn_.send(i, peer, t)
                done = False
                while not done:                    # until acknowledged
                    conn_.poll()
                    if conn.poll(0.0001):
                        kind, msg = conn.recv()
                        if kind == "kv":
                            conn_.on_message(msg)
                        elif kind == "ack" and msg == i:
                            done = True
            # the receiver has acknowledged every payload; an asynchronous backend (gloo's
            # isend) may report the last send's completion a moment later on a loaded machine
            deadline = time.monotonic() + 30.0
            while len(conn_.history) < len(payloads) and time.monotonic() < deadline:
                conn_.poll()
                time.sleep(0.001)
            # let the last arena-free message in
            while conn.poll(0.2):
                kind, msg = conn.recv()
                if kind == "kv":
                    conn_.on_message(msg)
            out_q.put(("send", [(t.xfer_id, t.nbytes, t.seconds, t.state) for t in conn_.history]))
        else:
            for i, (shape, dtype_name, seed) in enumerate(payloads):
                while True:                        # the sender has made payload i
                    kind, msg = conn.recv()
                    if kind == "kv":
                        conn_.on_message(msg)
                    elif kind == "have" and msg == i:
                        break
                conn_.expect(i, peer, shape, getattr(torch, dtype_name), device)
                t0 = time.monotonic()
                conn.send(("ready", i))
                got = None
                while got is None:
                    for tr in conn_.poll():
                        got = tr
                    if got is None and conn.poll(0.00002):
                        kind, msg = conn.recv()
                        if kind == "kv":
                            conn_.on_message(msg)
                arrived = time.monotonic()
                crc = checksum(got.tensor) if verify else None
                conn_.release(i)
                conn.send(("ack", i))
                results.append((i, got.nbytes, arrived - t0, got.seconds, crc, got.state))
            out_q.put(("recv", results))
    finally:
        conn_.close()


def run_pair(backend: str, payloads: list[tuple], *, device: str = "cpu", arena_bytes: int | None = None,
             verify: bool = True, timeout_s: float = 120.0) -> dict:
    """Move each payload `(shape, dtype name, seed)` from one process to another.
    Returns {"recv": [(i, nbytes, ready_to_arrival_s, backend_seconds, crc32, state)],
    "send": [...]} (the sender's connector history)."""
    ctx = mp.get_context("spawn")
    a, b = ctx.Pipe(duplex=True)
    out_q = ctx.Queue()
    store, port = None, 0
    from . import NEEDS_GROUP
    if backend in NEEDS_GROUP:
        import torch.distributed as dist
        store = dist.TCPStore("127.0.0.1", 0, 2, True, wait_for_workers=False)
        port = store.port
    prefix = f"tbpair-{os.getpid()}-{secrets.token_hex(4)}"
    procs = [ctx.Process(target=_child, args=(role, backend, payloads, device, c, port, prefix, arena_bytes,
                                              verify, out_q), daemon=True)
             for role, c in (("send", a), ("recv", b))]
    for p in procs:
        p.start()
    out = {}
    try:
        deadline = time.monotonic() + timeout_s
        while len(out) < 2:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{backend} pair did not finish within {timeout_s:.0f} s")
            try:
                role, res = out_q.get(timeout=min(left, 1.0))
                out[role] = res
            except Exception:   # noqa: BLE001 - queue.Empty: check the children are alive
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"{backend} pair: a process exited with code {dead[0].exitcode}") from None
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
        from .shm import remove_leftovers
        remove_leftovers(prefix)
    return out
