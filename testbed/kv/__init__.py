"""KV-cache transfer between prefill and decode workers: one interface, four backends.

- `reference`: bytes inside control messages; the test oracle (any host).
- `gloo`: torch.distributed point-to-point on CPU tensors (any host).
- `nccl`: torch.distributed point-to-point between GPUs (one GPU per worker).
- `shm`: same-host shared-memory arenas (CPU).
- `cuda-ipc`: same-host CUDA IPC arenas (one or more GPUs on one host).
"""
from __future__ import annotations

from .base import DONE, FAILED, PENDING, KVConnector, Transfer, checksum, kv_checksum

BACKENDS = ("reference", "gloo", "nccl", "shm", "cuda-ipc")
SAME_HOST = ("shm", "cuda-ipc")
NEEDS_GROUP = ("gloo", "nccl")


def default_backend(device: str) -> str:
    return "cuda-ipc" if str(device).startswith("cuda") else "shm"


def make_connector(backend: str, me: str, post, *, ranks=None, prefix: str = "tb",
                   arena_bytes: int | None = None) -> KVConnector:
    """A connector for worker `me`. `ranks` (peer name -> rank) is needed by gloo/nccl,
    whose process group must already be initialised (`dist.init_group`)."""
    if backend == "reference":
        from .reference import ReferenceConnector
        return ReferenceConnector(me, post)
    if backend in NEEDS_GROUP:
        from .dist import DistConnector
        return DistConnector(me, post, ranks, backend)
    if backend in SAME_HOST:
        from .shm import DEFAULT_ARENA_BYTES, ArenaConnector
        return ArenaConnector(me, post, prefix=prefix, device="cuda" if backend == "cuda-ipc" else "cpu",
                              arena_bytes=arena_bytes or DEFAULT_ARENA_BYTES)
    raise ValueError(f"unknown KV backend {backend!r}; one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "SAME_HOST", "NEEDS_GROUP", "KVConnector", "Transfer", "make_connector",
           "default_backend", "checksum", "kv_checksum", "DONE", "FAILED", "PENDING"]
