"""What to launch for a plan: one entry per role (prefill, decode, or a coupled pool), with
the engine settings the plan was costed with. Pure functions; no I/O."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from planner import catalog
from planner.errors import InputError

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


@dataclass(frozen=True)
class Launch:
    """One pool of identical engine instances."""
    role: str               # "prefill", "decode" or "both" (coupled)
    gpu: str
    instances: int          # peak count when the plan has time windows
    tp: int
    token_budget: int       # tokens per engine step
    max_seqs: int           # running requests
    memory_fraction: float
    dtype: str | None       # the engine's --dtype value, None when the plan's dtype has none
    ep: int = 1             # expert parallelism of a MoE model's experts (over the instance's tp GPUs)


def model_path(plan, override: str | None = None) -> str:
    """The model id to serve: --model-path, else the Hugging Face id the catalog cites."""
    if override:
        return override
    name = plan.deployment.model
    try:
        source = catalog.model(name).source
    except InputError:
        source = ""
    first = source.split()[0] if source else ""
    if first.endswith(".json"):  # read from a local config.json: serve its folder
        return str(PurePath(first).parent)
    if "/" in first:
        return first
    raise InputError(f"the plan's model {name!r} has no Hugging Face id in the catalog; pass --model-path "
                     "ORG/NAME (or a local folder) to name what to serve")


def launches(plan) -> list[Launch]:
    """Prefill chunks are the plan's chunk size; decode and coupled pools take the engine's
    token budget (a Sarathi-style plan's budget is its chunk)."""
    dep = plan.deployment
    eng = dep.engine
    dtype = DTYPES.get(dep.dtype)
    peak = _peaks(dep)

    def launch(role, r, budget):
        return Launch(role, r.gpu, peak.get(role, r.instances), r.tp, int(budget), int(eng.max_seqs),
                      float(eng.memory_fraction), dtype, r.ep)
    if dep.mode == "disaggregated":
        return [launch("prefill", dep.prefill, dep.chunk_tokens), launch("decode", dep.decode, eng.token_budget)]
    return [launch("both", dep.coupled, eng.token_budget)]


def _peaks(dep) -> dict[str, int]:
    """Peak instances per role over a windowed plan's schedule (static manifests size for the peak)."""
    if not dep.windows:
        return {}
    return {"prefill": max(w.prefill_instances for w in dep.windows),
            "decode": max(w.decode_instances for w in dep.windows),
            "both": max(w.coupled_instances for w in dep.windows)}
