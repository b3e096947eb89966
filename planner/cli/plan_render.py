"""The plan as `planner recommend` prints it: what to rent and its margin first, then the
trace and SLO, the plan with predicted next to simulated percentiles, memory, runners-up
and baselines (each labelled with the SLO's percentile), plans rejected in simulation,
the verdict and warnings. Every latency is labelled with its percentile."""
from __future__ import annotations

from dataclasses import asdict

from planner.plan import MODE_NAMES
from planner.search.verdict import describe
from planner.workload import overlong_text

HEADLINE_CHARS = 120
MODE_WORDS = {"disaggregated": "disaggregated", "coupled": "coupled", "chunked_coupled": "chunked coupled"}
QS = ("p50", "p90", "p99")


def _f(v, unit="s", scale=1.0, digits=3):
    return "inf" if v is None or v != v or v == float("inf") else f"{v * scale:.{digits}f}{unit}"


def _q(plan) -> str:
    return f"p{(plan.inputs.get('slo') or {}).get('percentile', 90)}"


def _sim_of(plan, key: str, i: int) -> dict | None:
    rows = (plan.verification or {}).get(key) or []
    return rows[i] if i < len(rows) else None


def _row(label: str, summary: dict, q: str = "p90", sim: dict | None = None, note: str = "") -> str:
    p = summary["predictions"]
    c = summary["cost"]
    text = (f"{label:<10} {describe(summary['deployment']):<62} ${c['usd_per_hour']:>8.2f}/h  "
            f"{q} TTFT {_f(p['ttft_s'].get(q))}  {q} TPOT {_f(p['tpot_s'].get(q), 'ms', 1e3, 1)}")
    if sim is not None:
        text += (f"  (simulated {_f(sim['ttft_s'][q])}, {_f(sim['tpot_s'][q], 'ms', 1e3, 1)}"
                 + (f", {sim['preempted_share']:.1%} preempted" if sim.get("preempted_requests") else "") + ")")
    return text + note


def comparison_rows(plan) -> list[str]:
    """Runner-up and baseline lines, each deployment once: a runner-up that is also a mode's
    baseline (its best plan) says so instead of being listed twice. Latencies at the SLO's
    percentile, simulated next to predicted where the plan was verified."""
    q = _q(plan)
    lines, shown = [], []
    for i, r in enumerate(plan.runners_up):
        modes = [MODE_NAMES[b["mode"]] for b in plan.baselines if b["deployment"] == r["deployment"]]
        lines.append(_row("runner-up", r, q, _sim_of(plan, "runners_up", i),
                          f"  (also the {' and '.join(modes)} baseline)" if modes else ""))
        shown.append(r["deployment"])
    for i, b in enumerate(plan.baselines):
        if b["deployment"] not in shown:
            lines.append(_row("baseline", b, q, _sim_of(plan, "baselines", i)))
    return lines


def _rent(plan) -> str:
    dep, c = plan.deployment, plan.cost
    gpus: dict[str, int] = {}
    for r in (dep.prefill, dep.decode, dep.coupled):
        if r is not None:
            gpus[r.gpu] = gpus.get(r.gpu, 0) + r.gpus
    what = " + ".join(f"{n} x {g}" for g, n in gpus.items())
    return f"Rent {what} ({MODE_WORDS.get(dep.mode, dep.mode)}) for ${c['usd_per_hour']:,.2f}/hour"


def headline(plan) -> str:
    """One line (<= HEADLINE_CHARS) saying what to rent and what it costs, with the SLO
    percentile's TTFT and TPOT (simulated where verified)."""
    line = _rent(plan)
    q = _q(plan)
    sim = (plan.verification or {}).get("plan")
    src = sim if sim else plan.predictions
    try:
        more = (f"; {q} TTFT {src['ttft_s'][q]:.2f} s, TPOT {src['tpot_s'][q] * 1e3:.0f} ms"
                + (" (simulated)" if sim else " (predicted)"))
    except (KeyError, TypeError):
        more = ""
    return line + more if len(line + more) <= HEADLINE_CHARS else line[:HEADLINE_CHARS]


def check_line(plan) -> str:
    """Second line: how the plan was checked and its margin, or that it was not."""
    v = plan.verification or {}
    if not v.get("verified"):
        return "NOT VERIFIED in simulation (--no-verify): predicted percentiles only; KV memory by the Gaussian rule"
    margin = (v.get("margin") or {}).get("text")
    n_rej = len(v.get("rejected") or ())
    text = "Verified in simulation on " + v["trace"]["note"]
    if n_rej:
        text += f"; {n_rej} cheaper or equal plan{'s' if n_rej > 1 else ''} missed the SLO there"
    return (f"Margin (simulated): {margin}\n" if margin else "") + text


