"""Property-based fuzzing of the `planner` and `testbed` command lines (issue 16), shared by
the fast profile in the suite (tests/test_fuzz_cli.py) and the long one
(tests/benchmarks/fuzz_long.py).

A case is one command line built by Hypothesis: a target's valid base arguments with some
numeric options set to adversarial values (0, negative, NaN, inf, huge, not a number, a
unit where none belongs), an output path in a folder that does not exist or that is a
folder, or an input file (trace in each format, plan JSON, profile CSV, model config)
truncated, overwritten with random bytes, given a repeated header or a number replaced.
`run_case` runs it in-process (click's CliRunner) in a fresh folder under a time bound
(SIGALRM) and returns an Outcome; the property is `Outcome.violations() == []`: exit code
0, 2 or 3 (testbed: 0 or 2), no traceback, no file left behind on failure, no leftover
temporary file on success, and no run past the bound.
"""
from __future__ import annotations

import json
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "traces" / "examples").iterdir() if p.suffix in (".csv", ".json", ".jsonl"))
PROFILE = ROOT / "docs" / "profiles" / "cpu-opt-125m-l4-h256-fp32.csv"
MODEL_CONFIG = ROOT / "docs" / "profiles" / "opt-125m-l4-h256.config.json"

ADVERSARIAL = ("0", "-1", "-0.0", "nan", "NaN", "inf", "-inf", "1e300", "-1e300", "1e12", "1000000000000",
               str(2**63), "1e-320", "5e-324", "abc", "", " ", "0x10", "2.5", "1,5", "50ms", "0.5s", "-50ms", "1e")
ADVERSARIAL_JSON = (None, True, False, 0, -1, 2.5, 1e300, -1e300, float("nan"), float("inf"), 10**12, 2**70,
                    "", "x", "nan", [], {}, [1, 2], {"a": 1})
NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class Target:
    name: str
    cli: str                       # "planner" or "testbed"
    base: tuple[str, ...]          # valid arguments; "{F}" is the fixtures folder, "{W}" the case's
    numeric: tuple[str, ...] = ()  # options to fuzz
    output: str | None = None      # the option naming an output file (or folder, for export)
    input_file: str | None = None  # fixture to mutate ("plan.json", "profile.csv", ...), written to {W}
    codes: frozenset = frozenset({0, 2, 3})
    slow: bool = False             # seconds a case: the long profile only, with fewer cases


PLANNER = "planner"
TESTBED = "testbed"
TESTBED_BASE = ("run", "--plan", "{F}/tplan.json", "--trace", "{F}/ttrace.csv", "--layers", "1", "--hidden", "64",
                "--classifier-layers", "0", "--no-progress", "--heartbeat-timeout", "20")
