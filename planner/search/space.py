"""The search space of one planning run: the trace summarised, the performance models, the
candidate pools per role and their families, the pair checks, and the integer program
over them (`solve_space`). `planner.search.recommend` turns a solution into a Plan;
`planner.search.verified` walks the solutions in order through the simulator."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from planner import catalog
from planner.engines.config import EngineConfig
from planner.errors import InfeasibleError, InputError
from planner.perf.profile import Efficiency
from planner.plan import Policies
from planner.search.budget import best_at
from planner.search.candidates import (DEFAULT_CHUNKS, DEFAULT_SARATHI_BUDGETS, DEFAULT_TPS, KV_LATENCY_S, SLO,
                                       coupled_options, decode_options, perf_models, prefill_options, tp_problem)
from planner.search.kv_rule import KV_RULES
from planner.search.optimizer import MODE_CHOICES, infeasible_message, pair_ok as latency_pair_ok, pair_samples, solve
from planner.workload import DEFAULT_WINDOW_S, build_workload


@dataclass
class Space:
    wl: object
    slo: SLO
    mode: str
    spec_model: object
    gpu_names: list
    prices: dict
    price_src: dict
    perfs: dict
    sat: dict
    chunk_set: list
    sarathi_budgets: tuple
    kv_bytes_tok: float
    kv_rate: float
    kv_rate_options: float
    pre: list
    dec: list
    cpl: list
    families: list
    rejections: list
    tp_warnings: list
    max_gpus: int | None
    solver: str
    kv_link_override_gb_s: float | None
    kv_rule: str
    spare: int
    pair_cache: dict = field(default_factory=dict)

    def pair_ok(self, p, d) -> bool:
        key = (key_of(p), key_of(d))
        if key not in self.pair_cache:
            self.pair_cache[key] = latency_pair_ok(p, d, self.wl, self.kv_bytes_tok, KV_LATENCY_S, self.slo,
                                                   self.kv_link_override_gb_s)
        return self.pair_cache[key]

    def pair_detail(self, pairs) -> str:
        """The best percentile TPOT (and JCT) any of `pairs` reaches, for the message."""
        q = self.slo.percentile
        best_tpot, best_jct = float("inf"), float("inf")
        for i, j in pairs:
            _, tpot, jct = pair_samples(self.pre[i], self.dec[j], self.wl, self.kv_bytes_tok, KV_LATENCY_S,
                                        self.kv_link_override_gb_s)
            if len(tpot):
                best_tpot = min(best_tpot, float(np.percentile(tpot, q)))
            best_jct = min(best_jct, float(np.percentile(jct, q)))
        text = f"the best pair reaches p{q} TPOT {best_tpot * 1e3:.1f} ms"
        return text + (f" and p{q} JCT {best_jct:.2f} s" if self.slo.jct_s is not None else "")

    def family_of(self, o):
        """The candidate family an option belongs to (its role, GPU, TP and chunk)."""
        for f in self.families:
            if (f.role, f.gpu, f.tp) == (o.role, o.gpu, o.tp) and (o.role == "decode" or f.chunk_tokens == o.chunk_tokens):
                return f
        return None

    def option(self, family, n: int):
        """The family's option of n instances (priced with its spares), or None where n
        misses the SLO in the analytical model."""
        return with_spare(self, family.evaluate(n))

    def spare_usd_per_hour(self, o) -> float:
        """What the spare instances of a pool add (`spare` per role)."""
        return self.spare * o.tp * self.prices[o.gpu]


def key_of(o) -> tuple:
    return o.role, o.gpu, o.tp, o.instances, o.chunk_tokens


def check_inputs(slo: SLO, mode: str, runners_up: int, max_gpus: int | None, kv_rule: str, spare: int) -> None:
    if mode not in MODE_CHOICES:
        raise InputError(f"mode {mode!r} is not one of {', '.join(MODE_CHOICES)}")
    if slo.percentile not in (50, 90, 99):
        raise InputError(f"SLO percentile must be 50, 90 or 99, got {slo.percentile}")
    if not (slo.ttft_s > 0 and slo.tpot_s > 0) or (slo.jct_s is not None and not slo.jct_s > 0):
        raise InputError("SLO targets must be > 0 seconds")
    if runners_up < 0:
        raise InputError(f"--runners-up must be >= 0, got {runners_up}")
    if max_gpus is not None and max_gpus < 1:
        raise InputError(f"--max-gpus must be >= 1, got {max_gpus}")
    if kv_rule not in KV_RULES:
        raise InputError(f"KV rule {kv_rule!r} is not one of {', '.join(KV_RULES)}")
    if not 0 <= spare <= 8:
        raise InputError(f"--spare must be between 0 and 8 instances per role, got {spare}")


def build_space(trace, gpus=("a100",), model: str = "opt-13b", slo: SLO = SLO(), *,
                price_kind: str = "on_demand", provider: str | None = None, price_overrides: dict | None = None,
                tps=DEFAULT_TPS, chunks=None, sarathi_budgets=DEFAULT_SARATHI_BUDGETS, mode: str = "auto",
                max_gpus: int | None = None, window_s: float = DEFAULT_WINDOW_S, efficiency: Efficiency | None = None,
                kv_link_override_gb_s: float | None = None, policies: Policies = Policies(),
                solver: str = "highs", dtype: str = "fp16", seed: int = 0,
                engine: EngineConfig = EngineConfig(), kv_rule: str = "gaussian", spare: int = 0) -> Space:
    """Every candidate pool of `trace` (already treated for over-long requests) on `gpus`.
    With `spare` > 0 each pool's $/hour includes its spare instances, so the integer program
    orders plans by what they cost with them."""
    spec_model = catalog.model(model)
    tp_notes = {tp: tp_problem(spec_model, tp) for tp in tps}
    if all(tp_notes.values()):
        raise InputError("no usable --tp: " + "; ".join(tp_notes.values())
                         + f" (usable: {', '.join(str(t) for t in range(1, 9) if not tp_problem(spec_model, t))})")
    tps = tuple(tp for tp, why in tp_notes.items() if why is None)
    tp_warnings = [f"{why}: not considered" for why in tp_notes.values() if why]
    gpu_names = list(dict.fromkeys(catalog.gpu(g).name for g in gpus))
    prices, price_src = {}, {}
    for g in gpu_names:
        prices[g], price_src[g] = catalog.price_usd_per_gpu_hour(g, price_kind, provider, price_overrides)
    wl = build_workload(trace, window_s=window_s, seed=seed)
    perfs = perf_models(gpu_names, model, tps, efficiency, dtype, engine)
    if not perfs:
        raise InfeasibleError(f"{spec_model.name} ({spec_model.weight_bytes(dtype) / 1e9:.1f} GB of weights) fits "
                              f"none of {', '.join(gpu_names)} at TP in {sorted(tps)}: allow a larger --tp or a bigger GPU")
    sat = {k: pm.saturation_chunk_tokens() for k, pm in perfs.items()}
    chunk_set = sorted(set(chunks or DEFAULT_CHUNKS) | (set() if chunks else {v for (g, tp), v in sat.items() if tp == 1}))
    kv_bytes_tok = next(iter(perfs.values())).kv_bytes_per_token
    kv_rate = float((wl.window_sum_prompt / wl.window_duration_s).max() * kv_bytes_tok / 1e9)
    kv_rate_options = 0.0 if kv_link_override_gb_s else kv_rate   # the user's link: size pools by the SLO only
    rejections: list = []
    families: list = []
    pre, dec, cpl = [], [], []
    if mode in ("auto", "disaggregated"):
        pre = prefill_options(wl, perfs, slo, prices, chunk_set, policies.prefill_batch_limit, rejections,
                              kv_rate_options, families)
        dec = decode_options(wl, perfs, slo, prices, rejections, seed, kv_rate_options, families, kv_rule=kv_rule)
    if mode != "disaggregated":
        cpl = coupled_options(wl, perfs, slo, prices, model, dtype, efficiency,
                              sarathi_budgets if mode in ("auto", "chunked_coupled") else (), rejections, seed,
                              families, engine, kv_rule=kv_rule)
        if mode == "coupled":
            cpl = [c for c in cpl if c.role == "coupled"]
            families = [f for f in families if f.role == "coupled"]
    space = Space(wl, slo, mode, spec_model, gpu_names, prices, price_src, perfs, sat, chunk_set,
                  tuple(sarathi_budgets), kv_bytes_tok, kv_rate, kv_rate_options, pre, dec, cpl, families, rejections,
                  tp_warnings, max_gpus, solver, kv_link_override_gb_s, kv_rule, spare)
    if spare:
        space.pre, space.dec, space.cpl = ([with_spare(space, o) for o in pool] for pool in (pre, dec, cpl))
    if not ((space.pre and space.dec) or space.cpl):
        raise InfeasibleError(infeasible_message(slo, rejections, bool(pre), bool(dec), bool(cpl)))
    return space


def with_spare(space: Space, o):
    """The option priced with its pool's spare instances."""
    if o is None or not space.spare:
        return o
    return replace(o, usd_per_hour=o.usd_per_hour + space.spare_usd_per_hour(o))


