"""The model catalog: planner/data/models.csv (hand-entered dense models, OPT to Qwen3-32B)
and the bundled Hugging Face configs in planner/data/model_configs/ (listed with their
source and license in SOURCES.csv), looked up by catalog name, Hugging Face id (any case)
or alias; a config.json file or folder is read and registered under its name.
"""
from __future__ import annotations

import csv
import difflib
from dataclasses import replace
from functools import lru_cache
from importlib import resources
from pathlib import Path

from planner.catalog.hf_config import model_from_hf_config
from planner.catalog.models import ModelSpec
from planner.errors import InputError

# The model a plan is for when none is named: Llama-3.1-8B-Instruct - a current, widely served
# open dense model (GQA, 128k context) whose 16-bit weights fit one 24-80 GB GPU, so the bundled
# traces size to a handful of GPUs as TetriInfer's OPT-13B did (OPT stays the testbed's family).
DEFAULT_MODEL = "llama-3.1-8b"

CONFIG_DIR = ("data", "model_configs")


def _data_text(*parts: str) -> str:
    return resources.files("planner").joinpath(*parts).read_text(encoding="utf-8")


def _aliases(field: str) -> tuple[str, ...]:
    return tuple(a for a in field.split("|") if a)


def _csv_models() -> dict[str, ModelSpec]:
    out = {}
    for r in csv.DictReader(_data_text("data", "models.csv").splitlines()):
        out[r["name"]] = ModelSpec(
            name=r["name"], family=r["family"], layers=int(r["layers"]), hidden=int(r["hidden"]),
            heads=int(r["heads"]), kv_heads=int(r["kv_heads"]), head_dim=int(r["head_dim"]),
            ffn=int(r["ffn"]), vocab=int(r["vocab"]), max_context=int(r["max_context"]),
            mlp=r["mlp"], bias=r["bias"] == "1", tie_embeddings=r["tie_embeddings"] == "1",
            positions=r["positions"], source=r["source"], aliases=_aliases(r["aliases"]))
    return out


@lru_cache(maxsize=None)
def bundled_sources() -> tuple[dict[str, str], ...]:
    """The rows of planner/data/model_configs/SOURCES.csv: file, name, hf_id, aliases,
    source, license, note."""
    return tuple(csv.DictReader(_data_text(*CONFIG_DIR, "SOURCES.csv").splitlines()))


def bundled_spec(row: dict[str, str]) -> ModelSpec:
    """The ModelSpec of one bundled config (read as plain JSON: see planner.catalog.hf_config)."""
    folder = resources.files("planner").joinpath(*CONFIG_DIR)
    with resources.as_file(folder.joinpath(row["file"])) as path:
        quant = Path(str(path).removesuffix(".json") + ".hf_quant_config.json")
        return model_from_hf_config(path, use_transformers=False, name=row["name"],
                                    source=f"{row['hf_id']} config.json", quant_path=quant if quant.is_file() else None)


def _same_shape(a: ModelSpec, b: ModelSpec) -> bool:
    return replace(a, source="", aliases=()) == replace(b, source="", aliases=())


@lru_cache(maxsize=None)
def _builtin_names() -> frozenset[str]:
    return frozenset(_csv_models()) | {r["name"] for r in bundled_sources()}


@lru_cache(maxsize=None)
def models() -> dict[str, ModelSpec]:
    """Catalog name -> ModelSpec. A bundled config of a model models.csv already has (same
    name, or its Hugging Face id among the row's aliases) adds its ids to that row's aliases;
    the shapes agree (tests/test_model_specs.py)."""
    out = _csv_models()
    for row in sorted(bundled_sources(), key=lambda r: r["name"]):
        ids = tuple(a.lower() for a in (row["hf_id"], *_aliases(row["aliases"])))
        spec = bundled_spec(row)
        host = out.get(row["name"]) or next((s for s in out.values() if ids[0] in s.aliases), None)
        if host is not None:
            out[host.name] = replace(host, aliases=host.aliases + tuple(a for a in ids if a not in host.aliases))
        else:
            out[row["name"]] = replace(spec, aliases=ids)
    return out


def is_builtin_model(name: str) -> bool:
    """A catalog model (models.csv or bundled), as opposed to one read from a config.json path."""
    return name in _builtin_names()


def hf_ids() -> dict[str, str]:
    """Lower-case Hugging Face id or alias -> as the bundled catalog writes it."""
    out = {}
    for row in bundled_sources():
        for a in (row["hf_id"], *_aliases(row["aliases"])):
            out[a.lower()] = a
    return out


def model(name_or_path: str) -> ModelSpec:
    """A model by catalog name, Hugging Face id or alias (any case), or any Hugging Face
    `config.json` by path (the file, or a folder holding it; a path that exists wins over a
    catalog name, as in transformers). A model read from a path is registered under its name
    for the rest of the process, so plans that name it resolve (plans also carry its spec:
    see planner.plan)."""
    text = str(name_or_path)
    path = Path(text)
    if path.is_file() or (path.is_dir() and (path / "config.json").is_file()):
        return register_model(model_from_hf_config(path))
    table = models()
    if text in table:
        return table[text]
    key = text.strip().lower()
    for spec in table.values():
        if key == spec.name.lower() or key in spec.aliases:
            return spec
    if path.suffix == ".json" or path.is_dir():
        model_from_hf_config(path)     # raises the reason: no such file, no config.json in the folder
    ids = hf_ids()
    names = sorted({*table, *ids})
    close = [ids.get(c, c) for c in difflib.get_close_matches(key, [n.lower() for n in names], n=3, cutoff=0.5)]
    guess = f"did you mean {', '.join(close)}? " if close else ""
    raise InputError(f"unknown model {text!r}; {guess}see `planner catalog models` for catalog names and "
                     "Hugging Face ids, or pass a config.json file or folder")


def register_model(spec: ModelSpec) -> ModelSpec:
    """Make a model from a config.json known to `model()` by name in this process. A built-in
    name keeps its catalog shape; a config with the same name and another shape is an error."""
    table = models()
    old = table.get(spec.name)
    if old is not None and not _same_shape(old, spec):
        if is_builtin_model(spec.name):
            raise InputError(f"model {spec.name!r} ({spec.source}) differs from the catalog's {spec.name}; "
                             "give its config.json another _name_or_path")
    if old is None or not is_builtin_model(spec.name):
        table[spec.name] = spec
    return table[spec.name]
