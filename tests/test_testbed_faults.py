"""Faults in the middle of a testbed run: a prefill or a decode worker killed (SIGKILL),
terminated (SIGTERM) or stalled (SIGSTOP), Ctrl-C, the launcher itself terminated or
killed, and a KV transfer corrupted on the way. Every run must end within a bound with a
message that says what happened, keep the records of the requests that finished, mark
the others (never drop them), and leave no process and no shared-memory file behind."""
from __future__ import annotations

import _thread
import glob
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from planner.plan import Plan  # noqa: E402
from planner.records import FAILED, FINISHED, NOT_SENT, RECORD_COLUMNS, STATUS_COLUMN  # noqa: E402
from test_testbed_run import MODEL, deployment, small_trace  # noqa: E402
from testbed.kv.shm import shm_dir  # noqa: E402

pytestmark = pytest.mark.slow
FAULT_AT_S = 1.5          # into the replay
HEARTBEAT_S = 2.0
BOUND_S = 20.0            # fault to end of run, start-up excluded


def gone(pids) -> bool:
    for pid in pids:
        try:
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            pass
    return True


def shm_files(prefix: str) -> list[str]:
    return glob.glob(os.path.join(shm_dir(), glob.escape(prefix) + "*"))


def check_marked(rec: pd.DataFrame, n: int) -> np.ndarray:
    """Every request has a row and a status; finished rows are whole, the rest are marked."""
    assert len(rec) == n and list(rec["request_id"]) == list(range(n))
    done = np.isfinite(rec["finish_s"].to_numpy(dtype=float))
    assert (rec[STATUS_COLUMN] == FINISHED).to_numpy().tolist() == done.tolist()
    assert set(rec.loc[~done, STATUS_COLUMN]) <= {FAILED, NOT_SENT}
    for c in ("arrival_s", "prefill_start_s", "first_token_s", "kv_done_s", "decode_start_s"):
        assert np.isfinite(rec.loc[done, c].to_numpy(dtype=float)).all(), c
    return done


# each role killed, SIGTERM and a stall on one role each (the same paths serve the other: the
# launcher sees an exit code, or silence past the heartbeat timeout); Ctrl-C and SIGTERM to
# the launcher: test_launcher_terminated_or_killed_mid_run and test_ctrl_c_and_sigterm_set_the_stop_flag
@pytest.mark.parametrize("victim, fault", [("d0", "kill"), ("p0", "kill"), ("p0", "term"), ("d0", "stall")])
def test_worker_fault_stops_run_with_records_and_nothing_left(victim, fault):
    from testbed.run import RunFailed, RunOptions, run_trace
    trace = small_trace(400, seed=3, span_s=8.0)
    seen = {}

    def inject(cluster):
        seen["pids"], seen["prefix"] = cluster.local_pids(), cluster.shm_prefix
        pid = cluster.workers[victim].proc.pid

        def later():
            seen["at"] = time.monotonic()
            os.kill(pid, {"kill": signal.SIGKILL, "term": signal.SIGTERM, "stall": signal.SIGSTOP}[fault])
        threading.Timer(FAULT_AT_S, later).start()

    with pytest.raises(RunFailed) as err:
        run_trace(deployment(), trace, RunOptions(**MODEL, heartbeat_timeout_s=HEARTBEAT_S), progress=False,
                  on_start=inject)
    assert time.monotonic() - seen["at"] < BOUND_S
    msg = str(err.value)
    want = {"kill": f"worker {victim}", "term": f"worker {victim}", "stall": "hung"}[fault]
    assert want in msg and "stopped after" in msg, msg
    done = check_marked(err.value.result.records, len(trace))
    assert 0 < done.sum() < len(trace)
    assert gone(seen["pids"]) and shm_files(seen["prefix"]) == []


