"""The report's figures: pure functions from plain data (dicts and lists, as gathered in
`report.gather`) to PNG bytes. matplotlib's Agg backend, no display needed; every figure
is closed after saving so a long report does not hold them in memory."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 100
PRICE_KINDS = ("on_demand", "spot", "reserved")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def _colors(names):
    cmap = plt.get_cmap("tab10")
    return {n: cmap(i % 10) for i, n in enumerate(names)}


def cost_vs_load(sweep: dict[str, list[dict]]) -> bytes:
    """$/hour of the cheapest plan meeting the SLO vs the trace's rate scale, per option.
    `sweep[option] = [{"scale", "usd_per_hour" (None when infeasible)}, ...]`."""
    fig, ax = plt.subplots(figsize=(7, 4))
    col = _colors(sweep)
    for name, rows in sweep.items():
        xs = [r["scale"] for r in rows if r.get("usd_per_hour") is not None]
        ys = [r["usd_per_hour"] for r in rows if r.get("usd_per_hour") is not None]
        ax.plot(xs, ys, "o-", color=col[name], label=name)
        bad = [r["scale"] for r in rows if r.get("usd_per_hour") is None]
        if bad:
            ax.plot(bad, [min(ys) if ys else 1.0] * len(bad), "x", color=col[name], ms=9)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("load (x the trace's request rate)")
    ax.set_ylabel("$/hour of the cheapest plan meeting the SLO")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="x: no plan meets the SLO", fontsize=8, title_fontsize=8)
    return _png(fig)


def latency_vs_load(curves: dict[str, list[dict]], slo_ttft_s: float | None,
                    slo_tpot_s: float | None) -> bytes:
    """p90 TTFT and p90 TPOT of each option's plan (sized for 1x) as load grows.
    `curves[option] = [{"scale", "pred_ttft_p90_s", "pred_tpot_p90_s", "sim_ttft_p90_s"?,
    "sim_tpot_p90_s"?}, ...]`; predicted as lines, simulated as markers."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    col = _colors(curves)
    for ax, metric, slo, label in ((axes[0], "ttft", slo_ttft_s, "p90 TTFT (s)"),
                                   (axes[1], "tpot", slo_tpot_s, "p90 TPOT (s)")):
        for name, rows in curves.items():
            xs = [r["scale"] for r in rows]
            pred = [_finite(r.get(f"pred_{metric}_p90_s")) for r in rows]
            ax.plot(xs, pred, "-", color=col[name], label=f"{name} predicted")
            sim = [(r["scale"], r[f"sim_{metric}_p90_s"]) for r in rows
                   if r.get(f"sim_{metric}_p90_s") is not None]
            if sim:
                ax.plot(*zip(*sim), "o", color=col[name], mfc="none", label=f"{name} simulated")
        if slo:
            ax.axhline(slo, color="k", ls="--", lw=1, label="SLO")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("load (x the trace's request rate)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, ncol=1)
    return _png(fig)


def _finite(v):
    return v if v is not None and np.isfinite(v) else np.nan


def latency_cdfs(samples: dict[str, dict[str, list[float]]], slo_ttft_s: float | None,
                 slo_tpot_s: float | None) -> bytes:
    """Empirical CDFs of TTFT and TPOT from the simulator, per option.
    `samples[option] = {"ttft_s": [...], "tpot_s": [...]}`."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    col = _colors(samples)
    for ax, key, slo, label in ((axes[0], "ttft_s", slo_ttft_s, "TTFT (s)"),
                                (axes[1], "tpot_s", slo_tpot_s, "TPOT (s)")):
        for name, s in samples.items():
            v = np.sort(np.asarray(s.get(key, []), dtype=float))
            v = v[np.isfinite(v) & (v > 0)]
            if len(v):
                ax.plot(v, np.arange(1, len(v) + 1) / len(v), color=col[name], label=name)
        if slo:
            ax.axvline(slo, color="k", ls="--", lw=1, label="SLO")
        ax.axhline(0.9, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of requests")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    return _png(fig)


def instances_over_time(start_s: list[float], rate_per_s: list[float],
                        schedules: dict[str, dict[str, list[int]]], end_s: float | None = None) -> bytes:
    """Instances per role per window for each strategy, above the trace's request rate.
    `schedules[strategy] = {"prefill": [...], "decode": [...]}` (or "coupled"); the last
    window lasts until `end_s` (default: as long as the one before it)."""
    n = len(schedules)
    fig, axes = plt.subplots(n + 1, 1, figsize=(10, 1.9 * (n + 1)), sharex=True)
    axes = np.atleast_1d(axes)
    starts = list(map(float, start_s))
    if end_s is None:
        end_s = starts[-1] + (starts[-1] - starts[-2] if len(starts) > 1 else 60.0)
    t_min = np.asarray(starts + [end_s]) / 60.0
    ext = lambda v: list(v) + [list(v)[-1]]  # noqa: E731 - repeat the last value to the end
    axes[0].step(t_min, ext(rate_per_s), where="post", color="k")
    axes[0].set_ylabel("req/s")
    axes[0].set_title("request rate per window", fontsize=9)
    role_col = {"prefill": "tab:blue", "decode": "tab:orange", "coupled": "tab:green"}
    for ax, (strategy, counts) in zip(axes[1:], schedules.items()):
        for role, v in counts.items():
            ax.step(t_min, ext(v), where="post", color=role_col.get(role, "tab:grey"), label=role)
        ax.set_ylabel("instances")
        ax.set_title(strategy, fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper right")
    axes[-1].set_xlabel("time (minutes from the first request)")
    return _png(fig)


def price_sensitivity(usd_per_hour: dict[str, dict[str, float | None]]) -> bytes:
    """$/hour of each option's plan at on-demand, spot and reserved prices (grouped bars;
    a missing bar: no such price in the catalog). `usd_per_hour[option][kind]`."""
    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(usd_per_hour)
    x = np.arange(len(names))
    width = 0.8 / len(PRICE_KINDS)
    for i, kind in enumerate(PRICE_KINDS):
        vals = [usd_per_hour[n].get(kind) for n in names]
        ax.bar(x + (i - 1) * width, [v if v is not None else 0 for v in vals], width, label=kind)
        for xi, v in zip(x, vals):
            if v is None:
                ax.text(xi + (i - 1) * width, 0, "n/a", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, names)
    ax.set_ylabel("$/hour")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return _png(fig)


def predictor_sensitivity(rows: list[dict], slo_ttft_s: float | None, slo_tpot_s: float | None) -> bytes:
    """Simulated p90 TTFT, p90 TPOT and SLO attainment of the recommended plan as the
    output-length predictor's accuracy varies. `rows = [{"accuracy", "ttft_p90_s",
    "tpot_p90_s", "slo_attainment"}, ...]`."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    acc = [r["accuracy"] for r in rows]
    for ax, key, slo, label in ((axes[0], "ttft_p90_s", slo_ttft_s, "p90 TTFT (s)"),
                                (axes[1], "tpot_p90_s", slo_tpot_s, "p90 TPOT (s)"),
                                (axes[2], "slo_attainment", None, "SLO attainment")):
        ax.plot(acc, [_finite(r.get(key)) for r in rows], "o-")
        if slo:
            ax.axhline(slo, color="k", ls="--", lw=1)
        ax.set_xlabel("length-predictor accuracy")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    return _png(fig)
