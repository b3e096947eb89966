"""Trace statistics on hand-computable traces, and on the real Azure traces."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from planner.cli import main
from traces import Trace
from traces.classes import ClassThresholds
from traces.stats import interarrival_cv, trace_stats, window_rates

T = Trace(np.array([0.0, 1.0, 2.0, 4.0]), np.array([100, 600, 512, 513]), np.array([128, 129, 1, 200]))


def test_rate_cv_lengths_classes_by_hand():
    s = trace_stats(T, window_s=2.0)
    assert s.requests == 4 and s.span_s == 4.0 and s.rate_per_s == 1.0
    # gaps 1, 1, 2: mean 4/3, population std sqrt(2)/3 -> CV = sqrt(2)/4
    assert s.interarrival_cv == pytest.approx(np.sqrt(2) / 4)
    assert s.prompt_tokens.mean == pytest.approx(431.25) and s.prompt_tokens.p50 == 512.5
    assert s.output_tokens.max == 200
    assert s.class_shares == {"LPLD": 0.5, "LPHD": 0.0, "HPLD": 0.0, "HPHD": 0.5}
    assert (s.windows, s.window_rate_mean_per_s, s.window_rate_max_per_s) == (2, 1.0, 1.0)


def test_thresholds_move_the_class_shares():
    s = trace_stats(T, thresholds=ClassThresholds(light_prompt_tokens=600, light_output_tokens=128))
    assert s.class_shares == {"LPLD": 0.5, "LPHD": 0.5, "HPLD": 0.0, "HPHD": 0.0}


def test_window_rates_edges():
    # windows of 1.5 s: [0,1.5) holds 0 and 1, [1.5,3) holds 2, [3,4] (1 s long) holds 4
    np.testing.assert_allclose(window_rates(T.arrival_s, 1.5), [2 / 1.5, 1 / 1.5, 1.0])
    # windows of 3 s: the trailing 1 s window is under half a window: merged -> 4 over 4 s
    np.testing.assert_allclose(window_rates(T.arrival_s, 3.0), [1.0])
    # one request, or all at once: one window of full length
    np.testing.assert_allclose(window_rates(np.array([0.0]), 60.0), [1 / 60])
    np.testing.assert_allclose(window_rates(np.zeros(3), 10.0), [0.3])


def test_degenerate_cv():
    assert interarrival_cv(np.array([0.0])) == 0.0
    assert interarrival_cv(np.array([0.0, 5.0])) == 0.0  # one gap: no spread to measure
    assert interarrival_cv(np.zeros(4)) == 0.0


def stats_json(path, *args):
    r = CliRunner().invoke(main, ["trace", "stats", str(path), "--json", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_azure_conv_matches_published_figures(shared_traces):
    s = stats_json(shared_traces / "azure2023_conv.csv")
    assert s["requests"] == 19366
    assert s["rate_per_s"] == pytest.approx(5.53, abs=0.005)
    assert s["span_s"] == pytest.approx(3502, abs=1)
    assert s["interarrival_cv"] == pytest.approx(1.09, abs=0.01)
    assert s["prompt_tokens"]["mean"] == pytest.approx(1155, abs=1)
    assert [s["prompt_tokens"][k] for k in ("p50", "p99")] == [1020, 4142]
    assert s["output_tokens"]["mean"] == pytest.approx(211, abs=1)
    assert [s["output_tokens"][k] for k in ("p50", "p90", "p99")] == [129, 424, 601]
    shares = [round(100 * s["class_shares"][c]) for c in ("LPLD", "LPHD", "HPLD", "HPHD")]
    assert shares == [29, 11, 21, 39]  # README rounds LPLD's 28.57% down to 28
    assert s["class_shares"]["LPLD"] == pytest.approx(0.28, abs=0.006)
    assert s["dropped"] == {}


def test_azure_code_matches_published_figures(shared_traces):
    s = stats_json(shared_traces / "azure2023_code.csv")
    assert s["requests"] == 8819
    assert s["rate_per_s"] == pytest.approx(2.57, abs=0.005)
    assert s["span_s"] == pytest.approx(3436, abs=1)
    assert s["interarrival_cv"] == pytest.approx(13.2, abs=0.05)
    assert s["prompt_tokens"]["mean"] == pytest.approx(2048, abs=1)
    assert s["output_tokens"]["mean"] == pytest.approx(28, abs=0.5)
    assert round(100 * s["class_shares"]["HPLD"]) == 74
    # bursty: the busiest minute runs at about 4x the mean
    assert s["window_rate_max_per_s"] > 3 * s["rate_per_s"]


def test_length_datasets_with_drawn_arrivals(shared_traces):
    s = stats_json(shared_traces / "sharegpt_v3_lengths_cl100k.csv", "--rate", "3")
    assert s["requests"] == 61223 - 14 and s["dropped"] == {"context_tokens = 0": 7, "response_tokens = 0": 7}
    assert s["prompt_tokens"]["mean"] == pytest.approx(797, abs=1)
    assert s["rate_per_s"] == pytest.approx(3.0, rel=0.02) and s["interarrival_cv"] == pytest.approx(1.0, abs=0.02)
    per_turn = stats_json(shared_traces / "sharegpt_v3_lengths_cl100k.csv", "--rate", "3", "--per-turn")
    assert per_turn["prompt_tokens"]["p50"] == 18 and per_turn["dropped"]["prompt_tokens = 0"] == 128
    for name, prompt_mean, output_mean in (("sarathi_sharegpt8k_lengths.csv", 2340, 439),
                                           ("vidur_arxiv_summarization_lengths.csv", 2588, 291)):
        s = stats_json(shared_traces / name, "--rate", "2", "--cv", "2")
        assert s["prompt_tokens"]["mean"] == pytest.approx(prompt_mean, abs=1)
        assert s["output_tokens"]["mean"] == pytest.approx(output_mean, abs=1)
        assert s["interarrival_cv"] == pytest.approx(2.0, rel=0.05)
