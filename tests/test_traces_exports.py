"""Benchmark exports and request logs people have: the sample files in traces/examples/
(written from each tool's documented fields), plus edge cases built here."""
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.errors import InputError
from traces import read_trace

EX = Path(__file__).resolve().parents[1] / "traces" / "examples"


def test_vllm_result_drops_failed_keeps_measured_and_draws_at_its_rate():
    raw = json.loads((EX / "vllm_bench_result.json").read_text())
    t = read_trace(EX / "vllm_bench_result.json")
    ok = [i for i, e in enumerate(raw["errors"]) if not e]
    assert len(t) == len(ok) == 39 and t.dropped == {"failed in the benchmark (error recorded)": 1}
    assert t.prompt_tokens.tolist() == [raw["input_lens"][i] for i in ok]
    assert t.output_tokens.tolist() == [raw["output_lens"][i] for i in ok]
    np.testing.assert_allclose(t.extra["measured_ttft_s"], [raw["ttfts"][i] for i in ok])
    np.testing.assert_allclose(t.extra["measured_itl_mean_s"][0], np.mean(raw["itls"][ok[0]]))
    assert any("request_rate 4 req/s" in n for n in t.notes)
    assert 2.5 < t.rate_per_s < 6  # Poisson draw of 39 arrivals at 4 req/s
    t2 = read_trace(EX / "vllm_bench_result.json", rate_per_s=20, seed=3)
    assert t2.rate_per_s > 12 and not any("request_rate" in n for n in t2.notes)


def test_bench_result_with_start_times_uses_them(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"input_lens": [5, 6, 7], "output_lens": [2, 3, 4], "start_times": [100.5, 100.75, 102.0],
                             "errors": ["", "", ""], "request_rate": "inf", "completed": 3,
                             "request_throughput": 1.0}))
    t = read_trace(p)
    assert t.arrival_s.tolist() == [0.0, 0.25, 1.5] and t.notes == ()


def test_summary_only_results_name_the_flag_that_adds_details(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"completed": 10, "request_throughput": 2.0, "mean_ttft_ms": 50.0}))
    with pytest.raises(InputError, match="--save-detailed"):
        read_trace(p)
    q = tmp_path / "s.jsonl"
    q.write_text(json.dumps({"backend": "sglang", "completed": 10, "request_throughput": 2.0}) + "\n")
    with pytest.raises(InputError, match="--output-details"):
        read_trace(q)


def test_sglang_reads_the_last_run():
    runs = [json.loads(x) for x in (EX / "sglang_bench.jsonl").read_text().splitlines()]
    t = read_trace(EX / "sglang_bench.jsonl")
    assert t.prompt_tokens.tolist() == runs[-1]["input_lens"] and len(t) == 24
    assert any("2 benchmark runs" in n for n in t.notes)


def test_aiperf_arrivals_from_ns_failed_dropped_ttft_in_seconds():
    recs = [json.loads(x) for x in (EX / "aiperf_profile_export.jsonl").read_text().splitlines()]
    good = [r for r in recs if r["error"] is None]
    t = read_trace(EX / "aiperf_profile_export.jsonl")
    assert len(t) == len(good) == 29 and t.dropped == {"failed (error recorded)": 1}
    start = [r["metadata"]["request_start_ns"] for r in good]
    np.testing.assert_allclose(t.arrival_s, (np.array(start) - start[0]) * 1e-9, atol=1e-6)
    assert t.prompt_tokens[0] == good[0]["metrics"]["input_sequence_length"]["value"]
    assert t.extra["measured_ttft_s"][0] == pytest.approx(good[0]["metrics"]["time_to_first_token"]["value"] / 1e3)


