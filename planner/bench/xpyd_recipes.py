"""The deployments behind benchmark rows of disaggregated (xPyD) serving that do not record
their worker counts, from the recipes they were run with.

InferenceMAX's multi-node DeepSeek-R1 runs on H200, B200 and B300 (Dynamo with SGLang or
TensorRT-LLM) submit srt-slurm recipes (NVIDIA/srt-slurm, sa-submission-q1-2026 as merged
on 2026-03-25 at 4a22a181, the B200 SGLang ones as of 2026-03-03 at 5063eb43; named by
InferenceX's .github/configs/nvidia-master.yaml at 1cb92d21). Each recipe states x prefill
and y decode workers, each role's TP, EP and attention DP, its max batch (TensorRT-LLM's
max_batch_size per attention-DP rank, SGLang's max-running-requests per server) and the
concurrencies it was run at, and whether it decodes speculatively: `mtp` is "yes(k)" for k
draft tokens per step (TensorRT-LLM's MTP num_nextn_predict_layers, SGLang's EAGLE
speculative-num-steps with topk 1), "no" otherwise; planner/data/xpyd_recipes.csv holds one
line per recipe.

A row is matched on engine, GPU system, precision, ISL / OSL, the prefill role's TP and
EP, the decode role's TP and its concurrency among the recipe's. The rows' attention-DP and
decode EP columns are not used (they repeat the prefill role's in these rows). Where plain
and speculative recipes both match, the row is read as the plain one (the rows do not say
which ran); a row whose candidates differ in workers, attention DP, EP, batch or draft
length is not predicted and says so.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources


@dataclass(frozen=True)
class RecipeRole:
    workers: int
    tp: int          # attention TP per DP rank
    dp: int          # attention-DP ranks
    ep: int
    max_batch: int   # per attention-DP rank


@lru_cache(maxsize=1)
def _recipes() -> tuple[dict, ...]:
    text = resources.files("planner").joinpath("data", "xpyd_recipes.csv").read_text(encoding="utf-8")
    return tuple(csv.DictReader(text.splitlines()))


def _role(r: dict, prefix: str) -> RecipeRole:
    tp, ep = int(r[f"{prefix}_tp"]), int(r[f"{prefix}_ep"])
    dp_attn = r[f"{prefix}_dp_attn"] == "1"
    return RecipeRole(workers=int(r[f"{prefix}_workers"]), tp=1 if dp_attn else tp, dp=tp if dp_attn else 1, ep=ep,
                      max_batch=int(r[f"{prefix}_max_batch"]))


@dataclass(frozen=True)
class Recipe:
    prefill: RecipeRole
    decode: RecipeRole
    file: str
    spec_tokens: int   # draft tokens per decode step (0: no speculative decoding)


def _spec_tokens(mtp: str) -> int:
    return 0 if mtp == "no" else int(mtp.removeprefix("yes(").removesuffix(")"))


@lru_cache(maxsize=4096)
def recipe_deployment(backend: str, system: str, precision: str, isl: int, osl: int, prefill_tp: int,
                      prefill_ep: int, decode_tp: int, concurrency: int) -> Recipe | str:
    """The recipe this row ran, or why none (cached: a row's prefill and decode roles both
    ask)."""
    found = [r for r in _recipes()
             if r["backend"] == backend and r["system"] == system and r["precision"] == precision
             and int(r["isl"]) == isl and int(r["osl"]) == osl and int(r["prefill_tp"]) == prefill_tp
             and int(r["prefill_ep"]) == prefill_ep and int(r["decode_tp"]) == decode_tp
             and str(concurrency) in r["concurrencies"].split()]
    if not found:
        return ("xPyD worker counts not recorded (prefill_num_workers), and no InferenceMAX disaggregated recipe "
                "matches the row (planner/data/xpyd_recipes.csv)")
    chosen = [r for r in found if r["mtp"] == "no"] or found
    deployments = {(_role(r, "prefill"), _role(r, "decode"), _spec_tokens(r["mtp"])) for r in chosen}
    if len(deployments) > 1:
        return (f"xPyD worker counts not recorded (prefill_num_workers), and {len(deployments)} InferenceMAX "
                "recipes with different deployments match the row")
    prefill, decode, spec = deployments.pop()
    return Recipe(prefill, decode, chosen[0]["recipe"], spec)
