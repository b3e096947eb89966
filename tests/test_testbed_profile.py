"""The profiler on a tiny model: grid, row semantics, CSV round trip, summary maths, CLI."""
import csv
import json

import numpy as np

import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from planner.catalog import model as catalog_model  # noqa: E402
from planner.errors import InputError  # noqa: E402
from testbed.cli import main  # noqa: E402
from testbed.engine import Engine  # noqa: E402
from testbed.model import build_model, scaled_config  # noqa: E402
from testbed.profile import (COLUMNS, ProfileGrid, ProfileRow, grid_points, profile,  # noqa: E402
                             read_profile_csv, summarize, time_median_s, write_profile_csv)

TINY = dict(prefill_tokens=(8, 16), prefill_context_tokens=(0, 8), prefill_slices=(1, 4),
            decode_batch=(1, 3), decode_context_tokens=(5, 20), kv_tokens=(4, 32), repeats=3, warmup=1, decode_warmup=1,
            prefill_idle_gap_s=0.0)


@pytest.fixture(scope="module")
def engine():
    cfg = scaled_config("opt-125m", layers=2, hidden=64, heads=4, vocab=256, max_context=64)
    return Engine(build_model(cfg, seed=0))


def test_grid_points_respect_positions_slices_and_memory():
    g = ProfileGrid(**{**TINY, "prefill_tokens": (8, 16, 62), "memory_budget_bytes": 250_000})
    pts = grid_points(g, max_positions=64, kv_bytes_per_token=1000)
    pre = {(p.tokens, p.batch, p.context_tokens) for p in pts if p.kind == "prefill"}
    # 62 + 8 cached > 64 positions; 62 tokens do not split into 4 slices; merged only fresh
    assert pre == {(8, 1, 0), (8, 4, 0), (16, 1, 0), (16, 4, 0), (62, 1, 0), (8, 1, 8), (16, 1, 8)}
    dec = {(p.batch, p.context_tokens) for p in pts if p.kind == "decode"}
    # 1 + 3 steps from ctx - 2 end at ctx + 2 tokens; caches + the workspace (64 tokens)
    # + 10%: 1.1 * b * 1000 * (22 + 64) = 283,800 bytes for b=3 at ctx 20 exceeds 250,000
    # (b=3 at ctx 5: 1.1 * 3 * 1000 * (7 + 64) = 234,300 fits)
    assert dec == {(1, 5), (3, 5), (1, 20)}


def test_profile_rows_have_the_shared_meaning(engine):
    rows = profile(engine, ProfileGrid(**TINY), model_name="tiny", device_name="testcpu", progress=False)
    kvb = engine.kv_bytes_per_token
    assert all(r.seconds > 0 and r.repeats == 3 and r.device == "testcpu" and r.model == "tiny" for r in rows)
    pre = [r for r in rows if r.kind == "prefill"]
    assert {(r.tokens, r.batch, r.context_tokens) for r in pre} == {
        (8, 1, 0), (8, 4, 0), (16, 1, 0), (16, 4, 0), (8, 1, 8), (16, 1, 8)}
    assert all(r.bytes == r.tokens * kvb for r in pre)
    dec = [r for r in rows if r.kind == "decode"]
    # context_tokens is the batch's total KV, as PerfModel.decode_time_s takes it: the
    # 1 + 3 consecutive steps start at 5 - 1 - 1 = 3 tokens, so the timed ones hold 4, 5, 6;
    # a batch of 3 holds contexts 2, 5, 8 (spread 0.5), whose first can start no lower than
    # 1 token: 1 + 3 + 6 at the start, + 3 x 2 at the timed steps' mean = 16
    assert {(r.batch, r.tokens, r.context_tokens) for r in dec} == {(1, 1, 5), (3, 3, 16), (1, 1, 20), (3, 3, 60)}
    assert all(r.bytes == r.context_tokens * kvb for r in dec)
    kv = [r for r in rows if r.kind == "kv"]
    assert [(r.tokens, r.bytes, r.path) for r in kv] == [(4, 4 * kvb, "copy"), (32, 32 * kvb, "copy")]


def test_passes_sweep_the_grid_and_pool_their_runs(engine, monkeypatch):
    from testbed import profile as prof
    order = []
    real = prof._measure_kv

    def spy(eng, tokens, path, grid):
        order.append(tokens)
        return real(eng, tokens, path, grid)
    monkeypatch.setattr(prof, "_measure_kv", spy)
    g = ProfileGrid(**{**TINY, "prefill_tokens": (8,), "prefill_context_tokens": (0,), "prefill_slices": (1,),
                       "decode_batch": (1,), "decode_context_tokens": (5,), "passes": 2})
    rows = profile(engine, g, model_name="tiny", progress=False)
    assert order == [4, 32, 4, 32]                    # whole sweeps, not one point twice in a row
    assert [r.repeats for r in rows] == [6, 6, 6, 6]   # 3 repeats x 2 passes per row
    with pytest.raises(InputError, match="passes"):
        ProfileGrid(**{**TINY, "passes": 0})


def test_csv_round_trip(tmp_path):
    rows = [ProfileRow("cpu", "m", "prefill", 16, 1, 0, 100, 0.00125, 5),
            ProfileRow("cpu", "m", "kv", 4, 1, 0, 64, 1.5e-6, 5, "copy")]
    path = write_profile_csv(rows, tmp_path / "p.csv")
    with path.open() as f:
        assert tuple(next(csv.reader(f))) == COLUMNS
    assert read_profile_csv(path) == rows
    (tmp_path / "bad.csv").write_text("device,model\nx,y\n")
    with pytest.raises(InputError, match="row 2"):
        read_profile_csv(tmp_path / "bad.csv")


