"""CLI manners: python -m planner, __version__, a fast --help (nothing heavy imported), an
example in every command's help, progress that suits terminals and logs, a short first line
saying what to rent, a glossary, print CSS."""
import io
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import click
from click.testing import CliRunner

import planner
from planner.cli import COMMANDS, main
from planner.glossary import TERMS, markdown
from planner.progress import LineProgress, progress_bar, working

ROOT = Path(__file__).resolve().parents[1]


def test_python_m_planner_and_version():
    assert planner.__version__ == version("disagg-planner")
    r = subprocess.run([sys.executable, "-m", "planner", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and planner.__version__ in r.stdout


def test_help_imports_nothing_heavy():
    """What keeps `planner --help` fast (its time is a benchmark figure, docs/benchmarks.md):
    the CLI imports no numeric library until a command runs."""
    code = "import sys, planner.cli; print(sorted(m for m in ('pandas', 'scipy', 'numpy', 'pulp', 'matplotlib') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "planner", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "recommend" in r.stdout


def _all_commands():
    ctx = click.Context(main)
    for name in main.list_commands(ctx):
        cmd = main.get_command(ctx, name)
        yield name, cmd
        if isinstance(cmd, click.Group):
            for sub in cmd.list_commands(ctx):
                yield f"{name} {sub}", cmd.get_command(ctx, sub)


def test_every_command_has_an_example_and_is_listed():
    names = []
    for name, cmd in _all_commands():
        names.append(name)
        r = CliRunner().invoke(main, [*name.split(), "--help"])
        assert r.exit_code == 0 and "Example" in r.output, name
    assert set(COMMANDS) <= set(names)


def test_progress_in_logs_is_lines_not_frames():
    out = io.StringIO()
    assert isinstance(progress_bar(10, "sim", "req", stream=out), LineProgress)
    p = LineProgress(10, "sim", "req", out, every_s=0.0)
    for _ in range(10):
        p.update()
    p.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and lines[0] == lines[0].strip() and lines[-1].startswith("sim: 10/10 req (100%)")
    quiet = io.StringIO()
    with working("planning", stream=quiet, after_s=5.0):
        pass
    assert quiet.getvalue() == ""  # fast steps say nothing
    slow = io.StringIO()
    with working("planning", stream=slow, after_s=0.05, every_s=0.05):
        time.sleep(0.3)
    text = slow.getvalue()
    assert "\r" not in text and text.count("planning... ") >= 2 and "planning: 0.3 s" in text


def test_no_command_writes_tqdm_frames_itself():
    """Every progress bar goes through planner.progress (a bar only on a terminal): no other
    module of the planner or the testbed imports tqdm."""
    offenders = [p.relative_to(ROOT).as_posix() for d in ("planner", "testbed") for p in (ROOT / d).rglob("*.py")
                 if p.name != "progress.py" and ("import tqdm" in p.read_text() or "from tqdm" in p.read_text())]
    assert offenders == []


def test_testbed_replay_and_profile_progress_in_a_log(capsys):
    from planner.progress import NoProgress
    from testbed.cli_replay import _Progress
    prog = _Progress(3)                          # stderr is captured: not a terminal
    assert isinstance(prog.bar, LineProgress)
    rows = [{"status": s} for s in ("finished", "failed", "in_flight")]
    prog(rows, final=False)
    assert prog.bar.n == 2 and prog.bar.postfix == "3 sent, 1 failed"
    prog([{"status": "finished"}] * 3, final=True)
    assert "\r" not in capsys.readouterr().err
    quiet = progress_bar(5, "profile", "pt", stream=io.StringIO(), disable=True)
    assert isinstance(quiet, NoProgress)
    quiet.update(2)
    quiet.close()
    assert quiet.n == 2


def test_every_testbed_command_has_an_example():
    from testbed.cli import main as testbed_main
    ctx = click.Context(testbed_main)
    for name in testbed_main.list_commands(ctx):
        r = CliRunner().invoke(testbed_main, [name, "--help"])
        assert r.exit_code == 0 and "Example" in r.output, name


def test_first_line_says_what_to_rent_and_costs_are_labelled():
    r = CliRunner().invoke(main, ["recommend", "--trace", "traces/lpld.csv", "--gpu", "a100"])
    assert r.exit_code == 0, r.output
    first = r.stdout.splitlines()[0]     # (a slow machine adds a progress line on stderr)
    assert len(first) <= 120 and first.startswith("Rent ") and "a100-80gb" in first and "/hour" in first
    assert "/M total tokens (prompt + output)" in r.output and "/M output tokens" in r.output


def test_glossary_page_and_explain():
    assert (ROOT / "docs" / "glossary.md").read_text() == markdown()
    r = CliRunner().invoke(main, ["explain", "itl"])
    assert r.exit_code == 0 and r.output.startswith("TPOT: ")
    r = CliRunner().invoke(main, ["explain", "tpo"])
    assert r.exit_code == 2 and "did you mean tpot" in r.output
    assert len(TERMS) >= 20


def test_report_html_has_print_css():
    from planner.report.render import _CSS
    assert "@media print" in _CSS and "break-after:avoid" in _CSS and "break-inside:avoid" in _CSS
