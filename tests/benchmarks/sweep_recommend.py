"""Robustness sweep of `planner recommend`: no input may produce a traceback.

Runs the real command line (one process per case) over every bundled trace and both
Azure traces with each --gpu in a100/h100/l4/v100/t4 and each --mode, then a set of odd
inputs. Every run must exit 0 (a plan), 2 (bad input: one line naming the problem) or
3 (infeasible: the reason with a number in it and what would help), never a traceback.

    .venv/bin/python tests/benchmarks/sweep_recommend.py [--jobs 2] [--quick] [--json out.json]

--quick: the odd inputs and the mixed trace only. Exits 1 when any case fails. Not part of
the normal test suite (tests/test_recommend.py runs a few of these cases)."""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLANNER = [str(ROOT / ".venv/bin/planner")]
SHARED = ROOT.parent / "shared" / "traces"
BUNDLED = ("lpld", "lphd", "hpld", "hphd", "mixed")
GPUS = ("a100", "h100", "l4", "v100", "t4")
MODES = ("auto", "disaggregated", "coupled", "chunked_coupled")
HELP_WORDS = ("relax", "allow", "would help", "raise", "larger", "faster", "loosen", "more")


def traces() -> dict[str, Path]:
    out = {name: ROOT / "traces" / f"{name}.csv" for name in BUNDLED}
    for name in ("azure2023_conv", "azure2023_code"):
        if (SHARED / f"{name}.csv").is_file():
            out[name] = SHARED / f"{name}.csv"
    return out


def odd_cases(tmp: Path) -> list[tuple[str, list[str]]]:
    one = tmp / "one.csv"
    one.write_text("arrival_s,prompt_tokens,output_tokens\n0,100,10\n")
    single_token = tmp / "single_token.csv"
    single_token.write_text("arrival_s,prompt_tokens,output_tokens\n0,100,1\n0.5,200,1\n")
    same_time = tmp / "same_time.csv"
    same_time.write_text("arrival_s,prompt_tokens,output_tokens\n" + "0,500,50\n" * 20)
    empty = tmp / "empty.csv"
    empty.write_text("arrival_s,prompt_tokens,output_tokens\n")
    huge = tmp / "huge_prompt.csv"
    huge.write_text("arrival_s,prompt_tokens,output_tokens\n0,200000,10\n1,100,10\n")
    mixed = str(ROOT / "traces" / "mixed.csv")
    return [
        ("slo-ttft 0.001", ["--trace", mixed, "--slo-ttft", "0.001"]),
        ("slo-tpot 0.0001", ["--trace", mixed, "--slo-tpot", "0.0001"]),
        ("slo-jct 0.01", ["--trace", mixed, "--slo-jct", "0.01"]),
        ("slo-ttft -1", ["--trace", mixed, "--slo-ttft", "-1"]),
        ("max-gpus 1", ["--trace", mixed, "--max-gpus", "1"]),
        ("max-gpus 0", ["--trace", mixed, "--max-gpus", "0"]),
        ("max-gpus 1 disaggregated", ["--trace", mixed, "--max-gpus", "1", "--mode", "disaggregated"]),
        ("tp 3", ["--trace", mixed, "--tp", "3"]),
        ("tp 0", ["--trace", mixed, "--tp", "0"]),
        ("tp 1024", ["--trace", mixed, "--tp", "1024"]),
        ("chunks 0", ["--trace", mixed, "--chunks", "0"]),
        ("chunks 1", ["--trace", mixed, "--chunks", "1"]),
        ("chunks abc", ["--trace", mixed, "--chunks", "abc"]),
        ("one request", ["--trace", str(one)]),
        ("one request verify", ["--trace", str(one), "--verify"]),
        ("one request windows", ["--trace", str(one), "--windows", "60", "--verify"]),
        ("one-token outputs", ["--trace", str(single_token), "--verify"]),
        ("all at t=0", ["--trace", str(same_time), "--verify"]),
        ("empty trace", ["--trace", str(empty)]),
        ("200k-token prompt", ["--trace", str(huge)]),
        ("missing trace", ["--trace", str(tmp / "nope.csv")]),
        ("llama-2-70b on l4", ["--trace", mixed, "--model", "llama-2-70b", "--gpu", "l4"]),
        ("llama-2-70b on t4 tp1", ["--trace", mixed, "--model", "llama-2-70b", "--gpu", "t4", "--tp", "1"]),
        ("unknown gpu", ["--trace", mixed, "--gpu", "b999"]),
        ("unknown model", ["--trace", mixed, "--model", "gpt-99"]),
        ("gpu mix", ["--trace", mixed, "--gpu", "a100", "--gpu", "l4"]),
        ("window 0", ["--trace", mixed, "--window", "0"]),
        ("window 1e9", ["--trace", mixed, "--window", "1e9"]),
        ("windows 0.001", ["--trace", mixed, "--windows", "0.001"]),
        ("rate-scale 0", ["--trace", mixed, "--rate-scale", "0"]),
        ("rate-scale 1000", ["--trace", mixed, "--rate-scale", "1000"]),
        ("rate-scale 1e-6", ["--trace", mixed, "--rate-scale", "1e-6"]),
        ("kv-link 1e-6", ["--trace", mixed, "--kv-link-gb-s", "1e-6"]),
        ("kv-link -1", ["--trace", mixed, "--kv-link-gb-s", "-1"]),
        ("runners-up 0", ["--trace", mixed, "--runners-up", "0"]),
        ("runners-up -1", ["--trace", mixed, "--runners-up", "-1"]),
        ("price 0", ["--trace", mixed, "--price", "a100=0"]),
        ("price bad", ["--trace", mixed, "--price", "a100=x"]),
        ("cbc", ["--trace", mixed, "--solver", "cbc", "--mode", "disaggregated"]),
        ("percentile 99 verify windows", ["--trace", mixed, "--slo-percentile", "99", "--verify", "--windows", "30"]),
    ]


