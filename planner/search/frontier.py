"""The cost-latency frontier: the plans no other plan beats on cost per hour, TTFT and
TPOT at once (at the SLO percentile), among those meeting the SLO.

Candidates are the search's pools at a few instance counts each (the smallest meeting the
SLO and `EXTRA_COUNTS` above it): coupled pools alone, and disaggregated pairs of a
prefill pool on the prefill (cost, TTFT) frontier with a decode pool on the decode (cost,
TPOT) frontier (a pair's TTFT is its prefill pool's, its TPOT mostly its decode pool's, the
KV transfer included). The predicted frontier is thinned to at most `MAX_POINTS` plans
spread over cost; with a simulator at hand each is replayed, those missing the SLO are
dropped (and listed), and the frontier is taken again on the simulated percentiles.

`--objective` picks from the (simulated) frontier: cost - the cheapest; latency - the
lowest worst SLO ratio (max of TTFT / target and TPOT / target), plans within 2% of it
counted equal and the cheapest of those taken; tokens-per-dollar - the most tokens per
second the plan serves within the SLO (the trace's token rate x the load factor it holds
to in simulation, `planner.search.margin`) per $/hour.
"""
from __future__ import annotations

import numpy as np

from planner.search.candidates import KV_LATENCY_S
from planner.search.margin import margin_job
from planner.search.optimizer import Choice, pair_samples

EXTRA_COUNTS = (0, 1, 2, 4)
MAX_POINTS = 8
LATENCY_TIE = 0.02


def pareto(points: list[tuple]) -> list[int]:
    """Indices of the points (cost, a, b, ...) no other point dominates (<= in every
    coordinate, < in one), in cost order; equal points keep the first."""
    order = sorted(range(len(points)), key=lambda i: points[i])
    keep = []
    for i in order:
        p = points[i]
        if any(all(q[k] <= p[k] for k in range(len(p))) for q in (points[j] for j in keep)):
            continue
        keep.append(i)
    return keep


def _options(space, role_filter) -> list:
    """The pools of the search at a few counts per family."""
    out, seen = [], set()
    for f in space.families:
        if not role_filter(f.role):
            continue
        for extra in EXTRA_COUNTS:
            o = space.option(f, f.n_min + extra)
            if o is not None and (o.role, o.gpu, o.tp, o.instances, o.chunk_tokens) not in seen:
                seen.add((o.role, o.gpu, o.tp, o.instances, o.chunk_tokens))
                out.append(o)
    return out


def predicted_candidates(space) -> list[tuple[Choice, float, float]]:
    """(plan, predicted TTFT, predicted TPOT at the SLO percentile) of every candidate."""
    q = space.slo.percentile
    out = []
    if space.mode != "disaggregated":
        for o in _options(space, lambda r: r in ("coupled", "chunked_coupled")):
            if space.mode in ("auto", o.role):
                out.append((Choice(o.usd_per_hour, coupled=o), o.ttft_s, o.tpot_s))
    if space.mode in ("auto", "disaggregated"):
        pre = [o for o in _options(space, lambda r: r == "prefill") if o.link_gb_s >= space.kv_rate_options]
        dec = [o for o in _options(space, lambda r: r == "decode") if o.link_gb_s >= space.kv_rate_options]
        pre = [pre[i] for i in pareto([(o.usd_per_hour, o.ttft_s) for o in pre])]
        dec = [dec[i] for i in pareto([(o.usd_per_hour, o.tpot_s) for o in dec])]
        for p in pre:
            for d in dec:
                if space.max_gpus is not None and p.gpus + d.gpus > space.max_gpus:
                    continue
                if not space.pair_ok(p, d):
                    continue
                _, tpot, _ = pair_samples(p, d, space.wl, space.kv_bytes_tok, KV_LATENCY_S,
                                          space.kv_link_override_gb_s)
                t = float(np.percentile(tpot, q)) if len(tpot) else 0.0
                out.append((Choice(p.usd_per_hour + d.usd_per_hour, p, d), p.ttft_s, t))
    if space.max_gpus is not None:
        out = [x for x in out if x[0].gpus <= space.max_gpus]
    return out


def _thin(idx: list[int], cands, keep_first: int = MAX_POINTS) -> list[int]:
    """At most `keep_first` frontier points spread evenly over the cost-ordered list."""
    if len(idx) <= keep_first:
        return idx
    pos = np.unique(np.round(np.linspace(0, len(idx) - 1, keep_first)).astype(int))
    return [idx[i] for i in pos]


