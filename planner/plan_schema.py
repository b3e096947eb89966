"""Field-by-field checks of the objects a plan JSON (or a model spec carried in it) holds,
before any dataclass is built: every key known, every value of its type, every number
finite and in range, every count an integer. Errors name the file and the key path
(`plan.json: deployment.prefill.instances: 0 is out of range; expected an integer in
[1, 100,000]`), so a hand-edited plan fails with exit 2 instead of deep in the simulator.

`build(cls, data, where)` checks `data` against RANGES[cls.__name__] and the field types
and returns cls(**checked). Nested objects (roles, policies, ...) are built by the caller.
"""
from __future__ import annotations

from dataclasses import MISSING, fields

from planner.checks import check_float, check_int, check_object, check_str
from planner.errors import InputError
from planner.perf.memory import WEIGHT_BYTES

MAX_INSTANCES = 100_000
MAX_TOKENS = 10_000_000
MAX_TIME_S = 1e10
BIG = 1e12

# (lo, hi, lo_open) for floats, (lo, hi) for ints, a tuple of strings for choices. A field
# not listed gets its type's check only (finite for floats, >= 0 for ints).
RANGES = {
    "Role": {"instances": (1, MAX_INSTANCES), "tp": (1, 4096), "dp": (1, 4096), "ep": (1, 4096)},
    "Window": {"start_s": (0.0, MAX_TIME_S, False), "prefill_instances": (0, MAX_INSTANCES),
               "decode_instances": (0, MAX_INSTANCES), "coupled_instances": (0, MAX_INSTANCES)},
    "Policies": {"prefill_batch_limit": (1, 1_000_000), "predictor_bucket_tokens": (1, MAX_TOKENS),
                 "predictor_accuracy": (0.0, 1.0, False), "flip_idle_s": (0.0, MAX_TIME_S, False),
                 "flip_latency_s": (0.0, MAX_TIME_S, False)},
    "Deployment": {"chunk_tokens": (1, MAX_TOKENS), "kv_link_gb_s": (0.0, 1e6, True),
                   "kv_latency_s": (0.0, 1e3, False), "dtype": tuple(WEIGHT_BYTES),
                   "moe_dtype": ("", *WEIGHT_BYTES)},
    "Efficiency": {"compute_eff": (0.0, BIG, True), "memory_eff": (0.0, BIG, True),
                   "prefill_overhead_s": (0.0, 1e3, False), "decode_overhead_s": (0.0, 1e3, False),
                   "knee_tokens": (0.0, BIG, False), "kv_traffic": (0.0, 1e3, True),
                   "prefill_request_s": (0.0, 1e3, False), "prefill_idle_factor": (0.0, 1e3, True)},
    "EngineConfig": {"token_budget": (1, MAX_TOKENS), "max_seqs": (1, 10_000_000), "block_tokens": (1, 1_000_000),
                     "memory_fraction": (0.0, 1.0, True), "graph_max_batch": (0, 10_000_000),
                     "cpu_per_step_s": (0.0, 1e3, False), "cpu_per_seq_s": (0.0, 1e3, False),
                     "cpu_per_kernel_s": (0.0, 1.0, False),
                     "frontend_s": (0.0, 1e3, False), "disagg_frontend_s": (0.0, 1e3, False)},
    "GpuSpec": {"fp16_tflops": (0.0, BIG, True), "memory_gb": (0.0, BIG, True), "memory_gb_s": (0.0, BIG, True),
                "link_gb_s": (0.0, BIG, False), "network_gbit_s": (0.0, BIG, False),
                "gemm_knee_tokens": (0.0, BIG, False), "fp8_tflops": (0.0, BIG, False),
                "fp4_tflops": (0.0, BIG, False), "nvlink_domain": (1, 1_000_000)},
    "ModelSpec": {"layers": (1, 100_000), "hidden": (1, 10_000_000), "heads": (1, 1_000_000),
                  "kv_heads": (1, 1_000_000), "head_dim": (1, 1_000_000), "ffn": (1, 100_000_000),
                  "vocab": (1, 100_000_000), "max_context": (1, 1_000_000_000),
                  "mlp": ("dense", "gated"), "positions": ("learned", "rope")},
}
_NESTED = {"Role", "Policies", "Efficiency", "EngineConfig", "Window"}   # built by the caller


def check_fields(cls, data, where: str) -> dict:
    """`data` checked against cls's fields: a dict of clean values (missing keys left to
    the dataclass's defaults; a missing required key is named)."""
    data = check_object(data, where)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known), key=str)
    if unknown:
        raise InputError(f"{where}: unknown keys {', '.join(map(str, unknown))}")
    missing = [n for n, f in known.items()
               if n not in data and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise InputError(f"{where}: missing {', '.join(missing)}")
    ranges = RANGES.get(cls.__name__, {})
    out = {}
    for name, value in data.items():
        out[name] = _check_value(value, str(known[name].type), ranges.get(name), f"{where}.{name}")
    return out


def build(cls, data, where: str):
    return cls(**check_fields(cls, data, where))


def _check_value(value, typ: str, rng, where: str):
    optional = typ.endswith("| None")
    base = typ.replace("| None", "").strip()
    if value is None:
        if optional:
            return None
        raise InputError(f"{where}: null is not allowed here; expected {base}")
    if base.split("[")[0] in _NESTED or base.startswith("tuple[Window"):
        return value                     # checked when the caller builds it
    if base == "int":
        lo, hi = rng if rng else (0, None)
        return check_int(value, where, lo=lo, hi=hi)
    if base == "float":
        lo, hi, lo_open = rng if rng else (None, None, False)
        return check_float(value, where, lo=lo, hi=hi, lo_open=lo_open)
    if base == "bool":
        if not isinstance(value, bool):
            raise InputError(f"{where}: {value!r} is not true or false")
        return value
    if base == "str":
        return check_str(value, where, choices=rng)
    if base.startswith("tuple"):
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where}: expected a list, got {type(value).__name__}")
        if base == "tuple[str, ...]":
            return tuple(check_str(v, f"{where}[{i}]") for i, v in enumerate(value))
        return tuple(_pair(v, f"{where}[{i}]") for i, v in enumerate(value))
    return value


def _pair(value, where: str):
    """An (x, seconds) point of an Efficiency offset table."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise InputError(f"{where}: expected a pair [x, seconds]")
    return (check_float(value[0], f"{where}[0]", lo=0.0, hi=BIG, lo_open=True),
            check_float(value[1], f"{where}[1]", lo=-1e3, hi=1e3))


__all__ = ["check_fields", "build", "RANGES", "MAX_INSTANCES", "MAX_TOKENS"]
