"""Every reader on small fixtures written here; numbers checkable by hand."""
import gzip
from datetime import datetime
import json

import numpy as np
import pytest

from planner.errors import InputError
from traces import Trace, read_trace, write_trace


def write(tmp_path, name, text, encoding="utf-8"):
    p = tmp_path / name
    p.write_text(text, encoding=encoding)
    return p


def test_plain_csv_keeps_extras_and_offsets_from_first(tmp_path):
    p = write(tmp_path, "p.csv", "arrival_s,prompt_tokens,output_tokens,user\n"
                                 "10.5,100,20,a\n11.0,200,30,b\n13.5,5,1,a\n")
    t = read_trace(p)
    assert t.arrival_s.tolist() == [0.0, 0.5, 3.0]
    assert t.prompt_tokens.tolist() == [100, 200, 5] and t.output_tokens.tolist() == [20, 30, 1]
    assert t.extra["user"].tolist() == ["a", "b", "a"]
    assert t.dropped == {} and t.name == "p.csv"
    assert t.rate_per_s == pytest.approx(3 / 3.0)


def test_write_read_round_trip(tmp_path):
    t = Trace(np.array([0.0, 0.1234567, 2.5]), np.array([1, 513, 9]), np.array([128, 129, 2]),
              extra={"tag": np.array(["x", "y", "z"], dtype=object)})
    p = tmp_path / "rt.csv"
    write_trace(t, p)
    assert p.read_text().splitlines()[:2] == ["arrival_s,prompt_tokens,output_tokens,tag", "0.000000,1,128,x"]
    back = read_trace(p)
    np.testing.assert_allclose(back.arrival_s, [0.0, 0.123457, 2.5])
    assert back.prompt_tokens.tolist() == [1, 513, 9] and back.extra["tag"].tolist() == ["x", "y", "z"]


def test_gzip_crlf_bom_and_utf16(tmp_path):
    body = "arrival_s,prompt_tokens,output_tokens\r\n0,3,4\r\n1,5,6\r\n"
    for name, data in (("a.csv.gz", gzip.compress(body.encode())),
                       ("b.csv", b"\xef\xbb\xbf" + body.encode()),
                       ("c.csv", body.encode("utf-16"))):
        p = tmp_path / name
        p.write_bytes(data)
        t = read_trace(p)
        assert t.prompt_tokens.tolist() == [3, 5] and t.arrival_s.tolist() == [0.0, 1.0], name


def test_azure_wall_clock_with_seven_fractional_digits(tmp_path):
    p = write(tmp_path, "az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                                  "2023-11-16 18:17:03.9799600,4808,10\n"
                                  "2023-11-16 18:17:04.0319600,3180,8\n"
                                  "2023-11-16 18:18:04.0319601,7,0\n"
                                  "2023-11-16 18:18:05.0000000,10,1\n")
    t = read_trace(p)
    assert len(t) == 3 and t.dropped == {"GeneratedTokens = 0": 1}
    np.testing.assert_allclose(t.arrival_s, [0.0, 0.052, 61.02004], atol=1e-9)
    assert t.prompt_tokens.tolist() == [4808, 3180, 10]


