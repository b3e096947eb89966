"""Fuzz the readers: whatever bytes a file holds, read_trace returns a Trace or raises
InputError - never another exception."""
import numpy as np
from hypothesis import HealthCheck, example, given, settings, strategies as st

from planner.errors import InputError
from traces import Trace, read_trace
from traces.formats import FORMATS

HEADERS = [
    "arrival_s,prompt_tokens,output_tokens",
    "TIMESTAMP,ContextTokens,GeneratedTokens",
    "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type",
    "conv_id,turn,prompt_tokens,response_tokens,context_tokens",
    "num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio",
    "prompt_tokens,output_tokens",
]
CELLS = st.one_of(
    st.integers(-5, 3000).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "nan", "NaN", "abc", "1e400", "-0", "0", "1.5", "2023-11-16 18:17:03.9799600",
                     "2023-11-16T18:17:03Z", "2023-13-45 99:99:99", '"', "9" * 30, "True", " 7 "]),
    st.text(max_size=6))
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _check(path, **kw):
    try:
        t = read_trace(path, **kw)
    except InputError as e:
        assert str(e) and "\n" not in str(e)  # one line
        return
    assert isinstance(t, Trace) and len(t) >= 1
    assert np.all(np.diff(t.arrival_s) >= 0) and t.arrival_s[0] == 0
    assert t.prompt_tokens.min() >= 1 and t.output_tokens.min() >= 1


@SETTINGS
@given(data=st.binary(max_size=300))
def test_random_bytes_never_crash(tmp_path, data):
    p = tmp_path / "f.csv"
    p.write_bytes(data)
    _check(p, rate_per_s=2.0)


@SETTINGS
@given(header=st.sampled_from(HEADERS), rows=st.lists(st.lists(CELLS, min_size=0, max_size=7), max_size=6),
       end=st.sampled_from(["\n", "", "\r\n"]), fmt=st.sampled_from([None, None, *FORMATS]),
       sort=st.booleans(), rate=st.sampled_from([None, 3.0]))
def test_csv_like_tables_never_crash(tmp_path, header, rows, end, fmt, sort, rate):
    p = tmp_path / "t.csv"
    p.write_text(header + "\n" + "\n".join(",".join(r) for r in rows) + end, encoding="utf-8")
    _check(p, fmt=fmt, sort=sort, rate_per_s=rate)


STAMPS = st.one_of(
    st.datetimes().map(lambda d: d.isoformat(sep=" ")), st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.builds(lambda d, h: d.isoformat() + f"{h:+03d}:00", st.datetimes(), st.integers(-14, 14)),
    st.sampled_from(["2023-11-16 18:17:03.9799600", "2023-11-16 18:17:03.123456789", "3023-01-01 00:00:00",
                     "1700000000", "", "2023-02-30 00:00:00", "24:00"]))


@SETTINGS
@given(stamps=st.lists(STAMPS, min_size=1, max_size=5), sort=st.booleans())
@example(stamps=["2023-11-16 18:17:03.9799600", "1731-01-01 00:00:00"], sort=False)  # int64 ns overflow
def test_azure_timestamps_never_crash(tmp_path, stamps, sort):
    p = tmp_path / "az.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{s},5,6\n" for s in stamps))
    _check(p, sort=sort)


JSON_VALUES = st.one_of(st.integers(-10, 10**6), st.integers(), st.floats(), st.none(), st.booleans(),
                        st.text(max_size=5), st.lists(st.integers(0, 9), max_size=3),
                        st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))


@SETTINGS
@given(records=st.lists(st.fixed_dictionaries({}, optional={
           "timestamp": JSON_VALUES, "input_length": JSON_VALUES, "output_length": JSON_VALUES,
           "hash_ids": JSON_VALUES}), max_size=5),
       cut=st.integers(0, 30), sort=st.booleans())
def test_jsonl_never_crashes(tmp_path, records, cut, sort):
    import json
    text = "\n".join(json.dumps(r) for r in records)
    if cut and len(text) > cut:
        text = text[:-cut]
    p = tmp_path / "m.jsonl"
    p.write_text(text, encoding="utf-8")
    _check(p, fmt="mooncake" if cut % 2 else None, sort=sort)
