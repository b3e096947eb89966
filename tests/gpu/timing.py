"""Timers shared by the GPU check scripts in this folder (run from the repository root as
`python tests/gpu/<script>.py`, which puts this folder on the import path)."""
from __future__ import annotations

import statistics
import time


def graph_ms(fn, budget_s: float) -> tuple[float, int]:
    """Median GPU milliseconds of one replay of `fn` captured in a CUDA graph (two warm-up
    calls on a side stream first), and how many replays: at least 3, at most 20, fewer past
    `budget_s` seconds of replays."""
    import torch
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    while len(times) < 3 or (len(times) < 20 and sum(times) / 1e3 < budget_s):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    del graph
    return statistics.median(times), len(times)


def wall_ms(fn, budget_s: float) -> tuple[float, int]:
    """Median wall milliseconds of `fn` after one untimed call (CPU smoke runs), and how many runs."""
    fn()
    times = []
    while len(times) < 3 or (len(times) < 20 and sum(times) / 1e3 < budget_s):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), len(times)
