"""Which parallel layouts an instance of `gpus` GPUs can run a model in, and which of them
serves it fastest (planner.perf.layers.Layout: attention TP x attention-DP ranks x EP).

Dense models: TP over all the GPUs (it must divide the attention heads). MoE models: the
MoE layers span all the GPUs, as expert parallelism (EP = GPUs) or as TP inside every expert
(EP 1); attention runs at TP = GPUs, or - for models with few KV heads or a latent cache
replicated by TP (MLA) - as DP ranks of TP 1 (SGLang's and TensorRT-LLM's attention DP).
`best_layout` ranks the ones whose weights fit by the decode throughput per GPU at the same
number of running sequences per GPU (split evenly over the DP ranks; fewer where a rank's KV
cannot hold them at REFERENCE_CONTEXT tokens each), the regime where layouts differ most;
ties (within 2%) keep the simpler layout.
"""
from __future__ import annotations

from dataclasses import replace

from planner.catalog import ModelSpec
from planner.perf.layers import Layout, layout_problem

REFERENCE_CONTEXT = 2048      # tokens of KV per sequence in the ranking's decode step


def layouts(model: ModelSpec, gpus: int, attention_dp: bool = True) -> list[Layout]:
    """Candidate layouts of `gpus` GPUs, simplest first (those `layout_problem` refuses left out)."""
    out = [Layout(tp=gpus)]
    if model.experts and gpus > 1:
        out.append(Layout(tp=gpus, ep=gpus))
        if attention_dp:
            out.append(Layout(tp=1, dp=gpus, ep=gpus))
    ok = []
    for lay in out:
        if layout_problem(model, lay) is None and model.heads % lay.tp == 0 and lay not in ok:
            ok.append(lay)
    return ok


def best_layout(perf, gpus: int, seqs_per_gpu: int = 16, attention_dp: bool = True):
    """The PerfModel (a copy of `perf` in the best layout of `gpus` GPUs) whose weights fit
    and whose decode step serves the most tokens per second per GPU; None if none fits."""
    best, best_rate = None, 0.0
    for lay in layouts(perf.model, gpus, attention_dp):
        pm = replace(perf, tp=lay.tp, dp=lay.dp, ep=lay.ep)
        if not pm.fits:
            continue
        b = max(1, min(seqs_per_gpu * gpus // lay.dp, pm.kv_capacity_tokens // (REFERENCE_CONTEXT + 1)))
        step = float(pm.decode_time_s(b, b * REFERENCE_CONTEXT))
        rate = b * lay.dp / step / gpus
        if rate > best_rate * 1.02:
            best, best_rate = pm, rate
    return best
