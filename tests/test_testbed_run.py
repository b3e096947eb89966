"""Testbed processes: chunk batching, decode admission and routing by hand; end to end,
greedy tokens through prefill worker -> KV transfer -> decode worker equal transformers'
generate(). Faults (workers killed, stalled, the launcher signalled, a corrupted KV
transfer): tests/test_testbed_faults.py."""
from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from planner.plan import Deployment, Plan, Policies, Role  # noqa: E402
from testbed.global_scheduler import GlobalScheduler  # noqa: E402
from testbed.workers.admission import Admission, DecodeItem  # noqa: E402
from testbed.workers.chunks import ChunkScheduler, Slice  # noqa: E402
from traces import Trace  # noqa: E402

MODEL = dict(layers=2, hidden=64, classifier_layers=1, classifier_hidden=64)


# ---- pure scheduling -----------------------------------------------------------------
def test_chunks_are_exactly_chunk_tokens_and_non_preemptive():
    c = ChunkScheduler(chunk_tokens=8, batch_limit=16, order="fcfs")
    for rid, n in ((0, 5), (1, 6), (2, 3)):
        c.add(rid, n)
    assert c.next_chunk() == [Slice(0, 0, 5, True), Slice(1, 0, 3, False)]
    c.add(3, 1)                                   # a later short request does not cut in
    assert c.next_chunk() == [Slice(1, 3, 3, True), Slice(2, 0, 3, True), Slice(3, 0, 1, True)]
    assert c.next_chunk() == [] and c.queued_tokens == 0


@pytest.mark.parametrize("order,chunks", [
    ("sjf", [[(2, 2), (0, 4)], [(1, 7)], [(1, 2)]]),
    ("ljf", [[(1, 7)], [(1, 2), (0, 4)], [(2, 2)]]),
    ("fcfs", [[(0, 4), (1, 3)], [(1, 6), (2, 1)], [(2, 1)]])])
def test_chunk_order_policies(order, chunks):
    c = ChunkScheduler(chunk_tokens=7, batch_limit=2, order=order)
    for rid, n in ((0, 4), (1, 9), (2, 2)):
        c.add(rid, n)
    got = [[(s.rid, s.tokens) for s in c.next_chunk()] for _ in range(3)]
    assert got == chunks                   # at most 2 requests and exactly 7 tokens while work lasts


def test_batch_limit_caps_requests_per_chunk():
    c = ChunkScheduler(chunk_tokens=100, batch_limit=3)
    for rid in range(5):
        c.add(rid, 2)
    assert [s.rid for s in c.next_chunk()] == [0, 1, 2]
    assert [s.rid for s in c.next_chunk()] == [3, 4]


def test_admission_policies_by_hand():
    # capacity 64 tokens = 4 blocks of 16; each request holds 20 tokens now (2 blocks)
    def items():
        return [DecodeItem(0, 20, predicted_tokens=0), DecodeItem(1, 20, predicted_tokens=40)]
    assert Admission("greedy", 64).admit([], items()) == 2            # 2 + 2 blocks fit
    # static: reservations ceil(max(20+0, 21)/16)=2 and ceil(60/16)=4 -> 6 > 4 blocks
    assert Admission("reserve_static", 64).admit([], items()) == 1
    # dynamic: the shortest predicted job's 2 blocks count as freed: 6 - 2 <= 4
    assert Admission("reserve_dynamic", 64).admit([], items()) == 2
    a = Admission("greedy", 64)
    run = [DecodeItem(0, 31, 0), DecodeItem(1, 31, 0), DecodeItem(2, 20, 0)]   # 2 + 2 + 2 blocks
    assert a.overflow(run) == 1                                      # the last admitted leaves
    assert a.overflow(run[:1]) == 0


def test_global_scheduler_least_loaded_prefill_and_room():
    g = GlobalScheduler(2, 2, dispatcher="least_loaded", decode_capacity_tokens=1000)
    assert [g.route(0, 100), g.route(1, 10), g.route(2, 10)] == [0, 1, 1]
    g.prefilled(0)
    assert g.route(3, 5) == 0
    assert g.dispatch(0, 100, 200) == 0 and g.dispatch(1, 10, 0) == 1 and g.dispatch(2, 10, 0) == 1
    g.finished(0)
    assert g.dispatch(3, 5, 0) == 0


# ---- processes -----------------------------------------------------------------------
def deployment(n_p=1, n_d=1, chunk=16, admission="reserve_dynamic", order="fcfs"):
    return Deployment(mode="disaggregated", model="opt-125m", chunk_tokens=chunk,
                      prefill=Role("a100-80gb", n_p), decode=Role("a100-80gb", n_d),
                      policies=Policies(decode_admission=admission, prefill_order=order))


def small_trace(n, seed, span_s=1.0, prompt=(3, 40), output=(1, 12)):
    rng = np.random.default_rng(seed)
    return Trace(np.sort(rng.uniform(0, span_s, n)), rng.integers(*prompt, n), rng.integers(*output, n))


def reference_tokens(trace, seed=0):
    """transformers' generate() on the same seeded weights and prompt ids."""
    from testbed.model import build_model
    from testbed.workers.tokens import prompt_ids
    model = build_model("opt-125m", layers=MODEL["layers"], hidden=MODEL["hidden"], seed=seed)
    out = {}
    for rid, (p, n) in enumerate(zip(trace.prompt_tokens, trace.output_tokens)):
        ids = prompt_ids(seed, rid, int(p), model.config.vocab_size)
        gen = model.generate(ids[None], max_new_tokens=int(n), min_new_tokens=int(n), do_sample=False,
                             eos_token_id=None, pad_token_id=1)
        out[rid] = gen[0, int(p):].tolist()
    return out


