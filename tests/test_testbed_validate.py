"""`testbed validate` helpers: re-fitting a plan's performance model to a fresh profile
(decision unchanged, KV link on the connector's path), and the validate path importing
without the optimizer's solvers (the GPU machine has no pulp/highspy)."""
import subprocess
import sys

import pandas as pd
import pytest

pytest.importorskip("torch")

from planner import catalog  # noqa: E402
from planner.perf.model import PerfModel  # noqa: E402
from planner.perf.profile import Efficiency  # noqa: E402
from profile_eff import profile_eff  # noqa: E402
from planner.plan import Deployment, Policies, Role  # noqa: E402
from testbed.validate import refit  # noqa: E402

GPU, MODEL = "a100-80gb", "opt-125m"


def synthetic_profile(path, eff):
    """Rows timed by the planner's own model at `eff`; KV: a device copy at 100 GB/s and
    host-staged legs at 50 GB/s each, 10 us latency."""
    pm = PerfModel(catalog.gpu(GPU), catalog.model(MODEL), eff=eff)
    rows = [("prefill", c, 1, k, pm.prefill_time_s(c, k), "") for c in (16, 64, 256, 1024) for k in (0, 512)]
    rows += [("decode", b, b, b * t, pm.decode_time_s(b, b * t), "") for b in (1, 8, 64) for t in (128, 1024)]
    for p, gb_s in (("copy", 100.0), ("d2h", 50.0), ("h2d", 50.0)):
        rows += [("kv", n, 1, 0, 1e-5 + n * 1e6 / (gb_s * 1e9), p) for n in (10, 100, 1000)]
    df = pd.DataFrame(rows, columns=["kind", "tokens", "batch", "context_tokens", "seconds", "path"])
    df["bytes"] = [n * 1_000_000 if k == "kv" else 0 for k, n in zip(df.kind, df.tokens)]
    df["device"], df["model"], df["repeats"] = "test", MODEL, 5
    df.to_csv(path, index=False)
    return pm


def test_refit_keeps_the_decision_and_takes_the_profiles_model(tmp_path):
    truth = Efficiency(compute_eff=0.5, memory_eff=0.4, prefill_overhead_s=3e-3, decode_overhead_s=2e-3)
    pm = synthetic_profile(tmp_path / "p.csv", truth)
    dep = Deployment(mode="disaggregated", model=MODEL, chunk_tokens=512, prefill=Role(GPU, 2),
                     decode=Role(GPU, 3), policies=Policies(decode_admission="greedy"))
    new, note = refit(dep, str(tmp_path / "p.csv"), "shm")
    assert (new.prefill, new.decode, new.chunk_tokens, new.policies) == (dep.prefill, dep.decode, 512, dep.policies)
    assert new.efficiency.calibrated and "re-fitted" in note
    # the plan's own model is the GPU's (kernel tables or fitted roofline); the re-fit takes the profile's, within 5%
    assert dep.efficiency is None and new.perf("decode").source_name.startswith("calibrated profile")
    for c, k in ((64, 0), (1024, 512)):
        assert new.perf("prefill").prefill_time_s(c, k) == pytest.approx(pm.prefill_time_s(c, k), rel=0.05)
    for b, t in ((8, 1024), (64, 65536)):
        assert new.perf("decode").decode_time_s(b, t) == pytest.approx(pm.decode_time_s(b, t), rel=0.05)
    assert new.kv_link_gb_s == pytest.approx(100.0, rel=1e-3)      # shm: a same-host copy
    gloo, _ = refit(dep, str(tmp_path / "p.csv"), "gloo")            # d2h then h2d in series
    assert gloo.kv_link_gb_s == pytest.approx(25.0, rel=1e-3)


