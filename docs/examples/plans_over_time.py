"""Regenerates the "Plans over time" table of docs/recommendations.md:

    .venv/bin/python docs/examples/plans_over_time.py [window_s]

For each Azure 2023 trace and GPU, the recommended plan (auto mode, and disaggregated
forced) is planned per window with every strategy of planner/schedule.py and each
schedule is replayed in the simulator (one run over the whole trace following the
schedule: starts ahead, drains, flips, backlog carried over). The last column counts the
windows where no instance count meets a target (planner.analytic.window_need: the KV transfer of
long prompts is part of TPOT)."""
import os
import sys
import time
from pathlib import Path

from planner.errors import InfeasibleError
from planner.search.recommend import recommend
from planner.search.schedule import STRATEGIES, plan_over_time, simulate_schedule
from planner.sim import simulate
from traces import read_trace

SHARED = Path(os.environ.get("SHARED_TRACES", Path(__file__).resolve().parents[2].parent / "shared" / "traces"))


def short(dep):
    mode = {"disaggregated": "disagg", "coupled": "vLLM", "chunked_coupled": "Sarathi"}[dep.mode]
    return mode + " " + " + ".join(f"{r[0].upper()} {x.instances}xTP{x.tp}" for r, x in dep.roles().items())


def main(window_s: float = 300.0) -> None:
    print(f"| trace | GPU | plan (whole trace) | $/h, attain. | static peak | fixed fleet (flips) | autoscale (starts) "
          f"| reserved + burst | best saves vs static | vs whole-trace plan | windows no count meets |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in ("conv", "code"):
        trace = read_trace(SHARED / f"azure2023_{name}.csv")
        for gpu in ("a100", "h100", "l4"):
            for mode in ("auto", "disaggregated"):
                t0 = time.perf_counter()
                try:
                    plan = recommend(trace, [gpu], mode=mode)
                except InfeasibleError as e:
                    print(f"| azure {name} | {gpu} | {mode}: no plan meets the SLO ({str(e)[:90]}...) "
                          f"| | | | | | | | |", flush=True)
                    continue
                except Exception as e:  # noqa: BLE001 - a planner failure is reported as a row, not hidden
                    print(f"| azure {name} | {gpu} | {mode}: recommend failed ({type(e).__name__}: {e}) "
                          f"| | | | | | | | |", flush=True)
                    continue
                slo = {"slo_ttft_s": plan.inputs["slo"]["ttft_s"], "slo_tpot_s": plan.inputs["slo"]["tpot_s"]}
                base = simulate(plan, trace, **slo).summary["slo_attainment"]
                timed = plan_over_time(trace, plan, window_s)
                strategies = timed.cost["schedule"]["strategies"]
                cells = {}
                for s in STRATEGIES:
                    if s not in strategies:
                        cells[s] = "n/a"
                        continue
                    p = plan_over_time(trace, plan, window_s, strategy=s)
                    att = simulate_schedule(p.deployment, trace, **slo)["summary"]["slo_attainment"]
                    d = strategies[s]
                    extra = {"fixed_fleet": f" ({d['flips']})", "autoscale": f" ({d['starts']})",
                             "reserved_burst": f" (base {sum(d['reserved'])})"}.get(s, "")
                    cells[s] = f"{d['usd_per_hour']:.2f}{extra}, {att:.1%}"
                best = timed.cost["schedule"]["strategy"]
                saved = strategies[best]["saved_vs_static"]
                vs_plan = strategies[best]["usd_per_hour"] / plan.cost["usd_per_hour"] - 1
                print(f"| azure {name} | {gpu} | {short(plan.deployment)} | {plan.cost['usd_per_hour']:.2f}, {base:.1%} "
                      f"| {cells['static_peak']} | {cells['fixed_fleet']} | {cells['autoscale']} "
                      f"| {cells['reserved_burst']} | {best} {saved:.0%} | {vs_plan:+.0%} "
                      f"| {len(timed.cost['schedule']['notes'])} |", flush=True)
                print(f"  ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 300.0)
