"""Model specifications (planner.catalog.models / hf_config / model_catalog): parameter counts,
active parameters and KV bytes per token against published figures; per-layer kinds; weight
formats from quantization configs; the bundled catalog and how names resolve.

Tolerance for published figures: 2% (REL). Vendors count "active" parameters differently, so
each row names its convention: "all" (every non-expert weight, both embedding tables:
DeepSeek, Mistral, Qwen), "lm_head" (OpenAI's gpt-oss card: the unembedding but not the
input-embedding lookup), "none" (MiniMax, Zhipu: neither table).
"""
import csv
import json
import shutil
from dataclasses import asdict, replace
from importlib import resources
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.catalog import ModelSpec, model, model_catalog, model_from_hf_config, models
from planner.catalog.hf_config import spec_from_config
from planner.cli import main
from planner.errors import InputError

REL = 0.02
CONFIGS = Path(str(resources.files("planner").joinpath("data", "model_configs")))
DEV = Path(__file__).resolve().parents[2] / "shared" / "silicon" / "dev.csv"


def active_as_published(m: ModelSpec, convention: str) -> float:
    if convention == "all":
        return m.active_params
    if convention == "lm_head":
        return m.active_params - m.vocab * m.hidden
    assert convention == "none"
    return m.active_params - m.embedding_params


@pytest.mark.parametrize("name,total_b,active_b,convention", [
    ("meta-llama/Llama-3.1-70B", 70.6, 70.6, "all"),                  # Meta model card
    ("meta-llama/Llama-3.1-8B", 8.03, 8.03, "all"),
    ("meta-llama/Llama-3.1-405B", 405.9, 405.9, "all"),
    ("deepseek-ai/DeepSeek-V3", 671, 37, "all"),                      # DeepSeek-V3 report (MTP excluded)
    ("mistralai/Mixtral-8x7B-v0.1", 46.7, 12.9, "all"),               # Mistral: 46.7B total, 12.9B per token
    ("mistralai/Mixtral-8x22B-v0.1", 141, 39, "all"),
    ("openai/gpt-oss-120b", 116.83, 5.13, "lm_head"),                 # gpt-oss model card table
    ("openai/gpt-oss-20b", 20.91, 3.61, "lm_head"),
    ("Qwen/Qwen3-235B-A22B", 235, 22, "all"),                         # Qwen3 report
    ("Qwen/Qwen3-30B-A3B", 30.5, 3.3, "all"),
    ("meta-llama/Llama-4-Maverick-17B-128E-Instruct", 400, 17, "all"),   # text model, shared expert
    ("meta-llama/Llama-4-Scout-17B-16E-Instruct", 109, 17, "all"),
    ("MiniMaxAI/MiniMax-Text-01", 456, 45.9, "none"),                 # lightning-attention hybrid
    ("zai-org/GLM-5", 744, 40, "none"),                               # MLA + DSA indexer
    ("zai-org/GLM-4.5", 355, 32, "none"),
    ("google/gemma-2-9b-it", 9.24, 9.24, "all"),
    ("google/gemma-2-27b-it", 27.2, 27.2, "all"),
    ("mistralai/Mistral-7B-v0.1", 7.24, 7.24, "all"),
    ("microsoft/Phi-3-mini-4k-instruct", 3.82, 3.82, "all"),
])
def test_parameters_match_published_figures(name, total_b, active_b, convention):
    m = model(name)
    assert m.params / 1e9 == pytest.approx(total_b, rel=REL)
    assert active_as_published(m, convention) / 1e9 == pytest.approx(active_b, rel=REL)


@pytest.mark.parametrize("name,total_b", [
    ("Qwen/Qwen3.5-397B-A17B", 397),        # text model; the ~0.4B vision tower is not counted
    ("Qwen/Qwen3-Next-80B-A3B-Instruct", 80),
    ("MiniMaxAI/MiniMax-M2.5", 230),
    ("Qwen/Qwen3-Coder-480B-A35B-Instruct", 480),
])
def test_hybrid_and_other_totals_match_published_figures(name, total_b):
    assert model(name).params / 1e9 == pytest.approx(total_b, rel=REL)


