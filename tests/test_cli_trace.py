"""`planner trace stats|generate|convert` end to end, and the bundled traces' provenance."""
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from planner.cli import main
from traces import read_trace
from traces.classes import class_shares

TRACES = Path(__file__).resolve().parent.parent / "traces"


def run(*args, code=0):
    r = CliRunner().invoke(main, list(map(str, args)))
    assert r.exit_code == code, r.output
    return r


def test_help_lists_the_commands():
    out = run("trace", "--help").output
    for cmd in ("stats", "generate", "convert"):
        assert cmd in out


def test_stats_text_on_bundled_mixed():
    out = run("trace", "stats", TRACES / "mixed.csv").stdout
    assert "requests       6,000" in out
    assert re.search(r"rate           12\.1\d\d req/s   inter-arrival CV 1\.0\d", out)
    assert "classes        LPLD 28.5%  LPHD 10.7%  HPLD 20.8%  HPHD 40.0%" in out
    assert "per 60 s" in out and "dropped" not in out


def test_stats_json_window_and_thresholds():
    s = json.loads(run("trace", "stats", TRACES / "lpld.csv", "--json", "--window", "30",
                       "--light-prompt", "256").stdout)
    assert s["window_s"] == 30 and s["light_prompt_tokens"] == 256
    assert s["class_shares"]["LPLD"] + s["class_shares"]["HPLD"] == pytest.approx(1.0)
    assert 0 < s["class_shares"]["HPLD"] < 1


def test_generate_reproducible_and_shaped(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    r = run("trace", "generate", "--kind", "HPHD", "--requests", 300, "--rate", 2, "--seed", 9, "-o", a)
    assert "wrote 300 requests" in r.output
    run("trace", "generate", "--kind", "hphd", "--requests", 300, "--rate", 2, "--seed", 9, "-o", b)
    assert a.read_bytes() == b.read_bytes()
    t = read_trace(a)
    assert t.prompt_tokens.min() > 512 and t.output_tokens.min() > 128


def test_generate_duration_shares_modulation_cv(tmp_path):
    out = tmp_path / "m.csv"
    run("trace", "generate", "--duration", 600, "--rate", 5, "--cv", 2, "--shares", "1,0,0,1",
        "--modulation", "bursts", "--period", 60, "--burst-factor", 3, "--burst-length", 10, "-o", out)
    t = read_trace(out)
    assert t.arrival_s[-1] < 600 and 2500 < len(t) < 3500
    shares = class_shares(t.prompt_tokens, t.output_tokens)
    assert shares["LPHD"] == shares["HPLD"] == 0.0


@pytest.mark.parametrize("args,msg", [
    (["--rate", 1, "-o", "x.csv"], "give exactly one of --requests N or --duration S"),
    (["--requests", 5, "--duration", 5, "--rate", 1, "-o", "x.csv"], "give exactly one of"),
    (["--kind", "lpld", "--requests", 5, "--rate", 1, "--shares", "1,1,1,1", "-o", "x.csv"], "--kind mixed only"),
    (["--requests", 5, "--rate", 1, "--shares", "a,b", "-o", "x.csv"], "--shares must be four numbers"),
    (["--requests", 5, "--rate", 1, "--shares", "1,1", "-o", "x.csv"], "four non-negative numbers"),
    (["--requests", 5, "--rate", 0, "-o", "x.csv"], "'--rate'"),
    (["--requests", 5, "--rate", 1, "--modulation", "diurnal", "--amplitude", 2, "-o", "x.csv"], "amplitude"),
    (["--requests", 5, "--rate", 1, "-o", "/nonexistent-dir/x.csv"], "does not exist"),
])
def test_generate_bad_arguments_exit_2(args, msg):
    r = run("trace", "generate", *args, code=2)
    assert msg in r.output and "Traceback" not in r.output


def test_convert_azure_and_burstgpt_to_plain(tmp_path):
    src = tmp_path / "bg.csv"
    src.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                   "5,ChatGPT,472,18,490,Conversation log\n6,ChatGPT,10,0,10,Conversation log\n"
                   "9.5,GPT-4,417,276,693,API log\n")
    out = tmp_path / "plain.csv"
    r = run("trace", "convert", src, "-o", out)
    assert "note: dropped 1 rows on purpose (1 failed (0 response tokens))" in r.output
    assert "wrote 2 requests" in r.output
    assert out.read_text().splitlines() == ["arrival_s,prompt_tokens,output_tokens,model,log_type",
                                            "0.000000,472,18,ChatGPT,Conversation log",
                                            "4.500000,417,276,GPT-4,API log"]


def test_convert_length_dataset_with_rate_then_stats(tmp_path):
    src = tmp_path / "sg.csv"
    rows = "".join(f"c{i},0,{i % 40 + 1},{i % 300 + 1},{i % 900 + 1}\n" for i in range(3000))
    src.write_text("conv_id,turn,prompt_tokens,response_tokens,context_tokens\n" + rows)
    out = tmp_path / "sg_plain.csv"
    run("trace", "convert", src, "-o", out, "--rate", 4, "--seed", 1)
    t = read_trace(out)
    assert len(t) == 3000 and t.rate_per_s == pytest.approx(4.0, rel=0.05)
    assert t.prompt_tokens[:3].tolist() == [1, 2, 3] and t.extra["conv_id"][0] == "c0"
    # --format overrides detection: the same file read per turn
    run("trace", "convert", src, "-o", out, "--rate", 4, "--per-turn", "--format", "sharegpt")
    assert read_trace(out).prompt_tokens.max() == 40


def test_convert_unsorted_needs_sort(tmp_path):
    src = tmp_path / "u.csv"
    src.write_text("arrival_s,prompt_tokens,output_tokens\n2,1,1\n1,2,2\n")
    r = run("trace", "convert", src, "-o", tmp_path / "o.csv", code=2)
    assert "line 3" in r.output and "--sort" in r.output
    run("trace", "convert", src, "-o", tmp_path / "o.csv", "--sort")
    assert read_trace(tmp_path / "o.csv").prompt_tokens.tolist() == [2, 1]


def test_bundled_traces_regenerate_from_readme_commands(tmp_path):
    readme = (TRACES / "README.md").read_text()
    commands = re.findall(r"`(planner trace generate [^`]+)`", readme)
    names = sorted(Path(shlex.split(c)[-1]).name for c in commands)
    assert names == ["hphd.csv", "hpld.csv", "lphd.csv", "lpld.csv", "mixed.csv"]
    for c in commands:
        argv = shlex.split(c)[1:]
        target = Path(argv[-1]).name
        argv[-1] = str(tmp_path / target)
        run(*argv)
        assert (tmp_path / target).read_bytes() == (TRACES / target).read_bytes(), target
        t = read_trace(TRACES / target)
        assert 2000 <= len(t) <= 8000 and 120 < t.span_s < 1800 and np.all(t.prompt_tokens + t.output_tokens <= 2048)
