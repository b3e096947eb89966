"""`planner export`: every flag written is one the engine's documented CLI has, values come
from the plan, and the YAML parses."""
import json
import shlex
import subprocess
from dataclasses import replace

import pytest
import yaml
from click.testing import CliRunner

from planner.cli import main
from planner.errors import InputError
from planner.export import render
from planner.plan import Window, read_plan

# Flags as documented, with the documentation they were taken from.
# vLLM engine arguments, docs.vllm.ai/en/v0.8.5/serving/engine_args.html (`vllm serve` usage);
# --kv-transfer-config: vllm.config.KVTransferConfig, docs.vllm.ai/en/v0.12.0/api/vllm/config/kv_transfer/
# and the NixlConnector disaggregated-serving examples (kv_connector NixlConnector, kv_role kv_both).
# --enable-expert-parallel: docs.vllm.ai/en/v0.10.0/serving/engine_args.html (ParallelConfig).
VLLM_SERVE = {"--host", "--port", "--tensor-parallel-size", "--max-num-batched-tokens", "--max-num-seqs",
              "--gpu-memory-utilization", "--dtype", "--kv-transfer-config", "--enable-expert-parallel"}
# vLLM's NIXL example proxy (tests/v1/kv_connector/nixl_integration/toy_proxy_server.py).
VLLM_PROXY = {"--host", "--port", "--prefiller-hosts", "--prefiller-ports", "--decoder-hosts", "--decoder-ports"}
# SGLang server arguments (docs.sglang.io, "Server Arguments" and "PD Disaggregation", SGLang 0.5;
# --ep-size under "Expert parallelism"):
SGLANG_SERVER = {"--model-path", "--host", "--port", "--tp-size", "--chunked-prefill-size", "--max-running-requests",
                 "--mem-fraction-static", "--dtype", "--disaggregation-mode", "--disaggregation-transfer-backend",
                 "--ep-size"}
# sglang-router (docs.sglang.io "PD Disaggregation": launch_router --pd-disaggregation --prefill URL --decode URL)
SGLANG_ROUTER = {"--pd-disaggregation", "--prefill", "--decode", "--host", "--port"}
# Dynamo workers take the engine's own arguments plus the model and the role
# (ai-dynamo examples, DynamoGraphDeployment nvidia.com/v1alpha1, Dynamo 0.7-0.8):
DYNAMO_VLLM = VLLM_SERVE - {"--host", "--port"} | {"--model", "--disaggregation-mode"}
DYNAMO_SGLANG = SGLANG_SERVER - {"--host", "--port"}
TRACE = "traces/lpld.csv"


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    d = tmp_path_factory.mktemp("plans")
    out = {}
    for name, extra in (("disagg", ["--for-testbed"]), ("coupled", ["--mode", "chunked_coupled"])):
        p = d / f"{name}.json"
        r = CliRunner().invoke(main, ["recommend", "--gpu", "a100", "--trace", TRACE, *extra, "-o", str(p)])
        assert r.exit_code == 0, r.output
        out[name] = read_plan(p)
    out["disagg_path"] = d / "disagg.json"
    return out


def flags(argv):
    return {a for a in argv if a.startswith("--")}


def exec_line(script: str) -> list[str]:
    line = next(x for x in script.splitlines() if x.startswith("exec "))
    return shlex.split(line[5:].replace('"$PORT"', "8000"))


def value(argv, flag):
    return argv[argv.index(flag) + 1]


def test_vllm_scripts_disaggregated_roles_with_nixl(plans, tmp_path):
    plan = plans["disagg"]
    files = render(plan, "vllm")
    assert set(files) == {"run-prefill.sh", "run-decode.sh", "run-router.sh", "README.md"}
    for role, r in (("prefill", plan.deployment.prefill), ("decode", plan.deployment.decode)):
        argv = exec_line(files[f"run-{role}.sh"])
        assert argv[:3] == ["vllm", "serve", "meta-llama/Llama-3.1-8B"] and flags(argv) <= VLLM_SERVE   # the default model
        assert value(argv, "--tensor-parallel-size") == str(r.tp)
        assert json.loads(value(argv, "--kv-transfer-config")) == {"kv_connector": "NixlConnector",
                                                                     "kv_role": "kv_both"}
        assert value(argv, "--gpu-memory-utilization") == f"{plan.deployment.engine.memory_fraction:.2f}"
        assert value(argv, "--max-num-seqs") == str(plan.deployment.engine.max_seqs)
    assert value(exec_line(files["run-prefill.sh"]), "--max-num-batched-tokens") == str(plan.deployment.chunk_tokens)
    router = exec_line(files["run-router.sh"])
    assert flags(router) <= VLLM_PROXY
    assert router.count("localhost") == plan.deployment.prefill.instances + plan.deployment.decode.instances
    for name, text in files.items():
        if name.endswith(".sh"):
            (tmp_path / name).write_text(text)
            assert subprocess.run(["bash", "-n", str(tmp_path / name)]).returncode == 0, name


