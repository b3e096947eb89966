"""Ties, equal-budget comparison and the verdict sentence (planner.search.budget, planner.search.verdict)."""
from types import SimpleNamespace

import pytest

from planner.search.budget import best_coupled_at, best_disaggregated_at, equal_budget
from planner.search.candidates import SLO, Family, Option
from planner.search.optimizer import Choice
from planner.search.verdict import compare, head_to_head

SLO_ = SLO(ttft_s=1.0, tpot_s=0.1)


def fam(role, unit, n_min, ttft=None, tpot=None, tp=1, chunk=512):
    def evaluate(n):
        if n < n_min:
            return None
        return Option(role, "a100-80gb", tp, n, chunk, n * unit, ttft_s=ttft(n) if ttft else float("nan"),
                      tpot_s=tpot(n) if tpot else float("nan"), link_gb_s=10.0 * n)
    return Family(role, "a100-80gb", tp, chunk, unit, n_min, evaluate)


PRE = fam("prefill", 1.0, 2, ttft=lambda n: 1.0 / n)
DEC = fam("decode", 2.0, 1, tpot=lambda n: 0.1 / (n + 1), tp=2)


def test_disaggregated_at_budget_enumerates_splits():
    # $6/h: (2 prefill, 2 decode) ratios (0.50, 0.33); (4, 1) ratios (0.25, 0.50); 3 and 5
    # prefill instances leave $3 and $1, not a whole number of $2 decode instances.
    # Both have headroom 0.5; the sum (0.83 vs 0.75) picks (4, 1).
    c = best_disaggregated_at([PRE, DEC], 6.0, SLO_)
    assert (c.prefill.instances, c.decode.instances) == (4, 1)
    assert c.usd_per_hour == pytest.approx(6.0)
    assert best_disaggregated_at([PRE, DEC], 3.0, SLO_) is None            # 1 prefill < n_min
    # the KV link (10 GB/s per instance) rules out pools below 30 GB/s: only (4, 1)... whose
    # decode pool has 10 GB/s: nothing left
    assert best_disaggregated_at([PRE, DEC], 6.0, SLO_, kv_rate_gb_s=30.0) is None
    # a pair constraint (the JCT SLO) is honoured
    c = best_disaggregated_at([PRE, DEC], 6.0, SLO_, pair_ok=lambda p, d: p.instances == 2)
    assert (c.prefill.instances, c.decode.instances) == (2, 2)


def test_coupled_at_budget_needs_a_whole_instance_count():
    cpl = fam("coupled", 2.0, 2, ttft=lambda n: 0.4 / n, tpot=lambda n: 0.2 / n)
    assert best_coupled_at([cpl], 6.0, SLO_).coupled.instances == 3
    assert best_coupled_at([cpl], 5.0, SLO_) is None
    assert best_coupled_at([cpl], 2.0, SLO_) is None                      # 1 < n_min
    assert best_coupled_at([cpl], 6.0, SLO_, max_gpus=2) is None               # 3 GPUs


def test_equal_budget_is_at_the_dearer_mode():
    cpl = fam("chunked_coupled", 2.0, 2, ttft=lambda n: 0.4 / n, tpot=lambda n: 0.2 / n)
    per_mode = {"disaggregated": best_disaggregated_at([PRE, DEC], 4.0, SLO_),
                "chunked_coupled": best_coupled_at([cpl], 4.0, SLO_)}
    assert per_mode["disaggregated"] is not None          # (2, 1) costs 4
    budget, d, c = equal_budget(per_mode, [PRE, DEC, cpl], SLO_)
    assert budget == pytest.approx(4.0) and d.usd_per_hour == c.usd_per_hour == pytest.approx(4.0)
    per_mode["chunked_coupled"] = best_coupled_at([cpl], 8.0, SLO_)
    budget, d, c = equal_budget(per_mode, [PRE, DEC, cpl], SLO_)
    assert budget == pytest.approx(8.0) and d.usd_per_hour == pytest.approx(8.0) and c.coupled.instances == 4


def entry(mode, ttft, tpot, cost=4.0):
    return {"mode": mode, "label": mode, "ttft_s": ttft, "tpot_s": tpot, "percentile": "p90",
            "slo_headroom_ratio": max(ttft / 1.0, tpot / 0.1), "usd_per_hour": cost}


def test_head_to_head_says_which_and_why():
    assert head_to_head(entry("coupled", 0.1, 0.02), entry("disaggregated", 0.3, 0.03)) == ("a", "faster on both")
    win, why = head_to_head(entry("coupled", 0.1, 0.06), entry("disaggregated", 0.3, 0.04))
    assert win == "b"          # 0.4 < 0.6 of the limit
    assert why == "lower TPOT but higher TTFT; more SLO headroom: its tighter target is at 40% of the limit against 60%"


