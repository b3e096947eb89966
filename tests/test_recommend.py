import json

import numpy as np
import pytest
from click.testing import CliRunner

from planner.search.candidates import SLO
from planner.cli import main
from planner.errors import InfeasibleError
from planner.plan import plan_from_dict
from planner.analytic.predict import predict
from planner.search.recommend import recommend
from traces.trace import Trace


def trace(rate=8.0, n=3000, prompt=(200, 1500), output=(50, 400), seed=0):
    rng = np.random.default_rng(seed)
    a = np.cumsum(rng.exponential(1.0 / rate, n))
    return Trace(a - a[0], rng.integers(*prompt, n), rng.integers(*output, n), name="synthetic")


def test_plan_meets_its_slo_and_round_trips():
    tr = trace()
    plan = recommend(tr, gpus=["a100"], slo=SLO(ttft_s=0.5, tpot_s=0.05), runners_up=2)
    p = plan.predictions
    assert p["ttft_s"]["p90"] <= 0.5 and p["tpot_s"]["p90"] <= 0.05 and p["feasible"]
    again = plan_from_dict(json.loads(plan.to_json()))
    assert again.deployment == plan.deployment
    # the prediction in the plan is the queueing model's prediction of its deployment
    assert predict(plan.deployment, tr)["ttft_s"]["p90"] == pytest.approx(p["ttft_s"]["p90"])
    costs = [plan.cost["usd_per_hour"]] + [r["usd_per_hour"] for r in plan.runners_up]
    assert costs == sorted(costs)
    assert plan.cost["usd_per_million_tokens"] > 0 and plan.verdict


def test_disaggregated_mode_forced_and_tighter_ttft_costs_more():
    tr = trace(rate=15)
    loose = recommend(tr, gpus=["a100"], slo=SLO(ttft_s=2.0, tpot_s=0.08), mode="disaggregated", runners_up=0)
    tight = recommend(tr, gpus=["a100"], slo=SLO(ttft_s=0.3, tpot_s=0.08), mode="disaggregated", runners_up=0)
    assert loose.deployment.mode == tight.deployment.mode == "disaggregated"
    assert tight.cost["usd_per_hour"] >= loose.cost["usd_per_hour"]


def test_mix_of_gpus_may_split_roles():
    tr = trace(rate=15)
    plan = recommend(tr, gpus=["h100", "l4"], slo=SLO(ttft_s=1.0, tpot_s=0.1), mode="disaggregated", runners_up=0)
    assert {plan.deployment.prefill.gpu, plan.deployment.decode.gpu} <= {"h100-sxm", "l4"}


def test_infeasible_ttft_says_why_in_numbers():
    with pytest.raises(InfeasibleError, match=r"p90 prompt alone takes \d\.\d+ s"):
        recommend(trace(prompt=(1900, 2000)), gpus=["l4"], slo=SLO(ttft_s=0.02), tps=(2,))


def test_cli_recommend_json_and_exit_codes(tmp_path):
    path = tmp_path / "t.csv"
    tr = trace(n=500)
    path.write_text("arrival_s,prompt_tokens,output_tokens\n" + "".join(
        f"{a:.6f},{p},{o}\n" for a, p, o in zip(tr.arrival_s, tr.prompt_tokens, tr.output_tokens)))
    r = CliRunner().invoke(main, ["recommend", "--trace", str(path), "--json", "-o", str(tmp_path / "plan.json")])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["inputs"]["slo"]["percentile"] == 90 and "verdict" in d
    assert (tmp_path / "plan.json").exists()
    r = CliRunner().invoke(main, ["recommend", "--trace", str(path), "--slo-ttft", "0.001"])
    assert r.exit_code == 3 and "relax --slo-ttft" in r.output
    r = CliRunner().invoke(main, ["recommend", "--trace", str(path), "--gpu", "local"])
    assert r.exit_code == 2 and "--profile" in r.output