def test_mla_kv_bytes_per_token_are_the_latent_and_the_rope_key():
    ds = model("deepseek-ai/DeepSeek-V3")
    assert (ds.kv_lora_rank, ds.qk_rope_head_dim, ds.layers) == (512, 64, 61)
    assert ds.kv_bytes_per_token("fp8") == (512 + 64) * 61 * 1
    assert ds.kv_bytes_per_token("bf16") == (512 + 64) * 61 * 2
    # DeepSeek sparse attention (GLM-5) caches its indexer key too
    glm = model("zai-org/GLM-5")
    assert glm.kv_bytes_per_token("fp8") == (512 + 64 + 128) * 78
    # MHA-equivalent caching of the same model would be 2 x 128 heads x 192 per layer: 85x more
    assert 2 * 128 * 192 * 61 / ((512 + 64) * 61) > 85


def test_gqa_kv_bytes_and_sliding_windows():
    assert model("meta-llama/Llama-3.1-70B").kv_bytes_per_token("bf16") == 80 * 8 * 128 * 2 * 2
    oss = model("openai/gpt-oss-120b")
    assert oss.attention_kinds[:4] == ("sliding", "full", "sliding", "full") and oss.sliding_window == 128
    per_layer = 2 * 8 * 64 * 2
    assert oss.kv_bytes_per_token("bf16") == 36 * per_layer
    assert oss.kv_bytes(10_000, "bf16") == 18 * 10_000 * per_layer + 18 * 128 * per_layer
    mistral = model("mistralai/Mistral-7B-v0.1")          # every layer slides: the cache stops growing
    assert mistral.count_layers("sliding") == 32
    assert mistral.kv_bytes(100_000) == mistral.kv_bytes(4096) == 32 * 4096 * 2 * 8 * 128 * 2
    gemma = model("google/gemma-3-27b-it")                 # 5 local : 1 global
    assert gemma.attention_kinds[:6] == ("sliding",) * 5 + ("full",) and gemma.count_layers("full") == 10


def test_linear_attention_layers_keep_a_state_not_a_kv_cache():
    q = model("Qwen/Qwen3.5-397B-A17B")
    assert q.linear_attention == "gated_deltanet" and q.attn_output_gate
    assert (q.count_layers("linear"), q.count_layers("full")) == (45, 15)
    assert q.attention_kinds[:4] == ("linear", "linear", "linear", "full")
    assert q.kv_bytes_per_token("bf16") == 15 * 2 * 2 * 256 * 2
    state = 64 * 128 * 128 * 4 + 3 * (2 * 16 * 128 + 64 * 128) * 2
    assert q.linear_state_bytes() == 45 * state
    assert q.kv_bytes(1000, "bf16") == 1000 * q.kv_bytes_per_token("bf16") + 45 * state
    mm = model("MiniMaxAI/MiniMax-Text-01")
    assert mm.linear_attention == "lightning" and (mm.count_layers("linear"), mm.count_layers("full")) == (70, 10)
    assert mm.linear_state_bytes() == 70 * 64 * 128 * 128 * 4


def test_moe_layer_layout():
    ds = model("deepseek-ai/DeepSeek-V3")
    assert (ds.experts, ds.experts_per_token, ds.expert_ffn, ds.shared_experts, ds.shared_expert_ffn) == \
        (256, 8, 2048, 1, 2048)
    assert ds.dense_leading_layers == 3 and ds.count_layers("moe") == 58 and ds.ffn == 18432
    assert ds.mtp_layers == 1
    assert model("moonshotai/Kimi-K2-Instruct").dense_leading_layers == 1
    q = model("Qwen/Qwen3-235B-A22B")
    assert q.mlp_types == () and q.count_layers("moe") == 94 and q.shared_experts == 0
    assert model("Qwen/Qwen3.5-397B-A17B").shared_expert_ffn == 1024
    # active = total - the routed experts a token skips
    skipped = ds.count_layers("moe") * (ds.experts - ds.experts_per_token) * ds.expert_params
    assert ds.active_params == ds.params - skipped
    parts = ds.param_breakdown()
    assert sum(parts.values()) == ds.params and parts["experts"] == 58 * 256 * 3 * 7168 * 2048


