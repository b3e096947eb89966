"""The report's figures: pure functions from plain data (dicts and lists, as gathered in
`report.gather`) to PNG bytes. matplotlib's Agg backend, no display needed; every figure
is closed after saving so a long report does not hold them in memory.

For a reader deciding a purchase: every figure has a title, every axis its unit, log axes
plain numbers (0.5, 1, 2, 5 - never 5x10^-1), each option its own colour, marker and line
style (so a line hidden under another still shows, and the legend says which options are
the same plan), and the SLO drawn and labelled with its value."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter, NullLocator  # noqa: E402

DPI = 100
PRICE_KINDS = ("on_demand", "spot", "reserved")
PRICE_LABELS = {"on_demand": "on-demand", "spot": "spot", "reserved": "reserved"}
MARKERS = ("o", "s", "^", "D", "v", "P")
LINESTYLES = ("-", "--", "-.", ":")
STRATEGY_TITLES = {"static_peak": "static peak: one plan sized for the busiest window",
                   "fixed_fleet": "fixed fleet: the same instances all along (disaggregated: roles flip between windows)",
                   "autoscale": "autoscale: on-demand instances started and stopped per window",
                   "reserved_burst": "reserved base + on-demand burst"}
ROLE_COLORS = {"prefill": "tab:blue", "decode": "tab:orange", "coupled": "tab:green"}


def _png(fig, bottom_in: float = 0.0) -> bytes:
    """PNG bytes; `bottom_in` inches kept free at the bottom for a figure legend."""
    buf = io.BytesIO()
    fig.tight_layout(rect=(0, bottom_in / fig.get_figheight(), 1, 1))
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def _styles(names) -> dict[str, dict]:
    """Colour, marker and line style per option (all three differ between neighbours)."""
    cmap = plt.get_cmap("tab10")
    return {n: {"color": cmap(i % 10), "marker": MARKERS[i % len(MARKERS)], "ls": LINESTYLES[i % len(LINESTYLES)]}
            for i, n in enumerate(names)}


def _labels(series: dict) -> dict[str, str]:
    """Legend label per option; an option whose data equal an earlier one's says so (its
    line lies under that one)."""
    out, seen = {}, {}
    for name, values in series.items():
        key = repr(values)
        out[name] = f"{name} (same as {seen[key]})" if key in seen else name
        seen.setdefault(key, name)
    return out


def _plain(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _plain_log(ax, axis: str = "y", prefix: str = "", suffix: str = "") -> None:
    """Log scale labelled with plain numbers: ticks at 1, 2, 5 per decade, or at 1-9 where
    the data span less than a factor of 5 (call after plotting: it reads the limits)."""
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    data = [np.asarray(ln.get_ydata() if axis == "y" else ln.get_xdata(), dtype=float) for ln in ax.get_lines()]
    if not any(np.any(np.isfinite(v) & (v > 0)) for v in data):   # nothing a log axis can show: no plan met the SLO
        (ax.set_ylim if axis == "y" else ax.set_xlim)(1.0, 10.0)
        ax.text(0.5, 0.5, "no plan meets the SLO here", transform=ax.transAxes, ha="center", va="center",
                color="0.4")
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    narrow = lo > 0 and hi / lo < 5
    a = ax.yaxis if axis == "y" else ax.xaxis
    major = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0) if narrow else (1.0, 2.0, 5.0)
    a.set_major_locator(LogLocator(base=10, subs=major))
    a.set_major_formatter(FuncFormatter(lambda v, _: f"{prefix}{_plain(v)}{suffix}"))
    a.set_minor_locator(NullLocator() if narrow else LogLocator(base=10, subs=(3.0, 4.0, 6.0, 7.0, 8.0, 9.0)))
    a.set_minor_formatter(NullFormatter())


def _load_axis(ax, loads) -> None:
    """x: load scale on a log-2 axis, ticks at the loads, labelled 0.25x, 1x, 4x."""
    ax.set_xscale("log", base=2)
    xs = sorted(set(float(x) for x in loads))
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(xs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{_plain(v)}x"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("load (x the trace's request rate; 1x = the trace as recorded)")


def _slo_line(ax, value, text: str, horizontal: bool = True) -> None:
    """The SLO as a dashed line, its value written on it (and in the legend)."""
    if not value:
        return
    (ax.axhline if horizontal else ax.axvline)(value, color="k", ls="--", lw=1.2, label=text)
    if horizontal:
        ax.annotate(text, (1.0, value), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                    textcoords="offset points", ha="right", va="bottom", fontsize=8)
    else:
        ax.annotate(text, (value, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -4),
                    textcoords="offset points", ha="left", va="top", fontsize=8, rotation=90)


def _finite(v):
    return v if v is not None and np.isfinite(v) else np.nan


def cost_vs_load(sweep: dict[str, list[dict]]) -> bytes:
    """$/hour of the cheapest plan meeting the SLO vs the trace's rate scale, per option.
    `sweep[option] = [{"scale", "usd_per_hour" (None when infeasible)}, ...]`."""
    fig, ax = plt.subplots(figsize=(8, 4.6))
    sty = _styles(sweep)
    lab = _labels({n: [(r["scale"], r.get("usd_per_hour")) for r in rows] for n, rows in sweep.items()})
    loads, all_ys, missing = [], [], False
    for name, rows in sweep.items():
        s = sty[name]
        loads += [r["scale"] for r in rows]
        xs = [r["scale"] for r in rows if r.get("usd_per_hour") is not None]
        ys = [r["usd_per_hour"] for r in rows if r.get("usd_per_hour") is not None]
        all_ys += ys
        ax.plot(xs, ys, color=s["color"], marker=s["marker"], ls=s["ls"], ms=7, mfc="none", mew=1.6, lw=1.6,
                label=lab[name])
        for r in rows:
            if r.get("usd_per_hour") is None:
                missing = True
                ax.plot([r["scale"]], [0.0], "x", color=s["color"], ms=10, mew=2,
                        transform=ax.get_xaxis_transform(), clip_on=False)
    _load_axis(ax, loads or [1.0])
    ax.set_yscale("log")
    if all_ys:
        ax.set_ylim(min(all_ys) / 1.25, max(all_ys) * 1.25)
    _plain_log(ax, "y", prefix="$")
    ax.axvline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_ylabel("$/hour of the cheapest plan meeting the SLO")
    ax.set_title("What the SLO costs as traffic grows (each load re-planned)")
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    if missing:
        ax.plot([], [], "x", color="grey", ms=9, mew=2, label="x on the axis: no plan meets the SLO")
    ax.legend(fontsize=8, title="GPU option", title_fontsize=8)
    return _png(fig)


def latency_vs_load(curves: dict[str, list[dict]], slo_ttft_s: float | None,
                    slo_tpot_s: float | None, percentile: int = 90) -> bytes:
    """The SLO percentile's (q) TTFT and TPOT of each option's plan (sized for 1x) as load
    grows. `curves[option] = [{"scale", "pred_ttft_pq_s", "pred_tpot_pq_s", "sim_ttft_pq_s"?,
    "sim_tpot_pq_s"?}, ...]`; predicted as lines, simulated as open markers; a prediction
    that does not keep up (infinite) as a triangle in a grey band above the data."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    sty = _styles(curves)
    q = f"p{percentile}"
    lab = _labels({n: [(r.get(f"pred_ttft_{q}_s"), r.get(f"pred_tpot_{q}_s")) for r in rows]
                   for n, rows in curves.items()})
    loads = [r["scale"] for rows in curves.values() for r in rows] or [1.0]
    saturated = False
    for ax, metric, slo, scale, unit, title in (
            (axes[0], "ttft", slo_ttft_s, 1.0, "s", f"{q} time to first token"),
            (axes[1], "tpot", slo_tpot_s, 1e3, "ms", f"{q} time per output token")):
        sat = []
        for k, (name, rows) in enumerate(curves.items()):
            s = sty[name]
            xs = [r["scale"] for r in rows]
            pred = [_finite(r.get(f"pred_{metric}_{q}_s")) * scale for r in rows]
            ax.plot(xs, pred, color=s["color"], ls=s["ls"], lw=1.8)
            sim = [(r["scale"], r[f"sim_{metric}_{q}_s"] * scale) for r in rows
                   if r.get(f"sim_{metric}_{q}_s") is not None and np.isfinite(r[f"sim_{metric}_{q}_s"])]
            if sim:
                ax.plot(*zip(*sim), ls="none", marker=s["marker"], color=s["color"], mfc="none", ms=8, mew=1.6)
            sat += [(x, k, s["color"]) for x, v in zip(xs, pred) if np.isnan(v)]
        _slo_line(ax, slo * scale if slo else None, f"SLO {_plain(slo * scale)} {unit}" if slo else "")
        _load_axis(ax, loads)
        ax.set_yscale("log")
        if sat:
            saturated = True
            _unbounded_band(ax, sat, len(curves))
        _plain_log(ax, "y")
        ax.set_ylabel(f"{title.split(' ', 1)[1]} ({unit}, {q})")
        ax.set_title(f"{title} ({unit})")
        ax.grid(True, which="major", alpha=0.35)
        ax.grid(True, which="minor", alpha=0.12)
    handles = [Line2D([], [], color=sty[n]["color"], ls=sty[n]["ls"], marker=sty[n]["marker"], mfc="none",
                      label=lab[n]) for n in curves]
    handles += [Line2D([], [], color="grey", lw=1.8, label="line: predicted (queueing model)"),
                Line2D([], [], color="grey", marker="o", mfc="none", ls="none", label="open marker: simulated")]
    if saturated:
        handles.append(Line2D([], [], color="grey", marker="^", ls="none", label="triangle in the grey band: queue grows without bound"))
    handles.append(Line2D([], [], color="k", ls="--", lw=1.2, label="SLO (value on the line)"))
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("Latency of each option's 1x plan as load grows (the plan kept fixed)", fontsize=11)
    return _png(fig, bottom_in=0.25 * (1 + (len(handles) - 1) // 4) + 0.1)


def _unbounded_band(ax, points, n_options: int) -> None:
    """A grey band above the data for loads whose prediction has no steady state (the
    queue grows without bound): one triangle per option there, side by side, so it reads as
    'unbounded', not as a value."""
    lo, hi = ax.get_ylim()
    band_lo, band_hi = hi * 1.3, hi * 3.0
    ax.axhspan(band_lo, band_hi, color="0.9", zorder=0)
    y = (band_lo * band_hi) ** 0.5
    ax.text(0.01, y, "queue grows without bound", transform=ax.get_yaxis_transform(), fontsize=7,
            va="center", color="0.35")
    for x, k, color in points:
        ax.plot([x * 2 ** (0.09 * (k - (n_options - 1) / 2))], [y], marker="^", color=color, ms=8, ls="none")
    ax.set_ylim(lo, band_hi)


def latency_cdfs(samples: dict[str, dict[str, list[float]]], slo_ttft_s: float | None,
                 slo_tpot_s: float | None, percentile: int = 90) -> bytes:
    """Empirical CDFs of TTFT and TPOT from the simulator, per option.
    `samples[option] = {"ttft_s": [...], "tpot_s": [...]}`."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    sty = _styles(samples)
    lab = _labels({n: (s.get("ttft_s"), s.get("tpot_s")) for n, s in samples.items()})
    for ax, key, slo, scale, unit, title in ((axes[0], "ttft_s", slo_ttft_s, 1.0, "s", "Time to first token"),
                                             (axes[1], "tpot_s", slo_tpot_s, 1e3, "ms", "Time per output token")):
        for name, s in samples.items():
            v = np.sort(np.asarray(s.get(key, []), dtype=float)) * scale
            v = v[np.isfinite(v) & (v > 0)]
            if len(v):
                st = sty[name]
                every = max(len(v) // 8, 1)
                ax.plot(v, np.arange(1, len(v) + 1) / len(v), color=st["color"], ls=st["ls"], lw=1.8,
                        marker=st["marker"], markevery=every, mfc="none", ms=6, label=lab[name])
        _slo_line(ax, slo * scale if slo else None, f"SLO {_plain(slo * scale)} {unit}" if slo else "",
                  horizontal=False)
        ax.axhline(percentile / 100.0, color="grey", ls=":", lw=1, label=f"{percentile}% of requests")
        _plain_log(ax, "x")
        ax.set_ylim(0, 1.02)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))
        ax.set_xlabel(f"{title.lower()} ({unit}, log scale)")
        ax.set_ylabel("share of requests at or below")
        ax.set_title(f"{title} of every simulated request")
        ax.grid(True, which="major", alpha=0.35)
        ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def instances_over_time(start_s: list[float], rate_per_s: list[float],
                        schedules: dict[str, dict[str, list[int]]], end_s: float | None = None,
                        usd_per_hour: dict[str, float] | None = None,
                        need: dict[str, list[float]] | None = None) -> bytes:
    """Instances per role per window for each strategy, above the trace's request rate.
    `schedules[strategy] = {"prefill": [...], "decode": [...]}` (or "coupled"); the last
    window lasts until `end_s` (default: as long as the one before it). With
    `usd_per_hour[strategy]` each panel's title carries its cost; with `need[role]` (the
    queueing model's fractional need per window) a dotted line shows it."""
    n = len(schedules)
    fig, axes = plt.subplots(n + 1, 1, figsize=(10, 1.3 + 1.75 * (n + 1)), sharex=True)
    axes = np.atleast_1d(axes)
    starts = list(map(float, start_s))
    if end_s is None:
        end_s = starts[-1] + (starts[-1] - starts[-2] if len(starts) > 1 else 60.0)
    t_min = np.asarray(starts + [end_s]) / 60.0
    ext = lambda v: list(v) + [list(v)[-1]]  # noqa: E731 - repeat the last value to the end
    axes[0].step(t_min, ext(rate_per_s), where="post", color="k")
    axes[0].set_ylabel("requests/s")
    axes[0].set_ylim(bottom=0)
    axes[0].set_title("request rate of the trace per window", fontsize=9)
    axes[0].grid(True, alpha=0.3)
    top = max([max(v) for c in schedules.values() for v in c.values()] + [1])
    for ax, (strategy, counts) in zip(axes[1:], schedules.items()):
        for role, v in counts.items():
            ax.step(t_min, ext(v), where="post", color=ROLE_COLORS.get(role, "tab:grey"), lw=2,
                    label=f"{role} instances")
            if need and role in need:
                ax.step(t_min, ext(need[role]), where="post", color=ROLE_COLORS.get(role, "tab:grey"), lw=1,
                        ls=":", label=f"{role} needed (queueing model)")
        cost = (usd_per_hour or {}).get(strategy)
        ax.set_title(STRATEGY_TITLES.get(strategy, strategy) + (f" - ${cost:,.2f}/hour" if cost else ""),
                     fontsize=9)
        ax.set_ylabel("instances")
        ax.set_ylim(0, top + 0.6)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    axes[-1].set_xlabel("time (minutes from the first request)")
    fig.suptitle("Instances per role over the trace, per scheduling strategy", fontsize=11)
    return _png(fig, bottom_in=0.35)


def price_sensitivity(usd_per_hour: dict[str, dict[str, float | None]]) -> bytes:
    """$/hour of each option's plan at on-demand, spot and reserved prices (grouped bars,
    each labelled with its value; n/a: no such price in the catalog). `usd_per_hour[option][kind]`."""
    fig, ax = plt.subplots(figsize=(8.5, 4.4))
    names = list(usd_per_hour)
    x = np.arange(len(names))
    width = 0.8 / len(PRICE_KINDS)
    top = max([v for d in usd_per_hour.values() for v in d.values() if v is not None] + [1.0])
    for i, kind in enumerate(PRICE_KINDS):
        vals = [usd_per_hour[n].get(kind) for n in names]
        pos = x + (i - 1) * width
        bars = ax.bar(pos, [v if v is not None else 0 for v in vals], width, label=PRICE_LABELS[kind])
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, (v or 0) + top * 0.01,
                    f"${v:,.2f}" if v is not None else "n/a", ha="center", va="bottom", fontsize=7,
                    rotation=0 if len(names) <= 4 else 90)
    ax.set_xticks(x, names)
    ax.set_ylim(0, top * 1.15)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:,.0f}"))
    ax.set_ylabel("$/hour of the option's plan")
    ax.set_title("The same plans at each price kind (cheapest listed offers; n/a: none listed)")
    ax.legend(fontsize=8, title="price kind", title_fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return _png(fig)


def predictor_sensitivity(rows: list[dict], slo_ttft_s: float | None, slo_tpot_s: float | None,
                          slo_percentile: int | None = None, paper_accuracy: float = 0.749) -> bytes:
    """Simulated TTFT and TPOT at the SLO percentile q (default p90) and SLO attainment of
    the recommended plan as the output-length predictor's accuracy varies. `rows =
    [{"accuracy", "ttft_pq_s", "tpot_pq_s", "slo_attainment"}, ...]`. Axes start at 0, so a
    flat line reads as flat."""
    fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.9))
    acc = [r["accuracy"] for r in rows]
    q = f"p{slo_percentile or 90}"
    for ax, key, slo, scale, label in ((axes[0], f"ttft_{q}_s", slo_ttft_s, 1.0, f"{q} TTFT (s)"),
                                       (axes[1], f"tpot_{q}_s", slo_tpot_s, 1e3, f"{q} TPOT (ms)"),
                                       (axes[2], "slo_attainment", None, 100.0, "SLO attainment (%)")):
        vals = [_finite(r.get(key)) * scale for r in rows]
        ax.plot(acc, vals, "o-", color="tab:blue", label="simulated")
        unit = label[label.index("(") + 1:-1]
        if slo:
            _slo_line(ax, slo * scale, f"SLO {_plain(slo * scale)} {unit}")
        if key == "slo_attainment" and slo_percentile:
            _slo_line(ax, slo_percentile, f"{slo_percentile}%: p{slo_percentile} targets met")
        finite = [v for v in vals if np.isfinite(v)] + ([slo * scale] if slo else [])
        hi = 100.0 if key == "slo_attainment" else (max(finite) * 1.25 if finite else 1.0)
        ax.set_ylim(0, hi * (1.03 if key == "slo_attainment" else 1.0))
        ax.axvline(paper_accuracy, color="grey", ls=":", lw=1, label=f"paper's classifier ({paper_accuracy:g})")
        ax.set_xticks(acc, [f"{a:g}" + ("\n(perfect)" if a >= 1.0 else "") for a in acc])
        ax.set_xlabel("output-length predictor accuracy")
        ax.set_ylabel(label)
        ax.set_title(label.split(" (")[0], fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("Sensitivity to the output-length predictor (simulated; 1.0 = perfect)", fontsize=11)
    return _png(fig)


def frontier(frontiers: dict[str, list[dict]], slo_ttft_s: float | None, slo_tpot_s: float | None,
             percentile: int = 90) -> bytes:
    """The cost-latency frontier of each option: $/hour against the SLO percentile's TTFT and
    TPOT (simulated where verified, else predicted), the frontier's plans joined in cost
    order, the recommended plan ringed. `frontiers[option] = [{"usd_per_hour", "simulated" |
    "predicted": {"ttft_s", "tpot_s"}, "chosen"}, ...]` (plans on the frontier only)."""
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.4))
    styles = _styles(list(frontiers))
    q = f"p{percentile}"
    for ax, key, slo, scale, unit in ((axes[0], "ttft_s", slo_ttft_s, 1.0, "s"), (axes[1], "tpot_s", slo_tpot_s, 1e3, "ms")):
        for name, rows in frontiers.items():
            pts = sorted(((r["usd_per_hour"], _finite((r.get("simulated") or r["predicted"])[key]) * scale,
                           bool(r.get("chosen"))) for r in rows), key=lambda p: p[0])
            if not pts:
                continue
            st = styles[name]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=st["marker"], ls=st["ls"], color=st["color"],
                    label=name)
            for x, y, chosen in pts:
                if chosen:
                    ax.scatter([x], [y], s=180, facecolors="none", edgecolors="black", linewidths=1.5, zorder=5)
        if slo:
            _slo_line(ax, slo * scale, f"SLO {_plain(slo * scale)} {unit}")
        ax.set_xlabel("$/hour")
        ax.set_ylabel(f"{q} {key.split('_')[0].upper()} ({unit})")
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:,.0f}"))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"Cost-latency frontier: plans no other beats on $/hour, {q} TTFT and {q} TPOT "
                 "(ringed: recommended)", fontsize=11)
    return _png(fig)
