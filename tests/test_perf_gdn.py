"""Gated delta-net layers (Qwen3.5's linear attention) from the measured kernel tables
(planner.perf.gdn_tables): the decode state update and a prompt's chunked recurrence are
read from the GPU's table for the heads one GPU holds, and a step of Qwen3.5 charges them
in every linear layer. Needs the `silicon` extra; skipped without it."""
import numpy as np
import pandas as pd
import pytest

from planner import catalog
from planner.perf import gdn_tables, tables
from planner.perf.step import StepModel

pytestmark = pytest.mark.skipif(tables.data_root() is None,
                                reason="kernel tables need the silicon extra: pip install -e '.[silicon]'")

B200 = catalog.gpu("b200")
QWEN = catalog.model("Qwen/Qwen3.5-397B-A17B")


def _rows():
    path, _ = tables.table_path("b200_sxm", "linear_attention", "sglang", "gdn_perf.parquet")
    return pd.read_parquet(path)


def test_the_table_sums_a_layers_kernels_at_the_measured_points_and_scales_between_head_counts():
    table, version = gdn_tables.gdn_table("b200_sxm", "sglang", 16, 4, 128)     # Qwen3.5-397B at TP 4
    d = _rows()
    d = d[(d.num_v_heads == 16) & (d.num_k_heads == 4) & (d.head_v_dim == 128)]
    gen = d[(d.phase == "generation") & (d.batch_size == 64)].groupby("kernel_source").latency.min().sum()
    ctx = d[(d.phase == "context") & (d.batch_size == 1) & (d.seq_len == 1024)].groupby("kernel_source").latency.min().sum()
    assert table.generation_s(64) == pytest.approx(gen * 1e-3)
    assert table.context_s(1024) == pytest.approx(ctx * 1e-3)
    assert version == "0.5.14"
    # between measured batches it interpolates; beyond the last, in proportion
    assert table.generation_s(32) < table.generation_s(48) < table.generation_s(64)
    last = table._gen[0][-1]
    assert table.generation_s(2 * last) == pytest.approx(2 * table.generation_s(last))
    # 20 value heads (not measured): the nearest measured count (16 or 24), scaled by heads
    twenty, _ = gdn_tables.gdn_table("b200_sxm", "sglang", 20, 5, 128)
    assert twenty.heads[0] in (16, 24)
    assert twenty.generation_s(64) == pytest.approx(
        gdn_tables.gdn_table("b200_sxm", "sglang", twenty.heads[0], twenty.heads[1], 128)[0].generation_s(64)
        * 20 / twenty.heads[0])


def test_an_engine_without_a_table_reads_another_engines_and_says_so():
    assert gdn_tables.gdn_table("a100_sxm", "vllm", 16, 4, 128)[1].startswith("sglang")
    assert gdn_tables.gdn_table("b200_sxm", "sglang", 16, 4, 64) is None      # no 64-wide heads measured


def test_a_qwen35_step_charges_the_measured_kernels_in_every_linear_layer():
    pm = StepModel(B200, QWEN, tp=4, gemm_dtype="fp8_block", engine="sglang", source="kernels")
    assert "GDN: 0.5.14" in pm.describe()
    table, _ = gdn_tables.gdn_table("b200_sxm", "sglang", 16, 4, 128)
    linear = QWEN.count_layers("linear")
    # the same step with the linear layers' state update left out: the difference is theirs
    short = 100
    for b in (4, 64, 256):
        got = pm.decode_attention_s(b, b * short)
        assert got >= linear * table.generation_s(b)
        assert got - linear * float(table.generation_s(b)) < 0.6 * got
    # a 1k-token prompt's attention includes the layers' chunked recurrence over it
    assert pm.chunk_attention_s(1024, 0) >= linear * float(table.context_s(1024))
    assert np.isfinite(pm.chunk_attention_s(1024, 4096))