@pytest.mark.parametrize("name,weights,attn,shared,kv", [
    ("deepseek-ai/DeepSeek-V3", "fp8_block", "", "", ""),
    ("openai/gpt-oss-120b", "mxfp4", "bf16", "", ""),                 # attention left out of MXFP4
    ("moonshotai/Kimi-K2.5", "int4", "bf16", "bf16", ""),             # compressed-tensors, experts only
    ("nvidia/DeepSeek-V3.1-NVFP4", "nvfp4", "", "", "fp8"),           # from hf_quant_config.json
    ("nvidia/Llama-3.1-8B-Instruct-FP8", "fp8", "", "", "fp8"),
    ("nvidia/Qwen3.5-397B-A17B-NVFP4", "nvfp4", "bf16", "bf16", "fp8"),
    ("nvidia/GLM-5-NVFP4", "nvfp4", "bf16", "", "fp8"),                # every attention projection named
    ("Qwen/Qwen3-235B-A22B-FP8", "fp8_block", "", "", ""),            # routers and norms excluded only
    ("Qwen/Qwen3-235B-A22B", "bf16", "", "", ""),
])
def test_weight_formats_from_quantization_configs(name, weights, attn, shared, kv):
    m = model(name)
    assert (m.weight_format, m.attn_weight_format, m.shared_weight_format, m.kv_cache_format) == \
        (weights, attn, shared, kv)


def test_stored_weight_bytes_follow_the_formats():
    # gpt-oss-120b card: 114.71B MLP parameters in MXFP4, the other 2.12B in BF16
    oss = model("openai/gpt-oss-120b")
    assert oss.weight_bytes(None) / 1e9 == pytest.approx(114.71 * (0.5 + 1 / 32) + (116.83 - 114.71) * 2, rel=REL)
    llama = model("meta-llama/Llama-3.1-70B")
    assert llama.weight_bytes(None) == llama.weight_bytes("bf16") == llama.params * 2
    fp8 = model("nvidia/Llama-3.1-70B-Instruct-FP8")
    emb = fp8.embedding_params + fp8.layers * fp8.norm_params
    assert fp8.weight_bytes(None) == pytest.approx((fp8.params - emb) * 1 + emb * 2)
    # NVFP4 DeepSeek: about 0.56 bytes per weight in the layers, 16-bit embeddings
    assert 0.55 < model("nvidia/DeepSeek-V3.1-NVFP4").weight_bytes(None) / model("deepseek-ai/DeepSeek-V3").params < 0.6


def test_quantization_configs_of_other_methods(tmp_path):
    base = json.loads((CONFIGS / "meta-llama__Llama-3.1-8B.json").read_text())

    def fmt(q):
        return spec_from_config({**base, "quantization_config": q}, "cfg", name="x", source="x")
    assert fmt({"quant_method": "awq", "bits": 4, "group_size": 128}).weight_format == "int4"
    assert fmt({"quant_method": "gptq", "bits": 8}).weight_format == "int8"
    assert fmt({"quant_method": "fp8"}).weight_format == "fp8"
    ct = {"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {
        "num_bits": 8, "type": "float", "strategy": "block"}}}, "kv_cache_scheme": {"num_bits": 8, "type": "float"}}
    assert (fmt(ct).weight_format, fmt(ct).kv_cache_format) == ("fp8_block", "fp8")
    nv = {"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {
        "num_bits": 4, "type": "float", "group_size": 16}}}}
    assert fmt(nv).weight_format == "nvfp4"
    with pytest.raises(InputError, match="quant_method 'hqq' is not modelled"):
        fmt({"quant_method": "hqq"})
    with pytest.raises(InputError, match="3-bit gptq"):
        fmt({"quant_method": "gptq", "bits": 3})


def _old_dense(m: ModelSpec) -> dict:
    """The dense formulas as they were before MoE/MLA, to pin the catalog rows."""
    h, q, kv = m.hidden, m.heads * m.head_dim, m.kv_heads * m.head_dim
    layer = h * q + 2 * h * kv + q * h + (3 if m.mlp == "gated" else 2) * h * m.ffn + 2 * h * (2 if m.bias else 1) \
        + ((q + 2 * kv + h + m.ffn + h) if m.bias else 0)
    emb = m.vocab * h + ((m.max_context + 2) * h if m.positions == "learned" else 0) \
        + (0 if m.tie_embeddings else m.vocab * h) + h * (2 if m.bias else 1)
    params = m.layers * layer + emb
    return {"layer_params": layer, "params": params, "matmul_params": m.layers * layer + m.vocab * h,
            "weight_bytes": params * 2, "kv16": 2 * m.layers * kv * 2, "kv8": 2 * m.layers * kv * 1}


