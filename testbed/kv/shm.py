"""Same-host fast path: shared memory on CPU, CUDA IPC on one GPU.

The sender owns arenas (a file under /dev/shm mapped with `torch.from_file(shared=True)`,
or a CUDA buffer shared through its IPC handle); each transfer is one copy of the KV cache
into a free region, then a small message with the offset. The receiver maps each arena once
and gets a zero-copy view; `release` returns the region. Arena file names carry the run's
unique prefix (made by the launcher), so two testbeds never collide, and a launcher can
remove whatever a crashed worker left behind (`remove_leftovers`).
"""
from __future__ import annotations

import glob
import os
import tempfile
import time

import torch

from .arena import Arena
from .base import DONE, DTYPES, KVConnector, Transfer, dtype_name, nbytes_of

DEFAULT_ARENA_BYTES = 64 << 20
MAX_ARENAS = 8


def shm_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def remove_leftovers(prefix: str) -> int:
    """Delete arena files of a run (prefix as given to the connectors); returns how many."""
    n = 0
    for path in glob.glob(os.path.join(shm_dir(), glob.escape(prefix) + "*")):
        try:
            os.unlink(path)
            n += 1
        except FileNotFoundError:
            pass
    return n


class _Segment:
    """One arena: its bytes as a flat uint8 tensor, its allocator and how peers find it."""

    def __init__(self, key: str, buf: torch.Tensor, handle, path: str | None):
        self.key, self.buf, self.handle, self.path = key, buf, handle, path
        self.alloc = Arena(buf.numel())


