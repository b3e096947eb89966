"""The report as HTML (one self-contained file, figures embedded as base64 PNG) or as
Markdown (figures written as PNG files beside it). Plain string building with the stdlib:
the report data is a dict (see `report.gather`), figures a list of `Figure`."""
from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass

HOURS_PER_MONTH = 730.0   # 8,760 hours a year / 12
WINDOW_NOTES_INTRO = ("Windows where no instance count meets a target (the KV transfer of long prompts over one "
                      "link is part of TPOT; only a faster link or a larger TP shortens it):")


@dataclass(frozen=True)
class Figure:
    key: str           # file stem, e.g. "cost_vs_load"
    title: str
    caption: str
    png: bytes


# ---- number formats (the tests use these to check numbers equal the plan's) ---------------
def fmt_usd(x) -> str:
    return "n/a" if _missing(x) else f"${x:,.2f}"


def fmt_num(x, digits: int = 3) -> str:
    """Three significant digits, thousands separated; 'n/a' for None/NaN, 'inf' for inf."""
    if _missing(x):
        return "n/a"
    if math.isinf(x):
        return "inf"
    if x == 0:
        return "0"
    mag = int(math.floor(math.log10(abs(x))))
    decimals = max(digits - 1 - mag, 0)
    return f"{x:,.{decimals}f}"


def fmt_s(x) -> str:
    """Seconds in ms below 1 s."""
    if _missing(x):
        return "n/a"
    if math.isinf(x):
        return "inf"
    return f"{fmt_num(x * 1000)} ms" if abs(x) < 1 else f"{fmt_num(x)} s"


def fmt_pct(x) -> str:
    return "n/a" if _missing(x) else f"{100 * x:.1f}%"


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


# ---- tables as (header, rows) of strings, shared by both renderers --------------------------
def option_table(report: dict) -> tuple[list[str], list[list[str]]]:
    opts = report["options"]
    header = [""] + [o["name"] + (" (best)" if o["name"] == report.get("best") else "") for o in opts]

    def row(label, fn):
        cells = []
        for o in opts:
            if o.get("feasible"):
                cells.append(fn(o))
            elif label == "deployment":   # the first row says why there is no plan
                cells.append("no plan: " + (o.get("reason") or "no plan meets the SLO")[:160])
            else:
                cells.append("-")
        return [label] + cells

    def pct(o, src, metric, p):
        return fmt_s(((o.get(src) or {}).get(metric) or {}).get(p))

    rows = [
        row("deployment", lambda o: o["mode"]),
        row("instances per role", lambda o: ", ".join(
            f"{r['role']} {r['instances']} x {r['gpu']} (TP {r['tp']})" for r in o["roles"])),
        row("chunk tokens", lambda o: str(o["chunk_tokens"])),
        row("policies", lambda o: ", ".join(f"{k} {v}" for k, v in o["policies"].items())),
        row("$/hour", lambda o: fmt_usd(o["usd_per_hour"])),
        row("$/month", lambda o: fmt_usd(o["usd_per_month"])),
        row("$/M total tokens (prompt + output)", lambda o: fmt_usd(o["usd_per_million_tokens"])),
        row("$/M output tokens", lambda o: fmt_usd(o.get("usd_per_million_output_tokens"))),
        row("tokens/s per $/hour", lambda o: fmt_num(o["tokens_per_s_per_usd"])),
    ]
    for metric, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("jct_s", "JCT")):
        for src in ("predicted", "simulated"):
            rows.append(row(f"{src} {label} p50 / p90 / p99", lambda o, s=src, m=metric: " / ".join(
                pct(o, s, m, p) for p in ("p50", "p90", "p99"))))
    rows.append(row("simulated SLO attainment", lambda o: fmt_pct((o.get("simulated") or {}).get("slo_attainment"))))
    rows.append(row("checked in simulation before chosen", lambda o: _verified(o.get("verification"))))
    rows.append(row("margin (simulated)", lambda o: (o.get("verification") or {}).get("margin") or "-"))
    rows.append(row("KV memory (simulated)", lambda o: _kv(o.get("verification"))))
    rows.append(row("cheapest coupled meeting the SLO", lambda o: _coupled(o.get("coupled"))))
    rows.append(row("disaggregated vs coupled", lambda o: o.get("verdict") or "n/a"))
    return header, rows