def _side_by_side(plan) -> list[str]:
    q = _q(plan)
    p = plan.predictions
    sim = (plan.verification or {}).get("plan")
    head = "          " + " " * 6 + "".join(f"{(x + (' (SLO)' if x == q else '')):>24}" for x in QS)
    lines = [head + ("" if sim else "   (predicted only)"),
             "          " + " " * 6 + "".join(f"{'predicted / simulated' if sim else 'predicted':>24}" for _ in QS)]
    slo = plan.inputs.get("slo") or {}
    for name, key, unit, scale, digits in (("TTFT", "ttft_s", "s", 1, 3), ("TPOT", "tpot_s", "ms", 1e3, 1),
                                           ("JCT", "jct_s", "s", 1, 3)):
        cells = []
        for x in QS:
            a = _f(p[key].get(x), unit, scale, digits)
            cells.append(f"{a} / {_f(sim[key][x], unit, scale, digits)}" if sim else a)
        target = slo.get(key)
        lines.append(f"          {name:<6}" + "".join(f"{c:>24}" for c in cells)
                     + (f"   target {_f(target, unit, scale, 3 if unit == 's' else 0).rstrip('0').rstrip('.')}"
                        if target else ""))
    if sim and sim.get("slo_attainment") is not None:
        pa = p.get("slo_attainment")
        lines.append(f"          SLO attainment {'-' if pa is None else f'{pa:.1%}'} predicted / "
                     f"{sim['slo_attainment']:.1%} simulated")
    return lines


def memory_lines(plan) -> list[str]:
    """KV memory from the simulation: peak occupancy, headroom, preempted requests; flagged
    (with the next size up) above the threshold."""
    v = plan.verification or {}
    sim = v.get("plan")
    if not sim:
        kv = plan.predictions.get("kv_peak_fraction")
        if kv is None:
            return []
        warn = "  WARNING: at or over capacity" if kv >= 0.95 else ""
        return [f"          KV memory (predicted, mean + 2.33 sd of tokens held): {kv:.0%} of capacity{warn}"]
    pre = v.get("preemption") or {}
    line = (f"          KV memory (simulated): peak {sim['kv_peak_fraction']:.0%} of capacity, headroom "
            f"{sim['kv_headroom']:.0%}; {sim['preempted_requests']:,} requests ({sim['preempted_share']:.1%}) "
            f"preempted ({pre.get('mode', 'recompute')})")
    out = [line]
    if sim.get("preemption_flag"):
        out.append(f"FLAGGED   more than {pre.get('flag_share', 0.005):.1%} of requests preempted: latency rests on "
                   f"recomputation under memory pressure")
        nxt = v.get("next_size_up")
        if nxt:
            s = nxt["simulated"]
            q = s["percentile"]
            out.append(f"          next size up: {nxt['deployment']} ${nxt['usd_per_hour']:.2f}/h: "
                       f"{s['preempted_share']:.1%} preempted, KV peak {s['kv_peak_fraction']:.0%}, {q} TTFT "
                       f"{_f(s['ttft_s'][q])}, {q} TPOT {_f(s['tpot_s'][q], 'ms', 1e3, 1)}"
                       + ("" if nxt["meets"] else " (misses the SLO)"))
    elif sim["kv_peak_fraction"] >= 0.95:
        out.append("warning   KV memory peaks at or near capacity in simulation; little room for longer requests")
    return out


def check_rows(plan) -> list[str]:
    """The spare (one instance removed) and headroom checks of the plan."""
    out = []
    for x in (plan.verification or {}).get("checks") or ():
        s = x["simulated"]
        q = s["percentile"]
        out.append(f"          {x['check']}: {q} TTFT {_f(s['ttft_s'][q])}, {q} TPOT "
                   f"{_f(s['tpot_s'][q], 'ms', 1e3, 1)} - {'meets the SLO' if s['meets'] else 'MISSES the SLO'}")
    return out


def rejected_rows(plan) -> list[str]:
    return [f"rejected  {r['deployment']:<62} ${r['usd_per_hour']:>8.2f}/h  in simulation: {r['why']}"
            for r in (plan.verification or {}).get("rejected") or ()]


