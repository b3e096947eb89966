"""The KV-transfer connector interface, shared by every backend.

A connector is one worker's end of the KV data plane. The sender calls `send`, the
receiver calls `expect` with the shape it was told by the scheduler; both call `poll`,
which returns the transfers that finished since the last call, each with its bytes and
seconds. A receiver that is done with a received tensor calls `release` (backends that
lend memory, such as the shared-memory arena, get it back then).

Small control messages between the two ends (an arena offset, an acknowledgement) go
through `post(peer, msg)`, a callable the worker gives the connector; the worker hands
messages addressed to the connector back with `on_message`. Peers are named by strings
(`p0`, `d1`, ...).
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from typing import Callable

import torch

PENDING, DONE, FAILED = "pending", "done", "failed"

Post = Callable[[str, dict], None]


@dataclass
class Transfer:
    """One finished (or failed) transfer as one end saw it."""
    xfer_id: int
    peer: str
    side: str                       # "send" or "recv"
    state: str                      # DONE or FAILED
    nbytes: int
    seconds: float                  # send: send() to completion; recv: expect() to arrival
    tensor: torch.Tensor | None = None   # the received tensor (recv side)
    error: str = ""

    @property
    def gbytes_per_s(self) -> float:
        return self.nbytes / max(self.seconds, 1e-12) / 1e9


class KVConnector:
    """Base class: bookkeeping of pending transfers and metrics; backends fill in
    `_start_send`, `_start_recv` and `_progress`."""

    name = "base"

    def __init__(self, me: str, post: Post | None = None):
        self.me = me
        self.post = post
        self._state: dict[tuple[str, int], str] = {}
        self._done: list[Transfer] = []
        self.history: list[Transfer] = []     # every finished transfer, for metrics

    # ---- public API -------------------------------------------------------------
    def send(self, xfer_id: int, dst: str, tensor: torch.Tensor) -> None:
        """Start moving `tensor` to peer `dst`; returns at once or after a local copy."""
        self._state[("send", xfer_id)] = PENDING
        self._start_send(xfer_id, dst, tensor.contiguous(), time.monotonic())

    def expect(self, xfer_id: int, src: str, shape, dtype: torch.dtype, device="cpu") -> None:
        """Post the receive of transfer `xfer_id` from `src` (shape and dtype known)."""
        self._state[("recv", xfer_id)] = PENDING
        self._start_recv(xfer_id, src, tuple(int(s) for s in shape), dtype, torch.device(device),
                         time.monotonic())

    def state(self, xfer_id: int, side: str = "send") -> str:
        return self._state.get((side, xfer_id), PENDING)

    def poll(self) -> list[Transfer]:
        """Make progress; return the transfers finished since the last poll."""
        self._progress()
        done, self._done = self._done, []
        return done

    def pending(self) -> int:
        return sum(1 for s in self._state.values() if s == PENDING)

    def release(self, xfer_id: int) -> None:
        """The receiver no longer needs the tensor of `xfer_id`."""

    def prepare(self, peers: list[str]) -> None:
        """Set up what the first transfers to `peers` need (before any request)."""

    def on_message(self, msg: dict) -> None:
        """A control message from a peer's connector."""

    def close(self) -> None:
        """Free what the connector holds (segments, buffers)."""

    # ---- for backends -----------------------------------------------------------
    def _finish(self, t: Transfer) -> None:
        self._state[(t.side, t.xfer_id)] = t.state
        self._done.append(t)
        self.history.append(Transfer(t.xfer_id, t.peer, t.side, t.state, t.nbytes, t.seconds,
                                     None, t.error))

    def _start_send(self, xfer_id, dst, tensor, t0):  # pragma: no cover - abstract
        raise NotImplementedError

    def _start_recv(self, xfer_id, src, shape, dtype, device, t0):  # pragma: no cover
        raise NotImplementedError

    def _progress(self) -> None:
        pass


def nbytes_of(shape, dtype: torch.dtype) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n * torch.empty((), dtype=dtype).element_size()


def checksum(tensor: torch.Tensor) -> int:
    """CRC32 of a tensor's bytes (any dtype, any device): the test's proof of arrival."""
    t = tensor.detach().contiguous().cpu()
    return zlib.crc32(t.reshape(-1).view(torch.uint8).numpy().tobytes()) if t.numel() else 0


def kv_checksum(tensor: torch.Tensor) -> int:
    """What the sender computes before a KV transfer and the receiver checks before it
    decodes: CRC32 of the bytes on a CPU tensor (no copy; ~2.5 GB/s), and on a GPU a
    position-weighted sum of its 32-bit words computed there (no copy to the host). A
    corrupted or torn transfer is refused, never decoded."""
    t = tensor.detach().contiguous()
    if t.numel() == 0:
        return 0
    if t.device.type == "cpu":
        return zlib.crc32(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    words = t.reshape(-1).view(torch.uint8)
    words = words[: words.numel() // 4 * 4].view(torch.int32).to(torch.int64)
    weights = torch.arange(1, words.numel() + 1, device=words.device, dtype=torch.int64) % 65521
    return int(torch.sum(words * weights) % (1 << 61)) ^ int(torch.sum(words))


DTYPES = {str(d).removeprefix("torch."): d for d in
          (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.uint8)}


def dtype_name(d: torch.dtype) -> str:
    return str(d).removeprefix("torch.")
