"""Per-window need when TPOT carries the KV transfer (planner.analytic.window_need): the decode count
sets the decode step, the prefill count TTFT and the links' queue; a hand-computable stand-in
for the queueing model."""
import numpy as np
import pytest

from planner.errors import InfeasibleError
from planner.plan import Deployment, Role
from planner.search.schedule import window_demand
from planner.analytic.window_need import INSTANT_LINK_GB_S, disaggregated_need
from traces import Trace

SLO = {"ttft_s": ("p90", 1.5), "tpot_s": ("p90", 0.0207)}


def link_predict(queue_s: float, alone_s: float = 0.0):
    """n requests, P prefill, D decode: TTFT = n / P; TPOT = 0.01 n / D (decode step) plus
    the transfer spread over the steps: `queue_s` / P (the links' queue, one link per
    prefill instance) + `alone_s` (one prompt alone on a link); no transfer on an instant link."""
    def predict(dep, trace):
        n, P, D = len(trace), dep.prefill.instances, dep.decode.instances
        xfer = 0.0 if dep.kv_link_gb_s >= INSTANT_LINK_GB_S else queue_s / P + alone_s
        return {"ttft_s": {"p90": n / P}, "tpot_s": {"p90": 0.01 * n / D + xfer},
                "utilisation": {"prefill": {"peak_window": 0.5}, "kv_link": {"peak_window": 0.5}},
                "kv_peak_fraction": 0.5}
    return predict


def four_requests():
    return Trace(np.array([0.0, 1.0, 2.0, 3.0]), np.full(4, 100), np.full(4, 11), name="four")


def dep():
    return Deployment("disaggregated", "opt-13b", 512, prefill=Role("a100", 1), decode=Role("a100", 1))


def test_more_prefill_links_spare_decode_instances():
    # TTFT: 4 / P <= 1.5 needs P = 3 (need 2.75). TPOT = 0.04 / D + 0.06 / P <= 0.0207:
    # P=3 needs D=58 (61 instances), P=4 D=8 (12), P=5 D=5 (10), P=6 D=4 (10, a tie: fewer
    # prefill wins), P=7..9 cost 11-12, and P=10 cannot beat 10 (10 + 1 decode > 10)
    x = disaggregated_need(link_predict(0.06), dep(), four_requests(), SLO, 512)
    assert x.notes == ()
    # decode with P=5: D=4 gives 0.022 (misses), D=5 0.020: need 4 + 0.0013 / 0.002
    assert x.need["decode"] == pytest.approx(4.65)
    # prefill with D=5: P=4 gives 0.023, P=5 0.020: need 4 + 0.0023 / 0.003
    assert x.need["prefill"] == pytest.approx(4 + 0.0023 / 0.003)


def test_prices_move_the_trade_to_decode():
    # prefill $3/h, decode $1/h: P=3 $67, P=4 $20 (D=8), P=5 $20 (a tie), P=6 $22, P=7 > $20
    x = disaggregated_need(link_predict(0.06), dep(), four_requests(), SLO, 512,
                           {"prefill": 3.0, "decode": 1.0})
    # D=7: 0.04/7 + 0.015 = 0.020714 misses by 0.0000143 of a 0.000714 step to D=8
    assert x.need["decode"] == pytest.approx(7.02)
    # prefill with D=8: P=3 gives 0.025, P=4 0.020: need 3 + 0.0043 / 0.005
    assert x.need["prefill"] == pytest.approx(3.86)


def test_a_transfer_no_count_shortens_sizes_decode_for_its_own_part():
    # 0.025 s of every TPOT is one prompt alone on a link: no count meets 0.0207 s. Decode is
    # sized for its step alone, 0.04 / D <= 0.0207: D=1 gives 0.04, D=2 0.02; need 1 + 0.0193 / 0.02
    d = window_demand(four_requests(), dep(), 10.0, SLO, predict_fn=link_predict(0.06, alone_s=0.025))
    assert d.need["decode"] == pytest.approx((1 + 0.0193 / 0.02,))
    assert d.need["prefill"] == pytest.approx((2.75,))       # TTFT alone: more links cannot help
    assert len(d.notes) == 1 and "window 0" in d.notes[0] and "TPOT p90" in d.notes[0]
    assert "KV transfer" in d.notes[0]


def test_decode_part_missing_too_is_reported_not_sized():
    # the decode step alone (0.04 / D) cannot go below 0.03 s here: D is left at its start
    def predict(dep, trace):
        p = link_predict(0.0, alone_s=0.025)(dep, trace)
        p["tpot_s"]["p90"] += 0.03
        return p
    x = disaggregated_need(predict, dep(), four_requests(), SLO, 64)
    assert x.need["decode"] == 1.0 and "no instance count" in x.notes[0]


def test_prefill_that_never_keeps_up_still_fails():
    def predict(dep, trace):
        p = link_predict(0.0)(dep, trace)
        p["utilisation"]["prefill"]["peak_window"] = 2.0
        return p
    with pytest.raises(InfeasibleError, match="prefill"):
        disaggregated_need(predict, dep(), four_requests(), SLO, 16)
