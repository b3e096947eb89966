"""`simulate_schedule`: a plan over time replayed natively (one simulation, carry-over
between windows, the bill following the schedule)."""
import numpy as np
import pytest

from planner.errors import InputError
from planner.plan import Deployment, Policies, Role, Window
from planner.search.schedule import DEFAULT_STARTUP_S, simulate_schedule
from planner.sim import simulate
from planner.sim.scale import DEFAULT_START_LATENCY_S
from traces import Trace


def dep(windows=(), P=1, D=1):
    return Deployment("disaggregated", "llama-2-7b", 512, prefill=Role("a100", P), decode=Role("a100", D),
                      policies=Policies(predictor_accuracy=1.0), windows=tuple(windows))


def test_work_carries_over_the_window_boundary_and_new_instances_start_ahead():
    # r1 arrives 0.1 s before the boundary and decodes 500 tokens across it
    t = Trace(np.array([0.0, 9.9, 12.0]), np.array([200, 300, 100]), np.array([5, 500, 5]), name="t")
    out = simulate_schedule(dep([Window(0.0, 1, 1), Window(10.0, 1, 2)]), t, start_latency_s=2.0)
    rec = out["records"]
    assert len(rec) == 3 and rec.finish_s.notna().all()
    alone = simulate(dep(), Trace(np.array([9.9]), np.array([300]), np.array([500]))).records.iloc[0]
    assert rec.finish_s[1] - rec.arrival_s[1] == pytest.approx(alone.finish_s - alone.arrival_s, rel=1e-12)
    assert rec.decode_instance[2] == 2          # the started instance takes the next request
    assert out["scale"].action.tolist() == ["start", "ready"] and out["scale"].time_s.tolist() == [8.0, 10.0]
    end = rec.finish_s.max()
    assert out["summary"]["billed_instance_s"]["decode"] == pytest.approx(end + end - 8.0)
    assert [w["requests"] for w in out["windows"]] == [2, 1]
    assert out["windows"][1]["instances"] == {"prefill": 1, "decode": 2}


def test_defaults_and_errors():
    assert DEFAULT_STARTUP_S == DEFAULT_START_LATENCY_S == 120.0
    t = Trace(np.array([0.0]), np.array([10]), np.array([2]), name="t")
    with pytest.raises(InputError, match="no windows"):
        simulate_schedule(dep(), t)
