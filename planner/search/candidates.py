"""Candidate pools for the optimizer: for every GPU type, TP degree and chunk size, the
smallest instance count meeting the SLO on its own (and one more), with the predicted
latency samples. The queueing model is nonlinear, so it is evaluated here, per candidate;
the integer program in `optimizer.py` chooses among the candidates."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from planner import catalog
from planner.engines.config import EngineConfig
from planner.perf.model import PerfModel
from planner.perf.profile import Efficiency
from planner.analytic.prefill import prefill_pool, prefill_ttft
from planner.analytic.queueing import decode_side, percentiles
from planner.analytic.transfer import kv_transfer_sample_s
from planner.workload import Workload

DEFAULT_CHUNKS = (256, 512, 1024, 2048)
DEFAULT_TPS = (1, 2, 4, 8)
DEFAULT_SARATHI_BUDGETS = (512, 1024, 2048)
MAX_INSTANCES = 2048
KV_LATENCY_S = 1e-4       # the Deployment's default kv_latency_s
EXTRA_COUNTS = 1          # also offer n_min + 1 (JCT pairing, runners-up)


@dataclass(frozen=True)
class SLO:
    """Latency targets at a percentile (50, 90 or 99). Defaults: p90 TTFT <= 1 s (an
    interactive first token for prompts up to a few thousand tokens) and p90 TPOT <= 0.1 s
    (10 tokens/s, faster than people read); JCT unconstrained unless given."""
    ttft_s: float = 1.0
    tpot_s: float = 0.1
    percentile: int = 90
    jct_s: float | None = None

    def as_dict(self) -> dict:
        return {"ttft_s": self.ttft_s, "tpot_s": self.tpot_s, "percentile": self.percentile,
                "jct_s": self.jct_s}


@dataclass(frozen=True, eq=False)
class Option:
    """One pool the ILP may pick. role: prefill | decode | coupled | chunked_coupled."""
    role: str
    gpu: str
    tp: int
    instances: int
    chunk_tokens: int
    usd_per_hour: float
    ttft_s: float = float("nan")       # at the SLO percentile (prefill and coupled options)
    tpot_s: float = float("nan")       # at the SLO percentile (decode and coupled options)
    link_gb_s: float = 0.0             # KV link of the whole pool (prefill/decode)
    ttft_sample: np.ndarray | None = field(default=None, repr=False)
    tpot_sample: np.ndarray | None = field(default=None, repr=False)   # decode: the decode step alone
    transfer_fn: Callable[..., np.ndarray] | None = field(default=None, repr=False)  # prefill: KV transfer
    # sample at its own link, or at transfer_fn(link_gb_s) per instance; computed on first use
    # (the optimizer checks pairs lazily)
    prediction: dict | None = field(default=None, repr=False)   # coupled: the full `predict` result

    @property
    def transfer_sample(self) -> np.ndarray | None:
        return None if self.transfer_fn is None else self.transfer_fn()

    @property
    def gpus(self) -> int:
        return self.instances * self.tp


@dataclass(frozen=True, eq=False)
class Family:
    """All pools of one kind (role, GPU, TP, chunk) that differ only in instance count:
    `evaluate(n)` gives the Option of n instances, or None where n misses the SLO. The
    optimizer's candidates are a few counts per family; the equal-budget comparison
    (`planner.search.budget`) asks a family for any count."""
    role: str
    gpu: str
    tp: int
    chunk_tokens: int
    usd_per_instance_hour: float
    n_min: int
    evaluate: Callable[[int], "Option | None"] = field(repr=False)


@dataclass
class Rejection:
    """Why a candidate family has no option; the optimizer turns these into the message
    of an InfeasibleError."""
    role: str
    gpu: str
    tp: int
    chunk_tokens: int
    reason: str
    best_s: float = float("nan")     # the best latency it could reach (at the percentile)


GPUS_PER_NODE = 8         # an instance's TP group lives in one node (NVLink all-reduce)


def kv_link_gb_s(gpu: catalog.GpuSpec, tp: int) -> float:
    """Per-instance KV bandwidth: the node's network shared by its 8 GPUs, `tp` of them."""
    return gpu.network_gbit_s / 8.0 * tp / GPUS_PER_NODE