def summary_of(choice: Choice, ttft, tpot):
    dep = ({"mode": "disaggregated", "chunk_tokens": 512,
            "prefill": {"instances": choice.prefill.instances, "gpu": "a100-80gb", "tp": 1},
            "decode": {"instances": choice.decode.instances, "gpu": "a100-80gb", "tp": 2}}
           if choice.coupled is None else
           {"mode": choice.mode, "chunk_tokens": 512, "coupled": {"instances": choice.coupled.instances,
                                                                  "gpu": "a100-80gb", "tp": 1}})
    return {"deployment": dep, "usd_per_hour": choice.usd_per_hour, "gpus": choice.gpus,
            "predictions": {"ttft_s": {"p90": ttft}, "tpot_s": {"p90": tpot}, "jct_s": {"p90": 3.0}}}


def test_verdict_on_a_tie_names_the_faster_and_the_numbers():
    p = Option("prefill", "a100-80gb", 1, 2, 512, 2.0, ttft_s=0.284)
    d = Option("decode", "a100-80gb", 2, 1, 0, 2.0, tpot_s=0.0249)
    c = Option("chunked_coupled", "a100-80gb", 1, 4, 512, 4.0, ttft_s=0.084, tpot_s=0.0154)
    dis, cpl = Choice(4.0, p, d), Choice(4.0, coupled=c)
    lat = {id(dis): (0.284, 0.0249), id(cpl): (0.084, 0.0154)}
    summary = lambda ch: summary_of(ch, *lat[id(ch)])
    sol = SimpleNamespace(best=cpl, best_per_mode={"disaggregated": dis, "chunked_coupled": cpl})
    out = compare(sol, summary(cpl), [summary(dis)], (4.0, dis, cpl), summary, SLO_)
    assert out["tie"] and out["decision"] == "do_not_disaggregate"
    assert out["verdict"] == (
        "do not disaggregate: same cost ($4.00/h) as the best disaggregated plan; Sarathi-style chunked coupled "
        "(4x a100-80gb TP1, budget 512) has p90 TTFT 0.084 s vs 0.284 s and p90 TPOT 15.4 ms vs 24.9 ms against "
        "disaggregated (prefill 2x a100-80gb TP1 chunk 512 + decode 1x a100-80gb TP2): faster on both")
    eq = out["equal_budget"]
    assert eq["better"] == "coupled" and eq["disaggregated"]["ttft_s"] == 0.284 and eq["coupled"]["tpot_s"] == 0.0154


def test_verdict_when_disaggregation_is_dearer_reports_equal_budget():
    p = Option("prefill", "a100-80gb", 1, 2, 512, 2.0, ttft_s=0.3)
    d = Option("decode", "a100-80gb", 2, 1, 0, 2.0, tpot_s=0.03)
    c2 = Option("coupled", "a100-80gb", 1, 2, 512, 2.0, ttft_s=0.5, tpot_s=0.08)
    c4 = Option("coupled", "a100-80gb", 1, 4, 512, 4.0, ttft_s=0.2, tpot_s=0.05)
    dis, cheap, same = Choice(4.0, p, d), Choice(2.0, coupled=c2), Choice(4.0, coupled=c4)
    lat = {id(dis): (0.3, 0.03), id(cheap): (0.5, 0.08), id(same): (0.2, 0.05)}
    summary = lambda ch: summary_of(ch, *lat[id(ch)])
    sol = SimpleNamespace(best=cheap, best_per_mode={"disaggregated": dis, "coupled": cheap})
    out = compare(sol, summary(cheap), [summary(dis)], (4.0, dis, same), summary, SLO_)
    assert not out["tie"]
    assert out["verdict"].startswith("do not disaggregate: vLLM-style coupled at $2.00/h; the cheapest "
                                     "disaggregated plan costs 100% more ($4.00/h); at an equal budget of $4.00/h, ")
    # at $4/h: disaggregated 0.3 s / 30 ms (ratios 0.3, 0.3) vs coupled 0.2 s / 50 ms (0.2, 0.5)
    assert out["verdict"].endswith("lower TPOT but higher TTFT; more SLO headroom: its tighter target is at 30% "
                                   "of the limit against 50%")
    assert out["equal_budget"]["better"] == "disaggregated"
    assert out["cheapest_usd_per_hour"] == {"disaggregated": 4.0, "coupled": 2.0}
