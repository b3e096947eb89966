"""GPU, model and price catalogs. The data lives in `planner/data/*.csv` and
`planner/data/model_configs/`; this package only reads it and derives the numbers the
performance model needs. Models: planner.catalog.models (ModelSpec: parameters, active
parameters, weight and KV bytes), planner.catalog.hf_config (any Hugging Face config.json),
planner.catalog.model_catalog (lookup by name, Hugging Face id or path)."""
from __future__ import annotations

import csv
import difflib
import math
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from importlib import resources
from pathlib import Path

from planner.catalog.hf_config import model_from_hf_config
from planner.catalog.model_catalog import DEFAULT_MODEL, is_builtin_model, model, models, register_model
from planner.catalog.models import DTYPE_BYTES, WEIGHT_FORMAT_BYTES, ModelSpec, dtype_bytes
from planner.errors import InputError

__all__ = ["DEFAULT_MODEL", "DTYPE_BYTES", "WEIGHT_FORMAT_BYTES", "GpuSpec", "ModelSpec", "OfferList", "Price", "check_reserved",
           "dtype_bytes", "gpu", "gpus", "is_builtin_model", "model", "model_from_hf_config", "models", "months_old",
           "parse_price_overrides", "price_age_note", "price_usd_per_gpu_hour", "prices", "read_price_file",
           "register_gpu", "register_model"]


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

    A user override wins: a plain price (`--price`, a `--prices` file of gpu,usd_per_gpu_hour)
    as it is, a user's offers (an `OfferList`, from a `--prices` file in the catalog's form)
    chosen among by the rules below in place of the catalog's offers for that GPU. With
    `provider`, that provider's newest listed price of `kind`. Without, the cheapest
    provider's offer (each provider's newest listed price), named: a price someone sells at,
    not a median nobody does. Spot and reserved are never priced above the on-demand offer
    chosen the same way (one would rent on demand instead)."""
    spec = gpu(gpu_name)
    if kind not in PRICE_KINDS:
        raise InputError(f"price kind {kind!r} is not one of {', '.join(PRICE_KINDS)}")
    own = (overrides or {}).get(spec.name)
    if own is not None and not isinstance(own, OfferList):
        return float(own), "user override"
    offers, where = (own.offers, own.where) if own is not None else (prices(), "")
    if provider is not None and provider.lower() not in {p.provider for p in offers if p.gpu == spec.name}:
        if own is not None:
            listed = ", ".join(sorted({p.provider for p in own.offers}))
            raise InputError(f"--provider {provider!r}: {where} prices {spec.name} from {listed} only; "
                             f"add its rows there or drop --provider")
        known = {p.provider for p in prices()} | {p.provider for v in (overrides or {}).values()
                                                  if isinstance(v, OfferList) for p in v.offers}
        if provider.lower() not in known:
            raise InputError(f"--provider {provider!r} is not in the price catalog; choose one of "
                             f"{', '.join(sorted(known))} (`planner catalog prices`)")
    best = _offer(offers, spec.name, kind, provider)
    if best is None:
        whence = f" from {provider}" if provider else ""
        raise InputError(f"no {kind} price for {spec.name}{whence} in {where or 'the catalog'}; "
                         f"give one with --price {spec.name}=USD_PER_GPU_HOUR or --prices FILE")
    rule = "" if provider else "cheapest listed"
    if kind != "on_demand":
        od = _offer(offers, spec.name, "on_demand", provider)
        if od is not None and od.usd_per_gpu_hour < best.usd_per_gpu_hour:
            best, rule = od, f"on-demand: no cheaper {kind} offer listed"
    note = ", ".join(x for x in (where, rule) if x)
    age = price_age_note(best.as_of)
    return best.usd_per_gpu_hour, (f"{best.kind} {best.provider} {best.as_of}" + (f" ({note})" if note else "")
                                   + (f"; {age}" if age else ""))


def _offer(offers, gpu_name: str, kind: str, provider: str | None) -> Price | None:
    newest: dict[str, Price] = {}
    for p in offers:
        if p.gpu == gpu_name and p.kind == kind and (provider is None or p.provider == provider.lower()):
            if p.provider not in newest or p.as_of > newest[p.provider].as_of:
                newest[p.provider] = p
    return min(newest.values(), key=lambda p: (p.usd_per_gpu_hour, p.provider)) if newest else None


class OfferList(float):
    """The offers a user's `--prices` file lists for one GPU in the catalog's form (provider,
    kind, usd_per_gpu_hour, as_of, ...). `price_usd_per_gpu_hour` chooses among them as
    among the catalog's - by kind and --provider, the cheapest on-demand offer by default,
    provider and date shown, stale ones flagged - in place of the catalog's offers for
    that GPU. As a number (a price override map holds numbers) it is that default choice."""

    def __new__(cls, offers, where: str):
        offers = tuple(offers)
        od = _offer(offers, offers[0].gpu, "on_demand", None)
        self = super().__new__(cls, (od or min(offers, key=lambda p: p.usd_per_gpu_hour)).usd_per_gpu_hour)
        self.offers, self.where = offers, where
        return self

    def __reduce__(self):
        return OfferList, (self.offers, self.where)

    def __repr__(self):
        return f"OfferList({float(self)!r}, {len(self.offers)} offers from {self.where})"


PRICE_COLUMNS = ("gpu", "provider", "kind", "usd_per_gpu_hour", "as_of", "source", "note")
OFFER_COLUMNS = ("provider", "kind", "as_of")      # any of them: the file is in the catalog's form
_FORMS = ("columns gpu,usd_per_gpu_hour (a price per GPU) or gpu,provider,kind,usd_per_gpu_hour,as_of "
          "[,source,note] (offers, as planner/data/prices.csv)")


def parse_price_overrides(items: tuple[str, ...] = (), file: str | Path | None = None) -> dict[str, float]:
    """`--price a100=1.79` items and a `--prices` CSV into {canonical gpu name: price}: a
    float per GPU from items and from a file of gpu,usd_per_gpu_hour; an `OfferList` per GPU
    from a file in the catalog's form (`read_price_file`). Items win over the file."""
    out: dict[str, float] = dict(read_price_file(file)) if file is not None else {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--price {item[:80]!r}: expected GPU=USD_PER_GPU_HOUR, e.g. a100=1.79")
        out[gpu(name).name] = _positive_price(value, f"--price {item[:80]}")
    return out


def read_price_file(file: str | Path, today: date | None = None) -> dict[str, float]:
    """A `--prices` CSV, checked row by row (one-line errors naming the file, row and
    column): either gpu,usd_per_gpu_hour - {gpu: price} - or the catalog's own columns -
    {gpu: OfferList}, each row an offer with provider, kind (on_demand|spot|reserved) and
    as_of (YYYY-MM or YYYY-MM-DD, not in the future). Refused: unknown GPUs or columns, a
    GPU (or offer) listed twice, a price that is not a positive number, a reserved or spot
    offer above its provider's on-demand offer of the same date."""
    path = Path(file)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"--prices {path}: no such file; give a CSV with {_FORMS}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--prices {path}: cannot read it ({e.__class__.__name__}); expected a CSV with {_FORMS}") from None
    reader = csv.DictReader(text.splitlines())
    header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
    if not header:
        raise InputError(f"--prices {path}: the file is empty; expected {_FORMS}")
    reader.fieldnames = header
    unknown = [h for h in header if h not in PRICE_COLUMNS]
    if unknown or "gpu" not in header or "usd_per_gpu_hour" not in header:
        what = f"unknown column(s) {', '.join(repr(h[:30]) for h in unknown[:5])}" if unknown else "missing columns"
        raise InputError(f"--prices {path}: {what}; expected {_FORMS}")
    full = any(c in header for c in OFFER_COLUMNS)
    if full and not all(c in header for c in OFFER_COLUMNS):
        missing = ", ".join(c for c in OFFER_COLUMNS if c not in header)
        raise InputError(f"--prices {path}: offers need columns provider, kind and as_of (missing {missing}), "
                         f"or give only gpu,usd_per_gpu_hour")
    today = today or date.today()
    plain: dict[str, float] = {}
    offers: list[Price] = []
    seen: dict[tuple, int] = {}
    for i, r in enumerate(reader, start=2):
        where = f"--prices {path} row {i}"
        if None in r:
            raise InputError(f"{where}: more fields than the header's {len(header)}")
        r = {k: (v or "").strip() for k, v in r.items()}
        if not any(r.values()):
            continue                                   # a blank line
        try:
            name = gpu(r["gpu"]).name
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
        usd = _positive_price(r["usd_per_gpu_hour"], where)
        if not full:
            key = (name,)
        else:
            kind, provider, as_of = r["kind"].lower(), r["provider"].lower(), r["as_of"]
            if kind not in PRICE_KINDS:
                raise InputError(f"{where}: kind {r['kind'][:30]!r} is not one of {', '.join(PRICE_KINDS)}")
            if not provider:
                raise InputError(f"{where}: provider is empty (name who sells at this price)")
            _check_as_of(as_of, where, today)
            key = (name, provider, kind, as_of)
            offers.append(Price(name, provider, kind, usd, as_of, r.get("source", "") or str(path), r.get("note", "")))
        if key in seen:
            raise InputError(f"{where}: {' '.join(key)} is listed already (row {seen[key]}); keep one row")
        seen[key] = i
        plain[name] = usd
    if not seen:
        raise InputError(f"--prices {path}: no price rows; expected {_FORMS}")
    if not full:
        return plain
    check_reserved(offers, f"--prices {path}")
    return {g: OfferList([p for p in offers if p.gpu == g], path.name) for g in dict.fromkeys(p.gpu for p in offers)}


def _check_as_of(as_of: str, where: str, today: date) -> None:
    parts = as_of.split("-")
    try:
        if len(parts) not in (2, 3) or len(parts[0]) != 4:
            raise ValueError
        d = date(int(parts[0]), int(parts[1]), int(parts[2]) if len(parts) == 3 else 1)
    except ValueError:
        raise InputError(f"{where}: as_of {as_of[:30]!r} is not a date; write YYYY-MM or YYYY-MM-DD") from None
    if (d.year, d.month) > (today.year, today.month) or d > today and len(parts) == 3:
        raise InputError(f"{where}: as_of {as_of} is in the future; write the date the price was listed")


def _positive_price(text: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise InputError(f"{where}: price {text[:40]!r} is not a number") from None
    if not (v > 0 and math.isfinite(v)):
        raise InputError(f"{where}: price must be a positive number of USD per GPU-hour, got {text[:40]}")
    return v
