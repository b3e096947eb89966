"""From a plan to a deployment: launch scripts for vLLM or SGLang, a Dynamo graph, or
Kubernetes Deployments, with the plan's parallelism, token budget, running-request limit,
memory fraction and (disaggregated plans) prefill/decode roles with the engine's KV
connector settings."""
from __future__ import annotations

from pathlib import Path

from planner.errors import InputError

from .engines import engine_name
from .files import dump_yaml, dynamo_graph, k8s_manifests, launch_scripts, resource_name
from .roles import launches, model_path

TARGETS = ("vllm", "sglang", "dynamo", "k8s")


def render(plan, target: str, *, engine: str | None = None, model: str | None = None, name: str | None = None,
           image: str | None = None) -> dict[str, str]:
    """{file name: text} for `target`. vllm / sglang: the engine is the target; dynamo / k8s:
    `engine` (default: the plan's, when it is vLLM or SGLang)."""
    if target not in TARGETS:
        raise InputError(f"--to {target!r}: choose one of {', '.join(TARGETS)}")
    eng = target if target in ("vllm", "sglang") else engine_name(plan, engine)
    la = launches(plan)
    mp = model_path(plan, model)
    if target in ("vllm", "sglang"):
        files = launch_scripts(eng, la, mp)
    elif target == "dynamo":
        files = {"dynamo.yaml": dump_yaml([dynamo_graph(eng, la, mp, resource_name(plan, name), image)])}
    else:
        files = {"k8s.yaml": dump_yaml(k8s_manifests(eng, la, mp, resource_name(plan, name), image))}
    files["README.md"] = _readme(plan, target, eng, la, mp, files)
    return files


def write(files: dict[str, str], out_dir) -> list[Path]:
    from planner.outputs import make_dir, write_text
    out = make_dir(out_dir)
    paths = []
    for fname, text in files.items():
        p = out / fname
        write_text(p, text)
        if fname.endswith(".sh"):
            p.chmod(0o755)
        paths.append(p)
    return paths


def _readme(plan, target, engine, la, model, files) -> str:
    dep = plan.deployment
    lines = [f"# {dep.model} on {engine} ({dep.mode}), exported by `planner export --to {target}`", "",
             f"Model served: `{model}`.", ""]
    for x in la:
        lines.append(f"- {x.role}: {x.instances} instance(s) x {x.tp} {x.gpu} (TP {x.tp}); token budget "
                     f"{x.token_budget}, up to {x.max_seqs} running requests, memory fraction {x.memory_fraction:.2f}")
    if dep.windows:
        lines += ["", f"The plan changes instance counts over {len(dep.windows)} time windows; these files size "
                  "every role for its peak. Scale down between peaks with your autoscaler."]
    cost = plan.cost.get("usd_per_hour") if isinstance(plan.cost, dict) else None
    if cost is not None:
        lines += ["", f"Planned cost: ${cost:,.2f}/hour."]
    lines += ["", "Files: " + ", ".join(f"`{f}`" for f in files if f != "README.md") + "."]
    return "\n".join(lines) + "\n"