def grid_cases() -> list[tuple[str, list[str]]]:
    return [(f"{name} {gpu} {mode}", ["--trace", str(path), "--gpu", gpu, "--mode", mode])
            for name, path in traces().items() for gpu in GPUS for mode in MODES]


def judge(rc: int, out: str, err: str) -> str | None:
    """None when the run behaved; otherwise what was wrong."""
    if "Traceback" in err or "Traceback" in out:
        return "traceback"
    if rc not in (0, 2, 3):
        return f"exit {rc}"
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("note:")]
    if rc == 2 and not lines:
        return "exit 2 without a message"
    if rc == 3:
        msg = " ".join(lines)
        if not re.search(r"\d", msg):
            return "infeasible without a number"
        if not any(w in msg.lower() for w in HELP_WORDS):
            return "infeasible without what would help"
    if rc == 0 and "PLAN" not in out:
        return "exit 0 without a plan"
    return None


TIMEOUT_S = 300.0    # a case running longer is a failure (and its process group is ended)


def run(case: tuple[str, list[str]]) -> dict:
    name, args = case
    t0 = time.perf_counter()
    # its own session, so a timeout ends the solver subprocesses it started too
    proc = subprocess.Popen(PLANNER + ["recommend"] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, start_new_session=True)
    try:
        out, err_text = proc.communicate(timeout=TIMEOUT_S)
        rc, problem = proc.returncode, judge(proc.returncode, out, err_text)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err_text = proc.communicate()
        rc, problem = -9, f"over {TIMEOUT_S:.0f} s"
    err = err_text.strip()
    p = subprocess.CompletedProcess(proc.args, rc, out, err_text)
    return {"case": name, "rc": p.returncode, "seconds": round(time.perf_counter() - t0, 2),
            "problem": problem,
            "message": (err.splitlines() or [""])[-1][:300] if p.returncode else "",
            "plan": next((ln.split(None, 1)[1] for ln in p.stdout.splitlines() if ln.startswith("PLAN")), "")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = odd_cases(Path(tmp))
        cases += [c for c in grid_cases() if not a.quick or c[0].startswith("mixed ")]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(a.jobs) as pool:
            rows = []
            for r in pool.map(run, cases):
                rows.append(r)
                flag = "FAIL " + r["problem"] if r["problem"] else "ok"
                print(f"{r['rc']}  {r['seconds']:6.1f}s  {r['case']:<40} {flag:<12} {r['plan'] or r['message']}",
                      flush=True)
    bad = [r for r in rows if r["problem"]]
    counts = {rc: sum(r["rc"] == rc for r in rows) for rc in sorted({r["rc"] for r in rows})}
    print(f"\n{len(rows)} runs in {time.perf_counter() - t0:.0f} s; exit codes {counts}; {len(bad)} failed")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
