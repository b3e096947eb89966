"""Fuzz the export and log readers: any JSON document or JSONL built from the formats' own
keys gives a Trace or a one-line InputError - never another exception."""
import json

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from planner.errors import InputError
from traces import Trace, read_trace

KEYS = ["input_lens", "output_lens", "errors", "ttfts", "itls", "start_times", "request_rate", "burstiness",
        "completed", "request_throughput", "experiments", "requests", "timestamp", "response_timestamps",
        "response_outputs", "request_inputs", "payload", "response", "choices", "delta", "content", "messages",
        "conversations", "from", "value", "usage", "prompt_tokens", "completion_tokens", "metadata", "metrics",
        "request_start_ns", "input_sequence_length", "output_sequence_length", "unit", "error", "created"]
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**19), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from(["", "x", "human", "gpt", "ms", "data: [DONE]", "2025-01-01T00:00:00Z",
                                    'data: {"choices": [{"delta": {"content": "a"}}]}']))
JSON = st.recursive(LEAVES, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                   st.dictionaries(st.sampled_from(KEYS), kids, max_size=5)),
                    max_leaves=25)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _check(path, **kw):
    try:
        t = read_trace(path, **kw)
    except InputError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert isinstance(t, Trace) and len(t) >= 1 and t.arrival_s[0] == 0
    assert np.all(np.diff(t.arrival_s) >= 0) and t.prompt_tokens.min() >= 1 and t.output_tokens.min() >= 1


@SETTINGS
@given(doc=JSON, name=st.sampled_from(["r.json", "r.jsonl"]), rate=st.sampled_from([None, 2.0]))
def test_json_documents_never_crash(tmp_path, doc, name, rate):
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    _check(p, rate_per_s=rate)


@SETTINGS
@given(lines=st.lists(st.dictionaries(st.sampled_from(KEYS), JSON, max_size=5), min_size=1, max_size=4),
       unit=st.sampled_from([None, "ms"]))
def test_jsonl_logs_never_crash(tmp_path, lines, unit):
    p = tmp_path / "log.jsonl"
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    _check(p, time_unit=unit)
