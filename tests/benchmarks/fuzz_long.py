"""The long fuzz profile (issue 16): many more Hypothesis cases per target than the suite's
fast profile, random seeds, and the testbed targets (which start real worker processes).

    .venv/bin/python tests/benchmarks/fuzz_long.py                       # defaults below
    .venv/bin/python tests/benchmarks/fuzz_long.py --examples 300 --slow-examples 40 --seed 7
    .venv/bin/python tests/benchmarks/fuzz_long.py --targets simulate,plan-simulate --json counts.json

Prints, per target, the cases run, their exit codes, and the violations: tracebacks,
hangs (past --bound-s), files left behind, wrong exit codes; each violation's command
line follows. Exits 1 if there is any. The counts of the last run are in
docs/reliability.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, Phase, given, seed as hseed, settings  # noqa: E402

from fuzzing import TARGETS, cases, make_fixtures, run_case  # noqa: E402

KINDS = ("traceback", "hang", "files left behind", "wrong exit code")


def run_target(name: str, n: int, seed: int, fixtures: Path, work: Path, bound_s: float) -> list:
    outcomes = []

    @hseed(seed)
    @settings(max_examples=n, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=cases(name, fixtures))
    def prop(case):
        outcomes.append(run_case(case, fixtures, work / f"{name}-{len(outcomes)}", bound_s))
    prop()
    return outcomes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=150, help="cases per planner target")
    ap.add_argument("--slow-examples", type=int, default=25,
                    help="cases per slow target (testbed run, report: seconds each)")
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    ap.add_argument("--bound-s", type=float, default=60.0,
                    help="a case running longer is a hang (slow targets: twice this)")
    ap.add_argument("--targets", default=None, help="comma-separated subset of: " + ", ".join(TARGETS))
    ap.add_argument("--json", default=None, help="also write the counts here")
    args = ap.parse_args(argv)
    names = args.targets.split(",") if args.targets else list(TARGETS)
    rows, bad = [], []
    t_all = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fuzz-long-") as tmp:
        fixtures = make_fixtures(Path(tmp) / "fixtures")
        for name in names:
            slow = TARGETS[name].slow
            n = args.slow_examples if slow else args.examples
            t0 = time.monotonic()
            outs = run_target(name, n, args.seed, fixtures, Path(tmp), args.bound_s * (2 if slow else 1))
            kinds = Counter(v.split(":")[0] for o in outs for v in o.violations())
            codes = Counter("hang" if o.hung else str(o.code) for o in outs)
            rows.append({"target": name, "cases": len(outs), "codes": dict(sorted(codes.items())),
                         **{k: kinds.get(k, 0) for k in KINDS}, "seconds": round(time.monotonic() - t0, 1),
                         "slowest_s": round(max((o.seconds for o in outs), default=0.0), 2)})
            bad += [(name, o) for o in outs if o.violations()]
            r = rows[-1]
            print(f"{name:<22} {r['cases']:>5} cases  codes {r['codes']}  " + "  ".join(
                f"{k} {r[k]}" for k in KINDS) + f"  ({r['seconds']:.0f} s, slowest {r['slowest_s']:.1f} s)",
                flush=True)
    total = {k: sum(r[k] for r in rows) for k in ("cases",) + KINDS}
    print(f"{'total':<22} {total['cases']:>5} cases  " + "  ".join(f"{k} {total[k]}" for k in KINDS)
          + f"  in {time.monotonic() - t_all:.0f} s, seed {args.seed}")
    for name, o in bad[:50]:
        print(f"\n[{name}] {' '.join(o.case.args)}\n  " + "\n  ".join(o.violations()))
    if args.json:
        Path(args.json).write_text(json.dumps({"seed": args.seed, "targets": rows, "total": total}, indent=2))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