def test_prefill_worker_waits_for_dispatch_before_next_chunk(monkeypatch):
    """A chunk that finishes a request is followed by the scheduler's send_kv before the
    next chunk runs (the KV leaves when its prefill ends); a missing answer holds the
    worker for at most DISPATCH_WAIT_S. In-process, reference connector at both ends."""
    from testbed.engine import Engine
    from testbed.kv.reference import ReferenceConnector
    from testbed.model import build_model, scaled_config
    from testbed.workers import prefill as prefill_mod
    from testbed.workers.decode import DecodeWorker
    from testbed.workers.prefill import PrefillWorker

    eng = Engine(build_model(scaled_config("opt-125m", layers=1, hidden=64, vocab=256, max_context=64), seed=0))
    mail: list = []
    src = ReferenceConnector("p0", lambda dst, m: mail.append(m))
    dst = ReferenceConnector("d0", None)
    out_p, out_d = [], []
    pw = PrefillWorker("p0", eng, src, out_p.append, chunk_tokens=8, order="fcfs")
    dw = DecodeWorker("d0", eng, dst, out_d.append, capacity_tokens=256)
    pw.on_request({"rid": 0, "prompt_tokens": 8})
    pw.on_request({"rid": 1, "prompt_tokens": 8})
    assert pw.step()                                   # chunk 1: request 0, done
    done = [e for e in out_p[-1]["items"] if e["kind"] == "prefilled"]
    assert [e["rid"] for e in done] == [0] and pw.awaiting == {0}
    assert not pw.step() and len(pw.chunks) == 1       # request 1 waits for the dispatch answer
    dw.on_expect({"xfer": 0, "src": "p0", "shape": done[0]["shape"], "dtype": done[0]["dtype"], "rid": 0,
                  "prompt_tokens": 8, "output_tokens": 3, "first_token": done[0]["first_token"]})
    pw.on_send_kv({"rid": 0, "xfer": 0, "dst": "d0"})
    assert pw.awaiting == set() and len(mail) == 1    # the KV left before the next chunk
    assert pw.step() and pw.awaiting == {1}            # chunk 2: request 1
    dst.on_message(mail[0])
    assert dw.step() and [e["kind"] for e in out_d[-1]["items"]] == ["kv_done", "decode_start"]
    monkeypatch.setattr(prefill_mod, "DISPATCH_WAIT_S", 0.0)   # no answer: go on after the wait
    pw.on_request({"rid": 2, "prompt_tokens": 8})
    assert pw.step() and pw.awaiting == {1, 2}


def check_records(rec, trace):
    assert list(rec["prompt_tokens"]) == list(trace.prompt_tokens)
    for a, b in (("arrival_s", "prefill_start_s"), ("prefill_start_s", "first_token_s"),
                 ("first_token_s", "kv_done_s"), ("kv_done_s", "decode_start_s"), ("decode_start_s", "finish_s")):
        assert (rec[b] >= rec[a] - 1e-3).all(), (a, b)   # 1 ms: clock-offset estimate between processes


def assert_gone(pids):
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.slow
def test_greedy_tokens_through_processes_equal_generate_shm():
    from testbed.run import RunOptions, run_trace
    trace = small_trace(10, seed=1)
    pids = []
    res = run_trace(deployment(1, 2), trace, RunOptions(**MODEL, kv_backend="shm", return_tokens=True,
                                                          arena_bytes=1 << 20),
                    progress=False, on_start=lambda c: pids.extend(c.local_pids()))
    assert res.tokens == reference_tokens(trace)
    rec = res.records
    check_records(rec, trace)
    assert set(rec["decode_instance"]) <= {0, 1} and (rec["prefill_instance"] == 0).all()
    kv_bytes = int((trace.prompt_tokens * 2 * 2 * 64 * 4).sum())      # layers x K,V x hidden x fp32
    assert res.transfers["received"] == {"count": 10, "bytes": kv_bytes, "seconds": pytest.approx(
        res.transfers["received"]["seconds"])}
    assert_gone(pids)


@pytest.mark.slow
def test_gloo_two_prefill_workers_and_preemption_keep_tokens_exact():
    """2 prefill workers over gloo; a decode memory of 64 tokens forces greedy admission to
    preempt and recompute, and the tokens must not change."""
    from testbed.run import RunOptions, run_trace
    trace = small_trace(8, seed=2, span_s=0.001, prompt=(20, 40), output=(8, 16))
    res = run_trace(deployment(2, 1, admission="greedy"), trace,
                    RunOptions(**MODEL, kv_backend="gloo", return_tokens=True, decode_kv_tokens=64),
                    progress=False)
    assert res.tokens == reference_tokens(trace)
    check_records(res.records, trace)
    assert set(res.records["prefill_instance"]) == {0, 1}
    d0 = res.transfers["workers"]["d0"]
    assert d0["transfers"]["received"] == 8 and d0["transfers"]["backend"] == "gloo"
    assert d0["preemptions"] > 0


def test_cli_bad_input_exits_2(tmp_path):
    from testbed.cli import main
    plan = tmp_path / "plan.json"
    Plan(deployment()).write(plan)
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0,3000,10\n")
    r = CliRunner().invoke(main, ["run", "--plan", str(plan), "--trace", str(trace), "--layers", "2",
                                  "--hidden", "64"])
    assert r.exit_code == 2 and "--max-context" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["run", "--plan", str(tmp_path / "none.json"), "--trace", str(trace)])
    assert r.exit_code == 2 and "no such plan file" in r.output
    r = CliRunner().invoke(main, ["run", "--plan", str(plan), "--trace", str(trace), "--time-scale", "0",
                                  "--max-context", "4096", "--layers", "2", "--hidden", "64"])
    assert r.exit_code == 2 and "'--time-scale'" in r.output and "(0, " in r.output
