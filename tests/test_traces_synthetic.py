"""The generator: reproducible, classes exact, arrivals at the asked rate and burstiness."""
import numpy as np
import pytest

from planner.errors import InputError
from traces.arrivals import RateModulation, arrival_times
from traces.classes import ClassThresholds, class_shares, classify
from traces.synthetic import AZURE_CONV_SHARES, generate


def test_same_seed_same_trace_other_seed_other_trace():
    a = generate("mixed", n_requests=500, rate_per_s=3.0, seed=7)
    b = generate("mixed", n_requests=500, rate_per_s=3.0, seed=7)
    c = generate("mixed", n_requests=500, rate_per_s=3.0, seed=8)
    for x, y in ((a.arrival_s, b.arrival_s), (a.prompt_tokens, b.prompt_tokens), (a.output_tokens, b.output_tokens)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.prompt_tokens, c.prompt_tokens)


@pytest.mark.parametrize("kind,cls", [("lpld", 0), ("lphd", 1), ("hpld", 2), ("hphd", 3)])
def test_class_traces_are_pure_and_fit_the_context(kind, cls):
    t = generate(kind, n_requests=3000, rate_per_s=5.0, seed=1)
    assert np.all(classify(t.prompt_tokens, t.output_tokens) == cls)
    assert np.all(t.prompt_tokens + t.output_tokens <= 2048)
    assert t.prompt_tokens.min() >= 1 and t.output_tokens.min() >= 1


def test_thresholds_are_configurable():
    th = ClassThresholds(light_prompt_tokens=256, light_output_tokens=64)
    t = generate("lpld", n_requests=2000, rate_per_s=5.0, seed=1, thresholds=th)
    assert t.prompt_tokens.max() <= 256 and t.output_tokens.max() <= 64
    t = generate("hphd", n_requests=2000, rate_per_s=5.0, seed=1, thresholds=th, max_total_tokens=4096)
    assert t.prompt_tokens.min() >= 257 and t.output_tokens.min() >= 65 and t.prompt_tokens.max() > 2048


def test_mixed_shares_default_and_custom():
    t = generate("mixed", n_requests=20000, rate_per_s=5.0, seed=2)
    got = class_shares(t.prompt_tokens, t.output_tokens)
    for share, want in zip(got.values(), AZURE_CONV_SHARES):
        assert share == pytest.approx(want, abs=0.015)  # binomial sd ~0.0035
    t = generate("mixed", n_requests=4000, rate_per_s=5.0, seed=2, shares=[1, 0, 0, 1])
    got = class_shares(t.prompt_tokens, t.output_tokens)
    assert got["LPHD"] == got["HPLD"] == 0.0 and got["LPLD"] == pytest.approx(0.5, abs=0.03)


def test_lengths_follow_the_fitted_profile_inside_a_class():
    # LPLD prompts are the azure-conv prompt law restricted to 1..512: its median there.
    from traces.lengths import AZURE_CONV
    d = AZURE_CONV.prompt
    s_lo, s_hi = d.sf(0.0), d.sf(512.0)
    median = float(d.isf(s_hi + 0.5 * (s_lo - s_hi)))
    t = generate("lpld", n_requests=20000, rate_per_s=5.0, seed=3)
    assert np.median(t.prompt_tokens) == pytest.approx(np.ceil(median), abs=6)


@pytest.mark.parametrize("cv", [0.5, 1.0, 2.0, 4.0])
def test_arrivals_rate_and_cv(cv):
    t = arrival_times(4.0, n_requests=40000, cv=cv, seed=1)
    gaps = np.diff(t)
    assert t[0] == 0.0
    assert len(t) / t[-1] == pytest.approx(4.0, rel=0.03 * cv)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)


