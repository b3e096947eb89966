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
