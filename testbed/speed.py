"""The models re-timed at the speed a run showed: every iteration time of a role scaled by
one factor - the run's own measured / model ratio (time-weighted) for that role.

A diagnostic for machines whose speed moves between the profile and the run (a shared VM:
the same decode step took 3.6 ms in one profile and 5.2 ms in the next, 90 s later). With
the level of each role's iteration times taken from the run itself, what is left between
the models and the measurement is the queueing, scheduling and hand-off - the models'
structure - not the calibration's drift. It is not a prediction (it uses the run's
measurements), and validate says so where it prints it.

The scaling is exact: iteration time = max(FLOPs / rate, bytes / bandwidth) + overheads +
offsets (planner/perf/profile.py), so dividing both rates by f and multiplying every overhead, offset and
per-request second by f multiplies every time by f. Each role gets its own copy of its
GPU spec (`<gpu>-x<f>`) so prefill and decode can differ.
"""
from __future__ import annotations

from dataclasses import replace

from planner.errors import InputError

from planner import catalog


def _spec(gpu: str, f: float) -> str:
    g = catalog.gpu(gpu)
    name = f"{g.name}-x{f:.4f}"
    catalog.register_gpu(replace(g, name=name, fp16_tflops=g.fp16_tflops / f, memory_gb_s=g.memory_gb_s / f,
                                 aliases=()))
    return name


def _times(values, f: float) -> tuple:
    return tuple((x, v * f) for x, v in values)


def retimed(dep, prefill_factor: float, decode_factor: float):
    """`dep` (disaggregated) with every prefill iteration `prefill_factor` times as long and
    every decode iteration `decode_factor` times as long; KV transfers unchanged."""
    fp, fd = float(prefill_factor), float(decode_factor)
    e = dep.efficiency
    if e is None:
        raise InputError("re-timing needs a plan calibrated to a testbed profile: "
                         "pass `testbed validate --profile PROFILE.csv`")
    # each role only runs its own kind of iteration, so the shared efficiency scales the
    # prefill terms by fp and the decode terms by fd
    eff = replace(e, prefill_overhead_s=e.prefill_overhead_s * fp, prefill_request_s=e.prefill_request_s * fp,
                  prefill_chunk_offsets_s=_times(e.prefill_chunk_offsets_s, fp),
                  decode_overhead_s=e.decode_overhead_s * fd,
                  decode_batch_offsets_s=_times(e.decode_batch_offsets_s, fd))
    return replace(dep, efficiency=eff, prefill=replace(dep.prefill, gpu=_spec(dep.prefill.gpu, fp)),
                   decode=replace(dep.decode, gpu=_spec(dep.decode.gpu, fd)))
