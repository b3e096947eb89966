"""GPU, model and price catalogs. The data lives in `planner/data/*.csv` and
`planner/data/model_configs/`; this package only reads it and derives the numbers the
performance model needs. Models: planner.catalog.models (ModelSpec: parameters, active
parameters, weight and KV bytes), planner.catalog.hf_config (any Hugging Face config.json),
planner.catalog.model_catalog (lookup by name, Hugging Face id or path)."""
from __future__ import annotations

import csv
import difflib
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from importlib import resources
from pathlib import Path

from planner.catalog.hf_config import model_from_hf_config
from planner.catalog.model_catalog import is_builtin_model, model, models, register_model
from planner.catalog.models import DTYPE_BYTES, WEIGHT_FORMAT_BYTES, ModelSpec, dtype_bytes
from planner.errors import InputError

__all__ = ["DTYPE_BYTES", "WEIGHT_FORMAT_BYTES", "GpuSpec", "ModelSpec", "Price", "check_reserved", "dtype_bytes",
           "gpu", "gpus", "is_builtin_model", "model", "model_from_hf_config", "models", "months_old",
           "parse_price_overrides", "price_age_note", "price_usd_per_gpu_hour", "prices", "register_gpu",
           "register_model"]


@dataclass(frozen=True)
class GpuSpec:
    name: str
    vendor: str
    fp16_tflops: float          # dense FP16/BF16 tensor throughput, datasheet
    memory_gb: float            # capacity as datasheets print it: "80 GB" of HBM is 80 GiB (2**30 bytes)
    memory_gb_s: float          # memory bandwidth, 1e9 bytes/s
    link_gb_s: float            # intra-node GPU-GPU bandwidth per direction, 1e9 bytes/s
    network_gbit_s: float       # typical inter-node network per node, 1e9 bits/s
    gemm_knee_tokens: float     # tokens at which GEMM efficiency reaches half its maximum (calibrated profiles)
    fp8_tflops: float = 0.0     # dense FP8 tensor throughput (0: no FP8 tensor cores)
    fp4_tflops: float = 0.0     # dense FP4 tensor throughput (0: no FP4 tensor cores)
    nvlink_domain: int = 1      # GPUs that share one NVLink domain (8 in an HGX node, 72 in an NVL72 rack)
    kernel_system: str = ""     # the system name of its measured kernel tables (planner.perf.tables), if any
    source: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 2**30

    @property
    def peak_flops(self) -> float:
        return self.fp16_tflops * 1e12

    def peak_flops_for(self, compute_dtype: str) -> float:
        """Dense tensor FLOP/s for GEMMs computed in `compute_dtype` (fp8/fp4 where the GPU
        has such tensor cores; others run at the FP16 rate, as weight-only kernels do)."""
        tflops = {"fp8": self.fp8_tflops, "fp4": self.fp4_tflops}.get(compute_dtype, 0.0) or self.fp16_tflops
        return tflops * 1e12

    @property
    def memory_bytes_s(self) -> float:
        return self.memory_gb_s * 1e9


def _rows(filename: str) -> list[dict[str, str]]:
    text = resources.files("planner").joinpath("data", filename).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


def _aliases(field: str) -> tuple[str, ...]:
    return tuple(a for a in field.split("|") if a)


@lru_cache(maxsize=None)
def gpus() -> dict[str, GpuSpec]:
    out = {}
    for r in _rows("gpus.csv"):
        out[r["name"]] = GpuSpec(
            name=r["name"], vendor=r["vendor"], fp16_tflops=float(r["fp16_tflops"]),
            fp8_tflops=float(r["fp8_tflops"]), fp4_tflops=float(r["fp4_tflops"]),
            memory_gb=float(r["memory_gb"]), memory_gb_s=float(r["memory_gb_s"]),
            link_gb_s=float(r["link_gb_s"]), network_gbit_s=float(r["network_gbit_s"]),
            gemm_knee_tokens=float(r["gemm_knee_tokens"]), nvlink_domain=int(r["nvlink_domain"]),
            kernel_system=r["kernel_system"], source=r["source"], aliases=_aliases(r["aliases"]))
    return out


def _lookup(name: str, table: dict, what: str, hint: str):
    key = name.strip().lower()
    if key in table:
        return table[key]
    for spec in table.values():
        if key in spec.aliases:
            return spec
    names = sorted({*table, *(a for s in table.values() for a in s.aliases)})
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
    guess = f"did you mean {', '.join(close)}? " if close else ""
    raise InputError(f"unknown {what} {name!r}; {guess}known: {', '.join(sorted(table))} ({hint})")


def register_gpu(spec: GpuSpec) -> GpuSpec:
    """Make a GPU known to `gpu()` in this process (e.g. the calibrated "local" device);
    catalog GPUs cannot be replaced."""
    table = gpus()
    if spec.name in table and table[spec.name] != spec and table[spec.name].vendor != "local":
        raise InputError(f"GPU {spec.name!r} is in the catalog already; give the calibrated device another name")
    table[spec.name] = spec
    return spec


def gpu(name: str) -> GpuSpec:
    return _lookup(name, gpus(), "GPU", "see `planner catalog gpus`")


@dataclass(frozen=True)
class Price:
    gpu: str
    provider: str
    kind: str                   # on_demand | spot | reserved
    usd_per_gpu_hour: float
    as_of: str
    source: str
    note: str = ""


