"""The engine profiles' defaults are the cited ones (planner/engines/defaults.csv)."""
import csv
from importlib import resources

import pytest

from planner.engines.config import DEFAULTS


def cited() -> dict:
    text = resources.files("planner").joinpath("engines", "defaults.csv").read_text(encoding="utf-8")
    out = {}
    for r in csv.DictReader(text.splitlines()):
        assert r["source"].strip(), f"uncited default: {r}"
        out.setdefault((r["engine"], r["field"]), []).append(r["value"])
    return out


def h200(value: str) -> int:
    """The H200 value of a per-GPU entry (`h100=8192 h200=8192 b200=16384`), or the value."""
    parts = dict(p.split("=") for p in value.split() if "=" in p)
    return int(parts.get("h200", value))


@pytest.mark.parametrize("engine,field,attr", [
    ("vllm", "token_budget", "token_budget"), ("vllm", "max_seqs", "max_seqs"),
    ("vllm", "kv_block_tokens", "block_tokens"), ("sglang", "chunked_prefill_size", "token_budget"),
    ("sglang", "kv_block_tokens", "block_tokens"), ("trtllm", "token_budget", "token_budget"),
    ("trtllm", "max_seqs", "max_seqs"), ("trtllm", "kv_block_tokens", "block_tokens"),
])
def test_numeric_defaults_are_the_cited_ones(engine, field, attr):
    values = {h200(v) for v in cited()[(engine, field)]}
    assert getattr(DEFAULTS[engine], attr) in values


def test_scheduling_and_memory_defaults_are_the_cited_ones():
    c = cited()
    assert "on" in c[("vllm", "chunked_prefill")] and DEFAULTS["vllm"].chunked_prefill
    assert "off" in c[("trtllm", "chunked_prefill")] and not DEFAULTS["trtllm"].chunked_prefill
    assert "on" in c[("sglang", "overlap")] and DEFAULTS["sglang"].overlap
    assert "on" in c[("trtllm", "overlap")] and DEFAULTS["trtllm"].overlap
    assert "0.9" in c[("vllm", "memory_fraction")] and DEFAULTS["vllm"].memory_fraction == 0.9
    assert "0.9" in c[("trtllm", "memory_fraction")] and DEFAULTS["trtllm"].memory_fraction == 0.9
    # vLLM's async scheduling is on from 0.14 (the default profile), off before it
    assert {"off", "on"} <= set(c[("vllm", "async_scheduling")]) and DEFAULTS["vllm"].overlap
    from planner.engines.config import engine_config
    assert not engine_config("vllm", "0.12.0").overlap and engine_config("vllm", "0.19.0").overlap
    assert engine_config("vllm", "nightly-5b8c30d").overlap          # unparsable: the newest defaults


def test_tensorrt_llm_graph_sizes_without_and_with_padding():
    from dataclasses import replace
    trt = DEFAULTS["trtllm"]
    assert trt.graph_sizes == (*range(1, 33), 64, 128) and not trt.graph_padding   # the library default
    padded = replace(trt, graph_max_batch=512, graph_padding=True)
    assert padded.graph_sizes == (1, 2, 4, *range(8, 129, 8), 256, 512)
    assert replace(trt, graph_max_batch=300, graph_padding=True).graph_sizes[-2:] == (256, 300)
    # the max batch itself is always captured (a 3-request decode engine replays a graph at 3)
    assert replace(trt, graph_max_batch=3, graph_padding=True).graph_sizes == (1, 2, 3)
    assert replace(trt, graph_max_batch=40).graph_sizes[-3:] == (31, 32, 40)
    assert padded.perf_kwargs()["graph_padding"] and not trt.perf_kwargs()["graph_padding"]


def per_gpu(value: str) -> dict:
    """{gpu: value} of a per-GPU entry ("h100=8192 h200=8192 b200=16384")."""
    pairs = (p.split("=") for p in value.split() if "=" in p)
    return {k: int(v) for k, v in pairs if v.isdigit()}


@pytest.mark.parametrize("gpu", ["h100", "h200", "b200"])
def test_defaults_that_depend_on_the_gpu_are_the_cited_ones(gpu):
    from planner import catalog
    from planner.engines.config import engine_config
    spec, c = catalog.gpu(gpu), cited()
    assert engine_config("vllm", "0.30.0", gpu=spec).token_budget == per_gpu(c[("vllm", "token_budget")][-1])[gpu]
    assert engine_config("vllm", "0.20.0", gpu=spec).token_budget == per_gpu(c[("vllm", "token_budget")][0])[gpu]
    sg = engine_config("sglang", "0.5.9", gpu=spec)
    assert sg.token_budget == per_gpu(c[("sglang", "chunked_prefill_size")][-1])[gpu]
    graphs = c[("sglang", "cuda_graph_max_bs")][-1]
    assert sg.graph_max_batch == per_gpu(graphs.split("(")[0])[gpu]
    if gpu in ("h100", "h200"):           # "(tp>=4: h100=512 h200=512)"
        assert engine_config("sglang", "0.5.9", gpu=spec, tp=4).graph_max_batch == 512
    assert engine_config("vllm", None, gpu=spec).token_budget == 8192    # no version: not the 0.28 tier
    small = engine_config("vllm", "0.30.0", gpu=catalog.gpu("a100"))
    assert (small.token_budget, small.max_seqs) == (2048, 256)
    assert engine_config("vllm", gpu=spec, token_budget=4096).token_budget == 4096     # an override wins