def test_dense_catalog_rows_are_unchanged():
    rows = list(csv.DictReader(resources.files("planner").joinpath("data", "models.csv").read_text().splitlines()))
    assert len(rows) >= 14
    for r in rows:
        m = model(r["name"])
        old = _old_dense(m)
        got = {"layer_params": m.layer_params, "params": m.params, "matmul_params": m.matmul_params,
               "weight_bytes": m.weight_bytes("fp16"), "kv16": m.kv_bytes_per_token("fp16"),
               "kv8": m.kv_bytes_per_token("fp8")}
        assert got == old, r["name"]
        assert m.active_params == m.params and m.kind == "dense"


@pytest.mark.parametrize("name", ["llama-3.1-8b", "llama-3.1-70b", "qwen3-32b"])
def test_bundled_configs_agree_with_the_csv_rows(name):
    row = next(r for r in model_catalog.bundled_sources() if r["name"] == name)
    spec = model_catalog.bundled_spec(row)
    assert replace(spec, source="", aliases=()) == replace(model(name), source="", aliases=())
    assert row["hf_id"].lower() in model(name).aliases


def test_autoconfig_and_plain_json_read_every_bundled_config_alike():
    pytest.importorskip("transformers")
    for row in model_catalog.bundled_sources():
        plain = model_catalog.bundled_spec(row)
        quant = CONFIGS / row["file"].replace(".json", ".hf_quant_config.json")
        auto = model_from_hf_config(CONFIGS / row["file"], use_transformers=True, name=row["name"],
                                    source=plain.source.split(" (")[0], quant_path=quant if quant.is_file() else None)
        assert auto == plain, row["file"]


def test_sources_list_every_bundled_file_once_with_a_license():
    rows = model_catalog.bundled_sources()
    files = {r["file"] for r in rows}
    assert len(files) == len(rows) and len({r["name"] for r in rows}) == len(rows)
    on_disk = {p.name for p in CONFIGS.glob("*.json") if not p.name.endswith(".hf_quant_config.json")}
    assert files == on_disk
    for r in rows:
        assert "/" in r["hf_id"] and r["license"] and r["model_license"] and r["source"]
        assert r["source"].startswith(("copied from aiconfigurator-core", "written here from the model card"))
        if r["source"].startswith("written"):
            assert r["note"], r["file"]
    ids = [a for s in models().values() for a in s.aliases]
    assert len(ids) == len(set(ids)), "an alias names two models"


@pytest.mark.skipif(not DEV.is_file(), reason="../shared/silicon/dev.csv not found")
def test_every_dev_csv_model_resolves_by_its_hugging_face_id():
    paths = {r["model_path"] for r in csv.DictReader(DEV.open())}
    assert len(paths) >= 14
    for p in paths:
        m = model(p)
        assert p.lower() in m.aliases or p.lower() == m.name
    assert model("nvidia/DeepSeek-R1-NVFP4").weight_format == "nvfp4"
    assert model("zhipuai/GLM-5").name == "glm-5"


def test_names_resolve_in_any_case_and_unknown_names_suggest_close_ones():
    assert model("meta-llama/Llama-3.1-70B") is model("META-LLAMA/llama-3.1-70b") is model("llama-3.1-70b")
    assert model("meta-llama/Meta-Llama-3.1-70B").name == "llama-3.1-70b"
    with pytest.raises(InputError) as e:
        model("deepseek-ai/DeepSeek-R2")
    text = str(e.value)
    assert "\n" not in text and "did you mean deepseek-ai/DeepSeek-R1" in text


