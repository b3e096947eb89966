"""KV connectors: the arena allocator by hand, each backend's bytes checked on arrival
against the payload (CRC32), in-process and across two real processes."""
from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

from testbed.kv import BACKENDS, checksum, make_connector  # noqa: E402
from testbed.kv.arena import Arena  # noqa: E402
from testbed.kv.pair import payload_tensor, run_pair  # noqa: E402
from testbed.kv.shm import remove_leftovers, shm_dir  # noqa: E402

# (shape [tokens, layers, 2, heads, head_dim], dtype, seed): odd sizes, three dtypes, one
# payload larger than the 64 KiB arena used below (the connector adds a segment)
PAYLOADS = [((5, 2, 2, 3, 8), "float32", 1), ((17, 2, 2, 2, 4), "bfloat16", 2),
            ((1, 1, 2, 1, 1), "float16", 3), ((300, 4, 2, 4, 16), "float32", 4)]


def expected():
    return [(checksum(payload_tensor(s, getattr(torch, d), seed)), payload_tensor(s, getattr(torch, d), seed).numel()
             * payload_tensor(s, getattr(torch, d), seed).element_size()) for s, d, seed in PAYLOADS]


def test_arena_first_fit_align_and_merge():
    a = Arena(1024, align_bytes=256)
    assert a.alloc(1) == 0            # rounded up to 256
    assert a.alloc(300) == 256        # 512 bytes
    assert a.alloc(256) == 768
    assert a.alloc(1) is None         # full
    a.free(256)
    assert a.free_bytes == 512
    assert a.alloc(600) is None       # 512 free, not 768
    a.free(0)                         # merges with [256, 768)
    assert a.alloc(700) == 0          # 768 bytes from offset 0
    a.free(0)
    a.free(768)
    assert a.free_bytes == 1024 and a.used_bytes == 0


class Wire:
    """Two connectors in one process, control messages delivered by hand."""

    def __init__(self, backend, **kw):
        self.box = {"p0": [], "d0": []}
        prefix = f"tbtest-{os.getpid()}-{backend}"
        self.c = {me: make_connector(backend, me, lambda dst, msg: self.box[dst].append(msg), prefix=prefix, **kw)
                  for me in ("p0", "d0")}
        self.prefix = prefix

    def deliver(self):
        for me, msgs in self.box.items():
            while msgs:
                self.c[me].on_message(msgs.pop(0))


@pytest.mark.parametrize("backend", ["reference", "shm"])
def test_in_process_backends_move_exact_bytes(backend):
    w = Wire(backend, arena_bytes=1 << 16)
    snd, rcv = w.c["p0"], w.c["d0"]
    try:
        got = {}
        for i, (shape, dtype, seed) in enumerate(PAYLOADS):
            t = payload_tensor(shape, getattr(torch, dtype), seed)
            rcv.expect(i, "p0", shape, getattr(torch, dtype))
            snd.send(i, "d0", t)
            assert snd.state(i) == "done"          # both backends copy at send time
            w.deliver()
            for tr in rcv.poll():
                got[tr.xfer_id] = (checksum(tr.tensor), tr.nbytes, tuple(tr.tensor.shape), tr.tensor.dtype)
                rcv.release(tr.xfer_id)
            w.deliver()
            assert rcv.state(i, "recv") == "done"
        assert [(got[i][0], got[i][1]) for i in range(len(PAYLOADS))] == expected()
        assert [got[i][2] for i in range(len(PAYLOADS))] == [p[0] for p in PAYLOADS]
        sent = [t for t in snd.history if t.side == "send"]
        assert [t.nbytes for t in sent] == [e[1] for e in expected()] and all(t.seconds >= 0 for t in sent)
    finally:
        snd.close()
        rcv.close()
    assert not [f for f in os.listdir(shm_dir()) if f.startswith(w.prefix)]


def test_shm_arena_full_queues_send_until_release():
    w = Wire("shm", arena_bytes=4096)
    w.c["p0"].max_arenas = 1
    snd, rcv = w.c["p0"], w.c["d0"]
    try:
        a = payload_tensor((10, 2, 2, 4, 8), torch.float32, 5)      # 5120 bytes: its own 5120-byte arena
        b = payload_tensor((10, 2, 2, 4, 8), torch.float32, 6)
        for i in (0, 1):
            rcv.expect(i, "p0", a.shape, torch.float32)
        snd.send(0, "d0", a)
        snd.send(1, "d0", b)
        assert snd.state(0) == "done" and snd.state(1) == "pending" and snd.pending() == 1
        w.deliver()
        first = rcv.poll()
        assert [t.xfer_id for t in first] == [0] and checksum(first[0].tensor) == checksum(a)
        rcv.release(0)                       # frees the region; the queued send goes out
        w.deliver()
        snd.poll()
        assert snd.state(1) == "done"
        w.deliver()
        second = rcv.poll()
        assert [t.xfer_id for t in second] == [1] and checksum(second[0].tensor) == checksum(b)
    finally:
        snd.close()
        rcv.close()


def test_remove_leftovers_only_touches_its_prefix(tmp_path):
    mine = os.path.join(shm_dir(), f"tbleft-{os.getpid()}-a-p0-0")
    other = os.path.join(shm_dir(), f"tbleftX-{os.getpid()}")
    for p in (mine, other):
        open(p, "wb").close()
    try:
        assert remove_leftovers(f"tbleft-{os.getpid()}-a") == 1
        assert not os.path.exists(mine) and os.path.exists(other)
    finally:
        os.unlink(other)


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="unknown KV backend 'rdma'"):
        make_connector("rdma", "p0", None)
    assert set(BACKENDS) == {"reference", "gloo", "nccl", "shm", "cuda-ipc"}


@pytest.mark.parametrize("backend", ["reference", "shm", "gloo"])
def test_two_processes_move_exact_bytes(backend):
    """A sender and a receiver process; the receiver checksums what arrived."""
    out = run_pair(backend, PAYLOADS, arena_bytes=1 << 16, timeout_s=90)
    recv = out["recv"]
    assert [(r[4], r[1]) for r in recv] == expected()
    assert all(r[5] == "done" for r in recv)
    assert [s[1] for s in out["send"]] == [e[1] for e in expected()]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_ipc_moves_exact_bytes():
    out = run_pair("cuda-ipc", PAYLOADS, device="cuda", arena_bytes=1 << 16, timeout_s=120)
    assert [(r[4], r[1]) for r in out["recv"]] == expected()
