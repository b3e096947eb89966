"""`testbed serve` end to end on loopback: one server (1 prefill + 1 decode process, a
2-layer 64-wide OPT) for the module. A third-party client (the `openai` library) gets
greedy completions equal to transformers' generate() on the same weights, streamed and
not; `testbed replay` records every request of a small trace and `testbed validate
--records` compares them; the openai client's own TTFT/TPOT agree with the replay's
records; overload gets 429; Ctrl-C drains the request in flight and ends every process.
Also the decode worker's end-of-sequence stop, in process."""
from __future__ import annotations

import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx2")
openai = pytest.importorskip("openai")

from planner.plan import Deployment, Plan, Policies, Role  # noqa: E402
from testbed.cli import main as cli  # noqa: E402
from testbed.serve_tokenizer import ByteTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEY = "test-key-123"
NAME = "opt-125m-l2-h64"
MODEL_FLAGS = ["--model", "opt-125m", "--layers", "2", "--hidden", "64", "--classifier-hidden", "64"]
START_TIMEOUT_S = 240
MAX_INFLIGHT = 16          # well above what the replays below keep in flight; the overload test bursts past it


def write_plan(path: Path) -> Path:
    Plan(Deployment(mode="disaggregated", model="opt-125m", chunk_tokens=64, prefill=Role("a100-80gb", 1),
                    decode=Role("a100-80gb", 1), policies=Policies())).write(path)
    return path


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Server:
    def __init__(self, tmp: Path):
        self.tmp, self.log = tmp, tmp / "serve.log"
        cmd = [sys.executable, "-c", "from testbed.cli import main; main()", "serve",
               "--plan", str(write_plan(tmp / "plan.json")), *MODEL_FLAGS, "--port", "0", "--api-key", KEY,
               "--max-inflight", str(MAX_INFLIGHT), "--drain-timeout", "30"]
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=ROOT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            m = re.search(r"serving \S+ on (http://127\.0\.0\.1:\d+)", self.log.read_text())
            if m:
                self.url = m.group(1)
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"testbed serve did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def client(self):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=KEY, max_retries=0, timeout=60)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("serve"))
    yield s
    s.stop()


def expected_text(prompt: str, n: int) -> str:
    """transformers' greedy generate() on the seeded weights the workers build."""
    from testbed.model import build_model
    model = build_model("opt-125m", layers=2, hidden=64, seed=0)
    tok = ByteTokenizer(model.config.vocab_size)
    ids = torch.tensor([tok.encode(prompt)])
    out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=1)
    return tok.decode(out[0, ids.shape[1]:].tolist())