def test_unknown_model_on_the_command_line_is_exit_2_one_line():
    r = CliRunner().invoke(main, ["predict", "--model", "openai/gpt-oss-12b", "--gpu", "h200", "--engine", "vllm",
                                  "--isl", "100", "--osl", "10", "--concurrency", "1"])
    assert r.exit_code == 2 and "did you mean" in r.output and "openai/gpt-oss-120b" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_a_config_folder_whose_name_has_capitals(tmp_path):
    folder = tmp_path / "My-Tiny-MoE"
    folder.mkdir()
    cfg = json.loads((CONFIGS / "Qwen__Qwen3-30B-A3B.json").read_text())
    cfg.update(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
               moe_intermediate_size=128, num_experts=8, num_experts_per_tok=2, vocab_size=1000)
    (folder / "config.json").write_text(json.dumps(cfg))
    m = model(str(folder))
    assert m.name == "My-Tiny-MoE" and m.is_moe
    assert model("My-Tiny-MoE") is m
    # a plan naming it resolves, carries the MoE shape and reads back
    from planner.plan import Deployment, Plan, Role, read_plan
    dep = Deployment(mode="disaggregated", model=m.name, chunk_tokens=512,
                     prefill=Role("a100", 1), decode=Role("a100", 1))
    Plan(dep).write(tmp_path / "plan.json")
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert saved["inputs"]["model_spec"]["experts"] == 8
    models().pop(m.name)
    assert read_plan(tmp_path / "plan.json").deployment.model == m.name and model("My-Tiny-MoE") == m


def test_missing_fields_are_named_in_one_line(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "custom_lm", "hidden_size": 64}))
    with pytest.raises(InputError) as e:
        model_from_hf_config(tmp_path)
    assert "'num_attention_heads', 'num_hidden_layers', 'vocab_size'" in str(e.value) and "\n" not in str(e.value)
    base = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 100}
    with pytest.raises(InputError, match="kv_lora_rank .MLA. needs 'qk_rope_head_dim', 'qk_nope_head_dim'"):
        spec_from_config({**base, "kv_lora_rank": 32, "v_head_dim": 16}, "c.json", name="x", source="x")
    with pytest.raises(InputError, match="no 'num_experts_per_tok'"):
        spec_from_config({**base, "num_local_experts": 8}, "c.json", name="x", source="x")
    with pytest.raises(InputError, match="'linear_num_key_heads'"):
        spec_from_config({**base, "layer_types": ["linear_attention", "full_attention"]}, "c.json", name="x",
                         source="x")


@pytest.mark.parametrize("extra,needle", [
    ({"model_type": "nemotron_h"}, "model_type 'nemotron_h'"),
    ({"hybrid_override_pattern": "M-M*"}, "Mamba/SSM hybrid layers"),
    ({"linear_attn_config": {"kda_layers": [1]}}, "Kimi delta-attention"),
    ({"block_configs": [{}]}, "NAS"),
])
def test_architectures_it_cannot_describe_are_refused_by_name(extra, needle):
    base = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 100}
    with pytest.raises(InputError, match=needle):
        spec_from_config({**base, **extra}, "c.json", name="x", source="x")


def test_a_multimodal_config_reads_its_text_model(tmp_path):
    shutil.copy(CONFIGS / "moonshotai__Kimi-K2.5.json", tmp_path / "config.json")
    m = model_from_hf_config(tmp_path, use_transformers=False)
    k2 = model("moonshotai/Kimi-K2-Instruct")
    assert m.params == k2.params and m.is_mla and m.weight_format == "int4"


def test_catalog_models_lists_total_and_active_parameters():
    r = CliRunner().invoke(main, ["catalog", "models", "--json"])
    rows = {row["name"]: row for row in json.loads(r.output)}
    assert rows["deepseek-v3"]["params_b"] == pytest.approx(671, rel=REL)
    assert rows["deepseek-v3"]["active_b"] == pytest.approx(37, rel=REL)
    assert rows["deepseek-v3"]["hf_id"] == "deepseek-ai/DeepSeek-V3" and rows["deepseek-v3"]["format"] == "fp8_block"
    assert rows["opt-13b"]["kv_bytes_per_token"] == 819_200
    for row in model_catalog.bundled_sources():
        assert row["name"] in rows
    text = CliRunner().invoke(main, ["catalog", "models"]).output
    assert "active_b" in text and "gpt-oss-120b" in text
    assert CliRunner().invoke(main, ["catalog", "models", "--dtype", "fp5"]).exit_code == 2


def test_spec_fields_survive_the_plan_schema():
    from planner.plan_schema import check_fields
    for name in ("deepseek-ai/DeepSeek-V3", "Qwen/Qwen3.5-397B-A17B", "openai/gpt-oss-120b"):
        m = model(name)
        data = json.loads(json.dumps(asdict(m)))
        assert ModelSpec(**{**check_fields(ModelSpec, data, "x"), "aliases": tuple(data["aliases"])}) == m
