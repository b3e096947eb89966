"""Decode before/after: `python tests/gpu/summarize_decode.py BEFORE.csv AFTER.csv` prints
ms per decode iteration on both profiles (same model; points by batch and context per
request), the speed-up, and the effective bandwidth of AFTER: (weights + KV bytes read) /
seconds against the GPU's datasheet (catalog `h100-sxm` unless the device name says
otherwise)."""
import sys

import pandas as pd

from planner import catalog
from planner.perf.model import PerfModel


def decode_rows(path):
    df = pd.read_csv(path)
    d = df[df["kind"] == "decode"].copy()
    d["ctx"] = (d["context_tokens"] / d["batch"]).round().astype(int)
    return d.set_index(["batch", "ctx"]), str(df["model"].iloc[0]), str(df["device"].iloc[0])


def main(before_path, after_path):
    before, model, _ = decode_rows(before_path)
    after, _, device = decode_rows(after_path)
    gpu = catalog.gpu("h200" if "H200" in device else "h100-sxm")
    try:
        weights = PerfModel(gpu, catalog.model(model)).weight_bytes
    except Exception:   # noqa: BLE001 - a scaled model the catalog does not know: no bandwidth column
        weights = None
    print(f"decode, {model} on {device}: ms per iteration, before (gather) / after (workspace)")
    print(f"{'batch':>5} {'ctx':>5} {'before':>8} {'after':>8} {'speed-up':>8} {'after TB/s':>10}")
    for key in sorted(set(before.index) | set(after.index)):
        b = before["seconds"].get(key)
        a = after["seconds"].get(key)
        tbs = (weights + after["bytes"][key]) / a / 1e12 if a is not None and weights is not None else None

        def ms(v):
            return "-" if v is None else f"{v * 1e3:8.2f}"
        sp = f"{b / a:7.2f}x" if a is not None and b is not None else "-"
        print(f"{key[0]:>5} {key[1]:>5} {ms(b):>8} {ms(a):>8} {sp:>8} {'-' if tbs is None else f'{tbs:10.2f}':>10}")
    if weights is not None:
        print(f"datasheet {gpu.memory_gb_s / 1e3:.2f} TB/s; weights {weights / 1e9:.2f} GB")


if __name__ == "__main__":
    main(*sys.argv[1:3])
