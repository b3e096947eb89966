"""Disaggregated against coupled at an equal GPU budget.

The optimizer answers "what is cheapest"; the verdict also wants "given the same money,
which is faster". At B = the larger of the two modes' least costs (the budget at which
both exist), this finds the best plan of each mode spending exactly B, in the optimizer's
order (`optimizer.better`: equal cost, then SLO headroom). The candidate families
(`candidates.Family`) are asked for any instance count, not only the few counts the
integer program saw: a disaggregated plan at B is any (prefill count, decode count) split
of B over the prefill and decode families; a coupled plan at B is B / (TP x price)
instances of one family when that is a whole number. Enumeration, not an ILP: the splits
are few (at most `MAX_COUNTS` prefill counts per family pair).
"""
from __future__ import annotations

from planner.search.candidates import Family, SLO
from planner.search.optimizer import Choice, better, same_cost

MAX_COUNTS = 512
COUPLED_MODES = ("coupled", "chunked_coupled")


def _count_for(usd: float, unit: float) -> int | None:
    """The instance count that spends exactly `usd` at `unit` $/h per instance, if any."""
    if unit <= 0 or usd <= 0:
        return None
    n = int(round(usd / unit))
    return n if n >= 1 and same_cost(n * unit, usd) else None


def best_coupled_at(families: list[Family], usd_per_hour: float, slo: SLO,
                    max_gpus: int | None = None) -> Choice | None:
    best = None
    for f in families:
        if f.role not in COUPLED_MODES:
            continue
        n = _count_for(usd_per_hour, f.usd_per_instance_hour)
        if n is None or (max_gpus is not None and n * f.tp > max_gpus):
            continue
        o = f.evaluate(n)
        if o is not None:
            c = Choice(o.usd_per_hour, coupled=o)
            if better(c, best, slo):
                best = c
    return best


def best_disaggregated_at(families: list[Family], usd_per_hour: float, slo: SLO, kv_rate_gb_s: float = 0.0,
                          max_gpus: int | None = None, pair_ok=None) -> Choice | None:
    """`pair_ok(prefill_option, decode_option)`: extra pair constraint (the JCT SLO)."""
    pre = [f for f in families if f.role == "prefill"]
    dec = [f for f in families if f.role == "decode"]
    best = None
    for fp in pre:
        for n_p in range(fp.n_min, fp.n_min + MAX_COUNTS):
            spent = n_p * fp.usd_per_instance_hour
            if spent >= usd_per_hour and not same_cost(spent, usd_per_hour):
                break
            rest = usd_per_hour - spent
            p = None
            for fd in dec:
                n_d = _count_for(rest, fd.usd_per_instance_hour)
                if n_d is None or n_d < fd.n_min:
                    continue
                if max_gpus is not None and n_p * fp.tp + n_d * fd.tp > max_gpus:
                    continue
                p = p or fp.evaluate(n_p)
                if p is None or p.link_gb_s < kv_rate_gb_s:
                    break
                d = fd.evaluate(n_d)
                if d is None or d.link_gb_s < kv_rate_gb_s or (pair_ok is not None and not pair_ok(p, d)):
                    continue
                c = Choice(p.usd_per_hour + d.usd_per_hour, p, d)
                if better(c, best, slo):
                    best = c
    return best


def best_at(families: list[Family], usd_per_hour: float, slo: SLO, kv_rate_gb_s: float = 0.0,
            max_gpus: int | None = None, pair_ok=None) -> dict[str, Choice]:
    """The best plan of each mode spending exactly `usd_per_hour` (modes with none left out)."""
    out = {}
    d = best_disaggregated_at(families, usd_per_hour, slo, kv_rate_gb_s, max_gpus, pair_ok)
    if d is not None:
        out["disaggregated"] = d
    for mode in COUPLED_MODES:
        c = best_coupled_at([f for f in families if f.role == mode], usd_per_hour, slo, max_gpus)
        if c is not None:
            out[mode] = c
    return out


def equal_budget(best_per_mode: dict[str, Choice], families: list[Family], slo: SLO, kv_rate_gb_s: float = 0.0,
                 max_gpus: int | None = None, pair_ok=None) -> tuple[float, Choice, Choice] | None:
    """(budget $/h, best disaggregated, best coupled-or-chunked) spending the same money, or
    None where one mode has no plan at all or none at the other's cost."""
    dis = best_per_mode.get("disaggregated")
    cpl = [c for m, c in best_per_mode.items() if m in COUPLED_MODES]
    if dis is None or not cpl:
        return None
    budget = max([dis.usd_per_hour] + [min(c.usd_per_hour for c in cpl)])
    d_best = best_disaggregated_at(families, budget, slo, kv_rate_gb_s, max_gpus, pair_ok)
    c_best = best_coupled_at(families, budget, slo, max_gpus)
    # the candidates the ILP saw at this cost count too (e.g. the KV-link-sized pools)
    if same_cost(dis.usd_per_hour, budget) and better(dis, d_best, slo):
        d_best = dis
    for c in cpl:
        if same_cost(c.usd_per_hour, budget) and better(c, c_best, slo):
            c_best = c
    if d_best is None or c_best is None:
        return None
    return budget, d_best, c_best
