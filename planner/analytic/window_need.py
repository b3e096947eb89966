"""Instances each role needs in one time window, from the queueing model (planner.search.schedule).

What each role's count controls. A disaggregated request's record TPOT (the schema's, from
the first token) is, per request i with O_i output tokens,

    TPOT_i = step_i + admission_i / (O_i - 1) + (latency + x_i + wait_i) / (O_i - 1)

- the **decode** count sets the decode step (the batch each instance runs) and the
  admission wait (uniform over one step): `step_i + admission_i / (O_i - 1)`;
- the **prefill** count sets TTFT, the prefill pool's and its KV links' utilisation, and -
  each prefill instance sends over its own link - the queueing of transfers on those
  links (`wait_i`);
- no count changes `latency + x_i`, the prompt's KV bytes over one link: a window whose
  long prompts make that part alone miss the TPOT target cannot meet it by adding
  instances (only a faster link or a larger TP can).

So per window: (1) prefill is sized for TTFT and capacity (pool and links below 1);
(2) for each prefill count from that need up to `PREFILL_TRANSFER_FACTOR` x it, the
TPOT/JCT *floor* - the prediction with decode unlimited (`DECODE_UNLIMITED` instances) -
says which decode-side targets that count can meet at all, and decode is sized for them
on the real link; a target the floor misses is one the transfer misses, and decode is
sized for it on its own part (the prediction with an instantaneous link, `instant_link`);
(3) the pair meeting the most targets, then the cheapest, wins: more prefill buys links
(the transfer's queue) and can spare decode instances. The queueing model is not
monotone in the prefill count (faster prefill sends KV in tighter bunches), so pairs are
tried, not bisected. A target missed by the transfer at every count is named in
`Need.notes` instead of the search failing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from planner.errors import InfeasibleError

PREFILL_METRICS = ("ttft_s",)
DECODE_METRICS = ("tpot_s", "jct_s")
COUPLED_METRICS = ("ttft_s", "tpot_s", "jct_s")
DECODE_UNLIMITED = 512           # decode instances standing for "as many as it takes"
PREFILL_TRANSFER_FACTOR = 8      # prefill raised at most this many times its TTFT need for the transfer
INSTANT_LINK_GB_S = 1e12         # a link whose transfer time is nil (the decode part of TPOT alone)


@dataclass(frozen=True)
class Need:
    """One window's fractional instances per role, and why a target cannot be met."""
    need: dict                    # role -> fractional instances
    notes: tuple[str, ...] = ()


def with_count(dep, role: str, n: int):
    r = getattr(dep, role)
    return replace(dep, **{role: replace(r, instances=int(n))})


def instant_link(dep):
    """`dep` with a KV link that takes no time: its TPOT is the decode step plus admission."""
    return replace(dep, kv_link_gb_s=INSTANT_LINK_GB_S, kv_latency_s=0.0)


def capacity_ok(pred: dict, role: str) -> bool:
    """Whether the pools `role` sizes keep up: prefill pool and its KV links below full
    utilisation (prefill), KV memory enough (decode), both (coupled)."""
    util = pred.get("utilisation") or {}
    if role in ("prefill", "coupled") and (util.get("prefill") or {}).get("peak_window", 0.0) >= 1.0:
        return False
    if role == "prefill" and (util.get("kv_link") or {}).get("peak_window", 0.0) >= 1.0:
        return False
    if role in ("decode", "coupled") and pred.get("kv_peak_fraction", 0.0) > 1.0:
        return False
    return True


def worst_ratio(pred: dict, metrics, slo: dict) -> float:
    """The largest metric / limit over `metrics` the SLO sets (inf when infinite)."""
    worst = 0.0
    for metric in metrics:
        if metric in slo:
            pct, limit = slo[metric]
            v = float(pred[metric][pct])
            worst = max(worst, v / limit if math.isfinite(v) else math.inf)
    return worst


