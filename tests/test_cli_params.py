"""The validation layer (planner/checks.py, planner/cli/params.py) and atomic outputs
(planner/outputs.py), and the rule that makes them hold everywhere: every numeric option
of every `planner` and `testbed` command is one of params' types, and every option that
names an output file or folder is OutFile/OutDir - so a new flag cannot skip the checks."""
from __future__ import annotations

import importlib
import math
import re

import click
import pytest
from click.testing import CliRunner

from planner.checks import check_float, check_int, parse_duration
from planner.cli import COMMANDS
from planner.cli.params import Float, Int, OutDir, OutFile, Seconds
from planner.errors import InputError
from planner.outputs import atomic_path, write_csv, write_text

OUTPUT_NAME = re.compile(r"^(-o|--output|--records|--flips|--scale-log|--scale-out|--iterations-out|--log-dir|"
                         r"--figures-dir)$")
# checked in the command's body, with a reason
EXEMPT = {("profile", "--config-out"): "a .json file or a folder, told apart by its name",
          ("validate", "--records"): "an input here: the measured records to compare"}


def _commands():
    out = []
    for name, (target, _) in COMMANDS.items():
        module, attr = target.split(":")
        out.append((f"planner {name}", getattr(importlib.import_module(module), attr)))
    try:
        from testbed.cli import main as testbed_main
    except ImportError:        # no torch: the planner alone
        testbed_main = None
    if testbed_main is not None:
        out += [(f"testbed {n}", c) for n, c in testbed_main.commands.items()]
    flat = []
    while out:
        label, cmd = out.pop()
        if isinstance(cmd, click.Group):
            out += [(f"{label} {n}", c) for n, c in cmd.commands.items()]
        else:
            flat.append((label, cmd))
    return flat


def test_every_numeric_and_output_option_goes_through_params():
    bare = []
    for label, cmd in _commands():
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.is_flag:
                continue
            if isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType)):
                bare.append(f"{label} {p.opts[0]}: {p.type.name}")
            names = set(p.opts) | set(p.secondary_opts)
            if any(OUTPUT_NAME.match(n) for n in names) and not isinstance(p.type, (OutFile, OutDir)) \
                    and (label.split()[-1], p.opts[-1]) not in EXEMPT:
                bare.append(f"{label} {p.opts[-1]}: {p.type.name} (an output: OutFile or OutDir)")
    assert not bare, ("declare these with planner.cli.params types (Int, Float, Seconds, OutFile, OutDir) so they "
                      "are checked before any work:\n  " + "\n  ".join(bare))


@pytest.mark.parametrize("text, seconds", [("0.5", 0.5), ("500ms", 0.5), ("0.5s", 0.5), ("2min", 120.0),
                                           ("250us", 250e-6), (" 3 ", 3.0), (1, 1.0)])
def test_durations_take_units(text, seconds):
    assert math.isclose(parse_duration(text, "--x"), seconds)


@pytest.mark.parametrize("text", ["nan", "inf", "-1", "-50ms", "5parsecs", "", "ms", True, None])
def test_bad_durations_name_the_flag_and_the_range(text):
    with pytest.raises(InputError, match=r"^--slo-ttft: .*expected a finite number > 0 s"):
        parse_duration(text, "--slo-ttft", lo_open=True)


def test_numbers_finite_in_range_and_counts_whole():
    assert check_int("1e6", "n", lo=1) == 1_000_000 and check_int(3.0, "n") == 3
    for bad in ("2.5", 2.5, "nan", float("inf"), True, "10", [1]):
        with pytest.raises(InputError, match="plan.json: x"):
            check_int(bad, "plan.json: x", lo=1, hi=9)
    assert check_float("1e-3", "f", lo=0, lo_open=True) == 1e-3
    for bad in ("nan", "-inf", 0, "1e400", "x", None):
        with pytest.raises(InputError, match=r"expected a finite number > 0"):
            check_float(bad, "f", lo=0, lo_open=True)


def _cli(**types):
    @click.command()
    @click.option("--n", type=types.get("n", Int(lo=1, hi=10)), default=1)
    @click.option("--x", type=types.get("x", Float(lo=0, lo_open=True)), default=1.0)
    @click.option("--t", type=Seconds(lo_open=True), default=0.5)
    @click.option("-o", "--output", type=OutFile(), default=None)
    @click.option("--dir", "folder", type=OutDir(), default=None)
    def cmd(n, x, t, output, folder):
        click.echo(f"{n} {x} {t} {output} {folder}")
    return cmd


@pytest.mark.parametrize("args, flag, words", [
    (["--n", "0"], "--n", "[1, 10]"), (["--n", "1000000000000"], "--n", "[1, 10]"),
    (["--x", "nan"], "--x", "> 0"), (["--x", "inf"], "--x", "> 0"), (["--t", "-5ms"], "--t", "> 0 s"),
    (["-o", "no/such/folder/x.csv"], "-o", "does not exist"), (["-o", "."], "-o", "is a folder")])
def test_click_types_exit_2_naming_flag_value_and_range(tmp_path, monkeypatch, args, flag, words):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(_cli(), args)
    assert res.exit_code == 2 and f"'{flag}" in res.output and words in res.output, res.output
    assert repr(args[1]) in res.output or args[1].rpartition("/")[0] in res.output   # the value (or its folder)
    assert list(tmp_path.iterdir()) == []


def test_out_dir_is_made_out_file_folder_is_not(tmp_path):
    res = CliRunner().invoke(_cli(), ["--dir", str(tmp_path / "a" / "b"), "-o", str(tmp_path / "r.csv")])
    assert res.exit_code == 0 and not (tmp_path / "a").exists()   # checked at parse time, made by the writer


def test_atomic_outputs_leave_nothing_on_failure(tmp_path):
    target = tmp_path / "plan.json"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("the writer failed half way")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]
    pd = pytest.importorskip("pandas")
    write_csv(pd.DataFrame({"a": [1]}), tmp_path / "r.csv.gz", index=False)   # the suffix still picks gzip
    assert pd.read_csv(tmp_path / "r.csv.gz")["a"].tolist() == [1]
    with pytest.raises(InputError, match="does not exist"):
        write_text(tmp_path / "missing" / "x.txt", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json", "r.csv.gz"]


def test_plan_fields_are_checked_with_their_key_path(tmp_path):
    import json

    from planner.plan import Deployment, Plan, Role, read_plan
    plan = Plan(Deployment(mode="disaggregated", model="opt-13b", chunk_tokens=512, prefill=Role("a100-80gb", 1),
                           decode=Role("a100-80gb", 1)))
    d = json.loads(plan.to_json())
    for path, value, words in ((("deployment", "prefill", "instances"), 0, "deployment.prefill.instances: 0"),
                               (("deployment", "decode", "instances"), 1.5, "is not an integer"),
                               (("deployment", "kv_link_gb_s"), 0, "deployment.kv_link_gb_s: 0"),
                               (("deployment", "chunk_tokens"), float("nan"), "chunk_tokens: nan"),
                               (("deployment", "policies", "predictor_accuracy"), float("nan"), "accuracy"),
                               (("deployment", "decode"), [1], "expected a JSON object, got a list"),
                               (("deployment",), "x", "expected a JSON object, got a string")):
        bad = json.loads(json.dumps(d))
        node = bad
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
        f = tmp_path / "p.json"
        f.write_text(json.dumps(bad))
        with pytest.raises(InputError, match=re.escape(str(f))) as err:
            read_plan(f)
        assert words in str(err.value), str(err.value)
