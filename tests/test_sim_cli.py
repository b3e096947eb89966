"""`planner simulate` end to end on tiny inputs."""
import json

import pandas as pd
from click.testing import CliRunner

from planner.cli import main
from planner.plan import Deployment, Plan, Role
from planner.records import RECORD_COLUMNS


def _files(tmp_path):
    dep = Deployment(mode="disaggregated", model="llama-2-7b", chunk_tokens=512, prefill=Role("a100", 1),
                     decode=Role("a100", 1))
    base = Deployment(mode="coupled", model="llama-2-7b", chunk_tokens=2048, coupled=Role("a100", 2))
    plan = Plan(dep, inputs={"slo": {"ttft_s": 1.0, "tpot_s": 0.05}},
                predictions={"ttft_s": {"p50": 0.1, "p90": 0.2, "p99": 0.3}},
                baselines=({"deployment": Plan(base).to_dict()["deployment"], "predictions": {}},))
    plan.write(tmp_path / "plan.json")
    (tmp_path / "t.csv").write_text("arrival_s,prompt_tokens,output_tokens\n0.0,100,20\n0.5,700,5\n1.0,30,1\n")
    return str(tmp_path / "plan.json"), str(tmp_path / "t.csv")


def test_simulate_text_records_and_json(tmp_path):
    plan, tr = _files(tmp_path)
    out = tmp_path / "r.csv"
    res = CliRunner().invoke(main, ["simulate", "--plan", plan, "--trace", tr, "--records", str(out)])
    assert res.exit_code == 0, res.output
    assert "3/3 requests finished" in res.output and "TTFT" in res.output and "SLO attainment" in res.output
    rec = pd.read_csv(out)
    assert tuple(rec.columns) == RECORD_COLUMNS and len(rec) == 3
    res = CliRunner().invoke(main, ["simulate", "--plan", plan, "--trace", tr, "--json", "--rate-scale", "2"])
    d = json.loads(res.output)
    assert d["summary"]["finished"] == 3 and d["summary"]["slo_attainment"] == 1.0
    assert d["predicted"]["ttft_s"]["p90"] == 0.2


def test_simulate_baselines_and_closed_loop(tmp_path):
    plan, tr = _files(tmp_path)
    res = CliRunner().invoke(main, ["simulate", "--plan", plan, "--trace", tr, "--baselines", "--json"])
    rows = json.loads(res.output)
    assert [r["mode"] for r in rows] == ["disaggregated", "coupled"]
    res = CliRunner().invoke(main, ["simulate", "--plan", plan, "--closed-loop", "2", "--requests", "6",
                                    "--prompt-tokens", "64", "--output-tokens", "8", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["stats"]["mode"] == "closed_loop"


def test_simulate_bad_input_is_one_line_exit_2(tmp_path):
    plan, tr = _files(tmp_path)
    res = CliRunner().invoke(main, ["simulate", "--plan", str(tmp_path / "missing.json"), "--trace", tr])
    assert res.exit_code == 2 and "no such plan file" in res.output
    res = CliRunner().invoke(main, ["simulate", "--plan", plan])
    assert res.exit_code == 2 and "--trace is required" in res.output
    res = CliRunner().invoke(main, ["simulate", "--plan", plan, "--trace", tr, "--time-scale", "0"])
    assert res.exit_code == 2 and "'--time-scale'" in res.output and "(0, " in res.output


def test_simulate_a_plan_over_time(tmp_path):
    from planner.plan import Window
    dep = Deployment(mode="disaggregated", model="llama-2-7b", chunk_tokens=512, prefill=Role("a100", 1),
                     decode=Role("a100", 2), windows=(Window(0.0, 1, 1), Window(0.6, 1, 2)))
    Plan(dep, inputs={"slo": {"ttft_s": 1.0, "tpot_s": 0.05}}).write(tmp_path / "plan.json")
    (tmp_path / "t.csv").write_text("arrival_s,prompt_tokens,output_tokens\n0.0,100,20\n0.5,700,5\n1.0,30,1\n")
    log = tmp_path / "scale.csv"
    args = ["simulate", "--plan", str(tmp_path / "plan.json"), "--trace", str(tmp_path / "t.csv"),
            "--start-latency", "0.2", "--scale-log", str(log)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "billed instance-seconds (plan over time)" in res.output and "1P+2D" in res.output
    assert pd.read_csv(log).action.tolist() == ["start", "ready"]
    d = json.loads(CliRunner().invoke(main, args + ["--json"]).output)
    assert [w["requests"] for w in d["summary"]["windows"]] == [2, 1]
    assert d["summary"]["windows"][1]["billed_instance_s"]["decode"] > 0
