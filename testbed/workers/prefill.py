"""The prefill worker's logic: chunked prefill, the length classifier, KV hand-off.

Driven by the process loop in `main.py` (or directly, in tests): `on_request` queues a
request, `on_send_kv` starts its KV transfer once the scheduler has picked a decode
instance, `on_give_back` returns requests not started yet (plans over time: a draining
instance), `step` runs one chunk. Events for the scheduler go to `emit` as dicts with the
worker's `time.monotonic()` timestamps. A request carries its prompt's token ids (`ids`,
from `testbed serve`) or is given ids drawn from (seed, request id) (`tokens.prompt_ids`).
"""
from __future__ import annotations

import time

import torch

from ..kv.base import dtype_name, kv_checksum
from . import faults
from .chunks import ChunkScheduler
from .tokens import prompt_ids

# After a chunk that finished requests, wait (at most this long) for the scheduler's
# dispatch answers (`send_kv`) before the next chunk, so that each KV transfer starts when
# its prefill ends - TetriInfer dispatches on the prefill instance - instead of after the
# next chunk (tens of ms on a CPU). Costs one control-plane round trip per such chunk.
DISPATCH_WAIT_S = 0.05


class PrefillWorker:
    def __init__(self, name, engine, connector, emit, *, chunk_tokens: int, batch_limit: int = 16,
                 order: str = "fcfs", classifier=None, seed: int = 0):
        self.name, self.engine, self.connector, self.emit = name, engine, connector, emit
        self.chunks = ChunkScheduler(chunk_tokens, batch_limit, order)
        self.classifier = classifier
        self.seed = seed
        self.requests: dict[int, dict] = {}     # rid -> {prompt_tokens, label, ids, kv}
        self.sending: dict[int, object] = {}    # xfer -> RequestKV kept alive until sent
        self.awaiting: set[int] = set()         # prefilled, not yet told where to send the KV
        self.awaiting_since = 0.0
        self.iterations = 0

    # ---- messages from the scheduler --------------------------------------------
    def on_request(self, msg: dict) -> None:
        rid = int(msg["rid"])
        self.requests[rid] = {"prompt_tokens": int(msg["prompt_tokens"]), "label": int(msg.get("label", -1)),
                              "ids": None, "kv": None, "given": msg.get("ids")}
        self.chunks.add(rid, int(msg["prompt_tokens"]))

    def on_send_kv(self, msg: dict) -> None:
        self.awaiting.discard(int(msg["rid"]))
        req = self.requests.pop(int(msg["rid"]))
        kv = req["kv"]
        self.sending[int(msg["xfer"])] = kv
        self.connector.send(int(msg["xfer"]), msg["dst"], faults.corrupt_kv(int(msg["rid"]), kv.view()))

    def on_give_back(self, msg: dict) -> None:
        """Hand back up to `count` (None: all) requests not started yet, in the order they
        would start (plans over time: a draining instance, or work for a new one)."""
        rids = self.chunks.take_waiting(msg.get("count"))
        for rid in rids:
            del self.requests[rid]
        self.emit({"op": "given_back", "rids": rids, "tag": msg.get("tag")})

    @property
    def busy(self) -> bool:
        return len(self.chunks) > 0 or self.connector.pending() > 0

    # ---- one iteration ----------------------------------------------------------
    def poll_transfers(self) -> None:
        for t in self.connector.poll():
            self.sending.pop(t.xfer_id, None)
            self.emit({"op": "kv_sent", "xfer": t.xfer_id, "state": t.state, "nbytes": t.nbytes,
                       "seconds": t.seconds, "error": t.error})

    def step(self) -> bool:
        """Run one chunk; False when there was nothing to prefill, or while the dispatch
        answers for the last chunk's requests are due (see DISPATCH_WAIT_S)."""
        self.poll_transfers()
        if self.awaiting and time.monotonic() - self.awaiting_since < DISPATCH_WAIT_S:
            return False
        slices = self.chunks.next_chunk()
        if not slices:
            return False
        t_start = time.monotonic()
        started = [s.rid for s in slices if s.start == 0]
        for rid in started:
            req = self.requests[rid]
            given = req.pop("given", None)
            req["ids"] = (torch.tensor(given, dtype=torch.long) if given is not None
                          else prompt_ids(self.seed, rid, req["prompt_tokens"], self.engine.vocab))
            req["kv"] = self.engine.new_kv(req["prompt_tokens"])
        if self.classifier is not None and started:
            self.classifier.run([self.requests[rid]["ids"] for rid in started])
        batch = [(self.requests[s.rid]["kv"], self.requests[s.rid]["ids"][s.start:s.start + s.tokens])
                 for s in slices]
        logits = self.engine.prefill(batch)
        if logits.device.type == "cuda":
            torch.cuda.synchronize(logits.device)
        t_end = time.monotonic()
        self.iterations += 1
        events = [{"rid": rid, "kind": "prefill_start", "t": t_start} for rid in started]
        for i, s in enumerate(slices):
            if not s.last:
                continue
            req = self.requests[s.rid]
            kv = req["kv"]
            req["ids"] = None
            events.append({"rid": s.rid, "kind": "prefilled", "t": t_end,
                           "first_token": int(logits[i].argmax()), "label": req["label"],
                           "shape": list(kv.view().shape), "dtype": dtype_name(kv.data.dtype),
                           "nbytes": kv.filled_bytes, "checksum": kv_checksum(kv.view())})
            self.awaiting.add(s.rid)
        self.awaiting_since = t_end
        tokens = sum(s.tokens for s in slices)
        self.emit({"op": "events", "items": events, "chunk_tokens": tokens, "slices": len(slices),
                   # cached tokens per new token, as PerfModel.prefill_time_s takes it
                   "context_tokens": round(sum(s.start * s.tokens for s in slices) / tokens),
                   "t_start": t_start, "t_end": t_end})
        return True
