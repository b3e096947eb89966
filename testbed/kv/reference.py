"""Reference backend: the tensor's bytes travel inside a control message.

Trivially correct and slow (pickled through the worker's control connection, relayed by
the scheduler): the oracle the other backends are checked against. Works wherever the
control plane reaches, so across hosts too.
"""
from __future__ import annotations

import time

import torch

from .base import DONE, DTYPES, KVConnector, Transfer, dtype_name


class ReferenceConnector(KVConnector):
    name = "reference"

    def __init__(self, me, post):
        super().__init__(me, post)
        self._arrived: dict[int, dict] = {}          # xfer -> message, not yet expected
        self._expected: dict[int, tuple] = {}        # xfer -> (src, shape, dtype, device, t0)

    def _start_send(self, xfer_id, dst, tensor, t0):
        payload = tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()
        self.post(dst, {"kv": "ref", "xfer": xfer_id, "src": self.me, "shape": list(tensor.shape),
                        "dtype": dtype_name(tensor.dtype), "data": payload})
        self._finish(Transfer(xfer_id, dst, "send", DONE, len(payload), time.monotonic() - t0))

    def _start_recv(self, xfer_id, src, shape, dtype, device, t0):
        self._expected[xfer_id] = (src, shape, dtype, device, t0)
        self._match(xfer_id)

    def on_message(self, msg):
        if msg.get("kv") == "ref":
            self._arrived[msg["xfer"]] = msg
            self._match(msg["xfer"])

    def _match(self, xfer_id):
        if xfer_id not in self._arrived or xfer_id not in self._expected:
            return
        msg = self._arrived.pop(xfer_id)
        src, shape, dtype, device, t0 = self._expected.pop(xfer_id)
        if list(shape) != msg["shape"] or DTYPES[msg["dtype"]] != dtype:
            raise ValueError(f"transfer {xfer_id}: expected {list(shape)} {dtype}, "
                             f"got {msg['shape']} {msg['dtype']}")
        buf = torch.frombuffer(bytearray(msg["data"]), dtype=torch.uint8)
        tensor = buf.view(dtype).reshape(shape).to(device)
        self._finish(Transfer(xfer_id, src, "recv", DONE, len(msg["data"]),
                              time.monotonic() - t0, tensor))