def test_validate_path_imports_without_pulp_or_highspy():
    code = ("import sys; sys.modules['pulp'] = None; sys.modules['highspy'] = None\n"
            "import testbed.validate, testbed.run, testbed.cli\n"
            "from planner.analytic.predict import predict; from planner.sim import simulate; from planner.perf.calibrate import calibrate\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_segments_and_iteration_fit_by_hand():
    from testbed.diagnose import iteration_fit, segments
    rec = pd.DataFrame({"arrival_s": [0.0, 1.0], "prefill_start_s": [0.5, 1.0], "first_token_s": [1.5, 2.0],
                        "decode_start_s": [1.7, 2.0], "finish_s": [2.7, 2.0], "output_tokens": [11, 1]})
    s = segments(rec)
    assert s["queue"]["p50"] == pytest.approx(0.25) and s["prefill"]["p90"] == pytest.approx(1.0)
    # hand-off and decode per token over requests with more than one output token only
    assert s["handoff"]["p50"] == pytest.approx(0.2) and s["decode_per_token"]["p50"] == pytest.approx(0.1)
    dep = Deployment(mode="disaggregated", model=MODEL, chunk_tokens=512, prefill=Role(GPU, 1), decode=Role(GPU, 1))
    p, d = dep.perf("prefill"), dep.perf("decode")
    its = [{"worker": "p0", "size": 256, "context_tokens": 0, "seconds": 2 * p.prefill_time_s(256, 0)},
           {"worker": "d0", "size": 4, "context_tokens": 400, "seconds": 3 * d.decode_time_s(4, 400)},
           {"worker": "d0", "size": 4, "context_tokens": 800, "seconds": 3 * d.decode_time_s(4, 800)},
           {"worker": "d0", "size": 1, "context_tokens": 100, "seconds": d.decode_time_s(1, 100)}]
    fit = iteration_fit(its, dep)
    assert fit["prefill"]["p50"] == pytest.approx(2.0) and fit["prefill"]["iterations"] == 1
    assert fit["decode"]["by_size"][4]["ratio"] == pytest.approx(3.0)
    assert fit["decode"]["by_size"][1]["ratio"] == pytest.approx(1.0)
    w = (3 * d.decode_time_s(4, 400) + 3 * d.decode_time_s(4, 800) + d.decode_time_s(1, 100)) / (
        d.decode_time_s(4, 400) + d.decode_time_s(4, 800) + d.decode_time_s(1, 100))
    assert fit["decode"]["time_weighted"] == pytest.approx(w)


@pytest.mark.parametrize("overlaps", [False, True])
def test_retimed_scales_every_iteration_of_a_role_exactly(overlaps):
    from testbed.speed import retimed
    eff = profile_eff(overhead_overlaps=overlaps, prefill_request_s=1e-3, kv_traffic=2.0,
                     decode_batch_offsets_s=((1, 2e-4), (8, 1e-3)), prefill_chunk_offsets_s=((64, 5e-4), (512, 0.0)))
    dep = Deployment(mode="disaggregated", model=MODEL, chunk_tokens=512, prefill=Role(GPU, 1),
                     decode=Role(GPU, 2), efficiency=eff)
    slow = retimed(dep, 1.5, 0.8)
    p, p2 = dep.perf("prefill"), slow.perf("prefill")
    d, d2 = dep.perf("decode"), slow.perf("decode")
    for c, k, r in ((16, 0, 1), (300, 200, 3), (512, 4000, 1), (2048, 0, 2)):
        assert p2.prefill_time_s(c, k, r) == pytest.approx(1.5 * p.prefill_time_s(c, k, r), rel=1e-12)
    for b, t in ((1, 100), (4, 3000), (64, 200_000)):
        assert d2.decode_time_s(b, t) == pytest.approx(0.8 * d.decode_time_s(b, t), rel=1e-12)
    assert slow.decode.instances == 2 and slow.kv_link_gb_s == dep.kv_link_gb_s
    assert d2.kv_capacity_tokens == d.kv_capacity_tokens      # memory untouched


def test_validate_retimes_the_models_at_the_runs_measured_speed():
    """Given the run's iterations, validate re-runs both models with each role's iteration
    times scaled by its measured/model ratio: at ratio 1 the same errors, at 2x the decode a
    slower TPOT."""
    from planner.sim import simulate
    from testbed.run import RunOptions
    from testbed.validate import compare
    from traces.synthetic import generate
    trace = generate("mixed", n_requests=150, rate_per_s=4.0, seed=3)
    dep = Deployment(mode="disaggregated", model=MODEL, chunk_tokens=512, prefill=Role(GPU, 1), decode=Role(GPU, 1),
                     efficiency=profile_eff())
    measured = simulate(dep, trace).records
    p, d = dep.perf("prefill"), dep.perf("decode")

    def its(fd):
        return [{"worker": "p0", "size": 256, "requests": 1, "context_tokens": 0, "seconds": p.prefill_time_s(256, 0)},
                {"worker": "d0", "size": 4, "context_tokens": 800, "seconds": fd * d.decode_time_s(4, 800)}]
    same = compare(None, trace, RunOptions(), measured, dep=dep, iterations=its(1.0))
    assert same["retimed"]["factors"] == pytest.approx({"prefill": 1.0, "decode": 1.0})
    assert same["retimed"]["metrics"] == same["metrics"]
    slow = compare(None, trace, RunOptions(), measured, dep=dep, iterations=its(2.0))
    assert slow["retimed"]["factors"]["decode"] == pytest.approx(2.0)
    tpot = slow["retimed"]["metrics"]["tpot_s"]["p50"]
    assert tpot["simulated"] > 1.8 * slow["metrics"]["tpot_s"]["p50"]["simulated"]


def test_iteration_fit_charges_the_idle_factor_to_chunks_after_a_pause():
    from testbed.diagnose import iteration_fit
    dep = Deployment(mode="disaggregated", model=MODEL, chunk_tokens=512, prefill=Role(GPU, 1), decode=Role(GPU, 1),
                     efficiency=profile_eff(prefill_idle_factor=1.5))
    t = dep.perf("prefill").prefill_time_s(256, 0)            # the back-to-back (warm) time
    # chunk 1 starts the idle worker (cold: 1.5 t), chunk 2 follows at once (t), chunk 3 after 1 s (1.5 t)
    its = [{"worker": "p0", "size": 256, "requests": 1, "context_tokens": 0, "start_s": 0.0, "seconds": 1.5 * t},
           {"worker": "p0", "size": 256, "requests": 1, "context_tokens": 0, "start_s": 1.5 * t, "seconds": t},
           {"worker": "p0", "size": 256, "requests": 1, "context_tokens": 0, "start_s": 1.0 + 2.5 * t, "seconds": 1.5 * t}]
    fit = iteration_fit(its, dep)
    assert fit["prefill"]["p50"] == pytest.approx(1.0) and fit["prefill"]["time_weighted"] == pytest.approx(1.0)
