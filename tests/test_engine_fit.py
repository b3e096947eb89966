"""planner.engines.fit: the engines' CPU, eager-launch and front-end times fitted to
measured benchmark rows (here rows made by the model itself with known times)."""
import numpy as np
import pandas as pd
import pytest

from planner.bench.run import predict_frame
from planner.engines import fit

# SGLang: its prompt steps run eagerly (vLLM's short ones replay piecewise graphs, no launch floor)
ENGINE, VERSION = "sglang", "0.5.9"
# times on the fit's grids (fit.GRIDS): the coordinate search can land on them exactly
TRUTH = {"cpu_per_step_s": 2e-3, "cpu_per_seq_s": 20e-6, "cpu_per_kernel_s": 30e-6, "frontend_s": 0.030,
         "frontend_chunks_per_s": 0.0}


def _rows() -> pd.DataFrame:
    rows = [{"id": f"r{i}", "model_path": "llama-3.1-8b", "system": "h200_sxm", "backend": ENGINE,
             "backend_version": VERSION, "precision": "bf16", "mode": "agg", "isl": isl, "osl": 64,
             "concurrency": c, "tp_size": 1, "pp_size": 1, "batch_size": c}
            # short prompts at few clients, whose prefill the eager-launch floor sets (the
            # majority: the fit's objective is a median), and long ones
            for i, (isl, c) in enumerate([(128, 1), (256, 1), (192, 1), (256, 2), (128, 4), (128, 2), (4096, 2),
                                            (2048, 16), (512, 48), (8192, 4)])]
    df = pd.DataFrame(rows)
    truth = predict_frame(df, {ENGINE: TRUTH}, client=fit.FIT_CLIENT)
    assert (truth["status"] == "ok").all()
    return df.assign(silicon_ttft_ms=truth["pred_ttft_ms"], silicon_tpot_ms=truth["pred_tpot_ms"])


def test_fit_recovers_the_times_that_made_the_rows():
    rows = _rows()
    got = fit.fit_engine(rows, ENGINE)
    assert got["fit_rows"] == len(rows) and got["fitted_on"] == "h200_sxm"
    assert got["objective"] < 0.06                     # predictions within a few % of the rows
    assert got["frontend_s"] == pytest.approx(TRUTH["frontend_s"], abs=0.015)
    # the eager-launch floor is what sets a short prefill's time here: recovered to ~30%
    assert got["per_kernel_s"] == pytest.approx(TRUTH["cpu_per_kernel_s"], rel=0.3)
    none = fit.objective(rows, ENGINE, (0.0, 0.0, 0.0))
    assert none > 3 * got["objective"]                 # the fit beats no CPU time at all


def test_leaving_a_system_out_drops_its_rows_and_an_engine_without_rows_is_skipped():
    rows = _rows().assign(system="b200_sxm")
    assert fit.fit_all(rows, exclude_system="b200_sxm") == []
    assert fit.fit_engine(rows, "vllm") is None
    assert np.isinf(fit.objective(rows.iloc[0:0], ENGINE, (1.0, 1.0, 1.0)))


def test_aggregated_and_disaggregated_rows_get_their_own_front_end():
    rows = _rows()
    # the same rows as a disaggregated deployment measured with 80 ms more front end: their
    # own line search finds it, the aggregated rows keep theirs
    xpyd = rows.assign(id=rows["id"] + "x", mode="disagg", prefill_num_workers=1, prefill_tp_size=1,
                       decode_num_workers=1, decode_tp_size=1, prefill_batch_size=1,
                       decode_batch_size=rows["concurrency"])
    truth = predict_frame(xpyd, {ENGINE: {**TRUTH, "disagg_frontend_s": 0.110}}, client=fit.FIT_CLIENT)
    assert (truth["status"] == "ok").all()
    xpyd = xpyd.assign(silicon_ttft_ms=truth["pred_ttft_ms"], silicon_tpot_ms=truth["pred_tpot_ms"])
    both = pd.concat([rows, xpyd], ignore_index=True)
    params = tuple(np.array([TRUTH["cpu_per_step_s"], TRUTH["cpu_per_seq_s"], TRUTH["cpu_per_kernel_s"]])
                   / fit.SCALE[:3])
    total, fronts = fit.objective(both, ENGINE, params, with_frontend=True)
    assert fronts["agg"] == pytest.approx(0.030) and fronts["disagg"] == pytest.approx(0.110)
    assert total < 1e-9


