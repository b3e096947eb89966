"""First-fit byte allocator over one arena (pure bookkeeping, no torch).

The shared-memory and CUDA-IPC backends copy each KV cache into a region of a
long-lived arena the receiver maps once, so pages stay warm and each transfer is one
copy. Regions are freed when the receiver says it is done.
"""
from __future__ import annotations

ALIGN_BYTES = 256


class Arena:
    def __init__(self, size_bytes: int, align_bytes: int = ALIGN_BYTES):
        if size_bytes < 1:
            raise ValueError(f"arena size must be >= 1 byte, got {size_bytes}")
        self.size_bytes = int(size_bytes)
        self.align_bytes = int(align_bytes)
        self._free: list[tuple[int, int]] = [(0, self.size_bytes)]   # (offset, size), sorted
        self._used: dict[int, int] = {}                                # offset -> size

    def _round(self, n: int) -> int:
        return -(-int(n) // self.align_bytes) * self.align_bytes

    def alloc(self, nbytes: int) -> int | None:
        """Offset of a free region of at least `nbytes`, or None when none is left."""
        need = self._round(max(nbytes, 1))
        for i, (off, size) in enumerate(self._free):
            if size >= need:
                if size == need:
                    del self._free[i]
                else:
                    self._free[i] = (off + need, size - need)
                self._used[off] = need
                return off
        return None

    def free(self, offset: int) -> None:
        size = self._used.pop(offset)
        self._free.append((offset, size))
        self._free.sort()
        merged: list[tuple[int, int]] = []
        for off, sz in self._free:
            if merged and merged[-1][0] + merged[-1][1] == off:
                merged[-1] = (merged[-1][0], merged[-1][1] + sz)
            else:
                merged.append((off, sz))
        self._free = merged

    @property
    def used_bytes(self) -> int:
        return sum(self._used.values())

    @property
    def free_bytes(self) -> int:
        return sum(size for _, size in self._free)
