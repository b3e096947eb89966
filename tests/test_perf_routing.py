"""The busiest expert-parallel GPU under random routing (planner.perf.routing)."""
import numpy as np
import pytest

from planner.perf import tables
from planner.perf.moe_tables import MoeGeometry
from planner.perf.routing import busiest_gpu

needs_tables = pytest.mark.skipif(tables.data_root() is None, reason="kernel tables (the `silicon` extra) not installed")

T = np.array([1, 4, 16, 64, 256, 2048, 16384])


def test_one_gpu_holds_every_pair_and_the_expected_experts_touched():
    pairs, distinct = busiest_gpu(T, 256, 8, 1)
    assert np.allclose(pairs, T * 8)
    assert np.allclose(distinct, 256 * (1 - (1 - 8 / 256) ** T))


def test_the_busiest_of_eight_gpus_holds_well_over_the_mean_at_decode_batches_and_about_it_at_prompts():
    pairs, distinct = busiest_gpu(T, 256, 8, 8)
    mean = T * 8 / 8
    ratio = pairs / mean
    assert ratio[0] > 2.0 and 1.5 < ratio[1] < 2.0          # 8 pairs of one token: ~2.5 on the busiest
    assert np.all(np.diff(ratio) < 0) and ratio[-1] < 1.05  # the spread shrinks as 1 / sqrt(pairs)
    assert np.all(distinct <= 32) and distinct[-1] == 32    # a GPU's 32 experts, all touched at prompts
    assert 1.5 < distinct[1] / 4 < 1.9                      # 4 tokens: 4 experts a GPU balanced, ~6.5 busiest


def test_group_limited_routing_concentrates_a_token_on_fewer_gpus():
    plain, _ = busiest_gpu(T[:4], 256, 8, 8)
    grouped, _ = busiest_gpu(T[:4], 256, 8, 8, groups=8, groups_per_token=4)     # DeepSeek-V3's gate
    assert np.all(grouped > plain)
    again, _ = busiest_gpu(T[:4], 256, 8, 8, groups=8, groups_per_token=4)
    assert np.array_equal(grouped, again)                    # seeded: a plan is reproducible


def test_an_expert_parallel_layer_waits_for_its_busiest_gpu():
    geo = MoeGeometry(7168, 2048, 8, 256, 1, 8, "fp8_block", groups=8, groups_per_token=4)
    assert np.allclose(geo.busiest(T)[0], busiest_gpu(T, 256, 8, 8, 8, 4)[0])
    assert np.allclose(MoeGeometry(7168, 2048, 8, 256, 8, 1, "fp8_block").busiest(T)[0], T * 8)


@needs_tables
def test_an_ep_table_is_read_at_the_busiest_gpus_experts_and_pairs():
    from planner import catalog
    from planner.perf.moe_tables import moe_table_or_swap
    from planner.perf.sources import op_source
    from planner.perf.step import StepModel
    dsr1 = catalog.model("deepseek-ai/DeepSeek-R1")
    step = StepModel(catalog.gpu("h200"), dsr1, tp=8, gemm_dtype="fp8_block", engine="trtllm", moe_dtype="fp8_block")
    geo = MoeGeometry(7168, 2048, 8, 256, 1, 8, "fp8_block", groups=8, groups_per_token=4)
    (table, _), _ = moe_table_or_swap("h200_sxm", "trtllm", geo)
    src = op_source(catalog.gpu("h200"), step.geo, "trtllm", "auto")
    got = src.moe_s(np.array([4.0, 16384.0]), geo)
    _, distinct = busiest_gpu(np.array([4.0]), 256, 8, 8, 8, 4)
    # 4 tokens: the busiest GPU touches ~7.8 of its experts, as the balanced table's 7.8 tokens
    assert got[0] == pytest.approx(table.seconds(distinct)[0]) and got[0] > 1.3 * table.seconds([4.0])[0]
    assert got[1] == pytest.approx(table.seconds([16384.0])[0], rel=0.05)      # prompts: about balanced


def test_configs_name_their_group_limited_routing():
    from planner import catalog
    dsr1 = catalog.model("deepseek-ai/DeepSeek-R1")               # n_group 8, topk_group 4
    assert (dsr1.expert_groups, dsr1.expert_groups_per_token) == (8, 4)
    kimi = catalog.model("moonshotai/Kimi-K2.5")                 # n_group 1: any expert
    assert (kimi.expert_groups, kimi.expert_groups_per_token) == (1, 1)
    assert catalog.model("MiniMaxAI/MiniMax-M2.5").expert_groups == 1
