"""`testbed replay` against a scripted OpenAI-compatible server on loopback (Starlette on
uvicorn in a thread): each way a request can go wrong - 429, 5xx, a malformed or cut
stream, an error event, connection refused - is recorded on that request and the run
goes on; --max-duration and Ctrl-C keep every record so far; prompts are sized from the
endpoint's usage counts or a local tokenizer; bad flags exit 2."""
from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

pytest.importorskip("httpx2")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

from starlette.applications import Starlette  # noqa: E402
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from testbed.cli import main as cli  # noqa: E402
from testbed.replay_prompts import PROBES, content_tokens, fit_sizer, probe_text  # noqa: E402
from testbed.serve_tokenizer import ByteTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class Scripted:
    """/v1/completions: probes (not streamed) answer usage = words in the prompt; streamed
    request k behaves as script[k] (wrapping)."""

    def __init__(self):
        self.script, self.streams, self.lock, self.bodies = ["ok"], 0, threading.Lock(), []

    def chunk(self, text, finish=None, **extra):
        obj = {"choices": [{"index": 0, "text": text, "finish_reason": finish}], **extra}
        return "data: " + json.dumps(obj) + "\n\n"

    async def completions(self, request):
        body = await request.json()
        self.bodies.append(body)
        words = len(body["prompt"].split())
        if not body.get("stream"):
            return JSONResponse({"choices": [{"index": 0, "text": "x", "finish_reason": "length"}],
                                 "usage": {"prompt_tokens": words, "completion_tokens": 1}})
        with self.lock:
            kind = self.script[self.streams % len(self.script)]
            self.streams += 1
        n = body["max_tokens"]
        if kind == "429":
            return JSONResponse({"error": {"message": "slow down", "type": "rate_limit_error"}}, status_code=429)
        if kind == "500":
            return PlainTextResponse("Internal Server Error", status_code=500)

        async def gen():
            if kind in ("ok", "slow"):
                for i in range(n):
                    if kind == "slow":
                        await asyncio.sleep(0.3)
                    yield self.chunk("t", "length" if i == n - 1 else None)
                yield self.chunk("", None, usage={"prompt_tokens": words, "completion_tokens": n})
                yield "data: [DONE]\n\n"
            elif kind == "bad_json":
                yield self.chunk("t") + "data: {not json\n\n"
            elif kind == "cut":
                yield self.chunk("t") + self.chunk("t")
            elif kind == "error_event":
                yield self.chunk("t") + 'data: {"error": {"message": "boom in the engine"}}\n\n'
        return StreamingResponse(gen(), media_type="text/event-stream")


