"""torch.distributed point-to-point backend: gloo between CPU processes, NCCL between GPUs.

All workers of a testbed join one process group (rank per worker, `ranks` maps peer names
to ranks). The rendezvous is a TCPStore the launcher opens on a free port, or any
`tcp://HOST:PORT` init method a user gives, so workers can sit on different hosts
(see docs/testbed.md). Sends are `isend`, receives `irecv` into a fresh buffer; both are
completed by a waiting thread each. Gloo matches on tags (the transfer id); NCCL matches in
order per pair, which holds because the scheduler issues each pair's send and expect
messages in the same order.

NCCL cannot put two ranks on one GPU ("duplicate GPU"), so on a one-GPU machine the
same-host fast path (CUDA IPC) is the way; NCCL needs one GPU per worker.
"""
from __future__ import annotations

import queue
import threading
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from .base import DONE, FAILED, KVConnector, Transfer

TAG_MOD = 2 ** 31 - 1


def init_group(backend: str, rank: int, world_size: int, *, store=None, init_method: str | None = None,
               timeout_s: float = 120.0) -> None:
    """Join the testbed's process group (one per process)."""
    kwargs = {"backend": backend, "rank": rank, "world_size": world_size,
              "timeout": timedelta(seconds=timeout_s)}
    if store is not None:
        kwargs["store"] = store
    else:
        kwargs["init_method"] = init_method
    dist.init_process_group(**kwargs)


class DistConnector(KVConnector):
    """Each posted `isend`/`irecv` is waited on by its own short-lived thread (`Work.wait`
    releases the GIL): gloo's point-to-point works never turn `is_completed()` true without
    a `wait()`, and a thread per transfer lets transfers from different peers finish in any
    order."""

    def __init__(self, me, post, ranks: dict[str, int], backend: str = "gloo"):
        super().__init__(me, post)
        self.name = backend
        self.ranks = ranks
        self._finished: queue.SimpleQueue = queue.SimpleQueue()
        self._inflight: dict[tuple, torch.Tensor] = {}    # keeps buffers alive

    def _tag(self, xfer_id):
        return 0 if self.name == "nccl" else int(xfer_id) % TAG_MOD

    def _watch(self, side, xfer_id, peer, work, tensor, t0):
        self._inflight[(side, xfer_id)] = tensor
        nbytes = tensor.numel() * tensor.element_size()

        def waiter():
            try:
                work.wait()
                if tensor.device.type == "cuda":
                    torch.cuda.current_stream(tensor.device).synchronize()
                self._finished.put((side, xfer_id, peer, DONE, nbytes, time.monotonic() - t0, ""))
            except Exception as e:   # noqa: BLE001 - the peer died or the group broke
                self._finished.put((side, xfer_id, peer, FAILED, nbytes, time.monotonic() - t0, str(e)))
        threading.Thread(target=waiter, daemon=True, name=f"kv-{side}-{xfer_id}").start()

    def _start_send(self, xfer_id, dst, tensor, t0):
        if self.name == "nccl" and tensor.device.type != "cuda":
            tensor = tensor.cuda()
        work = dist.isend(tensor, self.ranks[dst], tag=self._tag(xfer_id))
        self._watch("send", xfer_id, dst, work, tensor, t0)

    def _start_recv(self, xfer_id, src, shape, dtype, device, t0):
        if self.name == "nccl" and device.type != "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
        buf = torch.empty(shape, dtype=dtype, device=device)
        work = dist.irecv(buf, self.ranks[src], tag=self._tag(xfer_id))
        self._watch("recv", xfer_id, src, work, buf, t0)

    def _progress(self):
        while True:
            try:
                side, xfer_id, peer, state, nbytes, seconds, error = self._finished.get_nowait()
            except queue.Empty:
                return
            tensor = self._inflight.pop((side, xfer_id))
            self._finish(Transfer(xfer_id, peer, side, state, nbytes, seconds,
                                  tensor if side == "recv" and state == DONE else None, error))

    def pending(self) -> int:
        return len(self._inflight)

    def close(self):
        self._inflight.clear()
        if dist.is_initialized():
            dist.destroy_process_group()