def tp_problem(model: catalog.ModelSpec, tp: int) -> str | None:
    """Why a TP degree cannot serve `model` (None if it can): the TP group must fit one
    node and split the attention heads evenly (as vLLM requires)."""
    if tp > GPUS_PER_NODE:
        return f"TP={tp} spans more than one {GPUS_PER_NODE}-GPU node"
    if model.heads % tp:
        return f"TP={tp} does not divide {model.name}'s {model.heads} attention heads"
    return None


def _bisect(ok, lo: int, hi: int) -> int:
    """Smallest n in [lo, hi] with ok(n), given ok(hi) and ok monotone."""
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _search_min(ok, lo: int, hi: int = MAX_INSTANCES) -> int | None:
    """Smallest n in [lo, hi] with ok(n), assuming ok is monotone; None if none."""
    n = max(lo, 1)
    step_lo = n
    while not ok(n):
        if n >= hi:
            return None
        step_lo = n + 1
        n = min(hi, 2 * n)
    return _bisect(ok, step_lo, n)


def _search_up(ok, lo: int, hi: int = MAX_INSTANCES) -> int | None:
    """Smallest n in [lo, hi] with ok(n), assuming ok is monotone and the answer is likely
    at or just above lo: tries lo, lo + 1, lo + 3, lo + 7, ... then bisects; None if none."""
    n, step, fail = max(lo, 1), 1, None
    while not ok(n):
        if n >= hi:
            return None
        fail = n
        n = min(hi, n + step)
        step *= 2
    return _bisect(ok, fail + 1 if fail is not None else n, n)


def engine_for(engine: EngineConfig, mode: str, chunk_tokens: int) -> EngineConfig:
    """The engine settings a plan deploys with: a Sarathi-style plan's token budget is its chunk."""
    return replace(engine, token_budget=int(chunk_tokens)) if mode == "chunked_coupled" else engine


def perf_models(gpu_names, model_name: str, tps, eff: Efficiency | None, dtype: str = "bf16",
                engine: EngineConfig = EngineConfig()):
    """(gpu, GPUs per instance) -> PerfModel for every instance size at which the weights fit,
    on `engine`; a MoE model in its fastest TP x EP layout of that many GPUs
    (planner.perf.layouts; attention DP is left to `planner predict`: the search's queues are
    per instance)."""
    from planner.perf.layouts import best_layout
    spec_model = catalog.model(model_name)
    dtype, moe_dtype = spec_model.formats(dtype)
    out = {}
    for g in gpu_names:
        spec = catalog.gpu(g)
        for tp in tps:
            pm = PerfModel(spec, spec_model, tp=tp, dtype=dtype, eff=eff, moe_dtype=moe_dtype,
                           kv_dtype=engine.kv_dtype(dtype), **engine.perf_kwargs())
            if spec_model.experts and eff is None:
                pm = best_layout(pm, tp, attention_dp=False)
            if pm is not None and pm.fits:
                out[(spec.name, tp)] = pm
    return out


def _counts(n_min: int, link_per_instance_gb_s: float, kv_rate_gb_s: float) -> list[int]:
    """Instance counts offered: the SLO minimum, one more, and the count the KV link needs."""
    out = list(range(n_min, n_min + 1 + EXTRA_COUNTS))
    if kv_rate_gb_s > 0 and link_per_instance_gb_s > 0:
        n_link = int(math.ceil(kv_rate_gb_s / link_per_instance_gb_s))
        if n_link > out[-1] and n_link <= MAX_INSTANCES:
            out.append(n_link)
    return out


