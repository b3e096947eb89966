"""The integer program: choose the cheapest deployment meeting the SLO among precomputed
candidate pools (`planner.search.candidates`), and among equal-cost ones the one with the most
SLO headroom.

Variables: binary x_o per prefill option, y_d per decode option, z_c per coupled option;
continuous h >= 0 (the plan's tightest SLO ratio).
    subject to sum x = sum y                       (a disaggregated plan has both roles)
               sum x + sum z = 1                   (exactly one deployment)
               sum (link_o - kv_rate) x_o >= 0     (prefill pool can send the KV it makes)
               sum (link_d - kv_rate) y_d >= 0     (decode pool can receive it)
               x_o + y_d <= 1  for pairs whose TPOT (KV transfer included) or JCT misses the SLO
               sum gpus * (x, y, z) <= max_gpus    (optional budget)
               h >= r_o * (x_o | y_o | z_o)        r_o = the option's latency / target
               allowed modes only
Lexicographic objective, one solve per level with the levels above held fixed:
    1. minimise cost = sum usd_per_hour * (x, y, z)
    2. cost <= cost* (1 + EQUAL_COST_REL): minimise h, the SLO headroom score
       h = max(p_TTFT / SLO_TTFT, p_TPOT / SLO_TPOT) of the chosen pools (at the SLO
       percentile: TTFT from the prefill or coupled pool, TPOT from the decode or coupled pool)
    3. h <= h*: minimise the sum of the same ratios (prefers the faster pool on the other
       target when the tightest one ties)
A cost is never traded for latency: level 2 and 3 only choose among plans whose $/hour
equals the minimum to within EQUAL_COST_REL (one part in a million, i.e. float rounding of
per-GPU prices times counts). Runners-up come from re-solving with a no-good cut on each
solution found, so they too are in (cost, h, sum) order.
Solved with HiGHS (in-process via highspy) by default; CBC is the fallback
(`solver="cbc"`); see docs/model.md for the timing that chose HiGHS.
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import pulp

from planner.search.candidates import Option, Rejection, SLO
from planner.errors import InfeasibleError
from planner.analytic.queueing import decode_time_s
from planner.analytic.transfer import admission_fraction, record_tpot_s

MODE_CHOICES = ("auto", "disaggregated", "coupled", "chunked_coupled")
EQUAL_COST_REL = 1e-6     # $/hour within one part in a million count as equal
_GAP_REL = 1e-9           # MIP gap: solve each level to optimality, not HiGHS's default 1e-4


def same_cost(a: float, b: float) -> bool:
    return abs(a - b) <= EQUAL_COST_REL * max(abs(a), abs(b), 1.0)


def slo_ratios(o: Option | None, slo: SLO) -> tuple[float, float]:
    """(TTFT / TTFT target, TPOT / TPOT target) of one pool at the SLO percentile; 0 for a
    latency the pool does not set (TPOT of a prefill pool, TTFT of a decode pool)."""
    if o is None:
        return 0.0, 0.0
    t = 0.0 if np.isnan(o.ttft_s) else o.ttft_s / slo.ttft_s
    p = 0.0 if np.isnan(o.tpot_s) else o.tpot_s / slo.tpot_s
    return t, p


@dataclass
class Choice:
    """One solution: a disaggregated (prefill, decode) pair or one coupled option."""
    usd_per_hour: float
    prefill: Option | None = None
    decode: Option | None = None
    coupled: Option | None = None

    @property
    def mode(self) -> str:
        return "disaggregated" if self.coupled is None else self.coupled.role

    @property
    def gpus(self) -> int:
        return sum(o.gpus for o in (self.prefill, self.decode, self.coupled) if o is not None)

    def ratios(self, slo: SLO) -> tuple[float, float]:
        """(TTFT / target, TPOT / target) of the deployment at the SLO percentile."""
        if self.coupled is not None:
            return slo_ratios(self.coupled, slo)
        return slo_ratios(self.prefill, slo)[0], slo_ratios(self.decode, slo)[1]

    def headroom_key(self, slo: SLO) -> tuple[float, float]:
        """(tightest ratio, sum of ratios): lower is more headroom (levels 2 and 3)."""
        t, p = self.ratios(slo)
        return max(t, p), t + p


def better(a: Choice, b: Choice | None, slo: SLO) -> bool:
    """a before b in the optimizer's lexicographic order (cost, then headroom)."""
    if b is None:
        return True
    if not same_cost(a.usd_per_hour, b.usd_per_hour):
        return a.usd_per_hour < b.usd_per_hour
    return a.headroom_key(slo) < b.headroom_key(slo)


