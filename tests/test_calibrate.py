import numpy as np
import pandas as pd
import pytest

from planner import catalog
from planner.perf.calibrate import calibrate, read_profile
from planner.errors import InputError
from planner.perf.model import PerfModel
from profile_eff import profile_eff

TRUE = profile_eff(compute_eff=0.55, memory_eff=0.65, knee_tokens=90.0, prefill_overhead_s=3e-3,
                  decode_overhead_s=1.5e-3)


def synth_profile(gpu="a100", model="opt-13b", eff=TRUE, noise=0.01, seed=0):
    """A profile as the testbed would write it, timed by a known performance model."""
    pm = PerfModel(catalog.gpu(gpu), catalog.model(model), eff=eff)
    rng = np.random.default_rng(seed)
    rows = []
    for c in (16, 32, 64, 128, 256, 512, 1024, 2048):
        for k in (0, 1024):
            rows.append(("dev", model, "prefill", c, 1, k, 0, pm.prefill_time_s(c, k)))
    for b in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        for per_req in (128, 1024):
            rows.append(("dev", model, "decode", b, b, b * per_req, 0, pm.decode_time_s(b, b * per_req)))
    for nbytes in (1e6, 1e7, 1e8):
        rows.append(("dev", model, "kv", 0, 0, 0, nbytes, 2e-4 + nbytes / 10e9))
    df = pd.DataFrame(rows, columns=["device", "model", "kind", "tokens", "batch", "context_tokens", "bytes", "seconds"])
    df["seconds"] *= 1 + noise * rng.standard_normal(len(df))
    df["repeats"] = 5
    return df


def test_fit_recovers_known_efficiencies(tmp_path):
    path = tmp_path / "profile.csv"
    synth_profile().to_csv(path, index=False)
    cal = calibrate(read_profile(path), "a100", "opt-13b")
    e = cal.efficiency
    assert e.calibrated
    assert e.compute_eff == pytest.approx(0.55, rel=0.05)
    assert e.memory_eff == pytest.approx(0.65, rel=0.05)
    assert e.knee_tokens == pytest.approx(90, rel=0.25)
    assert e.decode_overhead_s == pytest.approx(1.5e-3, rel=0.3)
    assert cal.rms_rel_error["prefill"] < 0.02 and cal.rms_rel_error["decode"] < 0.02
    assert cal.kv_link_gb_s == pytest.approx(10.0, rel=0.05)


def test_fit_without_noise_is_exact():
    cal = calibrate(synth_profile(noise=0.0), "a100", "opt-13b")
    assert cal.efficiency.compute_eff == pytest.approx(0.55, rel=1e-3)
    assert cal.efficiency.memory_eff == pytest.approx(0.65, rel=1e-3)
    assert cal.max_rel_error["decode"] < 1e-3


def test_local_gpu_reports_achieved_rates_as_nominal():
    cal = calibrate(synth_profile(noise=0.0), "local", "opt-13b", memory_gb=80)
    assert cal.gpu.name == "local"
    assert cal.gpu.fp16_tflops == pytest.approx(312 * 0.55, rel=0.01)
    assert cal.gpu.memory_gb_s == pytest.approx(2039 * 0.65, rel=0.01)
    assert cal.efficiency.compute_eff == 1.0 and cal.efficiency.calibrated


def test_profile_errors_are_input_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("device,model,kind\nx,opt-13b,prefill\n")
    with pytest.raises(InputError, match="missing columns"):
        read_profile(bad)
    few = synth_profile().head(3)
    with pytest.raises(InputError, match="at least 3 prefill and 3 decode"):
        calibrate(few, "a100", "opt-13b")


def test_kv_rows_are_fitted_per_copy_path_and_the_host_path_is_both_legs_in_series():
    df = synth_profile(noise=0.0)
    df = df[df["kind"] != "kv"].assign(path="")
    rows = []
    for path, gb_s in (("copy", 1400.0), ("d2h", 50.0), ("h2d", 40.0)):
        for nbytes in (1e6, 1e7, 1e8):
            rows.append(("dev", "opt-13b", "kv", 0, 0, 0, nbytes, 1e-5 + nbytes / (gb_s * 1e9), 5, path))
    df = pd.concat([df, pd.DataFrame(rows, columns=df.columns)], ignore_index=True)
    cal = calibrate(df, "a100", "opt-13b")
    assert {k: round(v["link_gb_s"]) for k, v in cal.kv_paths.items()} == {"copy": 1400, "d2h": 50, "h2d": 40,
                                                                           "host": 22}
    assert cal.kv_path == "host" and cal.kv_link_gb_s == pytest.approx(1 / (1 / 50 + 1 / 40))
    assert cal.kv_latency_s == pytest.approx(2e-5) and cal.rms_rel_error["kv"] < 1e-6
    assert calibrate(df, "a100", "opt-13b", kv_path="copy").kv_link_gb_s == pytest.approx(1400)
    with pytest.raises(InputError, match="no kv rows for path 'nvlink'"):
        calibrate(df, "a100", "opt-13b", kv_path="nvlink")