def prefill_options(wl: Workload, perfs: dict, slo: SLO, prices: dict, chunks, batch_limit: int,
                    rejections: list, kv_rate_gb_s: float = 0.0, families: list | None = None) -> list[Option]:
    """Prefill pools meeting the TTFT target; `families` (a list) receives one Family per
    (GPU, TP, chunk) that has any."""
    q = slo.percentile
    out = []
    for (g, tp), pm in perfs.items():
        link = kv_link_gb_s(pm.gpu, tp)
        for chunk in sorted(set(chunks)):
            pool = prefill_pool(pm, wl, chunk, batch_limit)
            floor = float(np.percentile(pool.alone_s[wl.sample], q))
            if floor > slo.ttft_s:
                rejections.append(Rejection("prefill", g, tp, chunk, "service alone exceeds the TTFT target", floor))
                continue
            peak = np.bincount(wl.window_index, weights=pool.merged_s, minlength=wl.windows) / wl.window_duration_s
            n_lo = int(math.floor(peak.max())) + 1
            made: dict = {}

            def make(n, g=g, tp=tp, chunk=chunk, pm=pm, pool=pool, link=link, made=made):
                """The Option of n instances, or None where n misses the TTFT target; one
                O(N) prediction per count, kept (the search, the offered counts and the
                equal-budget comparison ask for the same counts)."""
                if n not in made:
                    r = prefill_ttft(pool, wl, n)
                    t = r.ttft_sample_s
                    val = float(np.percentile(t, q))
                    if val > slo.ttft_s:
                        made[n] = None
                        return None
                    # the O(N) completion times are not kept per count (8 MB a count per million
                    # requests, ~70 counts): a transfer asked for later recomputes them
                    pending: list = []
                    memo: dict = {}

                    def transfer(link_gb_s=None, n=n, pm=pm, pool=pool, link=link, memo=memo, pending=pending):
                        """KV transfer sample over n links of `link_gb_s` each (default: this
                        pool's own); the queue on the links is nonlinear in their speed, so a
                        slower link (a pair with a thinner decode side) is computed, not scaled."""
                        at = link if link_gb_s is None else float(link_gb_s)
                        if at not in memo:
                            if pending:
                                done = pending.pop() if at == link else pending[0]
                            else:
                                r2 = prefill_ttft(pool, wl, n)
                                done = r2.start_s + r2.work_s
                            memo[at] = kv_transfer_sample_s(wl, done, n, pm.kv_bytes_per_token, at, KV_LATENCY_S,
                                                            wl.arrival_s)
                        return memo[at]
                    made[n] = Option("prefill", g, tp, n, chunk, n * tp * prices[g], ttft_s=val,
                                     link_gb_s=n * link, ttft_sample=t, transfer_fn=transfer)
                return made[n]

            # upward from the utilisation floor: the answer is usually at or just above it
            n_min = _search_up(lambda n: make(n) is not None, n_lo)
            if n_min is None:
                rejections.append(Rejection("prefill", g, tp, chunk, f"more than {MAX_INSTANCES} instances needed"))
                continue

            def option(n, make=make, n_min=n_min):
                return None if n < n_min else make(n)

            out += [o for o in map(option, _counts(n_min, link, kv_rate_gb_s)) if o is not None]
            if families is not None:
                families.append(Family("prefill", g, tp, chunk, tp * prices[g], n_min, option))
    return out


def decode_options(wl: Workload, perfs: dict, slo: SLO, prices: dict, rejections: list,
                   seed: int = 0, kv_rate_gb_s: float = 0.0, families: list | None = None,
                   kv_rule: str = "gaussian") -> list[Option]:
    """Decode pools meeting the TPOT target; KV memory by `kv_rule` (planner.search.kv_rule)."""
    from planner.search.kv_rule import mean_fits, unbounded
    q = slo.percentile
    multi = wl.output_tokens[wl.sample] > 1
    out = []
    for (g, tp), pm in perfs.items():
        single = pm.decode_time_s(1, float(np.percentile(wl.prompt_tokens + wl.output_tokens / 2, q)))
        if single > slo.tpot_s:
            rejections.append(Rejection("decode", g, tp, 0, "one request alone exceeds the TPOT target", single))
            continue
        biggest = wl.max_request_tokens
        if biggest > pm.kv_capacity_tokens:
            rejections.append(Rejection("decode", g, tp, 0,
                                        f"the longest request needs {biggest} KV tokens, an instance holds {pm.kv_capacity_tokens}"))
            continue
        cache = {}

        model_pm = unbounded(pm) if kv_rule == "simulated" else pm

        def evaluate(n, pm=pm, model_pm=model_pm, cache=cache):
            if n not in cache:
                limits: list[str] = []
                d = decode_side(model_pm, wl, n, seed, limits)
                tp_s = d["tpot_sample"]
                val = percentiles(tp_s[multi], (q,))[f"p{q}"] if multi.any() else 0.0
                ok = not limits and val <= slo.tpot_s
                if ok and model_pm is not pm:
                    ok = mean_fits(pm, wl, n, d["tau_w"])
                cache[n] = (ok, val, tp_s)
            return cache[n]

        n_min = _search_min(lambda n: evaluate(n)[0], 1)
        if n_min is None:
            rejections.append(Rejection("decode", g, tp, 0, f"more than {MAX_INSTANCES} instances needed"))
            continue

        made: dict = {}

        def option(n, g=g, tp=tp, pm=pm, evaluate=evaluate, n_min=n_min, made=made):
            if n < n_min:
                return None
            if n not in made:
                ok, val, tp_s = evaluate(n)
                made[n] = Option("decode", g, tp, n, 0, n * tp * prices[g], tpot_s=val,
                                 link_gb_s=n * kv_link_gb_s(pm.gpu, tp), tpot_sample=tp_s) if ok else None
            return made[n]

        out += [o for o in map(option, _counts(n_min, kv_link_gb_s(pm.gpu, tp), kv_rate_gb_s)) if o is not None]
        if families is not None:
            families.append(Family("decode", g, tp, 0, tp * prices[g], n_min, option))
    return out