TARGETS = {t.name: t for t in (
    Target("trace-stats", PLANNER, ("trace", "stats", "{F}/trace.csv"),
           ("--window", "--rate", "--cv", "--seed", "--light-prompt", "--light-output")),
    Target("trace-generate", PLANNER, ("trace", "generate", "--requests", "20", "--rate", "5"),
           ("--requests", "--rate", "--cv", "--seed", "--max-total-tokens", "--period", "--amplitude",
            "--burst-factor", "--burst-length", "--light-prompt", "--shares", "--duration"), "-o"),
    Target("trace-convert", PLANNER, ("trace", "convert", "{F}/trace.csv"), ("--rate", "--cv", "--seed"), "-o"),
    Target("recommend", PLANNER, ("recommend", "--trace", "{F}/trace.csv", "--gpu", "a100"),
           ("--slo-ttft", "--slo-tpot", "--slo-jct", "--max-gpus", "--window", "--kv-link-gb-s", "--rate-scale",
            "--runners-up", "--windows", "--seed", "--tp", "--chunks", "--rate"), "-o"),
    Target("simulate", PLANNER, ("simulate", "--plan", "{F}/plan.json", "--trace", "{F}/trace.csv", "--no-progress"),
           ("--time-scale", "--rate-scale", "--start-latency", "--slo-ttft", "--slo-tpot", "--block-tokens",
            "--decode-batch-limit", "--seed"), "--records"),
    Target("simulate-closed-loop", PLANNER,
           ("simulate", "--plan", "{F}/plan.json", "--no-progress", "--closed-loop", "4", "--requests", "20",
            "--prompt-tokens", "64", "--output-tokens", "8"),
           ("--closed-loop", "--requests", "--prompt-tokens", "--output-tokens", "--think-s", "--block-tokens",
            "--decode-batch-limit"), "--flips"),
    Target("predict", PLANNER, ("predict", "--model", "llama-3.1-8b", "--gpu", "h100", "--isl", "128", "--osl", "16",
                                "--concurrency", "4"), ("--tp", "--isl", "--osl", "--concurrency"), "-o"),
    Target("calibrate", PLANNER, ("calibrate", "{F}/profile.csv", "--model", "{F}/config.json"), ("--memory-gb",)),
    Target("trace-file", PLANNER, ("trace", "stats", "{W}/input", "--rate", "2"), input_file="trace"),
    Target("trace-file-convert", PLANNER, ("trace", "convert", "{W}/input", "--rate", "2"), output="-o",
           input_file="trace"),
    Target("plan-simulate", PLANNER, ("simulate", "--plan", "{W}/plan.json", "--trace", "{F}/trace.csv",
                                      "--no-progress", "--baselines"), output="--records", input_file="plan.json"),
    Target("plan-export", PLANNER, ("export", "--plan", "{W}/plan.json", "--to", "vllm"), output="-o",
           input_file="plan.json"),
    Target("confusion", PLANNER, ("simulate", "--plan", "{F}/plan.json", "--trace", "{F}/trace.csv", "--no-progress",
                                  "--confusion", "{W}/confusion.csv"), input_file="confusion.csv"),
    Target("profile-calibrate", PLANNER, ("calibrate", "{W}/profile.csv", "--model", "{F}/config.json"),
           input_file="profile.csv"),
    Target("model-config", PLANNER, ("recommend", "--trace", "{F}/trace.csv", "--gpu", "a100", "--model",
                                     "{W}/config.json"), output="-o", input_file="config.json"),
    Target("testbed-run", TESTBED, TESTBED_BASE,
           ("--head", "--time-scale", "--closed-loop", "--layers", "--hidden", "--max-context", "--prefill",
            "--decode", "--decode-kv-tokens", "--classifier-layers", "--threads", "--seed", "--heartbeat-timeout",
            "--remote-prefill"), "-o", codes=frozenset({0, 2}), slow=True),
    Target("testbed-plan", TESTBED, tuple(a.replace("{F}/tplan", "{W}/tplan") for a in TESTBED_BASE), output="-o",
           input_file="tplan.json", codes=frozenset({0, 2}), slow=True),
    Target("testbed-profile", TESTBED,
           ("profile", "--layers", "1", "--hidden", "64", "--prefill-tokens", "8", "--decode-batch", "1",
            "--decode-context", "8", "--kv-tokens", "8", "--repeats", "1", "--warmup", "0", "--decode-warmup", "0",
            "--prefill-idle-gap", "0", "--classifier-layers", "0", "--quiet"),
           ("--layers", "--hidden", "--repeats", "--warmup", "--passes", "--prefill-idle-gap", "--decode-spread",
            "--threads", "--seed", "--kv-tokens", "--decode-batch"), "-o", codes=frozenset({0, 2})),
    Target("report", PLANNER, ("report", "--trace", "{F}/trace.csv", "--gpu", "a100", "--loads", "0.5,8",
                               "--sim-loads", "2", "--windows", "0", "--no-progress", "--max-sim-requests", "30"),
           ("--slo-ttft", "--slo-tpot", "--windows", "--max-sim-requests", "--seed", "--loads", "--sim-loads"),
           "-o", slow=True),
)}
FAST = tuple(n for n, t in TARGETS.items() if not t.slow)


@dataclass(frozen=True)
class Case:
    target: str
    args: tuple[str, ...]
    input_name: str | None = None
    input_bytes: bytes | None = None


