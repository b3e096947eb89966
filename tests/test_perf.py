import numpy as np
import pytest

from planner import catalog
from planner.perf.model import PerfModel, kv_transfer_time_s
from profile_eff import profile_eff


def pm(gpu="a100", model="opt-13b", tp=1, **eff):
    return PerfModel(catalog.gpu(gpu), catalog.model(model), tp=tp, eff=profile_eff(**eff))


def test_opt13b_v100_chunk_saturation_near_paper_512():
    # TetriInfer measured ChunkSize = 512 for OPT-13B on V100.
    assert 384 <= pm("v100").saturation_chunk_tokens() <= 640


def test_empty_iterations_take_no_time():
    p = pm()
    assert p.prefill_time_s(0) == 0.0 and p.decode_time_s(0, 0) == 0.0


def test_decode_single_request_is_weight_bandwidth_bound():
    p = pm(decode_overhead_s=0.0)
    expected = (p.weight_bytes + p.kv_bytes_per_token * 101 + p._profile._act_bytes(1)) / (2039e9 * 0.8)
    assert p.decode_time_s(1, 100) == pytest.approx(float(expected), rel=1e-9)


def test_large_prefill_is_compute_bound_hand_computed():
    p = pm(prefill_overhead_s=0.0, knee_tokens=0.0)
    m = catalog.model("opt-13b")
    c = 4096
    flops_lin = 2 * m.layers * m.layer_params * c + 2 * m.vocab * m.hidden
    flops_attn = 4 * m.layers * m.q_dim * c * (c + 1) / 2
    assert p.prefill_time_s(c) == pytest.approx((flops_lin + flops_attn) / (312e12 * 0.7), rel=1e-9)


def test_times_grow_with_work_and_vectorise():
    p = pm()
    t = p.prefill_time_s(np.array([128, 512, 2048]))
    assert np.all(np.diff(t) > 0)
    assert p.prefill_time_s(512, 4096) > p.prefill_time_s(512, 0)
    assert p.decode_time_s(32, 64_000) > p.decode_time_s(32, 1000) > p.decode_time_s(1, 1000)


def test_tensor_parallel_speeds_up_and_adds_allreduce():
    one, two = pm(tp=1), pm(tp=2)
    assert two.prefill_time_s(2048) < one.prefill_time_s(2048)
    assert two.prefill_time_s(2048) > one.prefill_time_s(2048) / 2  # all-reduce is not free
    assert two.kv_capacity_tokens > 2 * one.kv_capacity_tokens  # weights are paid once


def test_kv_capacity_and_fit():
    assert not pm("l4").fits          # OPT-13B (25.7 GB) does not fit a 24 GB L4
    assert pm("l4", tp=2).fits
    p = pm("a100")
    usable = 80 * 2**30 * (0.90 - 0.04) - p.weight_bytes  # datasheet GB of HBM are GiB
    assert p.kv_capacity_tokens == int(usable // 819_200)


def test_kv_transfer():
    assert kv_transfer_time_s(25e9, 25.0, latency_s=0.0) == pytest.approx(1.0)


def test_piecewise_offsets_apply_to_pure_iterations_only():
    from dataclasses import replace
    base = PerfModel(catalog.gpu("a100"), catalog.model("opt-13b"), eff=profile_eff())
    eff = profile_eff(decode_batch_offsets_s=[[4, 3e-3], [1, 0.0]], prefill_chunk_offsets_s=[[64, 2e-3], [256, 0.0]])
    pm = replace(base, eff=eff)
    assert eff.decode_batch_offsets_s == ((1.0, 0.0), (4.0, 3e-3))       # sorted tuples (hashable, from JSON lists)
    assert pm.decode_time_s(4, 4000) == pytest.approx(base.decode_time_s(4, 4000) + 3e-3)
    assert pm.decode_time_s(2, 4000) == pytest.approx(base.decode_time_s(2, 4000) + 1e-3)     # linear in batch
    assert pm.decode_time_s(64, 4000) == pytest.approx(base.decode_time_s(64, 4000) + 3e-3)   # flat beyond
    assert pm.prefill_time_s(128, 0) == pytest.approx(base.prefill_time_s(128, 0) + 1e-3)     # halfway in log
    assert pm.mixed_time_s(128, 0, 4, 4000) == pytest.approx(base.mixed_time_s(128, 0, 4, 4000))
    # the context's slope is the roofline's: an offset moves the line, it does not tilt it
    slope = lambda m: m.decode_time_s(4, 9000) - m.decode_time_s(4, 8000)   # noqa: E731
    assert slope(pm) == pytest.approx(slope(base))
    # never below a tenth of the roofline time
    neg = replace(base, eff=profile_eff(decode_batch_offsets_s=((1, -1.0),)))
    assert neg.decode_time_s(1, 100) == pytest.approx(0.1 * base.decode_time_s(1, 100))
    with pytest.raises(ValueError, match="finite seconds"):
        profile_eff(decode_batch_offsets_s=((0, 1e-3),))


def test_piecewise_corrections_survive_a_plan_json_round_trip():
    import json
    from planner.plan import Deployment, Plan, Role, plan_from_dict
    eff = profile_eff(calibrated=True, decode_batch_offsets_s=((1, 1e-3), (2, -4e-4)), prefill_chunk_offsets_s=((64, 2e-3),))
    dep = Deployment(mode="disaggregated", model="opt-13b", chunk_tokens=512, prefill=Role("a100", 1),
                     decode=Role("a100", 1), efficiency=eff)
    again = plan_from_dict(json.loads(Plan(dep).to_json())).deployment
    assert again.efficiency == eff
    assert again.perf("decode").decode_time_s(2, 500) == dep.perf("decode").decode_time_s(2, 500)
