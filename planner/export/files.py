"""The files `planner export` writes: launch scripts (vLLM, SGLang), a Dynamo graph, Kubernetes
Deployments. Each function returns {file name: text}; the caller writes them."""
from __future__ import annotations

import re
import shlex

import yaml

from .engines import IMAGES, PORTS, dynamo_command, router_command, serve_command
from .roles import Launch

PORT = "__PORT__"
ROLE_PORT = {"prefill": 8100, "decode": 8200, "both": 8000}
ROLE_NAME = {"prefill": "prefill", "decode": "decode", "both": "server"}


def _script(engine: str, la: Launch, model: str) -> str:
    cmd = shlex.join(serve_command(engine, la, model, PORT)).replace(PORT, '"$PORT"')
    base = ROLE_PORT[la.role]
    lines = ["#!/usr/bin/env bash",
             f"# {ROLE_NAME[la.role]}: {la.instances} instance(s), each {la.tp} x {la.gpu} (TP {la.tp}).",
             f"# Start one per instance on its own {la.tp} GPU(s) (CUDA_VISIBLE_DEVICES), with PORT={base}, "
             f"{base + 1}, ... when several share a host.",
             "set -euo pipefail", f'PORT="${{PORT:-{base}}}"']
    if engine == "vllm" and la.role != "both":
        lines.append('export VLLM_NIXL_SIDE_CHANNEL_PORT="${VLLM_NIXL_SIDE_CHANNEL_PORT:-$((PORT + 1000))}"')
    lines.append(f"exec {cmd}")
    return "\n".join(lines) + "\n"


def launch_scripts(engine: str, launches: list[Launch], model: str) -> dict[str, str]:
    files = {f"run-{ROLE_NAME[la.role]}.sh": _script(engine, la, model) for la in launches}
    roles = {la.role: la for la in launches}
    if "prefill" in roles:
        urls = {r: [f"http://localhost:{ROLE_PORT[r] + i}" for i in range(roles[r].instances)]
                for r in ("prefill", "decode")}
        cmd = shlex.join(router_command(engine, urls["prefill"], urls["decode"]))
        where = ("vLLM's example proxy (tests/v1/kv_connector/nixl_integration/toy_proxy_server.py in the vLLM "
                 "source tree)" if engine == "vllm" else "the sglang-router package")
        files["run-router.sh"] = ("#!/usr/bin/env bash\n"
                                  f"# Routes each request to a prefill then a decode instance: {where}.\n"
                                  "# Edit the hosts if the instances run on other machines.\n"
                                  f"set -euo pipefail\nexec {cmd}\n")
    return files


def _name(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:50] or "planner"


def dynamo_graph(engine: str, launches: list[Launch], model: str, name: str, image: str | None = None) -> dict:
    image = image or IMAGES[f"dynamo-{engine}"]
    prefix = {"vllm": "Vllm", "sglang": "Sglang"}[engine]
    services = {"Frontend": {"dynamoNamespace": name, "componentType": "frontend", "replicas": 1,
                             "extraPodSpec": {"mainContainer": {"image": image}}}}
    for la in launches:
        cmd = dynamo_command(engine, la, model)
        svc = {"dynamoNamespace": name, "componentType": "worker", "replicas": la.instances,
               "resources": {"limits": {"gpu": str(la.tp)}},
               "extraPodSpec": {"mainContainer": {"image": image, "command": cmd[:3], "args": cmd[3:]}}}
        if la.role != "both":
            svc["subComponentType"] = la.role
        key = {"prefill": "PrefillWorker", "decode": "DecodeWorker", "both": "Worker"}[la.role]
        services[prefix + key] = svc
    return {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment", "metadata": {"name": name},
            "spec": {"backendFramework": engine, "services": services}}


def _deployment(engine: str, la: Launch, model: str, name: str, image: str) -> list[dict]:
    app = f"{name}-{ROLE_NAME[la.role]}"
    port = PORTS[engine]
    cmd = serve_command(engine, la, model, str(port))
    split = 2 if engine == "vllm" else 3
    gpus = {"nvidia.com/gpu": la.tp}
    container = {"name": ROLE_NAME[la.role], "image": image, "command": cmd[:split], "args": cmd[split:],
                 "ports": [{"containerPort": port, "name": "http"}],
                 "resources": {"limits": dict(gpus), "requests": dict(gpus)},
                 "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}]}
    if engine == "vllm" and la.role != "both":
        container["env"] = [{"name": "VLLM_NIXL_SIDE_CHANNEL_HOST",
                             "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    labels = {"app": app, "planner/role": la.role}
    dep = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": app, "labels": labels, "annotations": {"planner/gpu": la.gpu}},
           "spec": {"replicas": la.instances, "selector": {"matchLabels": {"app": app}},
                    "template": {"metadata": {"labels": labels},
                                 "spec": {"containers": [container],
                                          "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory"}}]}}}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": app, "labels": labels},
           "spec": {"selector": {"app": app}, "ports": [{"port": port, "targetPort": port, "name": "http"}]}}
    return [dep, svc]


def k8s_manifests(engine: str, launches: list[Launch], model: str, name: str, image: str | None = None) -> list[dict]:
    image = image or IMAGES[engine]
    docs = [d for la in launches for d in _deployment(engine, la, model, name, image)]
    if engine == "sglang" and any(la.role == "prefill" for la in launches):
        port = PORTS[engine]
        cmd = router_command(engine, [f"http://{name}-prefill:{port}"], [f"http://{name}-decode:{port}"])
        app = f"{name}-router"
        docs.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": app, "labels": {"app": app}},
                     "spec": {"replicas": 1, "selector": {"matchLabels": {"app": app}},
                              "template": {"metadata": {"labels": {"app": app}},
                                           "spec": {"containers": [{"name": "router", "image": image,
                                                                    "command": cmd[:3], "args": cmd[3:],
                                                                    "ports": [{"containerPort": 8000}]}]}}}})
    return docs


def dump_yaml(docs: list[dict]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)


def resource_name(plan, name: str | None) -> str:
    return _name(name or f"{plan.deployment.model}-{plan.deployment.mode}")