def test_duration_mode_stays_inside_the_window():
    assert arrival_times(1e-9, duration_s=0.5).tolist() == [0.0]  # the first request opens the trace
    t = arrival_times(5.0, duration_s=1000.0, seed=4)
    assert t.max() < 1000.0 and len(t) == pytest.approx(5000, rel=0.05)
    g = generate("hpld", duration_s=200.0, rate_per_s=2.0, seed=1)
    assert g.arrival_s.max() < 200.0 and 330 < len(g) < 480


def test_diurnal_modulation_shapes_the_rate_keeps_the_mean():
    m = RateModulation("diurnal", period_s=1000.0, amplitude=0.8)
    t = arrival_times(10.0, duration_s=10000.0, seed=5, modulation=m)
    assert len(t) / 10000.0 == pytest.approx(10.0, rel=0.03)
    phase = np.mod(t, 1000.0)
    peak = np.sum((phase > 200) & (phase < 300))   # around sin = 1: rate ~ 10 * 1.8
    trough = np.sum((phase > 700) & (phase < 800))  # around sin = -1: rate ~ 10 * 0.2
    # mean of sin over +-0.05 period around its peak: sin(18 deg) / (pi / 10) = 0.9836
    avg = np.sin(np.pi / 10) / (np.pi / 10)
    assert peak / trough == pytest.approx((1 + 0.8 * avg) / (1 - 0.8 * avg), rel=0.15)


def test_bursts_modulation():
    m = RateModulation("bursts", period_s=100.0, burst_factor=5.0, burst_s=10.0)
    t = arrival_times(2.0, duration_s=20000.0, seed=6, modulation=m)
    in_burst = np.mod(t, 100.0) < 10.0
    # 10 s at 5x and 90 s at 1x: bursts hold 50/140 of the requests; the mean rate stays 2.
    assert in_burst.mean() == pytest.approx(50 / 140, abs=0.02)
    assert len(t) / 20000.0 == pytest.approx(2.0, rel=0.03)


def test_cumulative_intensity_closed_forms_match_numeric_integral():
    for m in (RateModulation("diurnal", 300.0, 0.6), RateModulation("bursts", 120.0, burst_factor=3.0, burst_s=20.0)):
        grid = np.linspace(0.0, 1000.0, 2_000_001)
        numeric = np.concatenate([[0], np.cumsum((m.multiplier(grid[1:]) + m.multiplier(grid[:-1])) / 2 * np.diff(grid))])
        np.testing.assert_allclose(m.cumulative(grid[::100000]), numeric[::100000], atol=0.02)


@pytest.mark.parametrize("kwargs,match", [
    (dict(kind="huge", n_requests=5, rate_per_s=1.0), "unknown trace kind"),
    (dict(kind="mixed", rate_per_s=1.0), "exactly one of"),
    (dict(kind="mixed", n_requests=5, duration_s=5.0, rate_per_s=1.0), "exactly one of"),
    (dict(kind="mixed", n_requests=5, rate_per_s=0.0), "rate must be > 0"),
    (dict(kind="mixed", n_requests=5, rate_per_s=1.0, cv=-1.0), "CV must be >= 0"),
    (dict(kind="mixed", n_requests=5, rate_per_s=1.0, shares=[1, 2]), "four non-negative numbers"),
    (dict(kind="hphd", n_requests=5, rate_per_s=1.0, max_total_tokens=600), "class HPHD cannot fit"),
    (dict(kind="mixed", n_requests=5, rate_per_s=1.0, profile="nope"), "unknown length profile"),
    (dict(kind="mixed", n_requests=0, rate_per_s=1.0), "request count must be >= 1"),
])
def test_bad_generator_arguments(kwargs, match):
    with pytest.raises(InputError, match=match):
        generate(**kwargs)


def test_bad_modulation():
    with pytest.raises(InputError, match="diurnal amplitude"):
        RateModulation("diurnal", amplitude=1.5)
    with pytest.raises(InputError, match="bursts need"):
        RateModulation("bursts", period_s=10.0, burst_s=20.0)