def _verified(v: dict | None) -> str:
    if not v or not v.get("verified"):
        return "no" + (f": {v['text']}" if v and v.get("text") else "")
    return f"yes, on {v['on']}" + (f"; {v['rejected']} cheaper candidate(s) missed the SLO there" if v["rejected"] else "")


def _kv(v: dict | None) -> str:
    if not v or not v.get("verified"):
        return "-"
    text = f"peak {fmt_pct(v['kv_peak_fraction'])}, {fmt_pct(v['preempted_share'])} of requests preempted"
    if v.get("preemption_flag"):
        text += " (above 0.5%" + (f"; next size up: {v['next_size_up']}" if v.get("next_size_up") else "") + ")"
    return text


def _coupled(c: dict | None) -> str:
    if not c:
        return "none meets the SLO"
    return f"{c['mode']}: {c['instances']} x {c['gpu']} (TP {c.get('tp', 1)}), {fmt_usd(c['usd_per_hour'])}/h"


def schedule_table(report: dict) -> tuple[list[str], list[list[str]]]:
    q = f"p{(report.get('slo') or {}).get('percentile', 90)}"
    header = ["strategy", "$/hour", "saved vs static peak", "instance-hours", "peak instances",
              "flips", "starts", "reserved base", "sim. SLO attainment", f"sim. {q} TTFT", f"sim. {q} TPOT"]
    rows = []
    for s in report["schedule"]["strategies"]:
        sim = s.get("simulated") or {}
        rows.append([s["strategy"], fmt_usd(s["usd_per_hour"]), fmt_pct(s.get("saved_vs_static")),
                     fmt_num(s["instance_hours"]),
                     ", ".join(f"{r} {n}" for r, n in s["peak_instances"].items()),
                     str(s["flips"]), str(s["starts"]), ", ".join(map(str, s["reserved"])) or "-",
                     fmt_pct(sim.get("slo_attainment")), fmt_s((sim.get("ttft_s") or {}).get(q)),
                     fmt_s((sim.get("tpot_s") or {}).get(q))])
    return header, rows


def price_table(report: dict) -> tuple[list[str], list[list[str]]]:
    header = ["GPU", "provider", "kind", "$/GPU-hour", "as of", "source"]
    rows = [[p["gpu"], p["provider"], p["kind"], fmt_usd(p["usd_per_gpu_hour"]), p["as_of"], p["source"]]
            for p in report["prices"]["catalog"]]
    return header, rows


def price_used_table(report: dict) -> tuple[list[str], list[list[str]]]:
    header = ["GPU", "kind", "$/GPU-hour", "from"]
    rows = [[p["gpu"], p["kind"], fmt_usd(p["usd_per_gpu_hour"]), p["source"]] for p in report["prices"]["used"]]
    return header, rows


def trace_lines(report: dict) -> list[str]:
    t = report["trace"]
    p, o = t.get("prompt_tokens", {}), t.get("output_tokens", {})
    return [f"trace {t.get('name', '')}: {t.get('requests', 0):,} requests over {fmt_num(t.get('span_s'))} s, "
            f"{fmt_num(t.get('rate_per_s'))} req/s, inter-arrival CV {fmt_num(t.get('interarrival_cv'))}",
            f"prompt tokens mean / p50 / p90 / p99: {fmt_num(p.get('mean'))} / {fmt_num(p.get('p50'))} / "
            f"{fmt_num(p.get('p90'))} / {fmt_num(p.get('p99'))}",
            f"output tokens mean / p50 / p90 / p99: {fmt_num(o.get('mean'))} / {fmt_num(o.get('p50'))} / "
            f"{fmt_num(o.get('p90'))} / {fmt_num(o.get('p99'))}",
            f"model {report.get('model', '')}; SLO: {report.get('slo_text', '')}"]


