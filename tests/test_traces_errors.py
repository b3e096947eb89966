"""Bad input: one line naming the file, the line and the column, what to do, exit code 2."""
import pytest
from click.testing import CliRunner

from planner.cli import main

HEADER = "arrival_s,prompt_tokens,output_tokens\n"


def stats_error(tmp_path, name, data, *args):
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    r = CliRunner().invoke(main, ["trace", "stats", str(p), *args])
    assert r.exit_code == 2, r.output
    msg = r.output.strip()
    assert msg.startswith("error: ") and "\n" not in msg and "Traceback" not in msg
    assert name in msg
    return msg


@pytest.mark.parametrize("name,data,args,expect", [
    ("missing.csv", "arrival_s,prompt_tokens\n0,1\n", [], "unrecognised columns (arrival_s, prompt_tokens)"),
    ("fmt.csv", HEADER + "0,1,1\n", ["--format", "azure"],
     "missing column(s) TIMESTAMP, ContextTokens, GeneratedTokens for the azure format"),
    ("text.csv", HEADER + "0,1,1\n1,many,2\n", [], "line 3, column prompt_tokens: 'many' is not a number"),
    ("neg.csv", HEADER + "0,1,1\n1,2,-3\n", [], "line 3, column output_tokens: -3 is negative"),
    ("frac.csv", HEADER + "0,1.5,1\n", [], "line 2, column prompt_tokens: 1.5 is not a whole number"),
    ("zero.csv", HEADER + "0,1,1\n1,0,2\n", [], "line 3, column prompt_tokens: 0 tokens; token counts must be >= 1 - "
                                               "remove such rows or pass --drop-zero"),
    ("nan.csv", HEADER + "0,1,1\n1,,2\n", [], "line 3, column prompt_tokens: empty value (NaN)"),
    ("nan2.csv", HEADER + "0,1,1\nNaN,3,2\n", [], "line 3, column arrival_s: empty value (NaN)"),
    ("inf.csv", HEADER + "0,1,1\ninf,3,2\n", [], "line 3, column arrival_s: inf is not a finite number"),
    ("unsorted.csv", HEADER + "0,1,1\n5,1,1\n4,1,1\n", [], "line 4: arrival time goes backwards (4 s after 5 s); "
                                                          "the file is not in arrival order - pass --sort"),
    ("empty.csv", "", [], "file is empty"),
    ("blank.csv", "\n \n", [], "file is empty"),
    ("header.csv", HEADER, [], "has a header but no requests"),
    ("latin1.csv", HEADER.encode() + b"0,1,1\n1,2,3 caf\xe9\n", [], "line 3 is not UTF-8 text (byte 0xe9"),
    ("binary.csv", b"\x00\x01\x02", [], "contains a NUL byte"),
    ("cut.csv", HEADER + "0,1,1\n1,2", [], "line 3 (the last) has fewer fields than the header's 3 and no line end: "
                                          "the file looks cut off"),
    ("wide.csv", HEADER + "0,1,1\n1,2,3,4\n", [], "line 3 has 4 fields but the header has 3"),
    ("lengths.csv", "num_prefill_tokens,num_decode_tokens\n5,6\n", [], "sarathi is a length-only dataset with no "
                                                                       "arrival times; pass --rate R"),
    ("alldrop.csv", "num_prefill_tokens,num_decode_tokens\n0,6\n3,0\n", ["--rate", "1"],
     "all 2 rows were dropped (1 num_prefill_tokens = 0, 1 num_decode_tokens = 0)"),
    ("az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,1,1\nyesterday,2,2\n", [],
     "line 3, column TIMESTAMP: 'yesterday' is not a date-time"),
    ("cut.jsonl", '{"timestamp": 0, "input_length": 5, "output_length": 2}\n{"timestamp": 9, "input_le', [],
     "line 2 (the last) is incomplete JSON: the file looks cut off"),
    ("bad.jsonl", '{"timestamp": 0, "input_length": 5, "output_length": 2}\n{oops}\n{"timestamp": 1}\n', [],
     "line 2 is not valid JSON"),
    ("list.jsonl", '{"timestamp": 0, "input_length": [5], "output_length": 2}\n', [],
     "line 1, column input_length: [5] is not a number"),
    ("huge.csv", HEADER + "0,1,1\n1,99999999999,1\n", [], "line 3, column prompt_tokens: 99999999999 is above"),
    ("tinyrate.csv", HEADER + "0,1,1\n1,2,2\n", ["--rate", "1e-320"], "cannot rescale arrivals spanning 1 s"),
])
def test_bad_input_one_line_exit_2(tmp_path, name, data, args, expect):
    assert expect in stats_error(tmp_path, name, data, *args)


def test_missing_file_and_bad_flags(tmp_path):
    r = CliRunner().invoke(main, ["trace", "stats", str(tmp_path / "nope.csv")])
    assert r.exit_code == 2 and "nope.csv: file not found" in r.output
    p = tmp_path / "ok.csv"
    p.write_text(HEADER + "0,1,1\n1,1,1\n")
    r = CliRunner().invoke(main, ["trace", "stats", str(p), "--window", "0"])
    assert r.exit_code == 2 and "--window" in r.output and "expected a finite number in (0," in r.output
    r = CliRunner().invoke(main, ["trace", "stats", str(p), "--rate", "-1"])
    assert r.exit_code == 2 and "--rate" in r.output and "out of range; expected a finite number in (0," in r.output


def test_drop_zero_counts_and_reports(tmp_path):
    p = tmp_path / "z.csv"
    p.write_text(HEADER + "0,1,1\n1,0,2\n2,3,0\n3,0,0\n4,5,5\n")
    r = CliRunner().invoke(main, ["trace", "stats", str(p), "--drop-zero"])
    assert r.exit_code == 0, r.output
    assert "note: dropped 3 rows on purpose (2 prompt_tokens = 0, 1 output_tokens = 0)" in r.output
    assert "requests       2   (dropped 3)" in r.output


def test_no_drop_zero_turns_dataset_zeros_into_errors(tmp_path):
    p = tmp_path / "sg.csv"
    p.write_text("conv_id,turn,prompt_tokens,response_tokens,context_tokens\na,0,3,0,3\n")
    msg = stats_error(tmp_path, "sg.csv", p.read_bytes(), "--rate", "1", "--no-drop-zero")
    assert "line 2, column response_tokens: 0 tokens" in msg