@lru_cache(maxsize=None)
def prices() -> tuple[Price, ...]:
    rows = tuple(Price(r["gpu"], r["provider"], r["kind"], float(r["usd_per_gpu_hour"]),
                       r["as_of"], r["source"], r["note"]) for r in _rows("prices.csv"))
    check_reserved(rows, "planner/data/prices.csv")
    return rows


PRICE_KINDS = ("on_demand", "spot", "reserved")
STALE_MONTHS = 6


def check_reserved(rows, where: str) -> None:
    """A reserved (or spot) price above the same provider's on-demand price for the same GPU
    and date is a data error (a per-instance price left undivided, a wrong term): refused."""
    od = {(p.gpu, p.provider, p.as_of): p.usd_per_gpu_hour for p in rows if p.kind == "on_demand"}
    for p in rows:
        base = od.get((p.gpu, p.provider, p.as_of))
        if p.kind != "on_demand" and base is not None and p.usd_per_gpu_hour > base:
            raise InputError(f"{where}: {p.gpu} {p.provider} {p.kind} ${p.usd_per_gpu_hour:g}/GPU-hour ({p.as_of}) is "
                             f"above its on-demand ${base:g}; fix or remove that row")


def months_old(as_of: str, today: date | None = None) -> int | None:
    """Whole months from `as_of` (YYYY-MM or YYYY-MM-DD) to today; None if unreadable."""
    today = today or date.today()
    try:
        y, m = (int(x) for x in as_of.split("-")[:2])
    except ValueError:
        return None
    return (today.year - y) * 12 + (today.month - m)


def price_age_note(as_of: str, today: date | None = None) -> str:
    """'' for a price under STALE_MONTHS old, else a flag to show beside it."""
    age = months_old(as_of, today)
    if age is None or age < STALE_MONTHS:
        return ""
    return f"{age} months old - check the provider's current price"


def price_usd_per_gpu_hour(gpu_name: str, kind: str = "on_demand", provider: str | None = None,
                           overrides: dict[str, float] | None = None) -> tuple[float, str]:
    """The GPU-hour price used for planning and where it comes from (provider, date, and a
    flag when the listed price is STALE_MONTHS or more old).

    A user override wins. With `provider`, that provider's newest listed price of `kind`.
    Without, the cheapest provider's offer (each provider's newest listed price), named:
    a price someone sells at, not a median nobody does. Spot and reserved are never priced
    above the on-demand offer chosen the same way (one would rent on demand instead)."""
    spec = gpu(gpu_name)
    if overrides and spec.name in overrides:
        return overrides[spec.name], "user override"
    if kind not in PRICE_KINDS:
        raise InputError(f"price kind {kind!r} is not one of {', '.join(PRICE_KINDS)}")
    if provider is not None and provider.lower() not in {p.provider for p in prices()}:
        raise InputError(f"--provider {provider!r} is not in the price catalog; choose one of "
                         f"{', '.join(sorted({p.provider for p in prices()}))} (`planner catalog prices`)")
    best = _offer(spec.name, kind, provider)
    if best is None:
        where = f" from {provider}" if provider else ""
        raise InputError(f"no {kind} price for {spec.name}{where} in the catalog; "
                         f"give one with --price {spec.name}=USD_PER_GPU_HOUR or --prices FILE")
    rule = "" if provider else " (cheapest listed)"
    if kind != "on_demand":
        od = _offer(spec.name, "on_demand", provider)
        if od is not None and od.usd_per_gpu_hour < best.usd_per_gpu_hour:
            best, rule = od, f" (on-demand: no cheaper {kind} offer listed)"
    age = price_age_note(best.as_of)
    return best.usd_per_gpu_hour, (f"{best.kind} {best.provider} {best.as_of}{rule}" + (f"; {age}" if age else ""))


def _offer(gpu_name: str, kind: str, provider: str | None) -> Price | None:
    newest: dict[str, Price] = {}
    for p in prices():
        if p.gpu == gpu_name and p.kind == kind and (provider is None or p.provider == provider.lower()):
            if p.provider not in newest or p.as_of > newest[p.provider].as_of:
                newest[p.provider] = p
    return min(newest.values(), key=lambda p: (p.usd_per_gpu_hour, p.provider)) if newest else None


def parse_price_overrides(items: tuple[str, ...] = (), file: str | Path | None = None) -> dict[str, float]:
    """`--price a100=1.79` items and a `--prices` CSV (columns gpu,usd_per_gpu_hour) into
    {canonical gpu name: USD per GPU-hour}."""
    out: dict[str, float] = {}
    if file is not None:
        path = Path(file)
        try:
            rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
        except (FileNotFoundError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: cannot read price file ({e.__class__.__name__}); "
                             "expected a CSV with columns gpu,usd_per_gpu_hour") from None
        for i, r in enumerate(rows, start=2):
            if "gpu" not in r or "usd_per_gpu_hour" not in r:
                raise InputError(f"{path}: needs columns gpu,usd_per_gpu_hour")
            out[gpu(r["gpu"]).name] = _positive_price(r["usd_per_gpu_hour"], f"{path} row {i}")
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--price {item!r}: expected GPU=USD_PER_GPU_HOUR, e.g. a100=1.79")
        out[gpu(name).name] = _positive_price(value, f"--price {item}")
    return out


def _positive_price(text: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise InputError(f"{where}: price {text!r} is not a number") from None
    if not v > 0:
        raise InputError(f"{where}: price must be > 0, got {text}")
    return v
