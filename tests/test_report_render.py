"""Plots and rendering of a report from plain data (no planner run involved)."""
import base64
import re

from planner.report import plots
from planner.report.render import (Figure, fmt_num, fmt_s, fmt_usd, render_html, render_markdown)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def option(name, usd, feasible=True):
    pct = {"p50": 0.1, "p90": 0.2, "p99": 0.9}
    return {"name": name, "feasible": feasible, "reason": "" if feasible else "TTFT 3.1 s > 2 s at TP 1",
            "mode": "disaggregated",
            "roles": [{"role": "prefill", "gpu": name, "instances": 2, "tp": 1},
                      {"role": "decode", "gpu": name, "instances": 1, "tp": 1}],
            "chunk_tokens": 512, "policies": {"prefill_order": "fcfs"}, "usd_per_hour": usd,
            "usd_per_month": usd * 730, "usd_per_million_tokens": 0.4321, "tokens_per_s_per_usd": 1234.5,
            "predicted": {"ttft_s": pct, "tpot_s": pct, "jct_s": pct},
            "simulated": {"ttft_s": pct, "tpot_s": pct, "jct_s": pct, "slo_attainment": 0.97},
            "coupled": {"mode": "coupled", "instances": 4, "gpu": name, "tp": 1, "usd_per_hour": usd * 1.3},
            "verdict": "disaggregate: 23% cheaper than the cheapest coupled"}


def small_report():
    return {
        "title": "Capacity report: tiny", "generated": "2025-01-01 00:00", "model": "opt-13b",
        "slo_text": "p90 TTFT <= 2 s, p90 TPOT <= 100 ms",
        "recommendation": "Buy 3 x l4 at $2.13/hour.", "facts": ["fact one"],
        "trace": {"name": "tiny", "requests": 10, "span_s": 5.0, "rate_per_s": 2.0, "interarrival_cv": 1.0,
                  "prompt_tokens": {"mean": 100}, "output_tokens": {"mean": 10}},
        "options": [option("l4", 2.129), option("a100-80gb", 5.37), option("h100-sxm", 0, feasible=False)],
        "best": "l4",
        "schedule": {"summary": "windows of 300 s", "strategies": [
            {"strategy": "static_peak", "usd_per_hour": 3.0, "saved_vs_static": 0.0, "instance_hours": 3.0,
             "peak_instances": {"prefill": 2, "decode": 1}, "flips": 0, "starts": 0, "reserved": [],
             "simulated": {"slo_attainment": 0.99, "ttft_s": {"p90": 0.3}, "tpot_s": {"p90": 0.05}}}]},
        "prices": {"used": [{"gpu": "l4", "kind": "on_demand", "usd_per_gpu_hour": 0.71, "source": "median"}],
                   "catalog": [{"gpu": "l4", "provider": "aws", "kind": "spot", "usd_per_gpu_hour": 0.35,
                                "as_of": "2024-06", "source": "https://aws.amazon.com/ec2/spot/pricing/"}]},
        "notes": ["simulated on all 10 requests"],
    }


def all_figures():
    sweep = {"l4": [{"scale": 0.5, "usd_per_hour": 1.0}, {"scale": 1, "usd_per_hour": 2.0},
                    {"scale": 2, "usd_per_hour": None}]}
    curves = {"l4": [{"scale": 0.5, "pred_ttft_p90_s": 0.1, "pred_tpot_p90_s": 0.05},
                     {"scale": 1, "pred_ttft_p90_s": 0.2, "pred_tpot_p90_s": 0.06, "sim_ttft_p90_s": 0.25,
                      "sim_tpot_p90_s": 0.07}]}
    cdf = {"l4": {"ttft_s": [0.1, 0.2, 0.3], "tpot_s": [0.05, 0.06]}}
    return [
        Figure("cost_vs_load", "Cost vs load", "c", plots.cost_vs_load(sweep)),
        Figure("latency_vs_load", "Latency vs load", "c", plots.latency_vs_load(curves, 2.0, 0.1)),
        Figure("latency_cdfs", "CDFs", "c", plots.latency_cdfs(cdf, 2.0, 0.1)),
        Figure("instances_over_time", "Instances", "c", plots.instances_over_time(
            [0, 300, 600], [1.0, 3.0, 2.0], {"autoscale": {"prefill": [1, 3, 2], "decode": [1, 1, 1]}})),
        Figure("price_sensitivity", "Prices", "c", plots.price_sensitivity(
            {"l4": {"on_demand": 2.0, "spot": 1.0, "reserved": None}})),
        Figure("predictor_sensitivity", "Predictor", "c", plots.predictor_sensitivity(
            [{"accuracy": 0.5, "ttft_p90_s": 0.3, "tpot_p90_s": 0.06, "slo_attainment": 0.9},
             {"accuracy": 1.0, "ttft_p90_s": 0.2, "tpot_p90_s": 0.05, "slo_attainment": 0.95}], 2.0, 0.1)),
    ]


