import json

import pytest
from click.testing import CliRunner

from planner import catalog
from planner.cli import main
from planner.errors import InputError


def test_opt13b_kv_bytes_per_token_fp16():
    assert catalog.model("opt-13b").kv_bytes_per_token("fp16") == 819_200


@pytest.mark.parametrize("name,params_b", [
    ("opt-125m", 0.125), ("opt-1.3b", 1.316), ("opt-13b", 12.853), ("opt-66b", 65.72),
    ("llama-2-7b", 6.738), ("llama-2-70b", 68.977), ("llama-3.1-8b", 8.030), ("qwen3-32b", 32.762),
])
def test_parameter_counts_match_published(name, params_b):
    assert catalog.model(name).params / 1e9 == pytest.approx(params_b, abs=0.002)


def test_gqa_shrinks_kv():
    # Llama-2-70B: 80 layers x 8 KV heads x 128 x 2 (K,V) x 2 bytes
    assert catalog.model("llama-2-70b").kv_bytes_per_token() == 80 * 8 * 128 * 2 * 2
    assert catalog.model("llama-3.1-8b").kv_bytes_per_token("fp8") == 32 * 8 * 128 * 2


def test_every_requested_gpu_is_listed():
    for name in ["v100-16gb", "v100-32gb", "t4", "a10g", "l4", "l40s", "a100-40gb", "a100-80gb",
                 "h100-sxm", "h100-pcie", "h200", "b200", "mi300x"]:
        g = catalog.gpu(name)
        assert g.fp16_tflops > 0 and g.memory_gb > 0 and g.memory_gb_s > 0
    assert catalog.gpu("A100").name == "a100-80gb"
    assert catalog.gpu("h100").name == "h100-sxm"


def test_every_price_row_has_source_and_date():
    for p in catalog.prices():
        assert p.source.startswith("https://") and len(p.as_of) == 7 and p.usd_per_gpu_hour > 0
        catalog.gpu(p.gpu)  # every priced GPU exists


def test_price_override_and_cheapest_offer():
    assert catalog.price_usd_per_gpu_hour("a100", overrides={"a100-80gb": 1.0}) == (1.0, "user override")
    value, source = catalog.price_usd_per_gpu_hour("a100")
    offers = [p.usd_per_gpu_hour for p in catalog.prices() if p.gpu == "a100-80gb" and p.kind == "on_demand"]
    assert value == min(offers) and "cheapest listed" in source


def test_price_file(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("gpu,usd_per_gpu_hour\nh100,2.5\n")
    assert catalog.parse_price_overrides(("l4=0.4",), f) == {"h100-sxm": 2.5, "l4": 0.4}
    with pytest.raises(InputError, match="not a number"):
        catalog.parse_price_overrides(("l4=cheap",))


def test_hf_config_path(tmp_path):
    cfg = {"model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
           "num_hidden_layers": 32, "vocab_size": 128256, "intermediate_size": 14336,
           "max_position_embeddings": 131072, "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    m = catalog.model(str(tmp_path))
    assert m.params == catalog.model("llama-3.1-8b").params
    assert m.kv_bytes_per_token() == catalog.model("llama-3.1-8b").kv_bytes_per_token()


def test_unknown_gpu_exits_2():
    r = CliRunner().invoke(main, ["catalog", "prices", "--gpu", "v99"])
    assert r.exit_code == 2 and "unknown GPU" in r.output


def test_catalog_json():
    r = CliRunner().invoke(main, ["catalog", "models", "--json"])
    rows = json.loads(r.output)
    assert {row["name"]: row["kv_bytes_per_token"] for row in rows}["opt-13b"] == 819_200


def test_plan_carries_a_config_json_model(tmp_path):
    from planner.plan import Deployment, Plan, Role, read_plan
    cfg = {"model_type": "opt", "hidden_size": 256, "num_attention_heads": 4, "num_hidden_layers": 4,
           "vocab_size": 50272, "ffn_dim": 1024, "max_position_embeddings": 2048,
           "_name_or_path": "opt-125m-l4-h256-test"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    spec = catalog.model(str(tmp_path / "config.json"))
    dep = Deployment(mode="disaggregated", model=spec.name, chunk_tokens=512,
                     prefill=Role("a100", 1), decode=Role("a100", 1))
    Plan(dep).write(tmp_path / "plan.json")
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert saved["inputs"]["model_spec"]["layers"] == 4
    catalog.models().pop(spec.name)  # a fresh process knows only the catalog
    plan = read_plan(tmp_path / "plan.json")
    assert plan.deployment.perf("decode").model.hidden == 256


def test_config_json_cannot_redefine_a_catalog_model(tmp_path):
    cfg = {"model_type": "opt", "hidden_size": 256, "num_attention_heads": 4, "num_hidden_layers": 4,
           "vocab_size": 50272, "_name_or_path": "opt-13b"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="differs from the catalog"):
        catalog.model(str(tmp_path))