@dataclass
class Solution:
    best: Choice
    runners_up: list[Choice]
    best_per_mode: dict[str, Choice]
    solver: str
    variables: int
    constraints: int
    solve_s: float
    solves: int = 0
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _quiet_stdout():
    """HiGHS prints its banner from C++ straight to file descriptor 1; keep it off the
    terminal (and out of `--json` output)."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _solver(name: str):
    if name == "highs":
        return pulp.HiGHS(msg=False, gapRel=_GAP_REL)
    # the CBC binary bundled with PuLP, through the non-deprecated COIN_CMD interface
    return pulp.COIN_CMD(path=pulp.PULP_CBC_CMD.pulp_cbc_path, msg=False, gapRel=_GAP_REL)


def pair_samples(p: Option, d: Option, wl, kv_bytes_per_token: float, latency_s: float,
                 link_override_gb_s: float | None = None):
    """(TTFT, TPOT, JCT) per sample request of a prefill pool paired with a decode pool, as
    `queueing.predict_disaggregated` composes them: the KV transfer and the decode
    admission wait are inside TPOT (the first token comes from the prefill instance). The
    pair's link is the slower of the two pools' per-instance links (or the override), as the
    deployment's; the prefill option's transfer sample is made at that link (transfers queue
    on it, so a slower link is not a linear rescaling: half the speed can mean a queue that
    never drains)."""
    own = p.link_gb_s / p.instances
    link = link_override_gb_s or min(own, d.link_gb_s / d.instances)
    s = wl.sample
    if p.transfer_fn is not None:
        xfer = p.transfer_fn() if link == own else p.transfer_fn(link)
    else:
        xfer = latency_s + wl.prompt_tokens[s] * kv_bytes_per_token / (link * 1e9)
    step = d.tpot_sample
    adm = admission_fraction(wl) * np.where(np.isinf(step), 0.0, step)
    steps = np.maximum(wl.output_tokens[s] - 1, 0)
    tpot = record_tpot_s(step, steps, xfer, adm)
    jct = p.ttft_sample + np.where(steps > 0, xfer + adm, 0.0) + decode_time_s(steps, step)
    return p.ttft_sample, tpot[steps > 0], jct


def pair_ok(p: Option, d: Option, wl, kv_bytes_per_token: float, latency_s: float, slo: SLO,
            link_override_gb_s: float | None = None) -> bool:
    """Whether the pair meets the TPOT target (transfer included) and the JCT target if set."""
    _, tpot, jct = pair_samples(p, d, wl, kv_bytes_per_token, latency_s, link_override_gb_s)
    q = slo.percentile
    if len(tpot) and float(np.percentile(tpot, q)) > slo.tpot_s:
        return False
    return slo.jct_s is None or float(np.percentile(jct, q)) <= slo.jct_s


def jct_pair_ok(p: Option, d: Option, wl, kv_bytes_per_token: float, latency_s: float, slo: SLO) -> bool:
    _, _, jct = pair_samples(p, d, wl, kv_bytes_per_token, latency_s)
    return float(np.percentile(jct, slo.percentile)) <= slo.jct_s


def solve(prefill: list[Option], decode: list[Option], coupled: list[Option], *, kv_rate_gb_s: float,
          slo: SLO, mode: str = "auto", max_gpus: int | None = None, bad_pairs=(),
          runners_up: int = 3, solver: str = "highs", pair_detail=None) -> Solution:
    """The cheapest deployment (then most headroom) and the runners-up. `pair_detail`
    (optional): pairs [(i, j)] -> text with their best latencies, for the message of an
    InfeasibleError when every pair is cut."""
    import time
    t0 = time.perf_counter()
    if mode == "disaggregated":
        coupled = []
    elif mode != "auto":
        prefill, decode = [], []
        coupled = [c for c in coupled if c.role == mode]
    prob = pulp.LpProblem("deployment", pulp.LpMinimize)
    x = [prob.add_variable(f"x{i}", cat="Binary") for i in range(len(prefill))]
    y = [prob.add_variable(f"y{i}", cat="Binary") for i in range(len(decode))]
    z = [prob.add_variable(f"z{i}", cat="Binary") for i in range(len(coupled))]
    if not (x and y) and not z:
        raise InfeasibleError("no candidate deployment meets the SLO")  # caller explains
    h = prob.add_variable("h", 0, None)
    cost = prob.add_variable("cost", 0, None)     # levels 2 and 3 hold it through its bound
    pairs = list(zip(prefill, x)) + list(zip(decode, y)) + list(zip(coupled, z))
    prob += cost - pulp.lpSum(o.usd_per_hour * v for o, v in pairs) == 0, "cost"
    ratio_sum = pulp.lpSum(sum(slo_ratios(o, slo)) * v for o, v in pairs)
    for k, (o, v) in enumerate(pairs):
        prob += h - max(slo_ratios(o, slo)) * v >= 0, f"head_{k}"
    prob += pulp.lpSum(x) - pulp.lpSum(y) == 0, "both_roles"
    prob += pulp.lpSum(x) + pulp.lpSum(z) == 1, "one_deployment"
    if x:
        prob += pulp.lpSum((o.link_gb_s - kv_rate_gb_s) * v for o, v in zip(prefill, x)) >= 0, "kv_send"
        prob += pulp.lpSum((o.link_gb_s - kv_rate_gb_s) * v for o, v in zip(decode, y)) >= 0, "kv_receive"
    for k, (i, j) in enumerate(bad_pairs):
        prob += x[i] + y[j] <= 1, f"pair_{k}"
    if max_gpus is not None:
        prob += pulp.lpSum(o.gpus * v for o, v in pairs) <= max_gpus, "gpu_budget"
    solves = 0

    def level(objective) -> tuple | None:
        """Solve with `objective`; the deployment chosen, as (i_x, i_y, i_z) read off the
        rounded binaries, or None when the solver found none (or a selection that is not
        one deployment)."""
        nonlocal solves
        prob.setObjective(objective)
        solves += 1
        with _quiet_stdout():
            status = prob.solve(_solver(solver))
        if pulp.LpStatus[status] != "Optimal":
            return None
        pick = lambda vs: next((i for i, v in enumerate(vs) if (v.value() or 0) > 0.5), None)
        i_x, i_y, i_z = pick(x), pick(y), pick(z)
        pair = i_x is not None and i_y is not None and i_z is None
        single = i_z is not None and i_x is None and i_y is None
        if not (pair or single):
            return None
        return i_x, i_y, i_z

    def choice(sel) -> Choice:
        i_x, i_y, i_z = sel
        p = prefill[i_x] if i_x is not None else None
        d = decode[i_y] if i_y is not None else None
        c = coupled[i_z] if i_z is not None else None
        return Choice(sum(o.usd_per_hour for o in (p, d, c) if o is not None), p, d, c)

    def solve_lexicographic():
        """Levels 1-3. Each level's bound is set from the exact cost / ratios of the
        selection it chose, not from the solver's objective value: that value may sit
        below the selection's own by the integrality tolerance (a binary at 0.999999
        times a ratio), and a bound taken from it can exclude the very selection found,
        making the next level infeasible. A level that finds nothing keeps the one above."""
        sel = level(cost)
        if sel is None:
            return None
        c_star = choice(sel).usd_per_hour
        cost.upBound = c_star + EQUAL_COST_REL * max(abs(c_star), 1.0)
        sel = level(h) or sel
        h_star = choice(sel).headroom_key(slo)[0]
        h.upBound = h_star * (1 + 1e-9) + 1e-9
        sel = level(ratio_sum) or sel
        cost.upBound = h.upBound = None
        return choice(sel), sel

    found = []
    cuts = 0
    while len(found) < 1 + runners_up:
        got = solve_lexicographic()
        if got is None:
            break
        chosen, (i_x, i_y, i_z) = got
        found.append(chosen)
        cuts += 1
        if i_z is not None:
            prob += z[i_z] <= 0, f"nogood_{cuts}"
        else:
            prob += x[i_x] + y[i_y] <= 1, f"nogood_{cuts}"
    if not found:
        raise InfeasibleError(unsolvable_message(prefill, decode, coupled, kv_rate_gb_s, bad_pairs, max_gpus, slo,
                                                 pair_detail))
    best_per_mode = _best_per_mode(prefill, decode, coupled, kv_rate_gb_s, bad_pairs, max_gpus, slo)
    return Solution(found[0], found[1:], best_per_mode, solver, len(x) + len(y) + len(z),
                    prob.numConstraints() - cuts, time.perf_counter() - t0, solves)


def _best_per_mode(prefill, decode, coupled, kv_rate, bad_pairs, max_gpus, slo: SLO) -> dict[str, Choice]:
    """Best choice of each mode on its own (the baselines), in the optimizer's order (cost,
    then headroom), by enumeration of the same candidates and constraints (small: used for
    reporting, not for the decision)."""
    out: dict[str, Choice] = {}
    bad = set(bad_pairs)
    for i, p in enumerate(prefill):
        if p.link_gb_s < kv_rate:
            continue
        for j, d in enumerate(decode):
            if d.link_gb_s < kv_rate or (i, j) in bad:
                continue
            if max_gpus is not None and p.gpus + d.gpus > max_gpus:
                continue
            c = Choice(p.usd_per_hour + d.usd_per_hour, p, d)
            if better(c, out.get("disaggregated"), slo):
                out["disaggregated"] = c
    for o in coupled:
        if max_gpus is not None and o.gpus > max_gpus:
            continue
        c = Choice(o.usd_per_hour, coupled=o)
        if better(c, out.get(o.role), slo):
            out[o.role] = c
    return out


def _label(o: Option) -> str:
    return f"{o.instances}x {o.gpu} TP{o.tp}"


def unsolvable_message(prefill, decode, coupled, kv_rate_gb_s: float, bad_pairs, max_gpus, slo: SLO,
                       pair_detail=None) -> str:
    """Why the integer program has no solution although pools meeting the SLO on their
    own exist, in numbers, and what would help: the KV link, the pairs' TPOT (transfer
    included) or JCT, or the GPU budget."""
    q = f"p{slo.percentile}"
    parts = []
    send = [i for i, o in enumerate(prefill) if o.link_gb_s >= kv_rate_gb_s]
    recv = [j for j, o in enumerate(decode) if o.link_gb_s >= kv_rate_gb_s]
    if prefill and decode:
        if not send or not recv:
            side, pool = ("prefill", prefill) if not send else ("decode", decode)
            o = max(pool, key=lambda o: o.link_gb_s)
            parts.append(f"the trace's peak KV rate is {kv_rate_gb_s:.2f} GB/s but the fastest {side} pool candidate "
                         f"({_label(o)}) has {o.link_gb_s:.2f} GB/s of links: a faster KV link (--kv-link-gb-s) or a "
                         f"larger TP would help")
        else:
            bad = set(map(tuple, bad_pairs))
            linked = [(i, j) for i in send for j in recv]
            cut = [ij for ij in linked if ij in bad]
            if len(cut) == len(linked):
                what = f"the {q} TPOT target ({slo.tpot_s * 1e3:g} ms, KV transfer included)" + (
                    f" or the {q} JCT target ({slo.jct_s:g} s)" if slo.jct_s is not None else "")
                detail = pair_detail(cut) if pair_detail is not None else ""
                parts.append(f"all {len(cut)} (prefill, decode) pool pairs miss {what}" + (f" ({detail})" if detail else "")
                             + ": relax that target, or a faster KV link (--kv-link-gb-s) would help")
    elif not coupled:
        parts.append("no pool meets the SLO on its own")
    if max_gpus is not None:
        bad = set(map(tuple, bad_pairs))
        sizes = [(prefill[i].gpus + decode[j].gpus, f"prefill {_label(prefill[i])} + decode {_label(decode[j])}")
                 for i in send for j in recv if (i, j) not in bad]
        sizes += [(o.gpus, f"{o.role} {_label(o)}") for o in coupled]
        if sizes:
            n, what = min(sizes)
            parts.append(f"the smallest candidate deployment whose pools meet the SLO takes {n} GPUs ({what}) against "
                         f"--max-gpus {max_gpus}: raise --max-gpus to >= {n} or relax the SLO")
    if not parts:
        parts.append(f"{len(prefill)} prefill, {len(decode)} decode and {len(coupled)} coupled pool candidates admit "
                     f"no combination: relax the SLO or allow more GPU types or TP degrees")
    return "no deployment meets the SLO: " + "; ".join(parts)


def infeasible_message(slo: SLO, rejections: list[Rejection], have_prefill: bool, have_decode: bool,
                       have_coupled: bool) -> str:
    """Why no plan meets the SLO, in numbers, and what would make it feasible."""
    q = f"p{slo.percentile}"
    parts = []
    if not have_prefill:
        alone = [r for r in rejections if r.role == "prefill" and not np.isnan(r.best_s)]
        if alone:
            r = min(alone, key=lambda r: r.best_s)
            parts.append(f"the {q} prompt alone takes {r.best_s:.3f} s to prefill at best ({r.gpu}, TP={r.tp}, "
                         f"chunk {r.chunk_tokens}) against a TTFT target of {slo.ttft_s:g} s: relax --slo-ttft to "
                         f">= {r.best_s * 1.1:.2f} s, allow a larger TP (--tp) or a faster GPU")
        else:
            parts.append("no prefill pool meets the TTFT target at any instance count searched")
    if not have_decode:
        dec = [r for r in rejections if r.role == "decode"]
        slow = [r for r in dec if not np.isnan(r.best_s)]
        if slow:
            r = min(slow, key=lambda r: r.best_s)
            parts.append(f"one request alone decodes at {r.best_s * 1e3:.1f} ms/token at best ({r.gpu}, TP={r.tp}) "
                         f"against a TPOT target of {slo.tpot_s * 1e3:g} ms: relax --slo-tpot to >= "
                         f"{r.best_s * 1.2 * 1e3:.0f} ms or allow a larger TP")
        elif dec:
            parts.append("; ".join(sorted({f"decode {r.gpu} TP={r.tp}: {r.reason}" for r in dec})[:3]))
    if not parts and not have_coupled:
        parts.append("no pool combination meets every constraint")
    return "no deployment meets the SLO: " + "; ".join(parts)
