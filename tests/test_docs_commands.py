"""README.md and docs/*.md run as written: every shell command in their code blocks runs,
in order, in a scratch folder that sees the bundled files (traces/, docs/) and the project's
environment, and exits 0.

Not run, each with a visible marker a reader sees too:
- a block whose first line is `# not run: REASON` (synopses, diagrams, remote hosts, demos);
- a command whose comment says `(needs a GPU ...)`, `(needs a remote host ...)`,
  `(long run ...)` or `(installs packages ...)`.
Commands that read ../shared/ run when that folder exists (skipped otherwise), and `testbed`
commands when torch is installed (the testbed extra).
"""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGRAMS = ("planner", "testbed", "python -m planner", ".venv/bin/", "scripts/", "taskset ", "bash ")
MARKER = re.compile(r"#.*\((needs a GPU|needs a remote host|long run|installs packages)")
SHELL_FENCES = ("", "bash", "sh", "shell", "console")
TIMEOUT_S = 180


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    text: str
    skip: str | None  # why it is not run, or None


def _blocks(text: str):
    """(first line number, lines) of each fenced shell block and each indented block."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"^\s*```(\w*)\s*$", line)
        if fence:
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            if fence.group(1) in SHELL_FENCES:
                yield i + 2, lines[i + 1:j]
            i = j + 1
            continue
        if line.startswith("    ") and line.strip() and (i == 0 or not lines[i - 1].strip()):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            yield i + 1, [x[4:] for x in lines[i:j]]
            i = j
            continue
        i += 1


def commands(path: Path) -> list[Command]:
    out = []
    for first, block in _blocks(path.read_text(encoding="utf-8")):
        lead = next((x.strip() for x in block if x.strip()), "")
        block_skip = lead[len("# not run:"):].strip() if lead.startswith("# not run:") else None
        k = 0
        while k < len(block):
            text, start = block[k].strip(), k
            while text.endswith("\\") and k + 1 < len(block):
                k += 1
                text = text[:-1].rstrip() + " " + block[k].strip()
            k += 1
            if not text.startswith(PROGRAMS):
                continue
            m = MARKER.search(text)
            skip = block_skip or (m.group(1) if m else None)
            out.append(Command(path.name, first + start, text, skip))
    return out


def test_extractor_reads_blocks_markers_and_continuations(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("Intro\n\n    planner trace stats a.csv   # note\n    planner x  # (long run)\n\n"
                  "```\nplanner recommend --trace a.csv \\\n    --gpu l4\nplain output line\n```\n\n"
                  "```\n# not run: synopsis\ntestbed run [--x]\n```\n\n```python\nplanner = 1\n```\n")
    got = [(c.line, c.text, c.skip) for c in commands(md)]
    assert got == [(3, "planner trace stats a.csv   # note", None), (4, "planner x  # (long run)", "long run"),
                   (7, "planner recommend --trace a.csv --gpu l4", None), (14, "testbed run [--x]", "synopsis")]


def test_every_doc_command_is_runnable_or_visibly_marked():
    cmds = [c for d in DOCS for c in commands(d)]
    run = [c for c in cmds if c.skip is None]
    assert len(run) >= 15, [c.text for c in run]
    for c in run:  # what a reader cannot type as is
        assert not re.search(r"\[--|\|\s*\w+\s*\||\.\.\.", c.text), f"{c.doc}:{c.line}: not runnable as written: {c.text}"


def _has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


def _scratch(tmp_path: Path) -> Path:
    """tmp/work (the commands' folder) with traces/, docs/ and .venv linked in, and
    tmp/shared linked to ../shared when it exists."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("traces", "docs"):
        (work / name).symlink_to(ROOT / name)
    (work / ".venv").symlink_to(Path(sys.executable).resolve().parents[1] if not (ROOT / ".venv").exists()
                                else ROOT / ".venv")
    if SHARED.exists():
        (tmp_path / "shared").symlink_to(SHARED)
    return work


@pytest.mark.slow
@pytest.mark.parametrize("doc", [d for d in DOCS if commands(d)], ids=lambda d: d.name)
def test_doc_commands_run_as_written(tmp_path, doc):
    work = _scratch(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "COLUMNS": "120"}
    ran, skipped = 0, []
    for c in commands(doc):
        if c.skip:
            skipped.append(f"{c.line}: {c.skip}")
            continue
        if "../shared/" in c.text and not SHARED.exists():
            skipped.append(f"{c.line}: ../shared absent")
            continue
        if shlex.split(c.text, comments=True)[0] in ("testbed", "taskset") and not _has_torch():
            skipped.append(f"{c.line}: no torch (testbed extra)")
            continue
        r = subprocess.run(["bash", "-c", c.text], cwd=work, env=env, capture_output=True, text=True,
                           timeout=TIMEOUT_S)
        assert r.returncode == 0, f"{doc.name}:{c.line}: `{c.text}` exited {r.returncode}\n{r.stderr[-2000:]}"
        ran += 1
    assert ran or skipped