def test_each_kind_of_deployment_weighs_alike_in_the_objective(monkeypatch):
    # three dense rows predicted exactly and one xPyD row whose TPOT is off by e^0.4: a
    # median over rows would not see the xPyD row at all; averaged over kinds it counts half
    rows = pd.DataFrame({"model_path": ["llama-3.1-8b"] * 4, "mode": ["agg"] * 3 + ["disagg"],
                         "silicon_tpot_ms": [10.0] * 4, "silicon_ttft_ms": [100.0] * 4})
    pred = rows.assign(status="ok", pred_tpot_ms=[10.0, 10.0, 10.0, 10.0 * np.exp(0.4)], pred_ttft_ms=100.0)
    monkeypatch.setattr(fit, "predict_frame", lambda *a, **k: pred)
    total, fronts = fit.objective(rows, ENGINE, (0.0, 0.0, 0.0), with_frontend=True)
    assert total == pytest.approx(0.2)
    assert fronts == {"agg": 0.0, "disagg": 0.0}
    assert list(fit.kinds(rows.assign(model_path=["llama-3.1-8b", "deepseek-ai/DeepSeek-R1", "llama-3.1-8b",
                                                  "deepseek-ai/DeepSeek-R1"]))) == ["dense", "moe", "dense", "xpyd"]


def test_a_sample_holds_every_kind_of_deployment():
    # 170 dense rows, 10 MoE and 25 xPyD: a sample of 100 keeps all the MoE rows and at
    # least MIN_PER_KIND of each other kind
    n = {"dense": 170, "moe": 10, "xpyd": 25}
    rows = pd.DataFrame({"model_path": ["llama-3.1-8b"] * n["dense"] + ["deepseek-ai/DeepSeek-R1"] * (n["moe"] + n["xpyd"]),
                         "mode": ["agg"] * (n["dense"] + n["moe"]) + ["disagg"] * n["xpyd"],
                         "system": "h200_sxm", "concurrency": np.arange(sum(n.values())) % 64 + 1})
    got = pd.Series(fit.kinds(fit.sample(rows, n=100))).value_counts()
    assert got.sum() == 100 and got["moe"] == n["moe"]
    assert got["xpyd"] >= fit.MIN_PER_KIND and got["dense"] >= fit.MIN_PER_KIND


def test_the_front_ends_streaming_rate_is_found_from_the_rows_it_binds():
    # 8B at 256 clients makes ~10^4 tokens a second: a front end of 2500 chunks a second
    # holds it back (a few clients' first tokens wait behind a few chunks: 0-40 ms)
    busy = pd.DataFrame([{"id": f"b{i}", "model_path": "llama-3.1-8b", "system": "h200_sxm", "backend": ENGINE,
                          "backend_version": VERSION, "precision": "bf16", "mode": "agg", "isl": 512, "osl": osl,
                          "concurrency": 256, "tp_size": 1, "pp_size": 1, "batch_size": 256}
                         for i, osl in enumerate((128, 256))])
    rows = pd.concat([_rows().drop(columns=["silicon_ttft_ms", "silicon_tpot_ms"]), busy], ignore_index=True)
    truth = {**TRUTH, "frontend_chunks_per_s": 2500.0}
    made = predict_frame(rows, {ENGINE: truth}, client=fit.FIT_CLIENT)
    rows = rows.assign(silicon_ttft_ms=made["pred_ttft_ms"] + 0.0, silicon_tpot_ms=made["pred_tpot_ms"])
    params = [TRUTH["cpu_per_step_s"], TRUTH["cpu_per_seq_s"], TRUTH["cpu_per_kernel_s"]] / fit.SCALE[:3]
    at = fit.objective(rows, ENGINE, (*params, 2.5))
    assert at < 1e-9
    assert fit.objective(rows, ENGINE, (*params, 0.0)) > at + 0.05     # no limit misses the busy rows