class ArenaConnector(KVConnector):
    """`device` "cpu": shared-memory files; "cuda": CUDA IPC."""

    def __init__(self, me, post, *, prefix: str, device: str = "cpu",
                 arena_bytes: int = DEFAULT_ARENA_BYTES, max_arenas: int = MAX_ARENAS):
        super().__init__(me, post)
        self.device = torch.device(device)
        self.name = "cuda-ipc" if self.device.type == "cuda" else "shm"
        self.prefix = prefix
        self.arena_bytes = int(arena_bytes)
        self.max_arenas = max_arenas
        self._segments: list[_Segment] = []
        self._lent: dict[int, tuple[_Segment, int]] = {}     # xfer -> (segment, offset)
        self._queued: list[tuple] = []                      # sends waiting for room
        self._mapped: dict[str, torch.Tensor] = {}           # receiver: arena key -> buffer
        self._arrived: dict[int, dict] = {}
        self._expected: dict[int, tuple] = {}
        self._recv_src: dict[int, str] = {}

    # ---- sender ----------------------------------------------------------------
    def prepare(self, peers: list[str]) -> None:
        """Create the first arena now (not during the first transfer) and tell `peers`,
        so they map it before any request arrives."""
        if not self._segments:
            self._new_segment(0)
        for peer in peers:
            for seg in self._segments:
                self.post(peer, self._announce(seg))

    def _announce(self, seg: _Segment) -> dict:
        return {"kv": "arena-announce", "key": seg.key, "path": seg.path, "handle": seg.handle}

    def _new_segment(self, nbytes: int) -> _Segment:
        size = max(self.arena_bytes, nbytes)
        key = f"{self.prefix}-{self.me}-{len(self._segments)}"
        if self.device.type == "cuda":
            from torch.multiprocessing.reductions import reduce_tensor
            buf = torch.empty(size, dtype=torch.uint8, device=self.device)
            seg = _Segment(key, buf, reduce_tensor(buf), None)
        else:
            path = os.path.join(shm_dir(), key)
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)
            buf = torch.from_file(path, shared=True, size=size, dtype=torch.uint8)
            buf.zero_()     # touch every page now, not during the first transfers
            seg = _Segment(key, buf, None, path)
        self._segments.append(seg)
        return seg

    def _place(self, nbytes: int):
        for seg in self._segments:
            off = seg.alloc.alloc(nbytes)
            if off is not None:
                return seg, off
        if len(self._segments) < self.max_arenas:
            seg = self._new_segment(nbytes)
            return seg, seg.alloc.alloc(nbytes)
        return None, None

    def _start_send(self, xfer_id, dst, tensor, t0):
        if not self._try_send(xfer_id, dst, tensor, t0):
            self._queued.append((xfer_id, dst, tensor, t0))

    def _try_send(self, xfer_id, dst, tensor, t0) -> bool:
        nbytes = tensor.numel() * tensor.element_size()
        seg, off = self._place(nbytes)
        if seg is None:
            return False
        region = seg.buf[off:off + nbytes]
        region.copy_(tensor.reshape(-1).view(torch.uint8), non_blocking=False)
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        self._lent[xfer_id] = (seg, off)
        self.post(dst, {"kv": "arena", "xfer": xfer_id, "src": self.me, "key": seg.key,
                        "path": seg.path, "handle": seg.handle, "offset": off,
                        "shape": list(tensor.shape), "dtype": dtype_name(tensor.dtype), "t0": t0})
        self._finish(Transfer(xfer_id, dst, "send", DONE, nbytes, time.monotonic() - t0))
        return True

    def _progress(self):
        if self._queued:
            queued, self._queued = self._queued, []
            for item in queued:
                if not self._try_send(*item):
                    self._queued.append(item)

    # ---- receiver --------------------------------------------------------------
    def _start_recv(self, xfer_id, src, shape, dtype, device, t0):
        self._expected[xfer_id] = (src, shape, dtype, t0)
        self._match(xfer_id)

    def on_message(self, msg):
        kind = msg.get("kv")
        if kind == "arena":
            self._arrived[msg["xfer"]] = msg
            self._match(msg["xfer"])
        elif kind == "arena-announce":
            self._map(msg)
        elif kind == "arena-free":
            seg, off = self._lent.pop(msg["xfer"])
            seg.alloc.free(off)
            self._progress()

    def _map(self, msg) -> torch.Tensor:
        key = msg["key"]
        if key not in self._mapped:
            if msg["handle"] is not None:
                fn, args = msg["handle"]
                self._mapped[key] = fn(*args)
            else:
                size = os.path.getsize(msg["path"])
                self._mapped[key] = torch.from_file(msg["path"], shared=True, size=size,
                                                    dtype=torch.uint8)
            if self._mapped[key].device.type == "cpu":
                self._mapped[key][::4096].sum()     # fault the pages in now, not in a transfer
        return self._mapped[key]

    def _match(self, xfer_id):
        if xfer_id not in self._arrived or xfer_id not in self._expected:
            return
        msg = self._arrived.pop(xfer_id)
        src, shape, dtype, t0 = self._expected.pop(xfer_id)
        if list(shape) != msg["shape"] or DTYPES[msg["dtype"]] != dtype:
            raise ValueError(f"transfer {xfer_id}: expected {list(shape)} {dtype}, "
                             f"got {msg['shape']} {msg['dtype']}")
        nbytes = nbytes_of(shape, dtype)
        buf = self._map(msg)
        tensor = buf[msg["offset"]:msg["offset"] + nbytes].view(dtype).reshape(shape)
        self._recv_src[xfer_id] = src
        # same host, same monotonic clock: time from the sender's send() to arrival
        self._finish(Transfer(xfer_id, src, "recv", DONE, nbytes, time.monotonic() - msg["t0"], tensor))

    def release(self, xfer_id):
        src = self._recv_src.pop(xfer_id, None)
        if src is None:
            return
        if self.device.type == "cuda":
            torch.cuda.current_stream().synchronize()   # reads of the region are finished
        self.post(src, {"kv": "arena-free", "xfer": xfer_id})

    def close(self):
        self._mapped.clear()
        for seg in self._segments:
            seg.buf = None
            if seg.path:
                try:
                    os.unlink(seg.path)
                except FileNotFoundError:
                    pass
        self._segments = []
