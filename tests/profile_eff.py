"""A calibrated-profile Efficiency for tests of the profile source (planner.perf.profile):
the figures of a typical fit, with any field overridden."""
from planner.perf.profile import Efficiency

EXAMPLE = dict(compute_eff=0.70, memory_eff=0.80, prefill_overhead_s=2.0e-3, decode_overhead_s=1.0e-3)


def profile_eff(**overrides) -> Efficiency:
    return Efficiency(**{**EXAMPLE, **overrides})