def test_cli_recommend_local_from_profile(tmp_path):
    from tests.test_calibrate import synth_profile
    prof = tmp_path / "p.csv"
    synth_profile(noise=0.0).to_csv(prof, index=False)
    path = tmp_path / "t.csv"
    tr = trace(n=300, rate=2)
    path.write_text("arrival_s,prompt_tokens,output_tokens\n" + "".join(
        f"{a:.6f},{p},{o}\n" for a, p, o in zip(tr.arrival_s, tr.prompt_tokens, tr.output_tokens)))
    r = CliRunner().invoke(main, ["recommend", "--trace", str(path), "--gpu", "local", "--profile", str(prof),
                                  "--model", "opt-13b", "--memory-gb", "80", "--price", "local=2.0", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["inputs"]["calibrated"] and d["inputs"]["gpu_specs"]["local"]["fp16_tflops"] == pytest.approx(171.6, rel=0.01)
    r = CliRunner().invoke(main, ["calibrate", str(prof), "--gpu", "a100", "--model", "opt-13b", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["efficiency"]["compute_eff"] == pytest.approx(0.55, rel=1e-3)


def test_equal_cost_plans_rank_by_headroom_and_verdict_says_so():
    from planner.search.optimizer import same_cost
    plan = recommend(trace(rate=12, n=2000), gpus=["a100"], runners_up=3)
    slo = plan.inputs["slo"]

    def head(s):
        p = s["predictions"]
        return max(p["ttft_s"]["p90"] / slo["ttft_s"], p["tpot_s"]["p90"] / slo["tpot_s"])

    me = {"predictions": plan.predictions}
    for r in plan.runners_up:
        assert r["usd_per_hour"] >= plan.cost["usd_per_hour"] * (1 - 1e-6)
        if same_cost(r["usd_per_hour"], plan.cost["usd_per_hour"]):
            assert head(r) >= head(me) - 1e-9
    cmp_ = plan.comparison
    eq = cmp_["equal_budget"]
    assert eq is not None
    assert eq["disaggregated"]["usd_per_hour"] == pytest.approx(eq["coupled"]["usd_per_hour"], rel=1e-6)
    assert eq["usd_per_hour"] == pytest.approx(max(v for v in cmp_["cheapest_usd_per_hour"].values()))
    assert ("same cost" in plan.verdict) == cmp_["tie"]
    assert "at an equal budget" in plan.verdict or cmp_["tie"]
    assert plan_from_dict(json.loads(plan.to_json())).comparison == json.loads(json.dumps(cmp_))


def test_cli_recommend_reads_length_tables_with_trace_options(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "sarathi.csv"
    p, o = rng.integers(100, 1500, 400), rng.integers(20, 300, 400)
    path.write_text("num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n"
                    + "".join(f"{a},{b},{a + b},{a / b:.3f}\n" for a, b in zip(p, o)))
    r = CliRunner().invoke(main, ["recommend", "--trace", str(path)])
    assert r.exit_code == 2 and "--rate" in r.output                 # no arrival times
    args = ["recommend", "--trace", str(path), "--format", "sarathi", "--rate", "4", "--cv", "2", "--json",
            "--runners-up", "0"]
    runs = [json.loads(CliRunner().invoke(main, args + ["--seed", s]).stdout) for s in ("0", "0", "5")]
    t = runs[0]["inputs"]["trace"]
    assert t["requests"] == 400 and t["prompt_tokens"]["mean"] == pytest.approx(p.mean())
    assert t["rate_per_s"] == pytest.approx(4.0, rel=0.25) and t["interarrival_cv"] == pytest.approx(2.0, rel=0.35)
    assert runs[0]["inputs"]["trace"] == runs[1]["inputs"]["trace"]      # the seed draws the arrivals
    assert runs[2]["inputs"]["trace"]["span_s"] != t["span_s"]


def write_trace_csv(path, tr):
    path.write_text("arrival_s,prompt_tokens,output_tokens\n" + "".join(
        f"{a:.6f},{p},{o}\n" for a, p, o in zip(tr.arrival_s, tr.prompt_tokens, tr.output_tokens)))


def test_cli_recommend_verifies_by_default_and_puts_simulated_next_to_predicted(tmp_path):
    """The plan returned was replayed in the simulator: its simulated percentiles are those of
    an independent replay of the whole trace, within the SLO; --verify changes nothing;
    --no-verify says the plan is not checked."""
    from planner.sim import simulate
    path = tmp_path / "t.csv"
    tr = trace(n=400, rate=6)
    write_trace_csv(path, tr)
    args = ["recommend", "--trace", str(path), "--runners-up", "0"]
    r = CliRunner().invoke(main, args + ["--json", "-o", str(tmp_path / "plan.json")])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    v = d["verification"]
    assert v["verified"] and v["trace"]["note"] == "the whole trace (400 requests)" and not v["trace"]["sampled"]
    from traces import read_trace
    sim = simulate(plan_from_dict(d).deployment, read_trace(path), slo_ttft_s=1.0, slo_tpot_s=0.1).summary
    for m in ("ttft_s", "tpot_s", "jct_s"):
        for q in ("p50", "p90", "p99"):
            assert v["plan"][m][q] == pytest.approx(sim[m][q], rel=1e-12)
    assert v["plan"]["meets"] and v["plan"]["ttft_s"]["p90"] <= 1.0 and v["plan"]["tpot_s"]["p90"] <= 0.1
    assert v["plan"]["slo_attainment"] == pytest.approx(sim["slo_attainment"])
    back = plan_from_dict(json.loads((tmp_path / "plan.json").read_text()))
    assert back.verification == json.loads(json.dumps(v)) and back.verdict == d["verdict"]
    again = json.loads(CliRunner().invoke(main, args + ["--json", "--verify"]).stdout)
    assert again["deployment"] == d["deployment"]          # --verify: the default, accepted
    text = CliRunner().invoke(main, args).stdout.splitlines()
    assert text[0].startswith("Rent ") and text[0].endswith("(simulated)")
    assert text[1].startswith("Margin (simulated): holds to ") and text[2].startswith("Verified in simulation on the whole trace")
    assert any("predicted / simulated" in line for line in text)
    r = CliRunner().invoke(main, args + ["--no-verify", "--json"])
    nv = json.loads(r.stdout)
    assert not nv["verification"]["verified"] and "Gaussian" in nv["verification"]["note"]
    text = CliRunner().invoke(main, args + ["--no-verify"]).stdout.splitlines()
    assert text[0].endswith("(predicted)") and text[1].startswith("NOT VERIFIED in simulation (--no-verify)")


def test_cli_recommend_windows_adds_a_schedule(tmp_path):
    import math
    path = tmp_path / "t.csv"
    tr = trace(n=400, rate=6)
    write_trace_csv(path, tr)
    span = float(tr.arrival_s[-1] - tr.arrival_s[0])
    args = ["recommend", "--trace", str(path), "--runners-up", "0", "--windows", "20"]
    r = CliRunner().invoke(main, args + ["--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    wins = d["deployment"]["windows"]
    assert len(wins) == math.ceil(span / 20) and [w["start_s"] for w in wins] == [20.0 * k for k in range(len(wins))]
    role = "coupled" if d["deployment"]["mode"] != "disaggregated" else "decode"
    peak = max(w[f"{role}_instances"] for w in wins)
    assert d["deployment"][role]["instances"] == peak                   # roles sized to the schedule's peak
    sched = d["cost"]["schedule"]
    assert sched["window_s"] == 20.0 and sum(sched["requests"]) == 400
    chosen, static = sched["strategies"][sched["strategy"]], sched["strategies"]["static_peak"]
    assert d["cost"]["usd_per_hour"] == pytest.approx(chosen["usd_per_hour"])
    assert chosen["usd_total"] <= static["usd_total"] * (1 + 1e-9)     # "best": the cheapest dynamic strategy
    assert d["schedule_verification"]["requests"] == 400
    assert plan_from_dict(d).deployment.windows[0].start_s == 0.0
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and "SCHEDULE  20 s windows" in r.output and "strategies: static_peak" in r.output
    r = CliRunner().invoke(main, ["recommend", "--trace", str(path), "--windows", "0"])
    assert r.exit_code == 2 and "--windows" in r.output


def test_terminal_lists_each_deployment_once_marking_runner_up_baselines():
    from planner.cli.plan_render import comparison_rows
    from planner.plan import Plan

    def summary(mode, n, usd, ttft, tpot):
        dep = {"mode": mode, "chunk_tokens": 512, "coupled": {"gpu": "a100-80gb", "instances": n, "tp": 1},
               "prefill": None, "decode": None}
        return {"deployment": dep, "usd_per_hour": usd, "cost": {"usd_per_hour": usd},
                "predictions": {"ttft_s": {"p90": ttft}, "tpot_s": {"p90": tpot}}}

    vllm, sarathi, other = summary("coupled", 2, 3.58, 0.1, 0.02), summary("chunked_coupled", 2, 3.58, 0.2, 0.03), \
        summary("chunked_coupled", 3, 5.37, 0.1, 0.02)
    plan = Plan(deployment=None, runners_up=(vllm, other), baselines=(vllm | {"mode": "coupled"}, sarathi | {"mode": "chunked_coupled"}))
    lines = comparison_rows(plan)
    assert len(lines) == 3                                   # vLLM 2x is listed once, not twice
    assert lines[0].startswith("runner-up") and "2x a100-80gb TP1 (vLLM-style)" in lines[0]
    assert lines[0].endswith("(also the vLLM-style coupled baseline)")
    assert lines[1].startswith("runner-up") and "also" not in lines[1]
    assert lines[2].startswith("baseline") and "Sarathi-style budget 512" in lines[2]


def test_schedule_text_prints_notes_and_says_one_replay(tmp_path):
    """--windows --verify: the schedule's notes (windows no count meets, e.g. the KV transfer
    alone misses TPOT) are printed, and the simulation is described as what it is - one
    replay in which the counts follow Deployment.windows - not "window by window"."""
    from dataclasses import replace
    from planner.search.schedule import plan_over_time
    from planner.cli.verify_render import render_schedule, schedule_verification
    tr = trace(n=300, rate=6)
    plan = plan_over_time(tr, recommend(tr, gpus=["a100"], runners_up=0), 20.0)
    note = "window 1 (20 s): TPOT p90 0.2 s > 0.1 s with unlimited decode instances: the KV transfer ..."
    cost = dict(plan.cost, schedule=dict(plan.cost["schedule"], notes=[note]))
    sim = schedule_verification(plan, tr)
    text = render_schedule(replace(plan, cost=cost), sim)
    assert f"note      {note}" in text
    assert "window by window" not in text and "one replay of the whole trace" in text
    assert f"SLO attainment {sim['slo_attainment']:.1%}" in text
    low = min(w["slo_attainment"] for w in sim["windows"])
    assert f"lowest window SLO attainment {low:.1%}" in text
    assert "note " not in render_schedule(plan)             # no notes, no note lines


def _cli(args):
    """Run `planner recommend`; a traceback (any exception other than the exit) fails."""
    r = CliRunner().invoke(main, ["recommend"] + args)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    return r


def test_sweep_case_azure_conv_l4_disaggregated_plans(shared_traces):
    """Crashed with a TypeError in the optimizer (tests/benchmarks/sweep_recommend.py)."""
    r = _cli(["--trace", str(shared_traces / "azure2023_conv.csv"), "--gpu", "l4", "--mode", "disaggregated",
              "--json", "--no-verify"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["deployment"]["mode"] == "disaggregated"
    for s in [d] + d["runners_up"]:               # every listed pair meets the SLO, KV transfer included
        assert s["predictions"]["tpot_s"]["p90"] <= 0.1 and s["predictions"]["ttft_s"]["p90"] <= 1.0


def test_sweep_cases_odd_inputs_exit_2_or_3_with_what_would_help(tmp_path):
    path = tmp_path / "t.csv"
    write_trace_csv(path, trace(n=300, rate=6))
    r = _cli(["--trace", str(path), "--tp", "3"])
    assert r.exit_code == 2 and "does not divide llama-3.1-8b's 32 attention heads" in r.output and "1, 2, 4, 8" in r.output
    r = _cli(["--trace", str(path), "--max-gpus", "1", "--mode", "disaggregated"])
    import re
    m = re.search(r"takes (\d+) GPUs \(prefill 1x \S+ TP(\d) \+ decode 1x \S+ TP(\d)\) against --max-gpus 1: "
                  r"raise --max-gpus to >= (\d+)", r.output)
    assert r.exit_code == 3 and m, r.output
    assert int(m[1]) == int(m[2]) + int(m[3]) == int(m[4]) >= 2
    r = _cli(["--trace", str(path), "--slo-jct", "0.01"])
    assert r.exit_code == 3 and "p90 JCT target (0.01 s)" in r.output and "the best pair reaches" in r.output
    r = _cli(["--trace", str(path), "--windows", "0.001"])
    assert r.exit_code == 2 and "use --windows >= " in r.output
    r = _cli(["--trace", str(path), "--rate-scale", "1e-6"])
    assert r.exit_code == 2 and "use --window >= " in r.output


def test_sweep_case_one_request_trace_plans_verifies_and_schedules(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens\n0,100,10\n")
    r = _cli(["--trace", str(path), "--windows", "60", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["verification"]["plan"]["requests"] == 1 and d["verification"]["plan"]["unfinished"] == 0
    assert d["schedule_verification"]["requests"] == 1
