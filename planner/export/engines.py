"""Engine command lines for a Launch, in each engine's own flag names (the flags are checked
against the engines' documented CLIs in tests/test_export.py)."""
from __future__ import annotations

import json

from planner.errors import InputError

from .roles import Launch

ENGINES = ("vllm", "sglang")
# vLLM's NIXL connector: both roles run kv_both; the proxy tells each request its role.
NIXL_CONFIG = json.dumps({"kv_connector": "NixlConnector", "kv_role": "kv_both"}, separators=(",", ":"))
SGLANG_TRANSFER = "nixl"     # SGLang's --disaggregation-transfer-backend (mooncake is its other choice)
IMAGES = {"vllm": "vllm/vllm-openai:v0.11.0", "sglang": "lmsysorg/sglang:v0.5.4",
          "dynamo-vllm": "nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.8.1",
          "dynamo-sglang": "nvcr.io/nvidia/ai-dynamo/sglang-runtime:0.8.1"}
PORTS = {"vllm": 8000, "sglang": 30000}


def engine_name(plan, wanted: str | None) -> str:
    name = wanted or plan.deployment.engine.name
    if name not in ENGINES:
        raise InputError(f"the plan was costed for engine {name!r}; export writes {' or '.join(ENGINES)} "
                         "launch files - pass --engine vllm or --engine sglang")
    return name


def _disagg(la: Launch) -> bool:
    return la.role in ("prefill", "decode")


def vllm_flags(la: Launch) -> list[str]:
    """vLLM engine arguments (shared by `vllm serve` and Dynamo's dynamo.vllm)."""
    out = ["--tensor-parallel-size", str(la.tp), "--max-num-batched-tokens", str(la.token_budget),
           "--max-num-seqs", str(la.max_seqs), "--gpu-memory-utilization", f"{la.memory_fraction:.2f}"]
    if la.dtype:
        out += ["--dtype", la.dtype]
    if la.ep > 1:
        out += ["--enable-expert-parallel"]     # experts over the TP group's GPUs (EP = TP)
    if _disagg(la):
        out += ["--kv-transfer-config", NIXL_CONFIG]
    return out


def sglang_flags(la: Launch) -> list[str]:
    """SGLang server arguments (shared by sglang.launch_server and Dynamo's dynamo.sglang)."""
    out = ["--tp-size", str(la.tp), "--chunked-prefill-size", str(la.token_budget),
           "--max-running-requests", str(la.max_seqs), "--mem-fraction-static", f"{la.memory_fraction:.2f}"]
    if la.dtype:
        out += ["--dtype", la.dtype]
    if la.ep > 1:
        out += ["--ep-size", str(la.ep)]
    if _disagg(la):
        out += ["--disaggregation-mode", la.role, "--disaggregation-transfer-backend", SGLANG_TRANSFER]
    return out


def serve_command(engine: str, la: Launch, model: str, port: str) -> list[str]:
    """The server command for one instance listening on `port` (a number or "$PORT")."""
    if engine == "vllm":
        return ["vllm", "serve", model, "--host", "0.0.0.0", "--port", port, *vllm_flags(la)]
    return ["python", "-m", "sglang.launch_server", "--model-path", model, "--host", "0.0.0.0", "--port", port,
            *sglang_flags(la)]


def dynamo_command(engine: str, la: Launch, model: str) -> list[str]:
    """A Dynamo worker (the Dynamo frontend routes and moves KV between roles)."""
    if engine == "vllm":
        flags = [f for f in vllm_flags(la)]
        if _disagg(la):
            flags = ["--disaggregation-mode", la.role, *flags]
        return ["python3", "-m", "dynamo.vllm", "--model", model, *flags]
    return ["python3", "-m", "dynamo.sglang", "--model-path", model, *sglang_flags(la)]


def router_command(engine: str, prefill: list[str], decode: list[str], port: int = 8000) -> list[str]:
    """The request router in front of disaggregated roles, given each instance's URL."""
    if engine == "sglang":
        cmd = ["python", "-m", "sglang_router.launch_router", "--pd-disaggregation"]
        for u in prefill:
            cmd += ["--prefill", u]
        for u in decode:
            cmd += ["--decode", u]
        return cmd + ["--host", "0.0.0.0", "--port", str(port)]
    hosts = lambda urls: [u.split("//")[1].rsplit(":", 1) for u in urls]  # noqa: E731
    p, d = hosts(prefill), hosts(decode)
    return ["python", "toy_proxy_server.py", "--host", "0.0.0.0", "--port", str(port),
            "--prefiller-hosts", *[h for h, _ in p], "--prefiller-ports", *[x for _, x in p],
            "--decoder-hosts", *[h for h, _ in d], "--decoder-ports", *[x for _, x in d]]
