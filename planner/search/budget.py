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
from planner.search.optimizer import EQUAL_COST_REL, Choice, better, same_cost, slo_ratios

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
    """`pair_ok(prefill_option, decode_option)`: extra pair constraint (the JCT SLO).

    The answer is the first split, in the order (prefill family, prefill count, decode
    family), that no later feasible split beats (`optimizer.better`). Every split costs the
    budget, so where their costs are equal to within far less than `same_cost`'s tolerance
    `better` compares SLO headroom alone, and the answer is the split with the least
    (headroom key, position): then splits are tried by a lower bound of their key - the
    decode pool's TPOT ratio r gives key >= (r, r) - and the search stops once the bound
    passes the best found, checking a pair (a KV-transfer queue per prefill pool and link)
    only where it would win. Prefill pools (an O(N) queue each) are predicted only for
    splits the bound does not rule out. Otherwise (prices whose multiples only nearly
    meet) the splits are scanned in order, as `better` then depends on it."""
    splits = _splits(families, usd_per_hour, max_gpus)
    if not splits:
        return None
    costs = [n_p * fp.usd_per_instance_hour + n_d * fd.usd_per_instance_hour for fp, n_p, fd, n_d in splits]
    if max(costs) - min(costs) > UNIFORM_COST_REL * max(max(costs), 1.0):
        return _scan(splits, slo, kv_rate_gb_s, pair_ok)
    prefill: dict = {}

    def prefill_ok(fp, n_p):
        """The prefill option of n_p, if it exists and can carry the KV rate."""
        if (fp, n_p) not in prefill:
            p = fp.evaluate(n_p)
            prefill[fp, n_p] = p if p is not None and p.link_gb_s >= kv_rate_gb_s else None
        return prefill[fp, n_p]

    ranked = []
    for i, (fp, n_p, fd, n_d) in enumerate(splits):
        d = fd.evaluate(n_d)
        if d is None or d.link_gb_s < kv_rate_gb_s:
            continue
        r = slo_ratios(d, slo)[1]
        ranked.append(((r, r), i, fp, n_p, d))
    ranked.sort(key=lambda e: (e[0], e[1]))
    best, best_rank = None, None
    for bound, i, fp, n_p, d in ranked:
        if best_rank is not None and (bound, i) > best_rank:
            break                     # every split left has a key of at least its bound
        p = prefill_ok(fp, n_p)
        if p is None:
            continue
        c = Choice(p.usd_per_hour + d.usd_per_hour, p, d)
        rank = (c.headroom_key(slo), i)
        if best_rank is not None and rank >= best_rank:
            continue
        if pair_ok is not None and not pair_ok(p, d):
            continue
        best, best_rank = c, rank
    return best


UNIFORM_COST_REL = 0.25 * EQUAL_COST_REL    # splits' costs this close: `better` sees them all as equal


def _splits(families: list[Family], usd_per_hour: float, max_gpus: int | None) -> list[tuple]:
    """(prefill family, prefill count, decode family, decode count) spending exactly
    `usd_per_hour`, in scan order; nothing is evaluated."""
    pre = [f for f in families if f.role == "prefill"]
    dec = [f for f in families if f.role == "decode"]
    out = []
    for fp in pre:
        for n_p in range(fp.n_min, fp.n_min + MAX_COUNTS):
            spent = n_p * fp.usd_per_instance_hour
            if spent >= usd_per_hour and not same_cost(spent, usd_per_hour):
                break
            rest = usd_per_hour - spent
            for fd in dec:
                n_d = _count_for(rest, fd.usd_per_instance_hour)
                if n_d is None or n_d < fd.n_min:
                    continue
                if max_gpus is not None and n_p * fp.tp + n_d * fd.tp > max_gpus:
                    continue
                out.append((fp, n_p, fd, n_d))
    return out


def _scan(splits: list[tuple], slo: SLO, kv_rate_gb_s: float, pair_ok) -> Choice | None:
    """The best split by `better` in scan order (a prefill count whose pool is missing or
    cannot carry the KV rate rules out all its splits); a pair is checked only for a split
    that would replace the best so far."""
    best = None
    ruled_out: set = set()
    options: dict = {}
    for fp, n_p, fd, n_d in splits:
        if (fp, n_p) in ruled_out:
            continue
        if (fp, n_p) not in options:
            options[fp, n_p] = fp.evaluate(n_p)
        p = options[fp, n_p]
        if p is None or p.link_gb_s < kv_rate_gb_s:
            ruled_out.add((fp, n_p))
            continue
        d = fd.evaluate(n_d)
        if d is None or d.link_gb_s < kv_rate_gb_s:
            continue
        c = Choice(p.usd_per_hour + d.usd_per_hour, p, d)
        if better(c, best, slo) and (pair_ok is None or pair_ok(p, d)):
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