def fractional_need(test, start: int, max_n: int) -> float | None:
    """The smallest count n with test(n) ok, less how far n - 1 missed: need = n - 1 +
    clip((m(n-1) - 1) / (m(n-1) - m(n)), 0, 1), m the worst metric/limit ratio (n - 1 = 0
    never serves). None when `max_n` does not pass. `test(n)` -> (ok, m), memoised here."""
    cache: dict[int, tuple[bool, float]] = {}

    def t(n: int) -> tuple[bool, float]:
        if n not in cache:
            cache[n] = test(n)
        return cache[n]

    lo, hi = 0, max(1, min(int(start), max_n))
    while not t(hi)[0]:
        if hi >= max_n:
            return None
        lo, hi = hi, min(2 * hi, max_n)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if t(mid)[0]:
            hi = mid
        else:
            lo = mid
    if hi == 1:
        return 1.0
    m_prev, m_n = t(hi - 1)[1], t(hi)[1]
    if not math.isfinite(m_prev) or m_prev <= m_n:
        return float(hi)
    return hi - 1 + min(max((m_prev - 1.0) / (m_prev - m_n), 0.0), 1.0)


def role_need(predict_fn, dep, workload, role: str, slo: dict, start: int, max_instances: int,
              metrics=None) -> float:
    """Fractional instances of `role` (the others as in `dep`) meeting `metrics` of the SLO
    (default: those the role controls alone) and its capacity checks. Raises
    InfeasibleError when `max_instances` do not."""
    metrics = metrics or {"prefill": PREFILL_METRICS, "decode": DECODE_METRICS, "coupled": COUPLED_METRICS}[role]

    def test(n: int) -> tuple[bool, float]:
        pred = predict_fn(with_count(dep, role, n), workload)
        if not capacity_ok(pred, role):
            return False, math.inf
        m = worst_ratio(pred, metrics, slo)
        return m <= 1.0, m

    x = fractional_need(test, start, max_instances)
    if x is None:
        raise InfeasibleError(f"{role}: {max_instances} instances do not meet the SLO in one window; "
                              "the base plan cannot be scaled to this window's load")
    return x


@dataclass(frozen=True)
class _Pair:
    prefill: int
    decode: float                  # fractional decode need with this prefill count
    part: tuple[str, ...]          # targets missed by the transfer: decode sized for its own part
    beyond: tuple[str, ...]        # targets missed even with no transfer time and unlimited decode
    usd_per_hour: float
    floor: dict                    # the prediction with decode unlimited

    @property
    def rank(self) -> tuple[int, float]:
        return len(self.part) + len(self.beyond), self.usd_per_hour


def _decode_for(predict_fn, dep_p, workload, slo: dict, full, part, start: int, max_instances: int):
    """Fractional decode need with `dep_p`'s prefill count: `full` targets on the real
    link, `part` targets on the decode part alone (instant link). None if no count serves."""
    def test(n: int) -> tuple[bool, float]:
        d = with_count(dep_p, "decode", n)
        pred = predict_fn(d, workload)
        if not capacity_ok(pred, "decode"):
            return False, math.inf
        m = worst_ratio(pred, full, slo)
        if part:
            m = max(m, worst_ratio(predict_fn(instant_link(d), workload), part, slo))
        return m <= 1.0, m

    return fractional_need(test, start, max_instances)


