"""`testbed run` refuses a coupled plan naming the exact command that writes one it runs;
`recommend --for-testbed` writes a disaggregated plan."""
import json

import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.plan import read_plan

pytest.importorskip("torch")
from testbed.cli import main as tb_cli  # noqa: E402
from testbed.cli_run import replan_command  # noqa: E402

TRACE = "traces/lpld.csv"


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    d = tmp_path_factory.mktemp("plans")
    out = {}
    for name, extra in (("coupled", ["--mode", "chunked_coupled"]), ("testbed", ["--for-testbed"])):
        p = d / f"{name}.json"
        r = CliRunner().invoke(main, ["recommend", "--gpu", "a100", "--trace", TRACE, *extra, "-o", str(p)])
        assert r.exit_code == 0, r.output
        out[name] = p
    return out


def test_for_testbed_writes_a_disaggregated_plan(plans):
    assert read_plan(plans["testbed"]).deployment.mode == "disaggregated"
    r = CliRunner().invoke(main, ["recommend", "--trace", TRACE, "--for-testbed", "--mode", "coupled"])
    assert r.exit_code == 2 and "drop --mode coupled" in r.output


def test_refusal_names_the_command_to_rerun(plans):
    r = CliRunner().invoke(tb_cli, ["run", "--plan", str(plans["coupled"]), "--trace", TRACE, "-o", "x.csv"])
    assert r.exit_code == 2, r.output
    assert ("Re-plan with: planner recommend --trace traces/lpld.csv --model llama-3.1-8b --gpu a100-80gb --for-testbed "
            f"-o {plans['coupled']}") in r.output


def test_recorded_command_is_reused_without_mode_and_output(plans):
    plan = read_plan(plans["coupled"])
    plan.inputs["command"] = ["planner", "recommend", "--trace", "t.csv", "--mode", "coupled", "--gpu", "l4",
                              "-o", "old.json", "--json"]
    assert replan_command(plan, "p.json", "t.csv") == \
        "planner recommend --trace t.csv --gpu l4 --for-testbed -o p.json"
    assert json.loads(plans["coupled"].read_text())["inputs"]["command"] is None  # not from a shell
