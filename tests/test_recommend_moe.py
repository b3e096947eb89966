"""recommend for modern models: the checkpoint's formats by default, MoE layouts (TP x EP)
chosen per instance size and named in the plan, --dtype / --kv-dtype."""
import json

from click.testing import CliRunner

from planner import catalog
from planner.cli import main
from planner.perf.layouts import layouts
from planner.plan import read_plan

TRACE = "traces/mixed.csv"


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_formats_follow_the_checkpoint_unless_a_dtype_is_given():
    ds, oss, llama = (catalog.model(n) for n in ("deepseek-ai/DeepSeek-V3", "openai/gpt-oss-120b", "llama-3.1-8b"))
    assert ds.formats() == ("fp8_block", "fp8_block")
    assert oss.formats() == ("fp16", "mxfp4")            # bf16 attention, MXFP4 experts as stored
    assert oss.formats("bf16") == ("bf16", "mxfp4")
    assert oss.formats("fp8") == ("fp8", "fp8")
    assert llama.formats() == ("fp16", "") and llama.formats("fp8") == ("fp8", "")


def test_a_moe_plan_names_its_layout_and_deploys_the_checkpoints_formats(tmp_path):
    out = tmp_path / "plan.json"
    r = run("recommend", "--trace", TRACE, "--gpu", "h200", "--model", "deepseek-ai/DeepSeek-V3", "--no-verify",
            "--mode", "coupled", "-o", str(out))
    assert r.exit_code == 0, r.output
    dep = read_plan(out).deployment
    assert dep.dtype == "fp8_block" and dep.moe_dtype == "fp8_block"
    role = dep.coupled
    assert role.tp * role.dp == 8                         # 671 GB of FP8 need a whole 8 x H200 server
    from planner.perf.layers import Layout
    assert Layout(role.tp, role.dp, role.ep) in layouts(catalog.model("deepseek-v3"), 8, attention_dp=False)
    if role.ep > 1:
        assert f"EP{role.ep}" in r.output
    # in 16 bit the same model fits no H200 server: said, exit 1 (infeasible), no traceback
    r = run("recommend", "--trace", TRACE, "--gpu", "h200", "--model", "deepseek-ai/DeepSeek-V3", "--no-verify",
            "--dtype", "bf16")
    assert r.exit_code != 0 and "fits none" in r.output and "Traceback" not in r.output


def test_kv_dtype_and_a_bad_dtype():
    r = run("recommend", "--trace", TRACE, "--gpu", "h100", "--model", "llama-3.1-8b", "--no-verify",
            "--kv-dtype", "fp8", "--json")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.output)
    assert plan["deployment"]["engine"]["kv_cache_dtype"] == "fp8"
    r = run("recommend", "--trace", TRACE, "--gpu", "h100", "--dtype", "fp7", "--no-verify")
    assert r.exit_code == 2 and "not a weight format" in r.output