def coupled_options(wl: Workload, perfs: dict, slo: SLO, prices: dict, model_name: str, dtype: str,
                    eff: Efficiency, budgets, rejections: list, seed: int = 0,
                    families: list | None = None, engine: EngineConfig = EngineConfig(),
                    kv_rule: str = "gaussian") -> list[Option]:
    """vLLM-style (chunk = the longest prompt) and Sarathi-style (chunk = token budget); KV
    memory by `kv_rule` (planner.search.kv_rule)."""
    from planner.analytic.coupled import passes_screen, predict_coupled, vllm_base
    from planner.plan import Deployment, Role
    from planner.search.kv_rule import UnboundedKvDeployment, mean_fits
    dep_cls = UnboundedKvDeployment if kv_rule == "simulated" else Deployment
    q = f"p{slo.percentile}"
    vllm_chunk = int(max(wl.prompt_values.max(), 1))
    out = []
    for (g, tp), pm in perfs.items():
        for mode, chunk in [("coupled", vllm_chunk)] + [("chunked_coupled", b) for b in budgets]:
            cache, screened = {}, {}
            base = vllm_base(pm, wl) if mode == "coupled" else None   # instance-count independent, O(N)

            def dep_of(n, g=g, tp=tp, mode=mode, chunk=chunk, pm=pm):
                return dep_cls(mode, model_name, chunk, coupled=Role(g, n, tp, ep=pm.ep), dtype=pm.dtype,
                               moe_dtype=pm.moe_dtype, efficiency=eff,
                               engine=engine_for(engine, mode, chunk))

            def passes(n, dep_of=dep_of, base=base, screened=screened, pm=pm):
                """Queue-free screen (per window and sample): False means evaluate(n) is not ok."""
                if n not in screened:
                    screened[n] = ((kv_rule != "simulated" or mean_fits(pm, wl, n))
                                   and passes_screen(dep_of(n), wl, slo, seed, base))
                return screened[n]

            def evaluate(n, dep_of=dep_of, cache=cache, base=base, passes=passes):
                if n not in cache:
                    # screened: counts whose queue-free bounds already miss the SLO skip the O(N) queue
                    r = predict_coupled(dep_of(n), wl, seed, slo=slo, base=base, screen=slo) if passes(n) else None
                    ok = r is not None and r["feasible"] and r["ttft_s"][q] <= slo.ttft_s and r["tpot_s"][q] <= slo.tpot_s
                    if r is not None and slo.jct_s is not None:
                        ok = ok and r["jct_s"][q] <= slo.jct_s
                    cache[n] = (ok, r)
                return cache[n]

            # the smallest count passing the cheap screen bounds the answer from below; the
            # full prediction usually confirms it at once (the queue rarely decides)
            n_screen = _search_min(passes, 1, hi=MAX_INSTANCES // 4)
            n_min = None if n_screen is None else _search_up(lambda n: evaluate(n)[0], n_screen, hi=MAX_INSTANCES // 4)
            if n_min is None:
                rejections.append(Rejection(mode, g, tp, chunk, "SLO not met at any instance count searched"))
                continue

            made: dict = {}

            def option(n, g=g, tp=tp, mode=mode, chunk=chunk, evaluate=evaluate, n_min=n_min, made=made):
                if n < n_min:
                    return None
                if n not in made:
                    ok, r = evaluate(n)
                    made[n] = Option(mode, g, tp, n, chunk, n * tp * prices[g], ttft_s=r["ttft_s"][q],
                                     tpot_s=r["tpot_s"][q], prediction=r) if ok else None
                return made[n]

            out.append(option(n_min))
            if families is not None:
                families.append(Family(mode, g, tp, chunk, tp * prices[g], n_min, option))
    return out