# ---- HTML ---------------------------------------------------------------------------------
_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1180px;
margin:2em auto;padding:0 1em;color:#222}h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.88em}th,td{border:1px solid #ccc;padding:.3em .5em;
text-align:left;vertical-align:top}th{background:#f3f3f3}.rec{font-size:1.15em;background:#eef6ee;
border-left:4px solid #3a3;padding:.6em 1em}figure{margin:1.2em 0}figcaption{font-size:.88em;color:#555}
img{max-width:100%}.notes li{font-size:.9em;color:#444}
@media print{body{max-width:none;margin:0;font-size:10pt}h1,h2,h3{break-after:avoid;page-break-after:avoid}
table,figure,img,.rec{break-inside:avoid;page-break-inside:avoid}thead{display:table-header-group}
tr{break-inside:avoid}a{color:inherit;text-decoration:none}}"""


def _h(x) -> str:
    return html.escape(str(x))


def _html_table(header, rows) -> str:
    head = "".join(f"<th>{_h(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{_h(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_figure(f: Figure) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    return (f'<figure id="fig-{_h(f.key)}"><img alt="{_h(f.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>{_h(f.title)}.</b> {_h(f.caption)}</figcaption></figure>")


def render_html(report: dict, figures: list[Figure]) -> str:
    figs = {f.key: f for f in figures}
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_h(report['title'])}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{_h(report['title'])}</h1>",
             f"<p class=\"rec\">{_h(report['recommendation'])}</p>",
             "<ul>" + "".join(f"<li>{_h(x)}</li>" for x in report.get("facts", [])) + "</ul>",
             "<h2>Inputs</h2><ul>" + "".join(f"<li>{_h(x)}</li>" for x in trace_lines(report)) + "</ul>",
             "<h2>Cheapest plan per option</h2>", _html_table(*option_table(report))]
    for section, keys in _sections(report):
        parts.append(f"<h2>{_h(section)}</h2>")
        for k in keys:
            if k == "table:schedule":
                parts.append(f"<p>{_h(report['schedule']['summary'])}</p>")
                parts.append(_html_table(*schedule_table(report)))
                wn = report["schedule"].get("window_notes") or []
                if wn:
                    parts.append(f"<p>{_h(WINDOW_NOTES_INTRO)}</p><ul>" + "".join(f"<li>{_h(x)}</li>" for x in wn)
                                 + "</ul>")
            elif k in figs:
                parts.append(_html_figure(figs[k]))
    parts += ["<h2>Prices</h2>", "<p>Prices used for the plans:</p>", _html_table(*price_used_table(report)),
              "<p>Catalog prices of these GPUs (source and date of each):</p>", _html_table(*price_table(report)),
              "<h2>How this report was made</h2><ul class=\"notes\">",
              "".join(f"<li>{_h(n)}</li>" for n in report.get("notes", [])), "</ul>",
              f"<p><small>Generated {_h(report.get('generated', ''))} by <code>planner report</code>.</small></p>",
              "</body></html>"]
    return "\n".join(parts)


def _sections(report: dict):
    out = [("Cost-latency frontier", ["frontier"]),
           ("Cost and latency vs load", ["cost_vs_load", "latency_vs_load"]),
           ("Latency distributions (simulator)", ["latency_cdfs"])]
    if report.get("schedule"):
        out.append(("Plans over time", ["table:schedule", "instances_over_time"]))
    out.append(("Sensitivity", ["price_sensitivity", "predictor_sensitivity"]))
    return out


# ---- Markdown -----------------------------------------------------------------------------
def _md_cell(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _md_table(header, rows) -> str:
    lines = ["| " + " | ".join(_md_cell(c) for c in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(report: dict, figures: list[Figure], figure_dir: str) -> str:
    """Markdown with figures linked as `figure_dir/<key>.png` (the caller writes them)."""
    figs = {f.key: f for f in figures}
    parts = [f"# {report['title']}", "", f"**{report['recommendation']}**", ""]
    parts += [f"- {x}" for x in report.get("facts", [])] + ["", "## Inputs", ""]
    parts += [f"- {x}" for x in trace_lines(report)]
    parts += ["", "## Cheapest plan per option", "", _md_table(*option_table(report))]
    for section, keys in _sections(report):
        parts += ["", f"## {section}", ""]
        for k in keys:
            if k == "table:schedule":
                parts += [report["schedule"]["summary"], "", _md_table(*schedule_table(report)), ""]
                wn = report["schedule"].get("window_notes") or []
                if wn:
                    parts += [WINDOW_NOTES_INTRO, ""] + [f"- {x}" for x in wn] + [""]
            elif k in figs:
                f = figs[k]
                parts += [f"![{f.title}]({figure_dir}/{f.key}.png)", "", f"*{f.title}.* {f.caption}", ""]
    parts += ["## Prices", "", "Prices used for the plans:", "", _md_table(*price_used_table(report)), "",
              "Catalog prices of these GPUs (source and date of each):", "", _md_table(*price_table(report)), "",
              "## How this report was made", ""]
    parts += [f"- {n}" for n in report.get("notes", [])]
    parts += ["", f"Generated {report.get('generated', '')} by `planner report`.", ""]
    return "\n".join(parts)
