"""SLO flags take units (500ms, 0.5s); a bare number is seconds, but a bare TPOT >= 1 or
TTFT >= 60 is refused with "did you mean 50ms?"."""
import json

import click
import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.cli.params import TPOT_BARE_BELOW_S, TTFT_BARE_BELOW_S, Seconds

TRACE = "traces/lpld.csv"


@pytest.mark.parametrize("value,bare_below,seconds", [
    ("500ms", 1.0, 0.5), ("0.5s", 1.0, 0.5), ("0.05", 1.0, 0.05), (0.99, 1.0, 0.99), ("2s", 1.0, 2.0),
    ("59", 60.0, 59.0), ("90s", 60.0, 90.0), ("2min", 60.0, 120.0), ("50", None, 50.0),
])
def test_accepted(value, bare_below, seconds):
    assert Seconds(lo_open=True, bare_below=bare_below).convert(value, None, None) == pytest.approx(seconds)


@pytest.mark.parametrize("value,bare_below,hint", [
    ("50", TPOT_BARE_BELOW_S, "did you mean 50ms?"), ("1", TPOT_BARE_BELOW_S, "did you mean 1ms?"),
    (2, TPOT_BARE_BELOW_S, "did you mean 2ms?"), ("500", TTFT_BARE_BELOW_S, "did you mean 500ms?"),
    ("60", TTFT_BARE_BELOW_S, "did you mean 60ms?"),
])
def test_bare_numbers_too_large_are_refused(value, bare_below, hint):
    with pytest.raises(click.BadParameter, match=hint):
        Seconds(lo_open=True, bare_below=bare_below).convert(value, None, None)


def test_recommend_takes_units_and_refuses_bare_tpot(tmp_path):
    out = tmp_path / "plan.json"
    r = CliRunner().invoke(main, ["recommend", "--trace", TRACE, "--slo-tpot", "50ms", "--slo-ttft", "0.5s",
                                  "-o", str(out)])
    assert r.exit_code == 0, r.output
    slo = json.loads(out.read_text())["inputs"]["slo"]
    assert slo["tpot_s"] == pytest.approx(0.05) and slo["ttft_s"] == pytest.approx(0.5)
    for cmd in (["recommend", "--trace", TRACE], ["report", "--trace", TRACE, "--gpu", "a100", "-o", "r.html"]):
        r = CliRunner().invoke(main, [*cmd, "--slo-tpot", "50"])
        assert r.exit_code == 2 and "did you mean 50ms?" in r.output and "Traceback" not in r.output


def test_simulate_refuses_bare_ttft_over_a_minute(tmp_path):
    r = CliRunner().invoke(main, ["simulate", "--plan", "plan.json", "--trace", TRACE, "--slo-ttft", "120"])
    assert r.exit_code == 2 and "did you mean 120ms?" in r.output