def test_openai_client_gets_the_greedy_completion_streamed_and_not(server):
    c = server.client()
    assert [m.id for m in c.models.list()] == [NAME]
    prompt, n = "The testbed serves a plan.", 24
    want = expected_text(prompt, n)
    full = c.completions.create(model=NAME, prompt=prompt, max_tokens=n, extra_body={"ignore_eos": True})
    assert full.choices[0].text == want and full.choices[0].finish_reason == "length"
    assert (full.usage.prompt_tokens, full.usage.completion_tokens) == (len(prompt.encode()), n)
    chunks = list(c.completions.create(model=NAME, prompt=prompt, max_tokens=n, stream=True,
                                       stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
    text = [ch.choices[0].text for ch in chunks if ch.choices]
    assert "".join(text) == want and chunks[-1].usage.completion_tokens == n
    assert n <= len(text) <= n + 1             # one event per token (+ a finish event if the end came later)
    chat = c.chat.completions.create(model=NAME, messages=[{"role": "user", "content": prompt}], max_tokens=8,
                                     stream=True, extra_body={"ignore_eos": True})
    deltas = [ch.choices[0].delta.content or "" for ch in chat if ch.choices]
    assert "".join(deltas) == expected_text(f"user: {prompt}\nassistant:", 8)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        c.completions.create(model=NAME, prompt=prompt, max_tokens=4000)


def small_trace(path: Path, n: int, seed: int, span_s: float, prompt=(8, 80), output=(2, 30)) -> Path:
    rng = np.random.default_rng(seed)
    arr = np.sort(rng.uniform(0, span_s, n))
    arr -= arr[0]
    lines = ["arrival_s,prompt_tokens,output_tokens"] + [
        f"{a:.4f},{p},{o}" for a, p, o in zip(arr, rng.integers(*prompt, n), rng.integers(*output, n))]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_replay_records_every_request_and_validate_compares_them(server):
    trace = small_trace(server.tmp / "t.csv", 24, seed=1, span_s=1.5)
    out = server.tmp / "records.csv"
    r = CliRunner().invoke(cli, ["replay", "--endpoint", server.url, "--trace", str(trace), "-o", str(out),
                                          "--api-key", KEY, "--no-progress"])
    assert r.exit_code == 0, r.output
    import pandas as pd
    rec = pd.read_csv(out)
    t = pd.read_csv(trace)
    assert (rec["status"] == "finished").all(), rec[["status", "error"]]
    assert list(rec["prompt_tokens"]) == list(t["prompt_tokens"])        # sized exactly from usage
    assert list(rec["output_tokens"]) == list(t["output_tokens"])
    assert (rec["arrival_s"] - rec["scheduled_s"]).abs().max() < 0.1      # open loop on time
    assert ((rec["first_token_s"] >= rec["arrival_s"]) & (rec["finish_s"] >= rec["first_token_s"])).all()
    chunks = rec["chunk_times_s"].astype(str).str.count(";") + 1
    assert ((chunks - rec["output_tokens"]).abs() <= 1).all()             # a time for every token
    r = CliRunner().invoke(cli, ["validate", "--plan", str(server.tmp / "plan.json"), "--trace", str(trace),
                                          "--records", str(out), *MODEL_FLAGS[2:6]])
    assert r.exit_code == 0, r.output
    assert "finished: simulated 24/24, measured 24/24" in r.output and "TTFT p50" in r.output


def test_openai_client_timings_agree_with_replay_records(server):
    """The same 8 requests one at a time: TTFT and TPOT medians measured around the openai
    client's stream and in `testbed replay --concurrency 1` records agree."""
    n, p, o = 8, 48, 24
    trace = server.tmp / "seq.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n" + "".join(f"{i},{p},{o}\n" for i in range(n)))
    out = server.tmp / "seq-records.csv"
    r = CliRunner().invoke(cli, ["replay", "--endpoint", server.url, "--trace", str(trace), "-o", str(out),
                                          "--api-key", KEY, "--concurrency", "1", "--no-progress"])
    assert r.exit_code == 0, r.output
    import pandas as pd
    rec = pd.read_csv(out)
    ours_ttft = statistics.median(rec["first_token_s"] - rec["arrival_s"])
    ours_tpot = statistics.median((rec["finish_s"] - rec["first_token_s"]) / (rec["output_tokens"] - 1))
    c = server.client()
    ttft, tpot = [], []
    for i in range(n):
        prompt = "".join(np.random.default_rng(i).choice(list("abcdefgh"), p))
        t0 = time.perf_counter()
        stream = c.completions.create(model=NAME, prompt=prompt, max_tokens=o, stream=True,
                                      extra_body={"ignore_eos": True})
        times = [time.perf_counter() for ch in stream if ch.choices[0].text]
        ttft.append(times[0] - t0)
        tpot.append((times[-1] - times[0]) / (len(times) - 1))
    theirs_ttft, theirs_tpot = statistics.median(ttft), statistics.median(tpot)
    assert abs(ours_ttft - theirs_ttft) <= 0.5 * max(ours_ttft, theirs_ttft) + 0.005, (ours_ttft, theirs_ttft)
    assert abs(ours_tpot - theirs_tpot) <= 0.5 * max(ours_tpot, theirs_tpot) + 0.002, (ours_tpot, theirs_tpot)


def test_overload_gets_429_in_openai_error_shape(server):
    import asyncio

    async def burst():
        async with httpx.AsyncClient(timeout=60, trust_env=False) as c:
            body = {"model": NAME, "prompt": "overload", "max_tokens": 200, "ignore_eos": True}
            return await asyncio.gather(*(c.post(server.url + "/v1/completions", json=body,
                                                 headers={"Authorization": f"Bearer {KEY}"}) for _ in range(40)))
    got = asyncio.run(burst())
    codes = [r.status_code for r in got]
    assert set(codes) <= {200, 429} and codes.count(200) >= MAX_INFLIGHT and codes.count(429) >= 10, codes
    err = next(r for r in got if r.status_code == 429).json()["error"]
    assert err["type"] == "rate_limit_error" and f"--max-inflight {MAX_INFLIGHT}" in err["message"]
    assert all(r.json()["usage"]["completion_tokens"] == 200 for r in got if r.status_code == 200)


def test_ctrl_c_drains_the_request_in_flight_and_stops_every_process(server):
    """Last in this module: it stops the shared server."""
    workers = children(server.proc.pid)
    assert len(workers) == 2
    first, got = threading.Event(), {}

    def stream():
        body = {"model": NAME, "prompt": "drain me", "max_tokens": 600, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}}
        with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60, trust_env=False,
                          headers={"Authorization": f"Bearer {KEY}"}) as r:
            lines = []
            for line in r.iter_lines():
                lines.append(line)
                first.set()
            got["lines"] = lines
    t = threading.Thread(target=stream)
    t.start()
    assert first.wait(30)
    server.proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    with pytest.raises(httpx.ConnectError):           # no new connections while draining
        httpx.get(server.url + "/health", timeout=5, trust_env=False)
    t.join(60)
    assert server.proc.wait(timeout=60) == 0
    data = [ln for ln in got["lines"] if ln.startswith("data: ")]
    assert data[-1] == "data: [DONE]" and '"completion_tokens":600' in data[-2]
    log = server.log.read_text()
    assert "draining 1 requests in flight" in log and "every process ended" in log
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists()