def disaggregated_need(predict_fn, dep, workload, slo: dict, max_instances: int,
                       usd_per_instance_hour: dict | None = None) -> Need:
    """Prefill and decode instances one window needs (see the module docstring): prefill
    from its TTFT need up to `PREFILL_TRANSFER_FACTOR` x it, each with the decode count it
    then needs; the pair meeting the most targets, then the cheapest (per instance-hour
    prices per role, default 1 each: the fewest instances; ties to fewer prefill)."""
    price = {"prefill": 1.0, "decode": 1.0, **(usd_per_instance_hour or {})}
    need_p0 = role_need(predict_fn, dep, workload, "prefill", slo, dep.prefill.instances, max_instances)
    n_lo = math.ceil(need_p0 - 1e-9)
    top = min(max_instances, PREFILL_TRANSFER_FACTOR * n_lo)
    wide = min(DECODE_UNLIMITED, max_instances)
    late = tuple(m for m in DECODE_METRICS if m in slo)
    best = None
    for n_p in range(n_lo, top + 1):
        lower = n_p * price["prefill"] + price["decode"]       # decode needs one instance at least
        if best is not None and best.rank[0] == 0 and lower > best.usd_per_hour + 1e-9:
            break
        dep_p = with_count(dep, "prefill", n_p)
        floor = predict_fn(with_count(dep_p, "decode", wide), workload)
        if n_p > n_lo and not capacity_ok(floor, "prefill"):
            continue
        missed = tuple(m for m in late if worst_ratio(floor, (m,), slo) > 1.0)
        if best is not None and (len(missed), lower) >= (best.rank[0], best.usd_per_hour - 1e-9):
            continue
        part, beyond = (), ()
        if missed:
            ifloor = predict_fn(with_count(instant_link(dep_p), "decode", wide), workload)
            part = tuple(m for m in missed if worst_ratio(ifloor, (m,), slo) <= 1.0)
            beyond = tuple(m for m in missed if m not in part)
        full = tuple(m for m in late if m not in missed)
        need_d = _decode_for(predict_fn, dep_p, workload, slo, full, part, dep.decode.instances, max_instances)
        if need_d is None:
            continue
        pair = _Pair(n_p, need_d, part, beyond,
                     n_p * price["prefill"] + math.ceil(need_d - 1e-9) * price["decode"], floor)
        if best is None or pair.rank < (best.rank[0], best.usd_per_hour - 1e-9):
            best = pair
    if best is None:
        raise InfeasibleError(f"decode: {max_instances} instances do not meet the SLO in one window; "
                              "the base plan cannot be scaled to this window's load")
    need_p = need_p0 if best.prefill == n_lo else _prefill_fraction(predict_fn, dep, workload, slo, best)
    return Need({"prefill": need_p, "decode": best.decode}, _notes(best, slo))


def _prefill_fraction(predict_fn, dep, workload, slo: dict, best: _Pair) -> float:
    """Prefill raised above its TTFT need for the transfer: how close one instance fewer
    came with the chosen decode count, as `fractional_need` measures it."""
    n_d = math.ceil(best.decode - 1e-9)
    full = tuple(m for m in DECODE_METRICS if m in slo and m not in best.part + best.beyond)

    def ratio(n_p: int) -> float:
        d = with_count(with_count(dep, "prefill", n_p), "decode", n_d)
        pred = predict_fn(d, workload)
        if not (capacity_ok(pred, "prefill") and capacity_ok(pred, "decode")):
            return math.inf
        m = worst_ratio(pred, PREFILL_METRICS + full, slo)
        if best.part:
            m = max(m, worst_ratio(predict_fn(instant_link(d), workload), best.part, slo))
        return m

    m_prev, m_n = ratio(best.prefill - 1), ratio(best.prefill)
    if not math.isfinite(m_prev) or m_prev <= m_n:
        return float(best.prefill)
    return best.prefill - 1 + min(max((m_prev - 1.0) / (m_prev - m_n), 0.0), 1.0)


def _notes(best: _Pair, slo: dict) -> tuple[str, ...]:
    out = []
    for m in best.part + best.beyond:
        pct, limit = slo[m]
        v = float(best.floor[m][pct])
        what = m[:-2].upper()
        if m in best.part:
            out.append(f"{what} {pct} {v:.4g} s > {limit:g} s with unlimited decode instances: the KV transfer of "
                       f"this window's prompts misses it at every prefill count tried; decode sized for its own "
                       f"step and admission")
        else:
            out.append(f"{what} {pct} {v:.4g} s > {limit:g} s even with unlimited decode instances and no transfer "
                       f"time: no instance count meets it in this window")
    return tuple(out)
