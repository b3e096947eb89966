"""The tables of docs/recommendations.md: `planner recommend --verify` on every bundled trace
and the two Azure traces, on a100, h100 and l4 (and the bundled traces at --rate-scale 10
on a100).

    .venv/bin/python tests/benchmarks/table_recommend.py [--json rows.json]

Prints Markdown rows; the per-row sentences in the doc are written by hand from them."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from planner.errors import InfeasibleError  # noqa: E402
from planner.search.recommend import recommend  # noqa: E402
from planner.cli.verify_render import verification_rows  # noqa: E402
from traces import read_trace  # noqa: E402

BUNDLED = ("lpld", "lphd", "hpld", "hphd", "mixed")
AZURE = {"azure conv": ROOT.parent / "shared/traces/azure2023_conv.csv",
         "azure code": ROOT.parent / "shared/traces/azure2023_code.csv"}
SHORT = {"coupled": "vLLM", "chunked_coupled": "Sarathi"}


def plan_label(dep: dict) -> str:
    if dep["mode"] == "disaggregated":
        p, d = dep["prefill"], dep["decode"]
        return f"P {p['instances']}xTP{p['tp']} c{dep['chunk_tokens']} / D {d['instances']}xTP{d['tp']}"
    c = dep["coupled"]
    b = f" b{dep['chunk_tokens']}" if dep["mode"] == "chunked_coupled" else ""
    return f"{SHORT[dep['mode']]}{b} {c['instances']}xTP{c['tp']}"


def row(name: str, gpu: str, tr, rate_scale: float = 1.0) -> dict:
    if rate_scale != 1.0:
        tr = tr.time_scaled(1.0 / rate_scale)
    t0 = time.perf_counter()
    plan = recommend(tr, gpus=[gpu])
    plan_s = time.perf_counter() - t0
    ver = verification_rows(plan, tr)
    d = plan.to_dict()
    cheapest = {b["mode"]: b["usd_per_hour"] for b in d["baselines"]}
    cheapest[d["deployment"]["mode"]] = d["cost"]["usd_per_hour"]
    eq = d["comparison"]["equal_budget"]
    return {"trace": name, "gpu": gpu, "rate_scale": rate_scale, "plan_s": plan_s,
            "rate": d["inputs"]["trace"]["rate_per_s"], "cv": d["inputs"]["trace"]["interarrival_cv"],
            "plan": plan_label(d["deployment"]), "gpus": plan.deployment.gpus, "usd_per_hour": d["cost"]["usd_per_hour"],
            "ttft_p90": d["predictions"]["ttft_s"]["p90"], "tpot_p90": d["predictions"]["tpot_s"]["p90"],
            "sim_ttft_p90": ver[0]["simulated"]["ttft_s"]["p90"], "sim_tpot_p90": ver[0]["simulated"]["tpot_s"]["p90"],
            "sim_attainment": ver[0]["simulated"]["slo_attainment"],
            "cheapest": cheapest, "tie": d["comparison"]["tie"],
            "equal_budget": None if eq is None else {
                "usd_per_hour": eq["usd_per_hour"], "better": eq["better"],
                "dis": [eq["disaggregated"]["ttft_s"], eq["disaggregated"]["tpot_s"], eq["disaggregated"]["label"]],
                "cpl": [eq["coupled"]["ttft_s"], eq["coupled"]["tpot_s"], eq["coupled"]["label"], eq["coupled"]["mode"]]},
            "usd_per_m_tok": d["cost"]["usd_per_million_tokens"], "verdict": d["verdict"]}


def fmt_cost(v):
    return "-" if v is None else f"{v:.2f}"


def md(r: dict) -> str:
    c = r["cheapest"]
    eq = r["equal_budget"]
    if eq is None:
        eqs = "-"
    else:
        (td, pd, _), (tc, pc, _, _) = eq["dis"], eq["cpl"]
        eqs = (f"{eq['usd_per_hour']:.2f}: {td:.2f}/{pd * 1e3:.0f} vs {tc:.2f}/{pc * 1e3:.0f} "
               f"→ {'disagg' if eq['better'] == 'disaggregated' else 'coupled'}")
    return (f"| {r['trace']} | {r['gpu']} | {r['rate']:.2f} / {r['cv']:.1f} | {r['plan']} | {r['usd_per_hour']:.2f} | "
            f"{r['ttft_p90']:.3f} ({r['sim_ttft_p90']:.3f}) | {r['tpot_p90'] * 1e3:.1f} ({r['sim_tpot_p90'] * 1e3:.1f}) | "
            f"{fmt_cost(c.get('disaggregated'))} | {fmt_cost(c.get('coupled'))} | {fmt_cost(c.get('chunked_coupled'))} | "
            f"{eqs} | {r['usd_per_m_tok']:.3f} |")


def main():
    rows = []
    traces = {t: read_trace(ROOT / "traces" / f"{t}.csv") for t in BUNDLED}
    traces.update({k: read_trace(p) for k, p in AZURE.items() if p.exists()})
    jobs = [(name, gpu, tr, 1.0) for name, tr in traces.items() for gpu in ("a100", "h100", "l4")]
    jobs += [(name, "a100", traces[name], 10.0) for name in BUNDLED]
    for name, gpu, tr, scale in jobs:
        try:
            rows.append(row(name, gpu, tr, scale))
        except InfeasibleError as e:   # exit 3 in the CLI: the table says so
            print(f"| {name} | {gpu}{f' x{scale:g}' if scale != 1 else ''} | no plan meets the SLO: {str(e)[:160]} |", flush=True)
            continue
        print(md(rows[-1]), flush=True)
    if "--json" in sys.argv:
        Path(sys.argv[sys.argv.index("--json") + 1]).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
