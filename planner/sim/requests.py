"""Per-request state shared by every part of one simulation run (plain lists: fast to index).

The record columns follow the shared schema (planner.records); the rest is bookkeeping:
`generated` counts tokens made by decode iterations so far (survives a preemption),
`epoch` invalidates heap entries of a preempted request, `has_kv` says whether the
request's KV cache currently sits on the instance that holds it.
"""
from __future__ import annotations

import math
from array import array

import numpy as np
import pandas as pd

from planner.records import RECORD_COLUMNS

NAN = math.nan


class Requests:
    """Columns as typed arrays (`array.array`): 8 bytes a value, no Python object per
    request, so a million-request run stays small; indexing is as fast as a list's."""

    def __init__(self, arrival_s, prompt_tokens, output_tokens, predicted_bucket, predicted_tokens):
        n = len(arrival_s)
        self.arrival = array("d", np.asarray(arrival_s, dtype=np.float64).tobytes())
        self.prompt = array("q", np.asarray(prompt_tokens, dtype=np.int64).tobytes())
        self.output = array("q", np.asarray(output_tokens, dtype=np.int64).tobytes())
        self.bucket = array("q", np.asarray(predicted_bucket, dtype=np.int64).tobytes())
        self.pred = array("q", np.asarray(predicted_tokens, dtype=np.int64).tobytes())  # bucket lower bound
        minus_one = np.full(n, -1, dtype=np.int64).tobytes()
        nan = np.full(n, np.nan).tobytes()
        zero = np.zeros(n, dtype=np.int64).tobytes()
        self.prefill_instance = array("q", minus_one)
        self.decode_instance = array("q", minus_one)
        self.prefill_start = array("d", nan)
        self.first_token = array("d", nan)
        self.kv_done = array("d", nan)
        self.decode_start = array("d", nan)
        self.finish = array("d", nan)
        self.generated = array("q", zero)
        self.epoch = array("q", zero)
        self.preemptions = array("q", zero)
        self.has_kv = bytearray(n)
        self.aborted = bytearray(n)

    def __len__(self) -> int:
        return len(self.arrival)

    def to_frame(self) -> pd.DataFrame:
        def f(a):
            return np.frombuffer(a, dtype=np.float64)

        def i(a):
            return np.frombuffer(a, dtype=np.int64)
        cols = {
            "request_id": np.arange(len(self), dtype=np.int64),
            "arrival_s": f(self.arrival), "prompt_tokens": i(self.prompt), "output_tokens": i(self.output),
            "prefill_instance": i(self.prefill_instance), "decode_instance": i(self.decode_instance),
            "prefill_start_s": f(self.prefill_start), "first_token_s": f(self.first_token),
            "kv_done_s": f(self.kv_done), "decode_start_s": f(self.decode_start), "finish_s": f(self.finish),
            "predicted_bucket": i(self.bucket),
        }
        return pd.DataFrame({c: cols[c] for c in RECORD_COLUMNS}, copy=False)