def test_number_formats():
    assert fmt_usd(1234.567) == "$1,234.57"
    assert fmt_num(1234.5) == "1,234" or fmt_num(1234.5) == "1,235"
    assert fmt_num(0.012345) == "0.0123"
    assert fmt_s(0.2) == "200 ms" and fmt_s(2.5) == "2.50 s"
    assert fmt_usd(None) == "n/a" and fmt_s(float("inf")) == "inf"


def test_every_plot_is_a_png():
    for f in all_figures():
        assert f.png.startswith(PNG_MAGIC) and len(f.png) > 2000


def test_html_is_self_contained_and_complete():
    rep, figs = small_report(), all_figures()
    doc = render_html(rep, figs)
    imgs = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', doc)
    assert len(imgs) == len(figs)
    for (_, b64), f in zip(imgs, figs):
        assert base64.b64decode(b64) == f.png
    assert "http" not in doc.split("<table>")[0]            # nothing fetched from outside
    assert doc.count("<table>") == 4                        # options, schedule, prices used, catalog
    assert rep["recommendation"] in doc
    for o in rep["options"][:2]:
        assert fmt_usd(o["usd_per_hour"]) in doc and fmt_usd(o["usd_per_month"]) in doc
    assert "l4 (best)" in doc and "no plan: TTFT 3.1 s" in doc
    assert "2024-06" in doc and "https://aws.amazon.com/ec2/spot/pricing/" in doc


def test_markdown_links_every_figure():
    rep, figs = small_report(), all_figures()
    doc = render_markdown(rep, figs, "tiny_figures")
    for f in figs:
        assert f"](tiny_figures/{f.key}.png)" in doc
    assert "| $/hour | $2.13 | $5.37 | - |" in doc
    assert doc.startswith("# Capacity report: tiny")


def test_text_is_escaped():
    rep = small_report()
    rep["options"][0]["verdict"] = "<script>a|b"
    assert "<script>" not in render_html(rep, [])
    assert "a\\|b" in render_markdown(rep, [], "f")


def _ticks_in_view(axis):
    lo, hi = sorted(axis.get_view_interval())
    return [t.get_text() for t in axis.get_ticklabels() if lo * 0.999 <= t.get_position()[axis.axis_name == "y"] <= hi * 1.001]


def test_log_axes_read_as_plain_numbers():
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([0.25, 4], [6, 60])
    plots._load_axis(ax, [0.25, 0.5, 1, 2, 4])
    ax.set_yscale("log")
    ax.set_ylim(4, 70)
    plots._plain_log(ax, "y", prefix="$")
    fig.canvas.draw()
    assert _ticks_in_view(ax.xaxis) == ["0.25x", "0.5x", "1x", "2x", "4x"]
    assert _ticks_in_view(ax.yaxis) == ["$5", "$10", "$20", "$50"]
    # a narrow range (45-110 ms) gets ticks inside it, not only at its ends
    ax.set_ylim(45, 110)
    plots._plain_log(ax, "y")
    fig.canvas.draw()
    assert _ticks_in_view(ax.yaxis) == ["50", "60", "70", "80", "90", "100"]
    plt.close(fig)


def test_identical_options_are_named_in_the_legend():
    lab = plots._labels({"a100": [1, 2], "h100": [3, 4], "best mix": [3, 4]})
    assert lab == {"a100": "a100", "h100": "h100", "best mix": "best mix (same as h100)"}
    sty = plots._styles(["a", "b", "c"])
    assert len({(s["marker"], s["ls"]) for s in sty.values()}) == 3


def test_window_notes_and_simulated_misses_are_shown():
    from planner.report.gather import _simulated_misses
    rep = small_report()
    rep["schedule"]["window_notes"] = ["window 3 (900 s): TPOT p90 0.0232 s > 0.022 s"]
    assert "window 3 (900 s)" in render_html(rep, []) and "- window 3 (900 s)" in render_markdown(rep, [], "f")
    row = {"simulated": {"ttft_s": {"p90": 1.04}, "tpot_s": {"p90": 0.05}}, "predicted": {"ttft_s": {"p90": 0.891}}}
    assert _simulated_misses(row, {"percentile": 90, "ttft_s": 1.0, "tpot_s": 0.1}) == \
        "p90 TTFT 1.04 s against 1.00 s (+4%; predicted 891 ms)"
    assert _simulated_misses(row, {"percentile": 90, "ttft_s": 2.0, "tpot_s": 0.1}) == ""
