"""`planner report` end to end on a tiny trace: tables, every figure, numbers equal to the
plan's, and the CLI's errors."""
import base64
import html
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from planner.search.candidates import SLO
from planner.cli import main
from planner.search.verified import verified_recommend
from planner.report import write_report
from planner.report.gather import build_report
from planner.report.render import HOURS_PER_MONTH, fmt_num, fmt_usd
from traces import Trace, write_trace

FIGURES = ("cost_vs_load", "frontier", "latency_vs_load", "latency_cdfs", "instances_over_time", "price_sensitivity",
           "predictor_sensitivity")
SLO_T = SLO(ttft_s=2.0, tpot_s=0.1)
FAST = dict(loads=(0.5, 1.0, 2.0), sim_loads=(2.0,), accuracies=(0.749, 1.0), window_s=60.0,
            max_sweep_sim_requests=300, slo=SLO_T)


def tiny_trace():
    rng = np.random.default_rng(7)
    gaps = np.concatenate([rng.exponential(1 / 2, 150), rng.exponential(1 / 6, 150)])
    return Trace(np.cumsum(gaps) - gaps[0], rng.integers(50, 1500, 300), rng.integers(5, 300, 300), name="tiny")


@pytest.fixture(scope="module")
def built():
    trace = tiny_trace()
    data, figs = build_report(trace, ["l4"], **FAST)
    return trace, data, figs


def test_report_numbers_equal_the_plans(built, tmp_path):
    trace, data, figs = built
    check_numbers(trace, data, figs, tmp_path, ("l4",))


@pytest.mark.slow
def test_two_gpus_and_their_mix(tmp_path):
    trace = tiny_trace()
    data, figs = build_report(trace, ["l4", "a100"], **FAST)
    assert [o["name"] for o in data["options"]] == ["l4", "a100-80gb", "best mix"]
    check_numbers(trace, data, figs, tmp_path, ("l4", "a100"))
    mix = verified_recommend(trace, ["l4", "a100"], slo=SLO_T, runners_up=0)
    assert data["options"][2]["usd_per_hour"] == pytest.approx(mix.cost["usd_per_hour"])


def check_numbers(trace, data, figs, tmp_path, gpus):
    doc_path = write_report(data, figs, tmp_path / "r.html")[0]
    doc = doc_path.read_text()
    for gpu, row in zip(gpus, data["options"]):
        plan = verified_recommend(trace, [gpu], slo=SLO_T, runners_up=0, frontier=True)   # as the report plans
        assert row["verification"]["verified"] and row["verification"]["margin"].startswith("holds to")
        assert row["usd_per_hour"] == pytest.approx(plan.cost["usd_per_hour"])
        assert row["usd_per_month"] == pytest.approx(plan.cost["usd_per_hour"] * HOURS_PER_MONTH)
        assert row["usd_per_million_tokens"] == pytest.approx(plan.cost["usd_per_million_tokens"])
        for text in (fmt_usd(plan.cost["usd_per_hour"]), fmt_usd(plan.cost["usd_per_hour"] * HOURS_PER_MONTH),
                     fmt_usd(plan.cost["usd_per_million_tokens"]), fmt_num(plan.cost["tokens_per_s_per_usd_hour"])):
            assert text in doc
        for r in plan.deployment.roles().values():
            assert f"{r.instances} x {r.gpu} (TP {r.tp})" in doc
    best = min((o for o in data["options"] if o["feasible"]), key=lambda o: o["usd_per_hour"])
    assert fmt_usd(best["usd_per_hour"]) in data["recommendation"]
    assert html.escape(data["recommendation"]) in doc
    assert any(f.startswith("Checked in simulation before it was chosen") for f in data["facts"])
    # the frontier: plans of the option, the recommended one ringed (chosen) and cheapest on it
    for gpu, row in zip(gpus, data["options"]):
        front = data["frontier"][row["name"]]
        assert sum(r["chosen"] for r in front) == 1
        chosen = next(r for r in front if r["chosen"])
        assert chosen["usd_per_hour"] == pytest.approx(row["usd_per_hour"])
        assert all(r["meets"] for r in front) and min(r["usd_per_hour"] for r in front) == chosen["usd_per_hour"]


def test_every_figure_embedded(built, tmp_path):
    _, data, figs = built
    assert [f.key for f in figs] == list(FIGURES)
    doc = write_report(data, figs, tmp_path / "r.html")[0].read_text()
    for key in FIGURES:
        m = re.search(rf'<figure id="fig-{key}"><img alt="[^"]+" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', doc)
        assert m, key
        assert base64.b64decode(m.group(1)).startswith(b"\x89PNG")
    # tables: options, the schedule, prices used, catalog prices (with dates)
    assert doc.count("<table>") == 4
    assert "2024-06" in doc and "static_peak" in doc and "autoscale" in doc


def test_schedule_section(built):
    _, data, _ = built
    sch = data["schedule"]
    rows = {r["strategy"]: r for r in sch["strategies"]}
    assert {"static_peak", "fixed_fleet", "autoscale"} <= set(rows)
    assert rows["static_peak"]["usd_per_hour"] >= rows["fixed_fleet"]["usd_per_hour"] - 1e-9
    assert rows["fixed_fleet"]["usd_per_hour"] >= rows["autoscale"]["usd_per_hour"] - 1e-9
    for r in rows.values():
        assert 0.0 <= r["simulated"]["slo_attainment"] <= 1.0


def test_markdown_and_json(built, tmp_path):
    _, data, figs = built
    paths = write_report(data, figs, tmp_path / "r.md")
    md = paths[0].read_text()
    for key in FIGURES:
        assert f"](r_figures/{key}.png)" in md
        assert (tmp_path / "r_figures" / f"{key}.png").read_bytes().startswith(b"\x89PNG")
    json.dumps(data)   # the data is plain JSON


def test_cli_errors(tmp_path):
    t = tmp_path / "t.csv"
    write_trace(tiny_trace(), t)
    run = CliRunner().invoke
    r = run(main, ["report", "--trace", str(t), "--gpu", "l4", "-o", str(tmp_path / "r.pdf")])
    assert r.exit_code == 2 and "html or .md" in r.output
    r = run(main, ["report", "--trace", str(t), "--gpu", "l4", "--prices", "nowhere", "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 2 and "no such file" in r.output
    r = run(main, ["report", "--trace", str(t), "--gpu", "l4", "--prices", "aws", "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 2 and "pass --provider aws" in r.output
    r = run(main, ["report", "--trace", str(t), "--gpu", "l4", "--loads", "1,-2", "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 2
