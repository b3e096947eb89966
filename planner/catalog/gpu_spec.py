"""`--gpu-spec FILE`: a GPU the catalog does not list, from a YAML or CSV file, without
touching the package's data.

YAML: one mapping (or a list of them); CSV: a header and one GPU per row. Fields:
  name, memory_gb, memory_gb_s, fp16_tflops        required (datasheet numbers)
  fp8_tflops, fp4_tflops                           dense tensor peaks (default 0: none)
  link_gb_s                                        GPU-GPU per direction, GB/s (default 32: PCIe 5 x16)
  network_gbit_s                                   per node (default 100)
  nvlink_domain                                    GPUs sharing NVLink (default 1)
  gemm_knee_tokens                                 default: the catalog GPUs' median
  usd_per_gpu_hour, provider, as_of                its on-demand price (else give --price NAME=USD);
                                                   with provider and as_of (YYYY-MM) it is shown
                                                   with them and flagged when 6 months old
"""
from __future__ import annotations

import csv
import statistics
from pathlib import Path

from planner.catalog import GpuSpec, gpus, register_gpu
from planner.errors import InputError

REQUIRED = ("name", "memory_gb", "memory_gb_s", "fp16_tflops")
DEFAULTS = {"fp8_tflops": 0.0, "fp4_tflops": 0.0, "link_gb_s": 32.0, "network_gbit_s": 100.0, "nvlink_domain": 1}
NUMBERS = ("memory_gb", "memory_gb_s", "fp16_tflops", "fp8_tflops", "fp4_tflops", "link_gb_s", "network_gbit_s",
           "nvlink_domain", "gemm_knee_tokens", "usd_per_gpu_hour")
KNOWN = set(REQUIRED) | set(NUMBERS) | {"vendor", "source", "provider", "as_of", "aliases"}


def _records(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--gpu-spec {path}: cannot read it ({e.__class__.__name__})") from None
    if path.suffix.lower() == ".csv":
        return list(csv.DictReader(text.splitlines()))
    import yaml
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InputError(f"--gpu-spec {path}: not valid YAML ({str(e).splitlines()[0][:120]})") from None
    doc = doc if isinstance(doc, list) else [doc]
    if not all(isinstance(d, dict) for d in doc):
        raise InputError(f"--gpu-spec {path}: expected a mapping of fields (name, memory_gb, ...) or a list of them")
    return doc


def load_gpu_specs(path) -> list[tuple[GpuSpec, dict]]:
    """[(spec, price fields)] for each GPU in the file, registered with the catalog."""
    path = Path(path)
    out = []
    for i, rec in enumerate(_records(path), start=1):
        where = f"--gpu-spec {path} (GPU {i})"
        rec = {str(k).strip(): v for k, v in rec.items() if v not in (None, "")}
        missing = [k for k in REQUIRED if k not in rec]
        unknown = sorted(set(rec) - KNOWN)
        if missing or unknown:
            raise InputError(f"{where}: " + "; ".join(
                ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown field(s) {', '.join(unknown)}"]
                                                                         if unknown else []))
                + f" - fields: {', '.join(sorted(KNOWN))}")
        vals = {**DEFAULTS, **rec}
        for k in NUMBERS:
            if k in vals:
                try:
                    vals[k] = float(vals[k])
                except (TypeError, ValueError):
                    raise InputError(f"{where}: {k} = {str(vals[k])[:40]!r} is not a number") from None
                if vals[k] < 0 or (k in REQUIRED and not vals[k] > 0):
                    raise InputError(f"{where}: {k} must be > 0, got {vals[k]:g}")
        name = str(vals["name"]).strip().lower()
        if name in gpus() and gpus()[name].vendor != "custom":
            raise InputError(f"{where}: {name!r} is in the catalog already; give your GPU another name")
        knee = vals.get("gemm_knee_tokens") or statistics.median(g.gemm_knee_tokens for g in gpus().values()
                                                                 if g.vendor != "custom")
        spec = GpuSpec(name=name, vendor="custom", fp16_tflops=vals["fp16_tflops"], memory_gb=vals["memory_gb"],
                       memory_gb_s=vals["memory_gb_s"], link_gb_s=vals["link_gb_s"],
                       network_gbit_s=vals["network_gbit_s"], gemm_knee_tokens=float(knee),
                       fp8_tflops=vals["fp8_tflops"], fp4_tflops=vals["fp4_tflops"],
                       nvlink_domain=int(vals["nvlink_domain"]), source=str(vals.get("source", f"--gpu-spec {path}")))
        register_gpu(spec)
        price = {k: vals[k] for k in ("usd_per_gpu_hour", "provider", "as_of") if k in vals}
        out.append((spec, price))
    if not out:
        raise InputError(f"--gpu-spec {path}: no GPU in the file")
    return out


def specs_and_prices(files) -> tuple[dict[str, dict], dict[str, float]]:
    """For a command's --gpu-spec files: {name: spec fields} (kept in the plan so the simulator
    and reports know the GPU) and {name: USD per GPU-hour} for those that state a price - an
    on-demand offer (catalog.OfferList: shown with its provider and date, flagged when old)
    where the file names provider and as_of too."""
    from dataclasses import asdict
    from datetime import date

    from planner.catalog import OfferList, Price, _check_as_of
    specs, prices = {}, {}
    for f in files:
        for i, (spec, price) in enumerate(load_gpu_specs(f), start=1):
            specs[spec.name] = asdict(spec)
            where = f"--gpu-spec {f} (GPU {i})"
            offer = [k for k in ("provider", "as_of") if k in price]
            if offer and "usd_per_gpu_hour" not in price:
                raise InputError(f"{where}: {' and '.join(offer)} without usd_per_gpu_hour; add the price")
            if "usd_per_gpu_hour" not in price:
                continue
            if not offer:
                prices[spec.name] = float(price["usd_per_gpu_hour"])
                continue
            if len(offer) == 1:
                raise InputError(f"{where}: give provider and as_of together (who sells at this price, and when)")
            as_of = str(price["as_of"]).strip()
            _check_as_of(as_of, where, date.today())
            prices[spec.name] = OfferList([Price(spec.name, str(price["provider"]).strip().lower(), "on_demand",
                                                 float(price["usd_per_gpu_hour"]), as_of, spec.source)],
                                          Path(f).name)
    return specs, prices