def test_ctrl_c_and_sigterm_set_the_stop_flag_and_restore_the_handlers():
    """What the replay loop checks: a signal sets a flag (no exception in the middle of the
    run); after restore() the previous handlers are back."""
    from testbed.run_stop import StopSignals
    before = signal.getsignal(signal.SIGTERM)
    stop = StopSignals()
    try:
        _thread.interrupt_main()          # what Ctrl-C does to the launcher
        time.sleep(0.01)
        assert stop.pressed == "Ctrl-C"
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert stop.pressed == "SIGTERM"
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGTERM) is before


def test_corrupted_kv_transfer_is_detected_not_decoded(monkeypatch):
    from testbed.run import RunFailed, RunOptions, run_trace
    monkeypatch.setenv("TESTBED_FAULTS", "corrupt_kv=5")   # p0 flips a byte of request 5's KV after its checksum
    trace = small_trace(12, seed=4, span_s=0.5)
    seen = {}

    def inject(cluster):
        seen["pids"], seen["prefix"] = cluster.local_pids(), cluster.shm_prefix
    with pytest.raises(RunFailed) as err:
        run_trace(deployment(), trace, RunOptions(**MODEL, return_tokens=True), progress=False, on_start=inject)
    msg = str(err.value)
    assert "request 5" in msg and "corrupted" in msg and "not decoded" in msg, msg
    rec = err.value.result.records
    done = check_marked(rec, len(trace))
    assert not done[5] and rec[STATUS_COLUMN][5] == FAILED
    assert 5 not in err.value.result.tokens
    assert gone(seen["pids"]) and shm_files(seen["prefix"]) == []


def _children(pid: int) -> list[int]:
    out = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = open(stat).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.split("/")[2]))
    return out


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_launcher_terminated_or_killed_mid_run(tmp_path, sig):
    """`testbed run -o records.csv` as a user runs it, the launcher signalled once some
    requests have finished. SIGTERM: it stops in order (exit 1, every request in the records
    with its status). SIGKILL: its workers leave on their own (parent-death signal), free
    their shared memory, and the finished requests' records are in records.csv.partial."""
    plan, tr, out = tmp_path / "plan.json", tmp_path / "t.csv", tmp_path / "records.csv"
    Plan(deployment()).write(plan)
    t = small_trace(400, seed=5, span_s=8.0)
    pd.DataFrame({"arrival_s": t.arrival_s, "prompt_tokens": t.prompt_tokens,
                  "output_tokens": t.output_tokens}).to_csv(tr, index=False)
    cmd = [os.path.join(os.path.dirname(sys.executable), "testbed"), "run", "--plan", str(plan), "--trace", str(tr), "-o", str(out),
           "--layers", str(MODEL["layers"]), "--hidden", str(MODEL["hidden"]), "--classifier-hidden", "64",
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = tmp_path / "records.csv.partial"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) > 5:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    workers = _children(proc.pid)
    assert len(workers) == 2
    os.kill(proc.pid, getattr(signal, sig))
    at = time.monotonic()
    _, err = proc.communicate(timeout=BOUND_S)
    while not gone(workers) and time.monotonic() - at < BOUND_S:
        time.sleep(0.1)
    assert gone(workers), f"workers {workers} outlived the launcher"
    assert shm_files(f"tb-{proc.pid}-") == []
    if sig == "SIGTERM":
        assert proc.returncode == 1 and "interrupted (SIGTERM)" in err and "Traceback" not in err, err
        rec = pd.read_csv(out)
        assert list(rec.columns) == list(RECORD_COLUMNS) + [STATUS_COLUMN]
        done = check_marked(rec, len(t))
        assert 0 < done.sum() < len(t)
        assert not journal.exists()
    else:
        assert proc.returncode == -signal.SIGKILL and not out.exists()
        rec = pd.read_csv(journal)
        assert len(rec) >= 5 and (rec[STATUS_COLUMN] == FINISHED).all()
        assert np.isfinite(rec["finish_s"].to_numpy(dtype=float)).all()
        assert rec["request_id"].is_unique