@dataclass
class Outcome:
    case: Case
    code: int | None
    seconds: float
    output: str
    traceback: str | None = None
    hung: bool = False
    left: list[str] = field(default_factory=list)

    def violations(self) -> list[str]:
        out = []
        if self.hung:
            out.append(f"hang: still running after {self.seconds:.0f} s")
        elif self.traceback:
            out.append("traceback: " + self.traceback.strip().splitlines()[-1][:300])
        elif self.code not in TARGETS[self.case.target].codes:
            out.append(f"wrong exit code {self.code}: {self.output.strip()[-300:]}")
        if self.left:
            out.append(f"files left behind: {self.left}")
        return out


# ---- fixtures ------------------------------------------------------------------------
def make_fixtures(folder: Path) -> Path:
    """A small trace, a plan (with time windows) for the simulator, a plan for the testbed,
    a profile and a model config: valid inputs every case starts from."""
    from planner.plan import Deployment, Plan, Role, Window
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n = 30
    rows = zip(np.sort(rng.uniform(0, 10, n)), rng.integers(20, 600, n), rng.integers(2, 120, n))
    (folder / "trace.csv").write_text("arrival_s,prompt_tokens,output_tokens\n"
                                      + "".join(f"{a:.6f},{p},{o}\n" for a, p, o in rows))
    (folder / "ttrace.csv").write_text("arrival_s,prompt_tokens,output_tokens\n0,12,3\n0.05,20,2\n")
    dep = Deployment(mode="disaggregated", model="opt-13b", chunk_tokens=512, prefill=Role("a100-80gb", 1),
                     decode=Role("a100-80gb", 2), windows=(Window(0.0, 1, 2), Window(5.0, 1, 1)))
    base = Deployment(mode="coupled", model="opt-13b", chunk_tokens=512, coupled=Role("a100-80gb", 2))
    pred = {"ttft_s": {"p50": 0.1, "p90": 0.2, "p99": 0.3}}
    plan = Plan(dep, inputs={"slo": {"ttft_s": 1.0, "tpot_s": 0.1, "percentile": 90}}, predictions=pred,
                baselines=({"mode": "coupled", "deployment": _asdict(base), "predictions": pred},))
    (folder / "plan.json").write_text(plan.to_json())
    tdep = Deployment(mode="disaggregated", model="opt-125m", chunk_tokens=16, prefill=Role("a100-80gb", 1),
                      decode=Role("a100-80gb", 1))
    (folder / "tplan.json").write_text(Plan(tdep).to_json())
    (folder / "profile.csv").write_bytes(PROFILE.read_bytes())
    (folder / "config.json").write_bytes(MODEL_CONFIG.read_bytes())
    (folder / "confusion.csv").write_text("b0,b1,b2\n80,15,5\n20,70,10\n5,25,70\n")
    return folder


def _asdict(dep) -> dict:
    from dataclasses import asdict
    return asdict(dep)


# ---- strategies ----------------------------------------------------------------------
def values():
    """A value for a numeric option: adversarial or small and valid."""
    ints = st.integers(0, 40).map(str)
    return st.one_of(st.sampled_from(ADVERSARIAL), ints, ints, st.floats(0.01, 50).map(lambda x: f"{x:.3g}"))


def _mutations(data: bytes):
    numbers = [m.span() for m in NUMBER.finditer(data)]
    lines = data.splitlines(keepends=True)
    ops = [st.integers(0, len(data)).map(lambda k: data[:k]),                         # truncated
           st.binary(max_size=300),                                                   # random bytes
           st.tuples(st.integers(0, max(len(data) - 1, 0)), st.binary(min_size=1, max_size=16))
           .map(lambda t: data[:t[0]] + t[1] + data[t[0] + len(t[1]):])]              # overwritten
    if numbers:
        ops.append(st.tuples(st.sampled_from(numbers), st.sampled_from(ADVERSARIAL))
                   .map(lambda t: data[:t[0][0]] + t[1].encode() + data[t[0][1]:]))  # a number replaced
    if len(lines) > 1:
        ops.append(st.integers(1, len(lines)).map(lambda k: b"".join(lines[:k] + lines[:1] + lines[k:])))
    return st.one_of(ops)