def _row(summaries, c: Choice, ttft: float, tpot: float, q: str) -> dict:
    dep = summaries.deployment(c)
    from dataclasses import asdict

    from planner.search.verdict import describe
    tokens_s = summaries.tokens_s
    return {"deployment": describe(asdict(dep)), "mode": c.mode, "usd_per_hour": c.usd_per_hour, "gpus": dep.gpus,
            "percentile": q, "predicted": {"ttft_s": ttft, "tpot_s": tpot},
            "tokens_per_s_per_usd_hour": tokens_s / c.usd_per_hour if c.usd_per_hour > 0 else None}


def frontier_predicted(space, summaries) -> list[dict]:
    """The frontier by the analytical model alone (plans not verified)."""
    q = f"p{space.slo.percentile}"
    cands = predicted_candidates(space)
    idx = _thin(pareto([(c.usd_per_hour, t, p) for c, t, p in cands]), cands)
    return [{**_row(summaries, *cands[i], q), "simulated": None, "on_frontier": True} for i in idx]


def verified_frontier(walker, objective: str, deadline) -> dict:
    """The frontier with every point replayed ({"frontier": rows, "chosen": Choice}); the
    plan the objective picks is marked `chosen` (for `cost`, the walker's own best)."""
    space, summaries, slo = walker.space, walker.summaries, walker.slo
    q = f"p{slo.percentile}"
    cands = predicted_candidates(space)
    best = walker.best
    if not any(_same(c, best) for c, _, _ in cands):
        rec = walker.record(best)["simulated"]
        cands.append((best, rec["ttft_s"][q], rec["tpot_s"][q]))
    idx = _thin(pareto([(c.usd_per_hour, t, p) for c, t, p in cands]), cands)
    if not any(_same(cands[i][0], best) for i in idx):
        idx.append(next(i for i, (c, _, _) in enumerate(cands) if _same(c, best)))
    rows, met = [], []
    for i in sorted(idx, key=lambda i: cands[i][0].usd_per_hour):
        c, t, p = cands[i]
        if c.usd_per_hour < best.usd_per_hour and not _same(c, best):
            continue        # cheaper than the cheapest verified plan: the walk found it misses the SLO
        rec = walker.record(c) or walker.check(c)
        row = {**_row(summaries, c, t, p, q), "simulated": {"ttft_s": rec["simulated"]["ttft_s"][q],
                                                            "tpot_s": rec["simulated"]["tpot_s"][q],
                                                            "worst_ratio": rec["simulated"]["worst_ratio"]},
               "meets": rec["meets"]}
        if not rec["meets"]:
            row["why"] = rec["why"]
        rows.append((c, row))
        if rec["meets"]:
            met.append((c, row))
    keep = pareto([(r["usd_per_hour"], r["simulated"]["ttft_s"], r["simulated"]["tpot_s"]) for _, r in met])
    front = [met[i] for i in keep]
    chosen = best
    if objective == "latency":
        lo = min(r["simulated"]["worst_ratio"] for _, r in front)
        chosen = min((x for x in front if x[1]["simulated"]["worst_ratio"] <= lo * (1 + LATENCY_TIE)),
                     key=lambda x: x[1]["usd_per_hour"])[0]
    elif objective == "tokens-per-dollar":
        jobs = [walker.rp.call(margin_job, summaries.deployment(c), "rate_scale", 1.0, r["simulated"]["worst_ratio"])
                for c, r in front]
        for (c, r), h in zip(front, jobs):
            m = h.get()
            walker.sims += m["sims"]
            r["load_holds_to"] = m["holds_to"]
            r["capacity_tokens_per_s_per_usd_hour"] = summaries.tokens_s * m["holds_to"] / c.usd_per_hour
        chosen = max(front, key=lambda x: (x[1]["capacity_tokens_per_s_per_usd_hour"], -x[1]["usd_per_hour"]))[0]
    out = []
    for c, r in front:
        r["chosen"] = _same(c, chosen)
        r["on_frontier"] = True
        out.append(r)
    dropped = [r for _, r in rows if not r["meets"]]
    return {"frontier": out + [{**r, "on_frontier": False} for r in dropped], "chosen": chosen}


def _same(a: Choice, b: Choice) -> bool:
    def k(c):
        return tuple(None if o is None else (o.role, o.gpu, o.tp, o.instances, o.chunk_tokens)
                     for o in (c.prefill, c.decode, c.coupled))
    return k(a) == k(b)