@pytest.fixture(scope="module")
def scripted():
    s = Scripted()
    app = Starlette(routes=[Route("/v1/completions", s.completions, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", loop="asyncio"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    s.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    yield s
    server.should_exit = True
    thread.join(10)
    sock.close()


def trace_file(path: Path, rows) -> Path:
    path.write_text("arrival_s,prompt_tokens,output_tokens\n" + "".join(f"{a},{p},{o}\n" for a, p, o in rows))
    return path


def replay(url, trace, out, *extra):
    return CliRunner().invoke(cli, ["replay", "--endpoint", url, "--trace", str(trace), "-o", str(out),
                                    "--model", "m", "--no-progress", *extra])


def test_every_failure_is_recorded_on_its_request_and_the_run_goes_on(scripted, tmp_path):
    scripted.script, scripted.streams = ["ok", "429", "500", "bad_json", "cut", "error_event"], 0
    trace = trace_file(tmp_path / "t.csv", [(i * 0.08, 20 + i, 5) for i in range(6)])
    r = replay(scripted.url, trace, tmp_path / "r.csv", "--extra-body", '{"nvext": {"ignore_eos": true}}')
    assert r.exit_code == 0, r.output
    streamed = [b for b in scripted.bodies[-6:] if b.get("stream")]
    assert len(streamed) == 6 and all(b["nvext"] == {"ignore_eos": True} and b["ignore_eos"] and
                                      b["max_tokens"] == b["min_tokens"] == 5 for b in streamed)
    rec = pd.read_csv(tmp_path / "r.csv", keep_default_na=False)
    assert list(rec["status"]) == ["finished", "http_429", "http_500", "malformed_stream", "malformed_stream",
                                   "stream_error"]
    assert list(rec["http_status"]) == [200, 429, 500, 200, 200, 200]
    assert rec["error"][1] == "slow down" and "not JSON" in rec["error"][3] and "ended without" in rec["error"][4]
    assert rec["error"][5] == "boom in the engine"
    ok = rec.iloc[0]
    assert (ok["prompt_tokens"], ok["output_tokens"]) == (20, 5) and ok["chunk_times_s"].count(";") == 4
    assert pd.to_numeric(rec["finish_s"].iloc[1:], errors="coerce").isna().all()   # failures never finish
    assert "1/6 requests finished" in r.output and "http_429 1" in r.output


def test_connection_refused_is_recorded_not_raised(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                       # nothing listens there now
    trace = trace_file(tmp_path / "t.csv", [(0, 10, 3), (0.05, 10, 3)])
    r = replay(f"http://127.0.0.1:{port}", trace, tmp_path / "r.csv")
    assert r.exit_code == 1 and "no request succeeded" in r.output and "Traceback" not in r.output
    rec = pd.read_csv(tmp_path / "r.csv")
    assert list(rec["status"]) == ["connection_refused"] * 2
    assert "assumed 1 token per unit" in r.output


def test_max_duration_cuts_and_keeps_the_records_so_far(scripted, tmp_path):
    scripted.script, scripted.streams = ["ok", "slow"], 0
    trace = trace_file(tmp_path / "t.csv", [(0, 10, 3), (0.1, 10, 20), (30, 10, 3)])
    r = replay(scripted.url, trace, tmp_path / "r.csv", "--max-duration", "1")
    assert r.exit_code == 0, r.output
    assert "stopped early: --max-duration 1 s reached" in r.output
    rec = pd.read_csv(tmp_path / "r.csv")
    assert list(rec["status"]) == ["finished", "cancelled", "not_sent"]
    assert rec["error"][1] == "--max-duration 1 s reached" and rec["first_token_s"][1] > 0


def test_ctrl_c_keeps_every_record_so_far(scripted, tmp_path):
    scripted.script, scripted.streams = ["slow"], 0
    trace = trace_file(tmp_path / "t.csv", [(0, 10, 30), (0.05, 10, 30), (0.1, 10, 30), (60, 10, 3)])
    out = tmp_path / "r.csv"
    proc = subprocess.Popen([sys.executable, "-c", "from testbed.cli import main; main()", "replay", "--endpoint",
                             scripted.url, "--trace", str(trace), "-o", str(out), "--model", "m"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while scripted.streams < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)                                 # a token or two into each stream
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, output
    assert "stopped early: interrupted (Ctrl-C)" in output and "Traceback" not in output
    rec = pd.read_csv(out)
    assert list(rec["status"]) == ["cancelled"] * 3 + ["not_sent"]
    assert (rec["error"][:3] == "interrupted (Ctrl-C)").all() and (rec["first_token_s"][:3] > 0).all()


def test_prompts_sized_exactly_from_usage_counts_of_a_byte_level_endpoint():
    tok = ByteTokenizer(300)
    counts = [len(tok.encode(probe_text(u, lead))) + 1 for u, lead in PROBES]     # +1: a BOS
    sizer = fit_sizer(counts, seed=3)
    assert "2 tokens per unit, +1 per request" in sizer.how
    assert all(len(tok.encode(sizer.text(i, n))) + 1 == n for i, n in enumerate(range(4, 300, 7)))
    texts = {sizer.text(i, 100) for i in range(20)}
    assert len({t[:40] for t in texts}) == 20                # no shared prefix across requests
    assert "assumed 1 token per unit" in fit_sizer([None, None, None], seed=0, error="HTTP 404").how


def test_prompts_sized_exactly_with_a_local_tokenizer(tmp_path):
    from test_testbed_serve_api import byte_level_bpe
    from testbed.serve_tokenizer import local_tokenizer
    tok = local_tokenizer(str(byte_level_bpe(tmp_path / "tokenizer.json")))
    usage = [content_tokens(tok, probe_text(u, lead)) + 3 for u, lead in PROBES]   # a 3-token template
    sizer = fit_sizer(usage, seed=0, tokenizer=tok, tokenizer_path="tok")
    assert "+3 tokens of overhead" in sizer.how
    for i, n in enumerate((8, 17, 64, 333)):          # (this small BPE has 1-2 tokens a unit)
        assert content_tokens(tok, sizer.text(i, n)) + 3 == n


@pytest.mark.parametrize("flag,value,message", [
    ("--endpoint", "localhost:8000", "http:// or https://"),
    ("--concurrency", "0", "'--concurrency': '0' is out of range"),
    ("--max-duration", "-1", "'--max-duration': '-1' is out of range"),
    ("-o", "no/such/dir/r.csv", "does not exist"),
    ("--trace", "no-such-trace.csv", "no-such-trace.csv"),
    ("--extra-body", "[1, 2]", "must be a JSON object"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path, flag, value, message):
    opts = {"--endpoint": "http://127.0.0.1:9", "--trace": str(trace_file(tmp_path / "t.csv", [(0, 10, 3)])),
            "-o": str(tmp_path / "r.csv"), "--model": "m", flag: value}
    r = CliRunner().invoke(cli, ["replay", *[x for kv in opts.items() for x in kv]])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output


def test_validate_takes_records_measured_elsewhere(tmp_path):
    """`testbed validate --records`: the measured column is what the records say (TTFT 10 ms,
    TPOT 2 ms here); a coupled plan is fine (nothing runs); bad records exit 2."""
    from planner.plan import Deployment, Plan, Role
    plan = tmp_path / "plan.json"
    Plan(Deployment(mode="coupled", model="opt-125m", chunk_tokens=512, coupled=Role("a100-80gb", 1))).write(plan)
    rows = [(i * 0.5, 100, 11) for i in range(6)]
    trace = trace_file(tmp_path / "t.csv", rows)
    rec = pd.DataFrame({"request_id": range(6), "arrival_s": [a for a, _, _ in rows], "prompt_tokens": 100,
                        "output_tokens": 11, "prefill_instance": -1, "decode_instance": -1})
    rec["first_token_s"] = rec["arrival_s"] + 0.010
    rec["finish_s"] = rec["first_token_s"] + 10 * 0.002
    for c in ("prefill_start_s", "kv_done_s", "decode_start_s"):
        rec[c] = float("nan")
    rec["predicted_bucket"] = -1
    rec.to_csv(tmp_path / "r.csv", index=False)
    args = ["validate", "--plan", str(plan), "--trace", str(trace), "--records", str(tmp_path / "r.csv"), "--json"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    table = json.loads(r.output)
    assert table["metrics"]["ttft_s"]["p50"]["measured"] == pytest.approx(0.010)
    assert table["metrics"]["tpot_s"]["p90"]["measured"] == pytest.approx(0.002)
    assert table["finished"] == {"simulated": 6, "measured": 6, "requests": 6}
    assert any("not run here" in n for n in table["notes"])
    rec.head(4).to_csv(tmp_path / "short.csv", index=False)
    r = CliRunner().invoke(cli, args[:-2] + [str(tmp_path / "short.csv")])
    assert r.exit_code == 2 and "has 4 requests but the trace" in r.output
    rec.drop(columns=["finish_s"]).to_csv(tmp_path / "bad.csv", index=False)
    r = CliRunner().invoke(cli, args[:-2] + [str(tmp_path / "bad.csv")])
    assert r.exit_code == 2 and "missing columns finish_s" in r.output
