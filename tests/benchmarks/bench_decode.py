"""Decode iteration time: the engine's decode workspace against the previous per-layer
gather (`Engine(decode_path="gather")`), interleaved in one process so that both see the
same machine load.

    python tests/benchmarks/bench_decode.py [--device cpu|cuda] [--model opt-125m --layers 4
        --hidden 256] [--batch 1,4,8,16] [--context 64,256,1024] [--rounds 6] [--steps 15]

Per (batch, context per request) point and round: fresh caches prefilled to the context,
two untimed steps, then `steps` timed consecutive steps on each path (alternating which
path goes first); a round's figure is the median step; the table shows the median over
rounds (and the spread, min-max) and the speed-up.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from testbed.engine import Engine  # noqa: E402
from testbed.model import build_model  # noqa: E402


def _ints(text):
    return tuple(int(v) for v in text.split(","))


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def step_s(eng, contexts, steps, gen):
    """Median seconds of `steps` consecutive decode steps over fresh caches prefilled to
    `contexts` (one per request), after two untimed steps; the workspace is freed after."""
    kvs = []
    for ctx in contexts:
        kv = eng.new_kv(ctx + steps + 3)
        eng.prefill([(kv, torch.randint(4, eng.vocab, (ctx,), generator=gen))])
        kvs.append(kv)
    items = [(kv, 5) for kv in kvs]
    eng.decode(items)
    eng.decode(items)
    times = []
    for _ in range(steps):
        _sync(eng.device)
        t = time.perf_counter()
        eng.decode(items)
        _sync(eng.device)
        times.append(time.perf_counter() - t)
    eng.reset_decode_workspace()
    return statistics.median(times)


def _round(eng, batch, ctx, steps, gen):
    return step_s(eng, [ctx] * batch, steps, gen)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="opt-125m")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--batch", type=_ints, default=(1, 4, 8, 16))
    ap.add_argument("--context", type=_ints, default=(64, 256, 1024))
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    dtype = a.dtype or ("fp16" if dev.type == "cuda" else "fp32")
    model = build_model(a.model, layers=a.layers, hidden=a.hidden, seed=0, dtype=dtype, device=dev)
    engines = {"gather": Engine(model, decode_path="gather"), "workspace": Engine(model)}
    gen = torch.Generator().manual_seed(0)
    print(f"decode ms per step, {model.config._name_or_path} {dtype} on {a.device} "
          f"({a.threads} thread{'s' if a.threads > 1 else ''}); median over {a.rounds} rounds [min-max]")
    print(f"{'batch':>5} {'ctx':>5} {'gather':>22} {'workspace':>22} {'speed-up':>8}")
    for b in a.batch:
        for c in a.context:
            res = {k: [] for k in engines}
            for r in range(a.rounds):
                for k in (list(engines) if r % 2 == 0 else list(engines)[::-1]):
                    res[k].append(_round(engines[k], b, c, a.steps, gen) * 1e3)
            med = {k: statistics.median(v) for k, v in res.items()}
            cell = {k: f"{med[k]:7.2f} [{min(v):.2f}-{max(v):.2f}]" for k, v in res.items()}
            print(f"{b:>5} {c:>5} {cell['gather']:>22} {cell['workspace']:>22} {med['gather'] / med['workspace']:7.2f}x",
                  flush=True)


if __name__ == "__main__":
    main()