def frontier_rows(plan) -> list[str]:
    rows = [r for r in plan.frontier if r.get("on_frontier", True)]
    if not rows:
        return []
    q = rows[0]["percentile"]
    sim = rows[0].get("simulated") is not None
    lines = [f"FRONTIER  cost-latency Pareto set at {q} ({'simulated' if sim else 'predicted'}); * = the plan above",
             f"          {'$/hour':>9} {'GPUs':>5} {q + ' TTFT':>10} {q + ' TPOT':>10}  plan"]
    for r in rows:
        lat = r["simulated"] if sim else r["predicted"]
        lines.append(f"        {'*' if r.get('chosen') else ' '} {r['usd_per_hour']:>9.2f} {r['gpus']:>5} "
                     f"{_f(lat['ttft_s']):>10} {_f(lat['tpot_s'], 'ms', 1e3, 1):>10}  {r['deployment']}")
    dropped = [r for r in plan.frontier if not r.get("on_frontier", True)]
    for r in dropped:
        lines.append(f"          (predicted on the frontier, missed in simulation: {r['deployment']}: {r.get('why', '')})")
    return lines


def render_plan(plan) -> str:
    i, c = plan.inputs, plan.cost
    dep = asdict(plan.deployment)
    t = i["trace"]
    slo = i["slo"]
    q = f"p{slo['percentile']}"
    lines = [headline(plan), check_line(plan),
             f"trace {t['name']}: {t['requests']} requests over {t['span_s']:.0f} s, {t['rate_per_s']:.2f} req/s "
             f"(peak window {t['peak_window_rate_per_s']:.2f}), inter-arrival CV {t['interarrival_cv']:.2f}, "
             f"prompt mean {t['prompt_tokens']['mean']:.0f}, output mean {t['output_tokens']['mean']:.0f}"]
    over = overlong_text(i.get("overlong") or {})
    if over:
        lines.append(f"context   {over}")
    lines += [
        f"model {i['model']}; SLO {q} TTFT <= {slo['ttft_s']:g} s, {q} TPOT <= {slo['tpot_s'] * 1e3:g} ms"
        + (f", {q} JCT <= {slo['jct_s']:g} s" if slo.get("jct_s") else "")
        + f"; performance model {'CALIBRATED: ' if i['calibrated'] else ''}{i['efficiency_source']}",
        "",
        f"PLAN      {describe(dep)}" + (f"  (incl. {i['spare_per_role']} spare instance per role)"
                                        if i.get("spare_per_role") else ""),
        f"          engine {plan.deployment.engine.name}: " + ", ".join(
            f"{k}={v}" for k, v in plan.deployment.engine.settings().items()),
        f"          GPUs {plan.deployment.gpus}, ${c['usd_per_hour']:.2f}/h, ${c['usd_per_million_tokens']:.3f}/M total "
        f"tokens (prompt + output), ${c.get('usd_per_million_output_tokens', float('nan')):.3f}/M output tokens, "
        f"{c['tokens_per_s_per_usd_hour']:.0f} tokens/s per $/h",
    ]
    for g, pr in i.get("prices", {}).items():
        lines.append(f"          price {g} ${pr['usd_per_gpu_hour']:.2f}/GPU-hour: {pr['source']}")
    lines += _side_by_side(plan)
    lines += check_rows(plan)
    u = plan.predictions["utilisation"]
    lines.append(f"          prefill utilisation mean {u['prefill']['mean']:.0%} (busiest window "
                 f"{u['prefill']['peak_window']:.0%}), decode batch mean {plan.predictions['decode_batch']['mean']:.1f} "
                 f"(predicted)")
    lines += memory_lines(plan)
    lines.append("")
    lines += comparison_rows(plan)
    lines += rejected_rows(plan)
    if plan.frontier:
        lines += [""] + frontier_rows(plan)
    lines += ["", f"VERDICT   {plan.verdict}"]
    for w in i.get("warnings", []):
        lines.append(f"warning   {w}")
    for n in (plan.verification or {}).get("notes") or ():
        lines.append(f"note      {n}")
    v = plan.verification or {}
    sims = f"; {v['sims']} simulations, {v['wall_s']:.2f} s" if v.get("verified") else ""
    lines.append(f"(planned in {i['planning_s']:.2f} s{sims}; ILP {i['optimizer']['variables']} binaries, "
                 f"{i['optimizer']['constraints']} constraints, {i['optimizer']['solver']})")
    return "\n".join(lines)