def _json_mutations(doc):
    """A JSON document with one node replaced, removed, or given an unknown key."""
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, path + (i,))
    walk(doc, ())

    def apply(args):
        path, op, value = args
        new = json.loads(json.dumps(doc))
        if not path:
            return value if op == "set" else new
        parent = new
        for k in path[:-1]:
            parent = parent[k]
        if op == "set":
            parent[path[-1]] = value
        elif op == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent["unexpected_key"] = value
        return new
    node = st.tuples(st.sampled_from(paths[1:]), st.sampled_from(("set", "set", "set", "delete", "add")),
                     st.sampled_from(ADVERSARIAL_JSON))
    root = st.tuples(st.just(()), st.just("set"), st.sampled_from(ADVERSARIAL_JSON))   # not an object at all
    return st.one_of(node, node, node, node, node, root).map(apply).map(lambda d: json.dumps(d).encode())


def _input_bytes(name: str, fixtures: Path):
    if name == "trace":
        return st.sampled_from(EXAMPLES + [fixtures / "trace.csv"]).flatmap(
            lambda p: _mutations(p.read_bytes()))
    data = (fixtures / name).read_bytes()
    if name.endswith(".json"):
        js = _json_mutations(json.loads(data))
        return st.one_of(js, js, js, _mutations(data))        # mostly well-formed JSON with one bad node
    return _mutations(data)


def cases(name: str, fixtures: Path):
    """Cases of target `name`."""
    t = TARGETS[name]
    options = st.lists(st.tuples(st.sampled_from(t.numeric), values()), min_size=1, max_size=1 if t.slow else 3) \
        if t.numeric else st.just([])
    good = st.just("{W}/out.csv")
    outputs = (st.one_of(good, good, good, st.sampled_from(("{W}/missing/out.csv", "{W}"))) if t.input_file is None
               else good) if t.output else st.just(None)    # a mutated input file with a good output path
    inputs = _input_bytes(t.input_file, fixtures) if t.input_file else st.just(None)

    def build(parts):
        opts, out, data = parts
        args = list(t.base)
        for flag, value in opts:
            args += [flag, value]
        if out is not None:
            out = out.replace("out.csv", {"plan-export": "deploy", "report": "report.html"}.get(name, "out.csv"))
            args += [t.output, out]
        in_name = None if t.input_file is None else ("input" if t.input_file == "trace" else t.input_file)
        return Case(name, tuple(args), in_name, data)
    return st.tuples(options, outputs, inputs).map(build)


# ---- running -------------------------------------------------------------------------
class CaseTimeout(BaseException):
    """Raised by SIGALRM in the command under test: it ran past the bound."""


def _on_alarm(signum, frame):
    raise CaseTimeout()


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def run_case(case: Case, fixtures: Path, work: Path, bound_s: float) -> Outcome:
    """Run `case` in the empty folder `work` (made here) within `bound_s` seconds."""
    work.mkdir(parents=True, exist_ok=False)
    if case.input_bytes is not None:
        (work / case.input_name).write_bytes(case.input_bytes)
    before = _files(work)
    args = [a.replace("{F}", str(fixtures)).replace("{W}", str(work)) for a in case.args]
    if TARGETS[case.target].cli == PLANNER:
        from planner.cli import main
    else:
        from testbed.cli import main
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None   # `testbed profile --threads` sets it here
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, bound_s)
    t0 = time.monotonic()
    try:
        res = CliRunner().invoke(main, args, catch_exceptions=True)
    except CaseTimeout:
        res = None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if threads is not None:
            torch.set_num_threads(threads)
    seconds = time.monotonic() - t0
    if res is None or isinstance(res.exception, CaseTimeout):
        return Outcome(case, None, seconds, "", hung=True)
    text = res.output      # stdout and stderr as a terminal shows them (click >= 8.2)
    tb = None
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        import traceback
        tb = "".join(traceback.format_exception(type(res.exception), res.exception, res.exc_info[2]))
    elif "Traceback (most recent call last)" in text:
        tb = text
    new = sorted(_files(work) - before)
    left = new if res.exit_code != 0 else [f for f in new if Path(f).name.startswith(".tmp-")
                                            or f.endswith(".partial")]
    return Outcome(case, res.exit_code, seconds, text, tb, False, left)