def solve_space(space: Space, runners: int):
    """The integer program's best plan and `runners` runners-up, with the (prefill, decode)
    pair constraints generated lazily: a chosen pair missing the TPOT (transfer included) or
    JCT target is cut, with every other decode option its prefill pool fails with, and the
    program re-solved. Before the final solve every plan of any instance count costing
    exactly the least cost joins the candidates (so the tie-break by headroom sees them)."""
    pre, dec = space.pre, space.dec

    def run(k: int):
        bad: set = set()
        checked: set = set()
        while True:
            sol = solve(pre, dec, space.cpl, kv_rate_gb_s=space.kv_rate_options, slo=space.slo, mode=space.mode,
                        max_gpus=space.max_gpus, bad_pairs=sorted(bad), runners_up=k, solver=space.solver,
                        pair_detail=space.pair_detail)
            found = [c for c in [sol.best, *sol.runners_up, sol.best_per_mode.get("disaggregated")]
                     if c is not None and c.prefill is not None]
            new = False
            for c in found:
                i = next(m for m, o in enumerate(pre) if o is c.prefill)
                j = next(m for m, o in enumerate(dec) if o is c.decode)
                if (i, j) in bad or space.pair_ok(pre[i], dec[j]):
                    continue
                new = True
                if i not in checked:
                    checked.add(i)
                    bad |= {(i, m) for m, d in enumerate(dec) if not space.pair_ok(pre[i], d)}
                bad.add((i, j))
            if not new:
                return sol

    if space.spare:   # the families count instances without their spares: no equal-cost enumeration
        return run(runners)
    least = run(0).best.usd_per_hour
    known = {key_of(o) for o in pre + dec + space.cpl}
    for c in best_at(space.families, least, space.slo, space.kv_rate_options, space.max_gpus, space.pair_ok).values():
        for o, pool in ((c.prefill, pre), (c.decode, dec), (c.coupled, space.cpl)):
            if o is not None and key_of(o) not in known:
                known.add(key_of(o))
                pool.append(o)
    return run(runners)
