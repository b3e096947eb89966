"""Per-request state shared by every part of one simulation run (plain lists: fast to index).

The record columns follow the shared schema (planner.records); the rest is bookkeeping:
`generated` counts tokens made by decode iterations so far (survives a preemption),
`epoch` invalidates heap entries of a preempted request, `has_kv` says whether the
request's KV cache currently sits on the instance that holds it.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..records import RECORD_COLUMNS

NAN = math.nan


class Requests:
    def __init__(self, arrival_s, prompt_tokens, output_tokens, predicted_bucket, predicted_tokens):
        self.arrival = [float(x) for x in arrival_s]
        self.prompt = [int(x) for x in prompt_tokens]
        self.output = [int(x) for x in output_tokens]
        self.bucket = [int(x) for x in predicted_bucket]
        self.pred = [int(x) for x in predicted_tokens]     # bucket lower bound, tokens
        n = len(self.arrival)
        self.prefill_instance = [-1] * n
        self.decode_instance = [-1] * n
        self.prefill_start = [NAN] * n
        self.first_token = [NAN] * n
        self.kv_done = [NAN] * n
        self.decode_start = [NAN] * n
        self.finish = [NAN] * n
        self.generated = [0] * n
        self.epoch = [0] * n
        self.has_kv = [False] * n
        self.preemptions = [0] * n
        self.aborted = [False] * n

    def __len__(self) -> int:
        return len(self.arrival)

    def add(self, arrival_s: float, prompt: int, output: int, bucket: int, pred: int) -> int:
        """Append one request (closed loop); returns its id."""
        self.arrival.append(float(arrival_s))
        self.prompt.append(int(prompt))
        self.output.append(int(output))
        self.bucket.append(int(bucket))
        self.pred.append(int(pred))
        for col, v in ((self.prefill_instance, -1), (self.decode_instance, -1), (self.prefill_start, NAN),
                       (self.first_token, NAN), (self.kv_done, NAN), (self.decode_start, NAN),
                       (self.finish, NAN), (self.generated, 0), (self.epoch, 0), (self.has_kv, False),
                       (self.preemptions, 0), (self.aborted, False)):
            col.append(v)
        return len(self.arrival) - 1

    def to_frame(self) -> pd.DataFrame:
        cols = {
            "request_id": np.arange(len(self), dtype=np.int64),
            "arrival_s": np.asarray(self.arrival, dtype=float),
            "prompt_tokens": np.asarray(self.prompt, dtype=np.int64),
            "output_tokens": np.asarray(self.output, dtype=np.int64),
            "prefill_instance": np.asarray(self.prefill_instance, dtype=np.int64),
            "decode_instance": np.asarray(self.decode_instance, dtype=np.int64),
            "prefill_start_s": np.asarray(self.prefill_start, dtype=float),
            "first_token_s": np.asarray(self.first_token, dtype=float),
            "kv_done_s": np.asarray(self.kv_done, dtype=float),
            "decode_start_s": np.asarray(self.decode_start, dtype=float),
            "finish_s": np.asarray(self.finish, dtype=float),
            "predicted_bucket": np.asarray(self.bucket, dtype=np.int64),
        }
        df = pd.DataFrame(cols, columns=list(RECORD_COLUMNS))
        return df
