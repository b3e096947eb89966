"""Decode steps of ragged batches (requests of different contexts): the engine's row-by-row
attention on CPU (`testbed.engine._split_attention`) against padding to the longest
context, and against an equal-context batch of the same total - interleaved in one process
so all three see the same machine load.

    python tests/benchmarks/bench_ragged_decode.py [--batch 2,4,8,16] [--context 128,512]
        [--spread 0.5] [--rounds 5] [--steps 15]

Contexts of a batch: `testbed.profile.batch_contexts` (evenly spaced, coefficient of
variation `--spread`, mean `--context`), plus an "one long" case (one request at 4x the
mean, the others sharing the rest). Per point and round: caches prefilled, two untimed
steps, `steps` timed; a round's figure is the median step; the table shows the median over
rounds.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import testbed.engine as engine_mod  # noqa: E402
from testbed.engine import Engine  # noqa: E402
from testbed.model import build_model  # noqa: E402
from testbed.profile import batch_contexts  # noqa: E402
from bench_decode import step_s  # noqa: E402


def _ints(text):
    return tuple(int(v) for v in text.split(","))


def _step_ms(eng, contexts, steps, gen, split_call_tokens):
    engine_mod.SPLIT_CALL_TOKENS = split_call_tokens
    return step_s(eng, contexts, steps, gen) * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="opt-125m")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=_ints, default=(2, 4, 8, 16))
    ap.add_argument("--context", type=_ints, default=(128, 512))
    ap.add_argument("--spread", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=15)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    eng = Engine(build_model(a.model, layers=a.layers, hidden=a.hidden, seed=0, dtype="fp32", device="cpu"))
    shipped = engine_mod.SPLIT_CALL_TOKENS
    gen = torch.Generator().manual_seed(0)
    print(f"decode ms per step, {eng.config._name_or_path} fp32 on cpu (1 thread); median over {a.rounds} rounds")
    print(f"{'batch':>5} {'ctx':>5} {'case':>9} {'contexts':>22} {'equal':>7} {'padded':>7} {'engine':>7} {'engine/equal':>12}")
    for b in a.batch:
        for c in a.context:
            long_one = [4 * c] + [max(1, (b * c - 4 * c) // (b - 1))] * (b - 1)
            for case, ctx in (("spread", batch_contexts(c, b, a.spread)), ("one long", long_one)):
                if max(ctx) + a.steps + 3 > eng.max_positions:
                    continue
                runs = {"equal": ([sum(ctx) // b] * b, shipped), "padded": (ctx, 10**9), "engine": (ctx, shipped)}
                res = {k: [] for k in runs}
                for r in range(a.rounds):
                    for k in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                        res[k].append(_step_ms(eng, runs[k][0], a.steps, gen, runs[k][1]))
                med = {k: statistics.median(v) for k, v in res.items()}
                shown = f"{min(ctx)}-{max(ctx)} (sum {sum(ctx)})"
                print(f"{b:>5} {c:>5} {case:>9} {shown:>22} {med['equal']:7.2f} {med['padded']:7.2f} "
                      f"{med['engine']:7.2f} {med['engine'] / med['equal']:11.2f}x", flush=True)
    engine_mod.SPLIT_CALL_TOKENS = shipped


if __name__ == "__main__":
    main()
