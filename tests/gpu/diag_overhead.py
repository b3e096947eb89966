"""Where does an engine iteration's time go on this GPU? Per-op launch cost, then a torch
profiler table for one prefill and one decode of a catalog model. Diagnostic, not a test.
Usage: PYTHONPATH=. python3 tests/gpu/diag_overhead.py [opt-1.3b]"""
import statistics
import sys
import time

import torch

from testbed.engine import Engine
from testbed.model import build_model

name = sys.argv[1] if len(sys.argv) > 1 else "opt-1.3b"
x = torch.zeros(1, device="cuda")
for _ in range(100):
    x.add_(1)
torch.cuda.synchronize()
t0 = time.perf_counter()
for _ in range(5000):
    x.add_(1)
t1 = time.perf_counter()
torch.cuda.synchronize()
print(f"launch: {(t1 - t0) / 5000 * 1e6:.1f} us/op on CPU, {(time.perf_counter() - t0) / 5000 * 1e6:.1f} us/op incl. GPU")

eng = Engine(build_model(name, dtype="fp16", device="cuda"))
gen = torch.Generator().manual_seed(0)


def timed(fn, reset, n=30):
    ts = []
    for i in range(n + 5):
        reset()
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        if i >= 5:
            ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3, min(ts) * 1e3


kv = eng.new_kv(2048)
p16 = torch.randint(0, eng.vocab, (16,), generator=gen)
print("prefill 16 ms (median, min): %.2f %.2f" % timed(lambda: eng.prefill([(kv, p16)]), lambda: setattr(kv, "length", 0)))
p512 = torch.randint(0, eng.vocab, (512,), generator=gen)
print("prefill 512 ms: %.2f %.2f" % timed(lambda: eng.prefill([(kv, p512)]), lambda: setattr(kv, "length", 0)))
kv.length = 0
eng.prefill([(kv, p512)])
for b in (1, 64):
    kvs = [eng.new_kv(520) for _ in range(b)]
    for k in kvs:
        k.receive(kv.view())
    items = [(k, 5) for k in kvs]
    print(f"decode B={b} ctx 512 ms: %.2f %.2f" % timed(lambda: eng.decode(items),
                                                       lambda: [setattr(k, "length", 512) for k in kvs]))
kvs = [eng.new_kv(520)]
kvs[0].receive(kv.view())
from torch.profiler import ProfilerActivity, profile  # noqa: E402
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for _ in range(5):
        kvs[0].length = 512
        eng.decode([(kvs[0], 5)])
        torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for _ in range(5):
        kv.length = 0
        eng.prefill([(kv, p16)])
        torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
