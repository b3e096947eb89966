"""The equal-budget search (planner.search.budget.best_disaggregated_at) finds exactly the
split that scanning every split in order with `optimizer.better` finds, while predicting
fewer prefill pools and checking fewer pairs."""
import numpy as np
import pytest

from planner.search import budget
from planner.search.candidates import SLO, Family, Option
from planner.search.optimizer import better

SLO_ = SLO(ttft_s=1.0, tpot_s=0.1)


def scan(families, usd, slo, kv_rate_gb_s=0.0, max_gpus=None, pair_ok=None):
    """Every split in order, as the function did before it searched by bounds."""
    pre = [f for f in families if f.role == "prefill"]
    dec = [f for f in families if f.role == "decode"]
    best = None
    for fp in pre:
        for n_p in range(fp.n_min, fp.n_min + budget.MAX_COUNTS):
            spent = n_p * fp.usd_per_instance_hour
            if spent >= usd and not budget.same_cost(spent, usd):
                break
            p = None
            for fd in dec:
                n_d = budget._count_for(usd - spent, fd.usd_per_instance_hour)
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
                c = budget.Choice(p.usd_per_hour + d.usd_per_hour, p, d)
                if better(c, best, slo):
                    best = c
    return best


def random_family(rng, role, unit, tp, calls):
    """A family with random (but fixed per count) latencies, gaps where a count misses the
    SLO, and half of them coarse so that ties in the headroom key happen."""
    n_min = int(rng.integers(1, 4))
    table = {}

    def evaluate(n):
        calls[role] += 1
        if n < n_min:
            return None
        if n not in table:
            if rng.random() < 0.15:
                table[n] = None
            else:
                lat = float(rng.choice([0.01, 0.2, 0.5, 1.0]) if rng.random() < 0.5 else rng.uniform(0.0, 1.0))
                lat *= 1.0 if role == "prefill" else 0.1
                table[n] = Option(role, "a100-80gb", tp, n, 512, n * unit, ttft_s=lat if role == "prefill" else float("nan"),
                                  tpot_s=lat if role == "decode" else float("nan"), link_gb_s=float(rng.integers(5, 15)) * n)
        return table[n]
    return Family(role, "a100-80gb", tp, 512, unit, n_min, evaluate)


@pytest.mark.parametrize("seed", range(100))
def test_search_by_bounds_finds_the_split_the_ordered_scan_finds(seed):
    rng = np.random.default_rng(seed)
    calls = {"prefill": 0, "decode": 0}
    fams = [random_family(rng, "prefill", 1.0 * tp, tp, calls) for tp in (1, 2)] + \
           [random_family(rng, "decode", 1.0 * tp, tp, calls) for tp in (1, 2, 4)]
    usd = float(rng.integers(4, 20))
    kv = float(rng.choice([0.0, 20.0]))
    bad = {(int(a), int(b)) for a, b in rng.integers(1, 20, (8, 2))}
    pair_ok = None if seed % 3 == 0 else (lambda p, d: (p.instances, d.instances) not in bad)
    max_gpus = None if seed % 4 else int(rng.integers(6, 30))
    want = scan(fams, usd, SLO_, kv, max_gpus, pair_ok)
    got = budget.best_disaggregated_at(fams, usd, SLO_, kv, max_gpus, pair_ok)
    if want is None:
        assert got is None
    else:
        assert got is not None
        assert (got.prefill, got.decode) == (want.prefill, want.decode)   # the very same options


def test_bounds_skip_prefill_pools_and_pairs_that_cannot_win():
    # decode ratios differ by count; once a split with key 0.2 is found, splits whose decode
    # ratio alone exceeds it are never predicted on the prefill side nor paired
    predicted, paired = [], []

    def pre_eval(n):
        predicted.append(n)
        return Option("prefill", "a100-80gb", 1, n, 512, float(n), ttft_s=0.1, link_gb_s=10.0 * n)

    def dec_eval(n):
        return Option("decode", "a100-80gb", 1, n, 0, float(n), tpot_s=0.1 / n, link_gb_s=10.0 * n)

    fams = [Family("prefill", "a100-80gb", 1, 512, 1.0, 1, pre_eval), Family("decode", "a100-80gb", 1, 0, 1.0, 1, dec_eval)]
    pair = lambda p, d: paired.append((p.instances, d.instances)) or True
    c = budget.best_disaggregated_at(fams, 10.0, SLO_, pair_ok=pair)
    assert (c.prefill.instances, c.decode.instances) == (1, 9)      # the most decode: TPOT ratio 0.11
    assert predicted == [1] and paired == [(1, 9)]
    assert (scan(fams, 10.0, SLO_, pair_ok=lambda p, d: True).decode.instances) == 9


def test_prices_that_only_nearly_meet_fall_back_to_the_ordered_scan():
    # $/h per instance 1.0 and 0.9999995: splits cost the budget only to within a few 1e-7, so the
    # order of the scan decides between near-equal costs; the search must then scan
    calls = {"prefill": 0, "decode": 0}
    rng = np.random.default_rng(7)
    fams = [random_family(rng, "prefill", 1.0, 1, calls), random_family(rng, "decode", 0.9999995, 1, calls)]
    splits = budget._splits(fams, 20.0, None)
    costs = [n_p * fp.usd_per_instance_hour + n_d * fd.usd_per_instance_hour for fp, n_p, fd, n_d in splits]
    assert max(costs) - min(costs) > budget.UNIFORM_COST_REL * 20.0
    want, got = scan(fams, 20.0, SLO_), budget.best_disaggregated_at(fams, 20.0, SLO_)
    assert (want is None) == (got is None)
    if want is not None:
        assert (got.prefill, got.decode) == (want.prefill, want.decode)