def test_summary_saturation_and_decode_tables():
    # throughputs 1000, 1800, 3000, 3100 tokens/s: 95% of 3100 is 2945, first reached at 64
    rows = [ProfileRow("d", "m", "prefill", c, 1, 0, 0, c / t, 3)
            for c, t in ((16, 1000), (32, 1800), (64, 3000), (128, 3100))]
    rows.append(ProfileRow("d", "m", "prefill", 64, 1, 512, 0, 1.0, 3))        # cached: not in curve
    rows += [ProfileRow("d", "m", "decode", b, b, b * 100, 0, 0.001 * b, 3) for b in (1, 4)]
    rows.append(ProfileRow("d", "m", "kv", 10, 1, 0, 2_000_000, 0.001, 3, "copy"))
    s = summarize(rows)
    assert s["saturation_chunk_tokens"] == 64
    assert s["prefill_tokens_s"][128] == pytest.approx(3100)
    assert s["decode_ms"] == {100: {1: pytest.approx(1.0), 4: pytest.approx(4.0)}}
    assert s["kv_copy"]["copy"]["gb_s"] == pytest.approx(2.0)


def test_time_median_counts_only_timed_runs():
    calls = []
    t = time_median_s(lambda: calls.append(1), torch.device("cpu"), repeats=3, warmup=2,
                      reset=lambda: calls.append(0))
    assert calls == [0, 1] * 5 and t >= 0


def test_cli_writes_profile_and_config(tmp_path):
    out, cfg = tmp_path / "p.csv", tmp_path / "cfg"
    res = CliRunner().invoke(main, [
        "profile", "--model", "opt-125m", "--layers", "1", "--hidden", "128", "--prefill-tokens", "8,16",
        "--prefill-context", "0", "--prefill-slices", "1", "--decode-batch", "1,2", "--decode-context", "8",
        "--kv-tokens", "8", "--repeats", "1", "--warmup", "0", "--quiet", "--json",
        "-o", str(out), "--config-out", str(cfg)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["model"] == "opt-125m-l1-h128" and summary["rows"] == 7
    rows = read_profile_csv(out)
    assert {r.model for r in rows} == {"opt-125m-l1-h128"}
    # each fresh one-request chunk is also timed after an idle gap (default 0.1 s)
    assert sorted(r.tokens for r in rows if r.path == "idle") == [8, 16]
    spec = catalog_model(str(cfg / "config.json"))
    assert (spec.name, spec.layers, spec.hidden, spec.heads) == ("opt-125m-l1-h128", 1, 128, 2)


@pytest.mark.parametrize("args, message", [
    (["--prefill-tokens", "8,x"], "comma-separated"),
    (["--hidden", "100"], "multiple"),
    (["--model", "llama-2-7b"], "OPT"),
    (["--decode-batch", "0"], ">= 1"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, args, message):
    res = CliRunner().invoke(main, ["profile", "--layers", "1", "-o", str(tmp_path / "p.csv"), *args])
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cli_cuda_without_gpu_is_a_user_error(tmp_path):
    res = CliRunner().invoke(main, ["profile", "--device", "cuda", "-o", str(tmp_path / "p.csv")])
    assert res.exit_code == 2 and "no CUDA device" in res.output


def test_decode_batches_mix_context_lengths_around_the_grid_point():
    from testbed.profile import batch_contexts
    ctx = batch_contexts(200, 4, 0.5)
    assert ctx == [66, 155, 245, 334] and sum(ctx) == 800
    assert np.std(ctx) / np.mean(ctx) == pytest.approx(0.5, abs=0.01)
    assert batch_contexts(200, 4, 0.0) == [200] * 4 and batch_contexts(7, 1, 0.5) == [7]
    assert min(batch_contexts(10, 16, 0.5)) >= 1 and sum(batch_contexts(10, 16, 0.5)) == 160
    with pytest.raises(InputError, match="decode spread"):
        ProfileGrid(**{**TINY, "decode_spread": 0.7})


def test_equal_contexts_profile_as_before(engine):
    rows = profile(engine, ProfileGrid(**{**TINY, "decode_spread": 0.0}), model_name="tiny", progress=False)
    dec = {(r.batch, r.context_tokens) for r in rows if r.kind == "decode"}
    assert dec == {(1, 5), (3, 15), (1, 20), (3, 60)}


def test_idle_prefill_rows_are_timed_after_the_gap(engine, monkeypatch):
    from testbed import profile as prof
    slept = []
    monkeypatch.setattr(prof.time, "sleep", lambda s: slept.append(s))
    g = ProfileGrid(**{**TINY, "prefill_tokens": (8,), "prefill_context_tokens": (0, 8), "prefill_slices": (1, 4),
                       "prefill_idle_gap_s": 0.25})
    rows = profile(engine, g, model_name="tiny", progress=False)
    idle = [r for r in rows if r.kind == "prefill" and r.path == "idle"]
    assert [(r.tokens, r.batch, r.context_tokens) for r in idle] == [(8, 1, 0)]   # one fresh request only
    assert slept == [0.25] * (g.warmup + g.repeats)          # before every run of that point, untimed
    with pytest.raises(InputError, match="idle gap"):
        ProfileGrid(**{**TINY, "prefill_idle_gap_s": -1.0})