def test_genai_perf_counts_chunks_and_approximates_prompts():
    doc = json.loads((EX / "genai_perf_profile_export.json").read_text())
    reqs = doc["experiments"][0]["requests"]
    t = read_trace(EX / "genai_perf_profile_export.json")
    assert t.output_tokens.tolist() == [len(r["response_outputs"]) - 1 for r in reqs]  # all but [DONE]
    text = json.loads(reqs[0]["request_inputs"]["payload"])["messages"][0]["content"]
    assert t.prompt_tokens[0] == -(-len(text) // 4)
    assert t.extra["measured_ttft_s"][0] == pytest.approx(0.08)
    assert any("characters / 4" in n for n in t.notes)


def test_sharegpt_conversations_history_per_turn_and_format_name():
    convs = json.loads((EX / "sharegpt_conversations.json").read_text())
    t = read_trace(EX / "sharegpt_conversations.json", rate_per_s=2)
    n_exchanges = sum(len(c["conversations"]) // 2 for c in convs)
    assert len(t) == n_exchanges == 14
    c0 = [x["value"] for x in convs[0]["conversations"]]
    a = [-(-len(x) // 4) for x in c0]
    assert t.prompt_tokens[:2].tolist() == [a[0], a[0] + a[1] + a[2]] and t.output_tokens[:2].tolist() == [a[1], a[3]]
    turn = read_trace(EX / "sharegpt_conversations.json", fmt="sharegpt", rate_per_s=2, per_turn=True)
    assert turn.prompt_tokens[1] == a[2]
    with pytest.raises(InputError, match="no arrival times; pass --rate"):
        read_trace(EX / "sharegpt_conversations.json")


def test_sharegpt_with_a_local_tokenizer(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers
    tok = tokenizers.Tokenizer(models.WordLevel({"[UNK]": 0, "hi": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    p = tmp_path / "c.json"
    p.write_text(json.dumps([{"id": "x", "conversations": [{"from": "human", "value": "hi there you"},
                                                            {"from": "gpt", "value": "hello hello"}]}]))
    t = read_trace(p, rate_per_s=1, tokenizer=str(tmp_path))
    assert (t.prompt_tokens[0], t.output_tokens[0]) == (3, 2)
    assert any("tokenizer" in n and "approximated" not in n for n in t.notes)


def test_openai_logs_iso_times_and_batch_output_created_seconds():
    t = read_trace(EX / "openai_log.jsonl")
    assert len(t) == 29 and t.dropped == {"no usage (failed or cut-off request)": 1}
    first = json.loads((EX / "openai_log.jsonl").read_text().splitlines()[0])
    assert t.prompt_tokens[0] == first["usage"]["prompt_tokens"] and t.arrival_s[0] == 0.0
    b = read_trace(EX / "openai_batch_output.jsonl")
    assert len(b) == 12 and b.arrival_s[:3].tolist() == [0.0, 3.0, 6.0]


def test_columns_map_any_table_and_time_unit_is_checked():
    cols = {"arrival": "timestamp", "prompt": "input_tokens", "output": "output_tokens"}
    with pytest.raises(InputError, match="reads as Unix time in ms, not s; pass --time-unit ms"):
        read_trace(EX / "requests.csv", columns=cols)
    t = read_trace(EX / "requests.csv", columns=cols, time_unit="ms")
    assert len(t) == 60 and 2 < t.rate_per_s < 20 and t.extra["user"][0].startswith("u")
    lengths = read_trace(EX / "requests.csv", columns={"prompt": "input_tokens", "output": "output_tokens"},
                         rate_per_s=3)
    assert lengths.prompt_tokens.tolist() == t.prompt_tokens.tolist()


def test_relative_milliseconds_taken_as_seconds_are_refused(tmp_path):
    p = tmp_path / "ms.csv"
    p.write_text("arrival_s,prompt_tokens,output_tokens\n" + "".join(f"{i * 250},10,5\n" for i in range(40)))
    with pytest.raises(InputError, match=r"40 requests over .* if the times are in s; if they are in ms pass "
                                         r"--time-unit ms \(4.1 req/s\)"):
        read_trace(p)
    assert read_trace(p, time_unit="ms").rate_per_s == pytest.approx(40 / 9.75)
    assert read_trace(p, time_unit="s").span_s == 9750.0       # the user said so
    assert read_trace(p, rate_per_s=2.0).rate_per_s == pytest.approx(2.0)  # unit cancels out


def test_time_unit_refused_where_the_format_fixes_it():
    with pytest.raises(InputError, match="fixes its time unit"):
        read_trace(EX / "openai_log.jsonl", time_unit="ms")
    with pytest.raises(InputError, match="has no arrival times to read in ms"):
        read_trace(EX / "sharegpt_conversations.json", rate_per_s=1, time_unit="ms")


@pytest.mark.parametrize("text,match", [
    ("arrival=t,prompt=p", "needs output=COLUMN"),
    ("when=t,prompt=p,output=o", "KEY one of arrival, prompt, output"),
    ("prompt=p,prompt=q,output=o", "prompt is given twice"),
])
def test_bad_columns_flag(tmp_path, text, match):
    p = tmp_path / "x.csv"
    p.write_text("t,p,o\n0,1,1\n")
    r = CliRunner().invoke(main, ["trace", "stats", str(p), "--columns", text])
    assert r.exit_code == 2 and match in r.output and "Traceback" not in r.output


def test_errors_quote_at_most_about_200_characters(tmp_path):
    big = tmp_path / "big.json"
    big.write_text(json.dumps([[f"turn {i}" * 20 for i in range(3)] for _ in range(5000)]))  # ~1 MB, no objects
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(f"column_{i}" for i in range(5000)) + "\n" + ",".join("1" * 5000) + "\n")
    conv = tmp_path / "conv.json"
    conv.write_text(json.dumps([{"conversations": "x" * 100_000}]))
    for p in (big, wide, conv):
        r = CliRunner().invoke(main, ["trace", "stats", str(p), "--rate", "1"])
        assert r.exit_code == 2 and r.output.startswith("error: ") and "Traceback" not in r.output, r.output[:300]
        assert len(r.output) - len(str(p)) < 560, (p.name, len(r.output))  # path + advice (~330) + <= ~200 quoted


def test_cli_prints_notes_and_converts_exports(tmp_path):
    out = tmp_path / "plain.csv"
    r = CliRunner().invoke(main, ["trace", "convert", str(EX / "vllm_bench_result.json"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "note: arrivals drawn at the benchmark's request_rate 4 req/s" in r.output
    back = read_trace(out)
    assert len(back) == 39 and "measured_ttft_s" in back.extra


def test_stats_shows_what_the_benchmark_measured():
    raw = json.loads((EX / "vllm_bench_result.json").read_text())
    ok = [t for t, e in zip(raw["ttfts"], raw["errors"]) if not e]
    r = CliRunner().invoke(main, ["trace", "stats", str(EX / "vllm_bench_result.json")])
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("measured TTFT"))
    assert f"p50 {np.percentile(ok, 50):.3g} s" in line and "(39 requests" in line
