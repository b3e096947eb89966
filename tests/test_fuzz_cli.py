"""Fuzzing the command lines (issue 16), fast profile: for each fast target in
tests/fuzzing.py (the planner's commands, its readers and file formats, `testbed profile`)
a derandomised handful of Hypothesis cases - adversarial numeric flags, outputs in missing
folders, mutated traces, plans, profiles and model configs - must end with exit code 0, 2
or 3, no traceback, no file left behind on failure and within the bound. The long profile (more cases, random seeds, `testbed run` and `planner report`) is
tests/benchmarks/fuzz_long.py; docs/reliability.md has its last counts."""
from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings

from fuzzing import FAST, TARGETS, cases, make_fixtures, run_case

BOUND_S = 30.0
EXAMPLES = {"recommend": 8, "model-config": 6, "predict": 6, "calibrate": 8, "testbed-profile": 8}   # slower ones
_counter = itertools.count()


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return make_fixtures(tmp_path_factory.mktemp("fuzz-fixtures"))


@pytest.mark.parametrize("target", FAST)
def test_cli_survives_adversarial_input(target, fixtures, tmp_path_factory):
    if TARGETS[target].cli == "testbed":
        pytest.importorskip("torch")
    base = tmp_path_factory.mktemp(f"fuzz-{target}")

    @settings(max_examples=EXAMPLES.get(target, 15), derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=cases(target, fixtures))
    def prop(case):
        out = run_case(case, fixtures, base / f"case{next(_counter)}", BOUND_S)
        assert out.violations() == [], (case.args, out.output[-2000:])
    prop()
