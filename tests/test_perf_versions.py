"""Kernel tables by engine release (planner.perf.tables.ordered_versions): a deployment of
a given release reads the tables measured with the nearest release, as the kernels an engine
runs change between releases (vLLM 0.19's block-FP8 experts are Triton's fused MoE, 0.24's
TensorRT-LLM-gen's)."""
import pytest

from planner import catalog
from planner.engines.config import engine_config
from planner.perf import tables
from planner.perf.step import StepModel


def test_the_nearest_release_at_or_before_comes_first_else_the_nearest_newer():
    have = ["0.24.0", "0.19.0", "0.22.0"]
    assert tables.ordered_versions(have, "0.19.0") == ["0.19.0", "0.22.0", "0.24.0"]
    assert tables.ordered_versions(have, "0.23.1") == ["0.22.0", "0.19.0", "0.24.0"]
    assert tables.ordered_versions(have, "0.12.0") == ["0.19.0", "0.22.0", "0.24.0"]   # older than every table
    assert tables.ordered_versions(have, "v0.30.0")[0] == "0.24.0"
    # not a release (a nightly, a custom image) or none: the newest first
    for want in ("", "nightly-5b8c30d", "gpt-oss-dev", None):
        assert tables.ordered_versions(have, want) == ["0.24.0", "0.22.0", "0.19.0"]
    # release candidates and post releases in order
    trt = ["1.3.0rc20", "1.2.0rc5", "1.3.0rc10"]
    assert tables.ordered_versions(trt, "1.2.0rc6.post2")[0] == "1.2.0rc5"
    assert tables.ordered_versions(trt, "1.3.0rc11")[0] == "1.3.0rc10"
    assert tables.ordered_versions(["0.5.6", "0.5.6.post2"], "0.5.6.post2")[0] == "0.5.6.post2"


def test_an_engine_config_carries_its_release_to_the_perf_model():
    eng = engine_config("vllm", "0.19.0")
    assert eng.version == "0.19.0" and eng.perf_kwargs()["engine_version"] == "0.19.0"
    assert engine_config("sglang").version == ""


@pytest.mark.skipif(tables.data_root() is None, reason="kernel tables need the silicon extra: pip install -e '.[silicon]'")
def test_a_release_reads_its_own_kernels():
    minimax = catalog.model("MiniMaxAI/MiniMax-M2.5")
    b200 = catalog.gpu("b200")

    def step(version):
        return StepModel(b200, minimax, tp=4, gemm_dtype="fp8_block", engine="vllm", moe_dtype="fp8_block",
                         source="kernels", engine_version=version)
    old, new = step("0.19.0"), step("")
    assert "MoE: 0.19.0 fp8_block" in old.describe() and "MoE: 0.24.0 fp8_block" in new.describe()
    # Triton's fused MoE (0.19) against TensorRT-LLM-gen's (0.24) on an 8k-token prompt
    prefill = [m.step([8192], [0]).ops["experts"] for m in (old, new)]
    assert prefill[0] > 1.4 * prefill[1]