def test_fit_picks_the_overlapping_overhead_and_the_kv_read_factor_where_the_data_has_them():
    from dataclasses import replace
    eff = replace(TRUE, overhead_overlaps=True, prefill_overhead_s=8e-3, decode_overhead_s=6e-3, kv_traffic=3.0)
    cal = calibrate(synth_profile(eff=eff, noise=0.0), "a100", "opt-13b")
    e = cal.efficiency
    assert e.overhead_overlaps and e.kv_traffic == pytest.approx(3.0, rel=0.02)
    assert cal.max_rel_error["decode"] < 0.01 and cal.max_rel_error["prefill"] < 0.01
    # the additive structure without the factor cannot reach that
    worst = cal.alternative["overhead added to GPU time"]
    assert worst["decode"] > 10 * cal.rms_rel_error["decode"]
    # and a plain profile keeps the simple structure (no spurious sixth parameter)
    plain = calibrate(synth_profile(noise=0.0), "a100", "opt-13b").efficiency
    assert not plain.overhead_overlaps and plain.kv_traffic == pytest.approx(1.0)


def test_piecewise_decode_offsets_follow_a_kernel_switch_the_roofline_cannot():
    """A decode cost that dips at batch 2 and jumps at batch 8, by the same seconds at
    every context (a BLAS library changing GEMM kernels): the joint fit keeps per-batch
    offsets and recovers the steps; a plain roofline profile keeps none."""
    steps_ms = {1: 0.0, 2: -2.0, 4: -1.0, 8: 4.0, 16: 3.0, 32: 2.0, 64: 1.0, 128: 0.5, 256: 0.0}
    df = synth_profile(noise=0.0)
    dec = df["kind"] == "decode"
    df.loc[dec, "seconds"] += df.loc[dec, "batch"].map(steps_ms) * 1e-3
    cal = calibrate(df, "a100", "opt-13b")
    e = cal.efficiency
    assert len(e.decode_batch_offsets_s) == 9 and "piecewise offsets decode by batch" in cal.structure
    got = dict(e.decode_batch_offsets_s)
    shift = got[1.0] - steps_ms[1] * 1e-3               # the overhead may absorb a common part
    for b, ms in steps_ms.items():
        assert got[float(b)] - shift == pytest.approx(ms * 1e-3, abs=2e-4), b
    assert cal.rms_rel_error["decode"] < 0.01
    assert e.compute_eff == pytest.approx(0.55, rel=0.05) and e.memory_eff == pytest.approx(0.65, rel=0.05)
    plain = calibrate(synth_profile(noise=0.01), "a100", "opt-13b")
    assert plain.efficiency.decode_batch_offsets_s == () and plain.efficiency.prefill_chunk_offsets_s == ()


def test_per_request_prefill_seconds_are_fitted_from_merged_chunk_rows():
    """A chunk of 4 requests costs 3 x 1.5 ms more than one request's chunk of the same
    tokens (their classifier passes, attention calls): the fit finds the 1.5 ms, and the
    one-request rows keep their roofline fit."""
    df = synth_profile(noise=0.0)
    merged = df[(df["kind"] == "prefill") & (df["context_tokens"] == 0)].copy()
    merged["batch"] = 4
    merged["seconds"] += 3 * 1.5e-3
    cal = calibrate(pd.concat([df, merged], ignore_index=True), "a100", "opt-13b")
    assert cal.efficiency.prefill_request_s == pytest.approx(1.5e-3, rel=0.02)
    assert cal.max_rel_error["prefill"] < 0.01 and cal.efficiency.compute_eff == pytest.approx(0.55, rel=0.02)
    pm = PerfModel(catalog.gpu("a100"), catalog.model("opt-13b"), eff=cal.efficiency)
    assert pm.prefill_time_s(256, 0, 4) - pm.prefill_time_s(256, 0) == pytest.approx(4.5e-3, rel=0.02)
    # a profile without merged chunks cannot say: no per-request term
    assert calibrate(df, "a100", "opt-13b").efficiency.prefill_request_s == 0.0


def test_idle_prefill_rows_give_the_cold_chunk_factor_and_stay_out_of_the_fit():
    df = synth_profile(noise=0.0)
    df["path"] = ""
    idle = df[(df["kind"] == "prefill") & (df["context_tokens"] == 0)].copy()
    idle["seconds"] *= 1.2
    idle["path"] = "idle"
    cal = calibrate(pd.concat([df, idle], ignore_index=True), "a100", "opt-13b")
    assert cal.efficiency.prefill_idle_factor == pytest.approx(1.2, rel=1e-9)
    assert cal.efficiency.compute_eff == pytest.approx(0.55, rel=1e-3)      # the warm rows alone are fitted
    assert "idle instance x1.20" in cal.structure and cal.rows["prefill"] == 16
    assert calibrate(df, "a100", "opt-13b").efficiency.prefill_idle_factor == 1.0
