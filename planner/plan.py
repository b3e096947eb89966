"""The plan: what the optimizer decides and what the simulator and testbed run.

Frozen dataclasses with a JSON round trip. `Deployment` alone is enough to run a plan;
`Plan` adds the inputs it was made from, the predictions, cost and baselines compared.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from planner import catalog
from planner.checks import check_float, check_object
from planner.errors import InputError
from planner.engines.config import EngineConfig, config_from_dict
from planner.perf.model import PerfModel
from planner.perf.profile import Efficiency
from planner.plan_schema import build, check_fields

PLAN_VERSION = 1
MODES = ("disaggregated", "coupled", "chunked_coupled")
MODE_NAMES = {"disaggregated": "disaggregated", "coupled": "vLLM-style coupled",
              "chunked_coupled": "Sarathi-style chunked coupled"}
PREFILL_ORDERS = ("fcfs", "sjf", "ljf")
DISPATCHERS = ("power_of_two", "least_loaded", "random", "round_robin")
DECODE_ADMISSIONS = ("greedy", "reserve_static", "reserve_dynamic")


@dataclass(frozen=True)
class Role:
    """A pool of identical instances: `instances` of them, each `tp` x `dp` GPUs of type
    `gpu`. `dp` > 1: attention data-parallel ranks (each runs attention at TP `tp` on its own
    requests; the MoE layers span all tp x dp GPUs), `ep`: the expert-parallel size of the
    MoE layers (their TP is tp x dp / ep). Dense models: dp = ep = 1."""
    gpu: str
    instances: int
    tp: int = 1
    dp: int = 1
    ep: int = 1

    @property
    def gpus_per_instance(self) -> int:
        return self.tp * self.dp

    @property
    def gpus(self) -> int:
        return self.instances * self.tp * self.dp


@dataclass(frozen=True)
class Policies:
    """TetriInfer's policies; defaults are the paper's."""
    prefill_order: str = "fcfs"
    prefill_batch_limit: int = 16
    dispatcher: str = "power_of_two"
    decode_admission: str = "reserve_dynamic"
    predictor_bucket_tokens: int = 200
    predictor_accuracy: float = 0.749
    flip_idle_s: float | None = None      # None: no instance flip
    flip_latency_s: float = 1.0

    def __post_init__(self):
        for name, value, allowed in (("prefill_order", self.prefill_order, PREFILL_ORDERS),
                                     ("dispatcher", self.dispatcher, DISPATCHERS),
                                     ("decode_admission", self.decode_admission, DECODE_ADMISSIONS)):
            if value not in allowed:
                raise InputError(f"policy {name}={value!r} is not one of {', '.join(allowed)}")
        if not 0.0 <= self.predictor_accuracy <= 1.0:
            raise InputError(f"predictor_accuracy must be in [0, 1], got {self.predictor_accuracy}")


@dataclass(frozen=True)
class Window:
    """Instances per role from `start_s` on (plans over time)."""
    start_s: float
    prefill_instances: int
    decode_instances: int
    coupled_instances: int = 0    # coupled modes (the pool that does both)


@dataclass(frozen=True)
class Deployment:
    """What runs. Disaggregated: `prefill` and `decode` pools, KV moved over the link.
    Coupled modes: one `coupled` pool doing both (vLLM-style or Sarathi-style chunked)."""
    mode: str
    model: str
    chunk_tokens: int
    prefill: Role | None = None
    decode: Role | None = None
    coupled: Role | None = None
    dtype: str = "bf16"
    moe_dtype: str = ""                      # routed experts' format when it differs from `dtype`
    policies: Policies = Policies()
    kv_link_gb_s: float = 25.0
    kv_latency_s: float = 1e-4
    efficiency: Efficiency | None = None     # a calibrated testbed profile; None: the GPU's step-cost source
    engine: EngineConfig = EngineConfig()    # the serving engine and its settings (planner.engines)
    windows: tuple[Window, ...] = ()

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.mode == "disaggregated" and (self.prefill is None or self.decode is None):
            raise InputError("a disaggregated deployment needs both a prefill and a decode role")
        if self.mode != "disaggregated" and self.coupled is None:
            raise InputError(f"a {self.mode} deployment needs a coupled role")
        if self.chunk_tokens < 1:
            raise InputError(f"chunk_tokens must be >= 1, got {self.chunk_tokens}")

    def roles(self) -> dict[str, Role]:
        return {k: r for k, r in (("prefill", self.prefill), ("decode", self.decode),
                                  ("coupled", self.coupled)) if r is not None}

    def perf(self, role: str) -> PerfModel:
        """The performance model of one instance of `role` (one source of truth)."""
        r = self.roles()[role]
        return PerfModel(catalog.gpu(r.gpu), catalog.model(self.model), tp=r.tp, dp=r.dp, ep=r.ep,
                         dtype=self.dtype, moe_dtype=self.moe_dtype, eff=self.efficiency,
                         kv_dtype=self.engine.kv_dtype(self.dtype),
                         **self.engine.perf_kwargs())

    @property
    def gpus(self) -> int:
        return sum(r.gpus for r in self.roles().values())


@dataclass(frozen=True)
class Plan:
    deployment: Deployment
    inputs: dict = field(default_factory=dict)        # trace identity and stats, model, GPUs, prices, SLO
    predictions: dict = field(default_factory=dict)   # percentiles, throughput, utilisation
    cost: dict = field(default_factory=dict)          # usd_per_hour, usd_per_million_tokens, ...
    baselines: tuple[dict, ...] = ()                  # coupled deployments compared
    runners_up: tuple[dict, ...] = ()
    verdict: str = ""
    comparison: dict = field(default_factory=dict)    # the verdict's numbers (equal budget, ties)
    verification: dict = field(default_factory=dict)  # the simulator's check of the plan, its margin (search.verified)
    frontier: tuple[dict, ...] = ()                   # cost-latency Pareto set (search.frontier), when asked

    def to_dict(self) -> dict:
        d = asdict(self)
        d["plan_version"] = PLAN_VERSION
        name = self.deployment.model
        if not catalog.is_builtin_model(name):  # a config.json model: the plan carries its shape
            d["inputs"] = {**d["inputs"], "model_spec": asdict(catalog.model(name))}
        return d

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=float)

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")


def _build(cls, data: dict | None, where: str):
    if data is None:
        return None
    return build(cls, data, where)


def deployment_from_dict(d: dict, where: str = "plan") -> Deployment:
    """A Deployment from its JSON form, every field checked (planner.plan_schema)."""
    d = dict(check_object(d, f"{where}: deployment"))
    w = f"{where}: deployment"
    try:
        for role in ("prefill", "decode", "coupled"):
            d[role] = _build(Role, d.get(role), f"{w}.{role}")
        d["policies"] = _build(Policies, d.get("policies") or {}, f"{w}.policies")
        d["efficiency"] = _build(Efficiency, d["efficiency"], f"{w}.efficiency") if d.get("efficiency") else None
        engine = d.get("engine")
        if isinstance(engine, dict) and engine:
            engine = check_fields(EngineConfig, engine, f"{w}.engine")
        d["engine"] = config_from_dict(engine, f"{w}.engine")
        windows = d.get("windows") or ()
        if not isinstance(windows, (list, tuple)):
            raise InputError(f"{w}.windows: expected a list of windows")
        d["windows"] = tuple(_build(Window, x, f"{w}.windows[{i}]") for i, x in enumerate(windows))
        return _build(Deployment, d, w)
    except (TypeError, ValueError) as e:
        if isinstance(e, InputError):   # a dataclass's own check (a mode without its roles) names the file too
            raise e if str(e).startswith(where) else InputError(f"{w}: {e}") from None
        raise InputError(f"{where}: malformed deployment ({e})") from None


def _spec(cls, spec, where: str):
    spec = check_fields(cls, spec, where)
    return cls(**{**spec, "aliases": tuple(spec.get("aliases", ()))})


def plan_from_dict(d: dict, where: str = "plan") -> Plan:
    d = check_object(d, f"{where}: the plan")
    if "deployment" not in d:
        raise InputError(f"{where}: no 'deployment' key; is this a plan written by `planner recommend -o`?")
    inputs = check_object(d.get("inputs") or {}, f"{where}: inputs")
    for spec_key, spec in check_object(inputs.get("gpu_specs", {}), f"{where}: inputs.gpu_specs").items():
        catalog.register_gpu(_spec(catalog.GpuSpec, spec, f"{where}: inputs.gpu_specs.{spec_key}"))
    if "model_spec" in inputs:  # models read from a config.json
        catalog.register_model(_spec(catalog.ModelSpec, inputs["model_spec"], f"{where}: inputs.model_spec"))
    slo = check_object(inputs.get("slo") or {}, f"{where}: inputs.slo")
    for key in ("ttft_s", "tpot_s", "jct_s"):
        if slo.get(key) is not None:
            check_float(slo[key], f"{where}: inputs.slo.{key}", lo=0.0, lo_open=True, hi=1e9)
    predictions = check_object(d.get("predictions") or {}, f"{where}: predictions")
    for key in ("ttft_s", "tpot_s", "jct_s"):
        if key in predictions:
            for q, v in check_object(predictions[key], f"{where}: predictions.{key}").items():
                if v is not None:
                    check_float(v, f"{where}: predictions.{key}.{q}")
    lists = {}
    for key in ("baselines", "runners_up", "frontier"):
        items = d.get(key) or ()
        if not isinstance(items, (list, tuple)):
            raise InputError(f"{where}: {key}: expected a list")
        lists[key] = tuple(check_object(x, f"{where}: {key}[{i}]") for i, x in enumerate(items))
    verdict = d.get("verdict", "")
    if not isinstance(verdict, str):
        raise InputError(f"{where}: verdict: expected a string")
    return Plan(deployment=deployment_from_dict(d["deployment"], where),
                inputs=inputs, predictions=predictions,
                cost=check_object(d.get("cost") or {}, f"{where}: cost"), baselines=lists["baselines"],
                runners_up=lists["runners_up"], verdict=verdict,
                comparison=check_object(d.get("comparison") or {}, f"{where}: comparison"),
                verification=check_object(d.get("verification") or {}, f"{where}: verification"),
                frontier=lists["frontier"])


def read_plan(path: str | Path) -> Plan:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such plan file; write one with `planner recommend ... -o {path}`") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise InputError(f"{path}: not a plan JSON ({str(e)[:200] or type(e).__name__})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read the plan ({e.strerror or e})") from None
    return plan_from_dict(data, str(path))


__all__ = ["Role", "Policies", "Window", "Deployment", "Plan", "read_plan", "plan_from_dict",
           "deployment_from_dict", "replace"]