def test_sglang_scripts_use_disaggregation_mode(plans):
    files = render(plans["disagg"], "sglang")
    for role in ("prefill", "decode"):
        argv = exec_line(files[f"run-{role}.sh"])
        assert argv[:3] == ["python", "-m", "sglang.launch_server"] and flags(argv) <= SGLANG_SERVER
        assert value(argv, "--disaggregation-mode") == role
    assert flags(exec_line(files["run-router.sh"])) <= SGLANG_ROUTER


def test_coupled_plan_one_server_without_kv_connector(plans):
    plan = plans["coupled"]
    files = render(plan, "vllm")
    assert set(files) == {"run-server.sh", "README.md"}
    argv = exec_line(files["run-server.sh"])
    assert "--kv-transfer-config" not in argv and flags(argv) <= VLLM_SERVE
    assert value(argv, "--max-num-batched-tokens") == str(plan.deployment.engine.token_budget)


@pytest.mark.parametrize("engine,allowed", [("vllm", DYNAMO_VLLM), ("sglang", DYNAMO_SGLANG)])
def test_dynamo_graph_parses_with_replicas_and_gpus(plans, engine, allowed):
    plan = plans["disagg"]
    doc = yaml.safe_load(render(plan, "dynamo", engine=engine)["dynamo.yaml"])
    assert doc["kind"] == "DynamoGraphDeployment" and doc["spec"]["backendFramework"] == engine
    workers = {s["subComponentType"]: s for s in doc["spec"]["services"].values() if s["componentType"] == "worker"}
    for role, r in (("prefill", plan.deployment.prefill), ("decode", plan.deployment.decode)):
        w = workers[role]
        assert w["replicas"] == r.instances and w["resources"]["limits"]["gpu"] == str(r.tp)
        assert flags(w["extraPodSpec"]["mainContainer"]["args"]) <= allowed


@pytest.mark.parametrize("engine,allowed", [("vllm", VLLM_SERVE), ("sglang", SGLANG_SERVER | SGLANG_ROUTER)])
def test_k8s_deployments_parse_with_gpu_requests(plans, engine, allowed):
    plan = plans["disagg"]
    docs = list(yaml.safe_load_all(render(plan, "k8s", engine=engine)["k8s.yaml"]))
    deps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert {d["kind"] for d in docs} == {"Deployment", "Service"}
    for role, r in (("prefill", plan.deployment.prefill), ("decode", plan.deployment.decode)):
        d = next(v for k, v in deps.items() if k.endswith(role))
        c = d["spec"]["template"]["spec"]["containers"][0]
        assert d["spec"]["replicas"] == r.instances and c["resources"]["limits"]["nvidia.com/gpu"] == r.tp
        assert flags(c["args"]) <= allowed
    assert any(k.endswith("router") for k in deps) == (engine == "sglang")


def test_windowed_plan_sized_for_its_peak_and_model_path(plans):
    plan = plans["disagg"]
    dep = replace(plan.deployment, windows=(Window(0.0, 1, 1), Window(60.0, 4, 3), Window(120.0, 2, 1)))
    windowed = replace(plan, deployment=dep)
    files = render(windowed, "vllm", model="/models/opt")
    assert "4 instance(s)" in files["run-prefill.sh"] and "3 instance(s)" in files["run-decode.sh"]
    assert exec_line(files["run-decode.sh"])[2] == "/models/opt" and "peak" in files["README.md"]
    nameless = replace(plan, deployment=replace(plan.deployment, model="my-model"))
    with pytest.raises(InputError, match="--model-path"):
        render(nameless, "vllm")


def test_cli_writes_the_folder(plans, tmp_path):
    r = CliRunner().invoke(main, ["export", "--plan", str(plans["disagg_path"]), "--to", "k8s", "-o", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "d" / "k8s.yaml").exists() and (tmp_path / "d" / "README.md").exists()
    r = CliRunner().invoke(main, ["export", "--plan", str(tmp_path / "missing.json"), "--to", "vllm", "-o", "x"])
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_a_moe_plan_with_expert_parallelism_launches_with_the_engines_ep_flags():
    from planner.export.engines import sglang_flags, vllm_flags
    from planner.export.roles import launches
    from planner.plan import Deployment, Plan, Role
    dep = Deployment("chunked_coupled", "deepseek-v3", 2048, coupled=Role("h200", 1, 8, ep=8), dtype="fp8_block",
                     moe_dtype="fp8_block")
    (la,) = launches(Plan(dep))
    assert la.ep == 8 and la.tp == 8
    v, s = vllm_flags(la), sglang_flags(la)
    assert "--enable-expert-parallel" in v and set(a for a in v if a.startswith("--")) <= VLLM_SERVE
    assert s[s.index("--ep-size") + 1] == "8" and set(a for a in s if a.startswith("--")) <= SGLANG_SERVER
    dense = Deployment("chunked_coupled", "llama-3.1-8b", 2048, coupled=Role("h200", 1, 2))
    assert "--enable-expert-parallel" not in vllm_flags(launches(Plan(dense))[0])