def test_azure_dates_outside_nanosecond_range_keep_their_true_spacing(tmp_path):
    """Regression: 3023 is past pandas' nanosecond range (2262); converting to ns wrapped
    around silently and gave a positive, wrong gap."""
    p = write(tmp_path, "far.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                                   "2023-01-01 00:00:00,5,6\n3023-01-01 00:00:00,5,6\n")
    expected = (datetime(3023, 1, 1) - datetime(2023, 1, 1)).total_seconds()
    assert read_trace(p).arrival_s[1] == pytest.approx(expected, rel=1e-12)


def test_azure_dates_centuries_apart_are_an_input_error(tmp_path):
    """Regression (found by the fuzz test): differences in nanoseconds overflowed int64."""
    p = write(tmp_path, "old.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                                   "2023-11-16 18:17:03.9799600,5,6\n1731-01-01 00:00:00,5,6\n")
    with pytest.raises(InputError, match="span too many years"):
        read_trace(p)


def test_mooncake_jsonl_ms_timestamps_shared(tmp_path):
    lines = [{"timestamp": 0, "input_length": 6955, "output_length": 52, "hash_ids": [0, 1, 2]},
             {"timestamp": 0, "input_length": 100, "output_length": 10, "hash_ids": [3]},
             {"timestamp": 1500, "input_length": 8, "output_length": 4, "hash_ids": []}]
    p = write(tmp_path, "mc.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    t = read_trace(p)
    assert t.arrival_s.tolist() == [0.0, 0.0, 1.5]
    assert t.prompt_tokens.tolist() == [6955, 100, 8] and t.output_tokens.tolist() == [52, 10, 4]
    assert t.extra["hash_ids"].tolist() == ["0 1 2", "3", ""]


def test_burstgpt_failed_requests_dropped_and_counted(tmp_path):
    p = write(tmp_path, "bg.csv", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                                  "5,ChatGPT,472,18,490,Conversation log\n"
                                  "45,ChatGPT,1087,0,1087,Conversation log\n"
                                  "118,GPT-4,417,276,693,API log\n"
                                  "200,GPT-4,0,0,0,API log\n")
    t = read_trace(p)
    assert t.arrival_s.tolist() == [0.0, 113.0]
    assert t.prompt_tokens.tolist() == [472, 417] and t.output_tokens.tolist() == [18, 276]
    assert t.extra["model"].tolist() == ["ChatGPT", "GPT-4"]
    assert t.extra["log_type"].tolist() == ["Conversation log", "API log"]
    # Row 4 has both zeros: counted once, under the first reason that applies.
    assert t.dropped == {"zero request tokens": 1, "failed (0 response tokens)": 1}


SHAREGPT = ("conv_id,turn,prompt_tokens,response_tokens,context_tokens\n"
            "a_0,0,34,244,34\na_0,1,36,319,314\nb_0,0,0,12,0\nb_0,1,5,0,17\nc_0,0,7,9,7\n")


def test_sharegpt_history_by_default_per_turn_on_request(tmp_path):
    p = write(tmp_path, "sg.csv", SHAREGPT)
    t = read_trace(p, rate_per_s=2.0, seed=3)
    assert t.prompt_tokens.tolist() == [34, 314, 7] and t.output_tokens.tolist() == [244, 319, 9]
    assert t.dropped == {"context_tokens = 0": 1, "response_tokens = 0": 1}
    assert t.extra["conv_id"].tolist() == ["a_0", "a_0", "c_0"]
    per_turn = read_trace(p, rate_per_s=2.0, per_turn=True)
    assert per_turn.prompt_tokens.tolist() == [34, 36, 7]
    assert per_turn.dropped == {"prompt_tokens = 0": 1, "response_tokens = 0": 1}


def test_length_only_arrivals_are_seeded_and_at_rate(tmp_path):
    rows = "\n".join(f"{10 + i % 50},{1 + i % 7},{i}" for i in range(2000))
    p = write(tmp_path, "s.csv", "num_prefill_tokens,num_decode_tokens,num_total_tokens\n" + rows + "\n")
    a = read_trace(p, rate_per_s=4.0, seed=1)
    b = read_trace(p, rate_per_s=4.0, seed=1)
    c = read_trace(p, rate_per_s=4.0, seed=2)
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    assert not np.array_equal(a.arrival_s, c.arrival_s)
    assert a.rate_per_s == pytest.approx(4.0, rel=0.06)
    gaps = np.diff(read_trace(p, rate_per_s=4.0, cv=3.0).arrival_s)
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.2)
    assert np.all(np.diff(read_trace(p, rate_per_s=4.0, cv=0.0).arrival_s) == pytest.approx(0.25))
    assert a.prompt_tokens[:3].tolist() == [10, 11, 12] and a.output_tokens[:3].tolist() == [1, 2, 3]


def test_lengths_without_arrivals_and_format_override(tmp_path):
    p = write(tmp_path, "l.csv", "prompt_tokens,output_tokens\n3,4\n5,6\n")
    t = read_trace(p, rate_per_s=1.0, cv=0.0)
    assert t.arrival_s.tolist() == [0.0, 1.0]
    # The same columns under another header: --format names the reader, columns must exist.
    with pytest.raises(InputError, match=r"missing column\(s\) num_prefill_tokens, num_decode_tokens for the sarathi"):
        read_trace(p, "sarathi", rate_per_s=1.0)


def test_rate_rescales_timed_traces(tmp_path):
    p = write(tmp_path, "p.csv", "arrival_s,prompt_tokens,output_tokens\n0,1,1\n2,1,1\n4,1,1\n")
    t = read_trace(p, rate_per_s=3.0)  # 3 rows over 4 s = 0.75 req/s -> 3 req/s: time / 4
    assert t.arrival_s.tolist() == [0.0, 0.5, 1.0] and t.rate_per_s == pytest.approx(3.0)


def test_sort_is_stable_and_carries_extras(tmp_path):
    p = write(tmp_path, "u.csv", "arrival_s,prompt_tokens,output_tokens,id\n3,1,1,a\n1,2,2,b\n3,3,3,c\n1,4,4,d\n")
    with pytest.raises(InputError, match=r"u\.csv: line 3: arrival time goes backwards.*--sort"):
        read_trace(p)
    t = read_trace(p, sort=True)
    assert t.extra["id"].tolist() == ["b", "d", "a", "c"] and t.arrival_s.tolist() == [0, 0, 2, 2]
    assert t.prompt_tokens.tolist() == [2, 4, 1, 3]


def test_columns_matched_case_and_space_insensitively(tmp_path):
    p = write(tmp_path, "c.csv", " Arrival_S , PROMPT_TOKENS ,output_tokens\n0,1,2\n")
    assert read_trace(p).output_tokens.tolist() == [2]


def test_blank_lines_skipped_line_numbers_kept(tmp_path):
    p = write(tmp_path, "b.csv", "arrival_s,prompt_tokens,output_tokens\n0,1,1\n\n\n1,x,1\n")
    with pytest.raises(InputError, match=r"b\.csv: line 5, column prompt_tokens: 'x' is not a number"):
        read_trace(p)
