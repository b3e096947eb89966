"""The decode worker's logic: receive KV caches, admit them under the local policy, run
continuous batching until each request has its trace's output tokens.

`on_expect` posts the receive of a request's KV (the scheduler says from whom, with the
shape); `step` polls arrivals, admits (`admission.Admission`, the simulator's rules),
preempts on memory overflow and runs one batched decode iteration. A preempted request
drops its KV; on readmission its KV is recomputed by a prefill of prompt + generated
tokens (vLLM's recompute), which stalls the batch as it would on a real instance.

Serving (`testbed serve`): `stream_tokens` sends each iteration's new tokens at once
(`{"op": "tokens", "t", "rids", "tokens"}`, before the iteration's events); a request may
carry its prompt ids (`prompt_ids`, for a recompute), `stop_ids` (end of sequence: the
request finishes early once it has `min_tokens`) - without them it runs to
`output_tokens` exactly, as a trace replay wants.
"""
from __future__ import annotations

import time

import torch

from ..kv.base import DTYPES, kv_checksum
from ..kv_cache import RequestKV
from .admission import Admission, DecodeItem
from .tokens import prompt_ids


# Iteration records (batch, context, times) ride with the next request events, or leave
# on their own after this long: one control message per decode step would wake the
# scheduler ~200 times a second, and on a small machine it runs on the workers' cores.
FLUSH_S = 0.1


class DecodeWorker:
    def __init__(self, name, engine, connector, emit, *, policy: str = "reserve_dynamic",
                 capacity_tokens: int = 65536, block_tokens: int = 16, batch_limit: int = 256,
                 return_tokens: bool = False, stream_tokens: bool = False, seed: int = 0):
        self.name, self.engine, self.connector, self.emit = name, engine, connector, emit
        self.admission = Admission(policy, capacity_tokens, block_tokens, batch_limit)
        self.return_tokens = return_tokens
        self.stream_tokens = stream_tokens
        self.seed = seed
        self.meta: dict[int, dict] = {}          # xfer -> request info, until the KV arrives
        self.state: dict[int, dict] = {}         # rid -> {kv, tokens, output_tokens, started}
        self.waiting: list[DecodeItem] = []
        self.running: list[DecodeItem] = []
        self.iterations = 0
        self.preemptions = 0
        self._records: list[dict] = []           # iteration records not sent yet

    def on_expect(self, msg: dict) -> None:
        xfer = int(msg["xfer"])
        self.meta[xfer] = msg
        self.connector.expect(xfer, msg["src"], msg["shape"], DTYPES[msg["dtype"]], self.engine.device)

    @property
    def busy(self) -> bool:
        return bool(self.running or self.waiting or self.meta)

    def _arrivals(self, events: list) -> None:
        for t in self.connector.poll():
            if t.side != "recv":
                continue
            msg = self.meta.pop(t.xfer_id)
            rid = int(msg["rid"])
            if t.state != "done":
                raise RuntimeError(f"KV transfer of request {rid} from {msg['src']} failed: {t.error}")
            want = msg.get("checksum")
            if want is not None and kv_checksum(t.tensor) != int(want):
                raise RuntimeError(f"KV transfer of request {rid} from {msg['src']} arrived corrupted: its checksum "
                                   f"{kv_checksum(t.tensor):#x} is not the sender's {int(want):#x}; not decoded")
            out, prompt = int(msg["output_tokens"]), int(msg["prompt_tokens"])
            kv = RequestKV.from_view(t.tensor, prompt + out, device=self.engine.device)
            self.connector.release(t.xfer_id)
            now = time.monotonic()
            events.append({"rid": rid, "kind": "kv_done", "t": now, "nbytes": t.nbytes, "seconds": t.seconds})
            first = int(msg["first_token"])
            stop = frozenset(int(i) for i in msg.get("stop_ids") or ())
            min_tokens = int(msg.get("min_tokens") or 0)
            if out <= 1 or (first in stop and min_tokens <= 1):
                events.append({"rid": rid, "kind": "decode_start", "t": now})
                events.append(self._finished(rid, now, [first]))
                continue
            self.state[rid] = {"kv": kv, "tokens": [first], "output_tokens": out, "started": False,
                               "prompt_tokens": prompt, "prompt_ids": msg.get("prompt_ids"),
                               "stop": stop, "min_tokens": min_tokens}
            self.waiting.append(DecodeItem(rid, prompt, int(msg.get("predicted_tokens", 0))))

    def _finished(self, rid: int, t: float, tokens: list[int]) -> dict:
        ev = {"rid": rid, "kind": "finished", "t": t}
        if self.return_tokens:
            ev["tokens"] = tokens
        return ev

    def _recompute(self, items: list[DecodeItem]) -> None:
        """Rebuild the KV of readmitted (preempted) requests: prompt + generated tokens but
        the last, whose KV the next decode iteration writes."""
        slices = []
        for it in items:
            s = self.state[it.rid]
            prompt = (torch.tensor(s["prompt_ids"], dtype=torch.long) if s["prompt_ids"] is not None
                      else prompt_ids(self.seed, it.rid, s["prompt_tokens"], self.engine.vocab))
            ids = torch.cat([prompt, torch.tensor(s["tokens"][:-1], dtype=torch.long)])
            s["kv"] = self.engine.new_kv(s["prompt_tokens"] + s["output_tokens"])
            slices.append((s["kv"], ids))
        self.engine.prefill(slices)

    def step(self) -> bool:
        events: list = []
        self._arrivals(events)
        n = self.admission.admit(self.running, self.waiting)
        if n:
            admitted = self.waiting[:n]
            del self.waiting[:n]
            lost = [it for it in admitted if self.state[it.rid]["kv"] is None]
            if lost:
                self._recompute(lost)
            self.running.extend(admitted)
        k = self.admission.overflow(self.running)
        if k:
            self.preemptions += k
            evicted = self.running[-k:]
            del self.running[-k:]
            for it in evicted:
                self.state[it.rid]["kv"] = None
            self.waiting[:0] = evicted
        if not self.running:
            if events or self._records:
                self.flush(events)
            return False
        t_start = time.monotonic()
        states = [self.state[it.rid] for it in self.running]
        context = sum(s["kv"].length for s in states)
        logits = self.engine.decode([(s["kv"], s["tokens"][-1]) for s in states])
        nxt = logits.argmax(dim=-1).tolist()
        t_end = time.monotonic()
        self.iterations += 1
        keep = []
        for it, s, tok in zip(self.running, states, nxt):
            if not s["started"]:
                s["started"] = True
                events.append({"rid": it.rid, "kind": "decode_start", "t": t_start})
            s["tokens"].append(int(tok))
            it.generated += 1
            made = len(s["tokens"])
            if made >= s["output_tokens"] or (tok in s["stop"] and made >= s["min_tokens"]):
                events.append(self._finished(it.rid, t_end, s["tokens"]))
                del self.state[it.rid]
            else:
                keep.append(it)
        if self.stream_tokens:
            self.emit({"op": "tokens", "t": t_end, "rids": [it.rid for it in self.running], "tokens": nxt})
        self.running = keep
        self._records.append({"batch": len(states), "slices": len(states), "context_tokens": context,
                              "t_start": t_start, "t_end": t_end})
        if events or t_end - self._records[0]["t_start"] > FLUSH_S:
            self.flush(events)
        return True

    def flush(self, events: list = ()) -> None:
        """Send `events` with the iteration records held back (see FLUSH_S)."""
        self.emit({"op": "events", "items": list(events), "iterations": self._records})
        self._records = []
