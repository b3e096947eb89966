"""The verdict: does disaggregation pay for this trace, by how much, and - where the two
modes cost the same - which is faster and why.

`compare` returns the numbers (`Plan.comparison`) with the sentence under "verdict":
- cheapest disaggregated and cheapest coupled (vLLM- or Sarathi-style) $/hour;
- `equal_budget`: the best plan of each mode spending the same money (the larger of the two
  least costs; `planner.search.budget`), with their latency percentiles at the SLO percentile and
  which is better: faster on both targets, or else more SLO headroom (the smaller
  max(TTFT / target, TPOT / target), the optimizer's own tie-break).
"""
from __future__ import annotations

from planner.search.candidates import SLO
from planner.search.optimizer import better, same_cost
from planner.plan import MODE_NAMES

COUPLED_MODES = ("coupled", "chunked_coupled")


def _pool(role: dict) -> str:
    layout = f"TP{role['tp']}" + "".join(f" x {k.upper()}{role[k]}" for k in ("dp", "ep") if role.get(k, 1) > 1)
    return f"{role['instances']}x {role['gpu']} {layout}"


def _disaggregated(dep: dict, joint: str) -> str:
    return f"prefill {_pool(dep['prefill'])} chunk {dep['chunk_tokens']}{joint}decode {_pool(dep['decode'])}"


def describe(dep: dict) -> str:
    """One-line pools of a deployment dict (`Plan.to_dict()["deployment"]` or a summary's)."""
    if dep["mode"] == "disaggregated":
        return _disaggregated(dep, " | ")
    what = "vLLM-style" if dep["mode"] == "coupled" else f"Sarathi-style budget {dep['chunk_tokens']}"
    return f"coupled {_pool(dep['coupled'])} ({what})"


def short(dep: dict) -> str:
    """Pools without the mode name (the verdict names the mode itself)."""
    if dep["mode"] == "disaggregated":
        return _disaggregated(dep, " + ")
    return _pool(dep["coupled"]) + (f", budget {dep['chunk_tokens']}" if dep["mode"] == "chunked_coupled" else "")


def _at(summary: dict, q: str) -> dict:
    p = summary["predictions"]
    return {"ttft_s": p["ttft_s"][q], "tpot_s": p["tpot_s"][q], "jct_s": p["jct_s"][q]}


def _entry(summary: dict, slo: SLO) -> dict:
    q = f"p{slo.percentile}"
    lat = _at(summary, q)
    ratios = [v / t for v, t in ((lat["ttft_s"], slo.ttft_s), (lat["tpot_s"], slo.tpot_s)) if v is not None]
    return {"mode": summary["deployment"]["mode"], "label": short(summary["deployment"]),
            "usd_per_hour": summary["usd_per_hour"], "gpus": summary["gpus"], "percentile": q, **lat,
            "slo_headroom_ratio": max(ratios) if ratios else None,
            "deployment": summary["deployment"]}


def head_to_head(a: dict, b: dict) -> tuple[str, str]:
    """(winner 'a' or 'b', why) between two `_entry` dicts of the same cost."""
    ta, tb, pa, pb = a["ttft_s"], b["ttft_s"], a["tpot_s"], b["tpot_s"]
    if None in (ta, tb, pa, pb):
        return ("a" if tb is None or pb is None else "b"), "the other cannot keep up"
    if ta <= tb and pa <= pb:
        return "a", "faster on both"
    if tb <= ta and pb <= pa:
        return "b", "faster on both"
    ra, rb = a["slo_headroom_ratio"], b["slo_headroom_ratio"]
    win = "a" if ra <= rb else "b"
    lo, hi = (ra, rb) if win == "a" else (rb, ra)
    split = "lower TTFT but higher TPOT" if (ta < tb) == (win == "a") else "lower TPOT but higher TTFT"
    return win, (f"{split}; more SLO headroom: its tighter target is at {lo:.0%} of the limit against {hi:.0%}")


def _numbers(a: dict, b: dict) -> str:
    q = a["percentile"]
    return (f"{q} TTFT {a['ttft_s']:.3f} s vs {b['ttft_s']:.3f} s and {q} TPOT {a['tpot_s'] * 1e3:.1f} ms vs "
            f"{b['tpot_s'] * 1e3:.1f} ms" if None not in (a["ttft_s"], b["ttft_s"], a["tpot_s"], b["tpot_s"])
            else "one of them cannot keep up")