def test_decode_worker_stops_at_a_stop_id_once_it_has_min_tokens():
    from testbed.engine import Engine
    from testbed.kv.reference import ReferenceConnector
    from testbed.model import build_model, scaled_config
    from testbed.workers.decode import DecodeWorker
    from testbed.workers.prefill import PrefillWorker

    eng = Engine(build_model(scaled_config("opt-125m", layers=1, hidden=64, vocab=256, max_context=64), seed=0))

    def generate(stop_ids=(), min_tokens=0, n=12):
        mail, out_p, out_d = [], [], []
        src, dst = ReferenceConnector("p0", lambda d, m: mail.append(m)), ReferenceConnector("d0", None)
        pw = PrefillWorker("p0", eng, src, out_p.append, chunk_tokens=16)
        dw = DecodeWorker("d0", eng, dst, out_d.append, capacity_tokens=256, stream_tokens=True)
        pw.on_request({"rid": 0, "prompt_tokens": 6, "ids": [9, 8, 7, 6, 5, 4]})
        pw.step()
        ev = next(e for e in out_p[-1]["items"] if e["kind"] == "prefilled")
        dw.on_expect({"xfer": 0, "src": "p0", "shape": ev["shape"], "dtype": ev["dtype"], "rid": 0, "prompt_tokens": 6,
                      "output_tokens": n, "first_token": ev["first_token"], "stop_ids": list(stop_ids),
                      "min_tokens": min_tokens})
        pw.on_send_kv({"rid": 0, "xfer": 0, "dst": "d0"})
        dst.on_message(mail[0])
        while dw.busy:
            dw.step()
        streamed = [t for m in out_d if m["op"] == "tokens" for t in m["tokens"]]
        return [ev["first_token"]] + streamed
    full = generate()
    assert len(full) == 12
    k = 5
    assert generate(stop_ids=[full[k]]) == full[:full.index(full[k]) + 1]
    assert generate(stop_ids=[full[k]], min_tokens=12) == full          # min_tokens outweighs the stop


@pytest.mark.parametrize("extra,message", [
    (["--port", "70000"], "--port"),
    (["--tokenizer", "no/such/tokenizer"], "no such file or folder"),
    (["--kv-backend", "nccl"], "needs --device cuda"),
    ("busy-port", "cannot listen on 127.0.0.1"),
    ("coupled", "Re-plan with"),
])
def test_serve_bad_input_exits_2_before_starting_anything(tmp_path, extra, message):
    import socket
    plan = write_plan(tmp_path / "plan.json")
    busy = None
    if extra == "busy-port":
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        extra = ["--port", str(busy.getsockname()[1])]
    elif extra == "coupled":
        Plan(Deployment(mode="coupled", model="opt-125m", chunk_tokens=512, coupled=Role("a100-80gb", 1))).write(plan)
        extra = []
    try:
        r = CliRunner().invoke(cli, ["serve", "--plan", str(plan), *MODEL_FLAGS, *extra])
    finally:
        if busy is not None:
            busy.close()
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