def _sentence(a: dict, b: dict) -> tuple[str, str]:
    """'X (pools) has p90 TTFT a vs b ... against Y (pools): why' and the winner's mode."""
    win, why = head_to_head(a, b)
    w, l = (a, b) if win == "a" else (b, a)
    text = (f"{MODE_NAMES[w['mode']]} ({w['label']}) has {_numbers(w, l)} against {MODE_NAMES[l['mode']]} ({l['label']}): "
            f"{why}")
    return text, w["mode"]


def compare(sol, best: dict, baselines: list[dict], same, summary, slo: SLO) -> dict:
    """`same`: `budget.equal_budget(...)` (budget, disaggregated Choice, coupled Choice) or None;
    `summary(choice)` gives a plan summary dict (deployment, usd_per_hour, gpus, predictions)."""
    chosen = sol.best
    per_mode = sol.best_per_mode
    dis = per_mode.get("disaggregated")
    cpl = None
    for m in COUPLED_MODES:
        if m in per_mode and better(per_mode[m], cpl, slo):
            cpl = per_mode[m]
    out = {"cheapest_usd_per_hour": {"disaggregated": dis.usd_per_hour if dis else None,
                                     "coupled": cpl.usd_per_hour if cpl else None},
           "tie": False, "equal_budget": None}
    if same is not None:
        budget, d, c = same
        e_d, e_c = _entry(summary(d), slo), _entry(summary(c), slo)
        text, winner = _sentence(e_d, e_c)
        out["equal_budget"] = {"usd_per_hour": budget, "disaggregated": e_d, "coupled": e_c,
                               "better": "disaggregated" if winner == "disaggregated" else "coupled",
                               "sentence": text}
    cost = f"${chosen.usd_per_hour:.2f}/h"
    eq = out["equal_budget"]
    if chosen.mode == "disaggregated":
        out["decision"] = "disaggregate"
        if cpl is None:
            out["verdict"] = f"disaggregate: {cost}; no coupled deployment meets the SLO within the candidates"
        elif same_cost(cpl.usd_per_hour, chosen.usd_per_hour):
            out["tie"] = True
            out["verdict"] = (f"disaggregate, on latency not cost: same cost ({cost}) as the best coupled deployment; "
                              + _tie_sentence(best, summary(cpl), slo))
        else:
            saving = 1.0 - chosen.usd_per_hour / cpl.usd_per_hour
            out["verdict"] = (f"disaggregate: {cost}, {saving:.0%} less than the cheapest coupled deployment meeting "
                              f"the same SLO ({MODE_NAMES[cpl.mode]}, ${cpl.usd_per_hour:.2f}/h)" + _equal(eq))
        return out
    out["decision"] = "do_not_disaggregate"
    if dis is None:
        out["verdict"] = (f"do not disaggregate: {MODE_NAMES[chosen.mode]} at {cost} meets the SLO; no disaggregated "
                          f"plan does within the candidates")
    elif same_cost(dis.usd_per_hour, chosen.usd_per_hour):
        out["tie"] = True
        out["verdict"] = (f"do not disaggregate: same cost ({cost}) as the best disaggregated plan; "
                          + _tie_sentence(best, summary(dis), slo))
    else:
        more = dis.usd_per_hour / chosen.usd_per_hour - 1.0
        out["verdict"] = (f"do not disaggregate: {MODE_NAMES[chosen.mode]} at {cost}; the cheapest disaggregated plan "
                          f"costs {more:.0%} more (${dis.usd_per_hour:.2f}/h)" + _equal(eq))
    return out


def _tie_sentence(chosen: dict, other: dict, slo: SLO) -> str:
    text, _ = _sentence(_entry(chosen, slo), _entry(other, slo))
    return text


def _equal(eq: dict | None) -> str:
    if eq is None:
        return "; no plan of the other mode costs exactly the same, so no equal-budget comparison"
    return f"; at an equal budget of ${eq['usd_per_hour']:.2f}/h, {eq['sentence']}"
