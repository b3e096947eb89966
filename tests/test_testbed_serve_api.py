"""`testbed serve`'s HTTP layer in process, over a scripted backend (no worker processes):
OpenAI response and SSE shapes, stop / length finish reasons, usage, the detokenizer on
split UTF-8, tokenizers (byte fallback; a local byte-level BPE tokenizer.json), errors in
OpenAI's shape, 429 / 503, a failure mid-stream; and LiveCluster's side of the worker
protocol over a scripted launcher (hand-off, streamed tokens, a dead worker)."""
from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx2")

from testbed.serve_api import Served, make_app  # noqa: E402
from testbed.serve_cluster import LiveRequest, Overloaded  # noqa: E402
from testbed.serve_tokenizer import ByteTokenizer, Detokenizer, HFTokenizer  # noqa: E402

EOS = 2


class ScriptedBackend:
    """LiveCluster's interface; request k generates `script(prompt ids)` token by token."""

    def __init__(self, script, max_inflight=4, fail_after=None):
        self.script, self.max_inflight, self.fail_after = script, max_inflight, fail_after
        self.failed, self.stopping, self.live, self.submitted = None, False, {}, []

    @property
    def inflight(self):
        return len(self.live)

    def submit(self, ids, max_tokens, *, min_tokens=0, stop_ids=()):
        if len(self.live) >= self.max_inflight:
            raise Overloaded("too many")
        req = LiveRequest(len(self.submitted), len(ids), max_tokens, min_tokens, tuple(stop_ids), 0, list(ids))
        self.submitted.append(req)
        self.live[req.rid] = req
        for k, tok in enumerate(self.script(ids)):
            if self.fail_after is not None and k == self.fail_after:
                req.events.put_nowait(("error", "worker d0 (pid 1) stopped: it exited with code -9"))
                return req
            req.tokens, req.last_token = req.tokens + 1, tok
            req.events.put_nowait(("token", tok))
            if req.tokens >= max_tokens or (tok in stop_ids and req.tokens >= min_tokens):
                break
        req.events.put_nowait(("done", None))
        return req


def client(backend, tokenizer=None, api_key=None):
    served = Served(backend, tokenizer or ByteTokenizer(50272), model_name="m", max_model_len=64,
                    vocab_size=50272, eos_token_id=EOS, api_key=api_key)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(served)), base_url="http://t")


def run(coro):
    return asyncio.run(coro)


def sse(text: str) -> list:
    out = []
    for line in text.splitlines():
        if line.startswith("data: "):
            out.append(line[6:] if line[6:] == "[DONE]" else json.loads(line[6:]))
    return out


def byte_ids(s: str) -> list[int]:
    return ByteTokenizer(300).encode(s)


def test_completion_streamed_and_not_agree_and_stop_at_eos_unless_ignored():
    script = lambda ids: byte_ids("héllo") + [EOS] + byte_ids("more")   # noqa: E731 - é is 2 bytes

    async def go():
        async with client(ScriptedBackend(script)) as c:
            r = await c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 20})
            body = r.json()
            assert r.status_code == 200 and body["object"] == "text_completion"
            assert body["choices"][0]["text"] == "héllo" and body["choices"][0]["finish_reason"] == "stop"
            assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 7, "total_tokens": 9}
            r = await c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 8, "ignore_eos": True,
                                                      "stream": True, "stream_options": {"include_usage": True}})
            assert r.headers["content-type"].startswith("text/event-stream")
            events = sse(r.text)
            assert events[-1] == "[DONE]" and events[-2]["usage"]["completion_tokens"] == 8
            chunks = events[:-2]
            assert len(chunks) == 8                                       # one event per token
            assert "".join(e["choices"][0]["text"] for e in chunks) == "héllom"   # 6 bytes, EOS (prints nothing), "m"
            assert [e["choices"][0]["text"] for e in chunks][1:3] == ["", "é"]   # split UTF-8 held back
            assert chunks[-1]["choices"][0]["finish_reason"] == "length"
            assert all(e["choices"][0]["finish_reason"] is None for e in chunks[:-1])
            r = await c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 8, "min_tokens": 8})
            assert r.json()["choices"][0]["finish_reason"] == "length"   # min_tokens overrides EOS
    run(go())


def test_chat_stream_starts_with_the_role_and_ends_with_done():
    async def go():
        async with client(ScriptedBackend(lambda ids: byte_ids("ok!"))) as c:
            r = await c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                           "max_tokens": 3, "stream": True})
            events = sse(r.text)
            assert events[0]["object"] == "chat.completion.chunk"
            assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
            assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1]) == "ok!"
            assert events[-2]["choices"][0]["finish_reason"] == "length" and events[-1] == "[DONE]"
            r = await c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": [
                {"type": "text", "text": "hi"}]}], "max_completion_tokens": 2})
            assert r.json()["choices"][0]["message"] == {"role": "assistant", "content": "ok"}
    run(go())
    backend = ScriptedBackend(lambda ids: [5])
    run(_post(backend, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}))
    assert backend.submitted[0].max_tokens == 64 - len("user: hi\nassistant:")   # default: what fits


async def _post(backend, path, body, **kw):
    async with client(backend, **kw) as c:
        return await c.post(path, json=body)


@pytest.mark.parametrize("body,status,param", [
    ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ({"prompt": "x", "n": 2}, 400, "n"),
    ({"prompt": "x", "stop": ["\n"]}, 400, "stop"),
    ({"prompt": "x", "echo": True}, 400, "echo"),
    ({"prompt": ["a", "b"]}, 400, "prompt"),
    ({"prompt": [1, 2, 99999]}, 400, "prompt"),
    ({"prompt": ""}, 400, "prompt"),
    ({"prompt": "x", "max_tokens": 64}, 400, "max_tokens"),            # 1 + 64 > 64 positions
    ({"prompt": "x", "max_tokens": 2, "min_tokens": 3}, 400, "min_tokens"),
    ({"prompt": "x", "model": "gpt-4"}, 404, "model"),
    ({"max_tokens": 3}, 400, "prompt"),
])
def test_bad_requests_get_openai_errors(body, status, param):
    r = run(_post(ScriptedBackend(lambda ids: [5]), "/v1/completions", body))
    err = r.json()["error"]
    assert r.status_code == status and err["param"] == param
    assert set(err) == {"message", "type", "param", "code"} and err["message"]


def test_malformed_json_unknown_route_and_api_key():
    async def go():
        b = ScriptedBackend(lambda ids: [5])
        async with client(b, api_key="k1") as c:
            auth = {"Authorization": "Bearer k1"}
            r = await c.post("/v1/completions", content=b"{bad", headers={**auth, "Content-Type": "application/json"})
            assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
            r = await c.post("/v1/completions", content=b"prompt=x", headers=auth)
            assert r.status_code == 400 and "JSON object" in r.json()["error"]["message"]
            r = await c.get("/v1/models")
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
            r = await c.get("/v1/models", headers={"Authorization": "Bearer k2"})
            assert r.status_code == 401
            r = await c.get("/v1/models", headers={"Authorization": "Bearer k1"})
            assert r.status_code == 200 and r.json()["data"][0]["tokenizer"].startswith("byte-level fallback")
            assert (await c.get("/health")).status_code == 200                 # no key needed
            r = await c.get("/v1/nothing", headers={"Authorization": "Bearer k1"})
            assert r.status_code == 404 and "error" in r.json()
    run(go())


def test_overload_429_failure_503_and_error_event_mid_stream():
    async def go():
        b = ScriptedBackend(lambda ids: [5, 6, 7], max_inflight=0)
        async with client(b) as c:
            r = await c.post("/v1/completions", json={"prompt": "x"})
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["type"] == "rate_limit_error"
            b.max_inflight, b.stopping = 4, True
            assert (await c.get("/health")).status_code == 503
        b = ScriptedBackend(lambda ids: [40, 41, 42], fail_after=2)
        async with client(b) as c:
            events = sse((await c.post("/v1/completions", json={"prompt": "x", "stream": True})).text)
            assert [e["choices"][0]["text"] for e in events[:2]] == ["$", "%"]
            assert "exited" in events[2]["error"]["message"] and events[3] == "[DONE]"
            r = await c.post("/v1/completions", json={"prompt": "x"})
            assert r.status_code == 503 and "exited" in r.json()["error"]["message"]
    run(go())


def byte_level_bpe(path):
    """A small GPT-2-style (byte-level BPE) tokenizer.json, trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["hello world, the quick brown fox", " a b c d e f g h i j k l m"] * 20, trainer)
    tok.save(str(path))
    return path


def test_local_tokenizer_file_round_trips_and_streams_whole_characters(tmp_path):
    tok = HFTokenizer(str(byte_level_bpe(tmp_path / "tokenizer.json")), vocab_size=50272)
    assert tok.name.endswith(f"from {tmp_path / 'tokenizer.json'}")
    assert tok.decode(tok.encode("hello world")) == "hello world"
    ids = tok.encode("héllo wörld")
    d = Detokenizer(tok)
    pieces = [d.add(i) for i in ids] + [d.flush()]
    assert "".join(pieces) == "héllo wörld" and "\ufffd" not in "".join(pieces)
    r = run(_post(ScriptedBackend(lambda p: ids), "/v1/completions", {"prompt": "hello", "max_tokens": len(ids)},
                  tokenizer=tok))
    assert r.json()["choices"][0]["text"] == "héllo wörld"
    assert r.json()["usage"]["prompt_tokens"] == len(tok.encode("hello"))
    with pytest.raises(Exception, match="vocabulary"):
        HFTokenizer(str(tmp_path / "tokenizer.json"), vocab_size=100)
    with pytest.raises(Exception, match="no such file"):
        HFTokenizer(str(tmp_path / "none.json"), vocab_size=50272)


class FakeCluster:
    """launcher.Cluster's send / wait / stop; `wait` hands out scripted worker messages."""

    def __init__(self, script):
        self.script, self.sent = list(script), []

    def send(self, name, msg):
        self.sent.append((name, msg))

    def wait(self, timeout_s):
        item = self.script.pop(0) if self.script else []
        if isinstance(item, Exception):
            raise item
        return item

    def stop(self, grace_s=5.0):
        self.stopped = True


def live_cluster(script):
    pytest.importorskip("torch")
    from planner.plan import Deployment, Role
    from testbed.run import RunOptions
    from testbed.serve_cluster import LiveCluster
    dep = Deployment(mode="disaggregated", model="opt-125m", chunk_tokens=64, prefill=Role("a100-80gb", 1),
                     decode=Role("a100-80gb", 1))
    b = LiveCluster(dep, RunOptions(layers=2, hidden=64), max_inflight=2, echo=lambda s: None)
    b.cluster = FakeCluster(script)
    return b


def test_live_cluster_routes_hands_off_and_streams_worker_tokens():
    prefilled = {"rid": 0, "kind": "prefilled", "first_token": 11, "shape": [3, 2, 2, 1, 64], "dtype": "float32"}
    b = live_cluster([[("p0", {"op": "events", "items": [{"rid": 0, "kind": "prefill_start", "t": 1.0}, prefilled]})],
                      [("d0", {"op": "tokens", "t": 2.0, "rids": [0], "tokens": [12]})],
                      [("d0", {"op": "tokens", "t": 2.1, "rids": [0], "tokens": [2]}),
                       ("d0", {"op": "events", "items": [{"rid": 0, "kind": "finished", "t": 2.1}]})]])

    async def go():
        req = b.submit([5, 6, 7], 8, min_tokens=1, stop_ids=(2,))
        assert b.cluster.sent[0] == ("p0", {"op": "request", "rid": 0, "prompt_tokens": 3, "output_tokens": 8,
                                            "label": b.cluster.sent[0][1]["label"], "ids": [5, 6, 7]})
        for _ in range(3):
            b._pump()
        expect = b.cluster.sent[1][1]
        assert b.cluster.sent[1][0] == "d0" and b.cluster.sent[2] == ("p0", {"op": "send_kv", "rid": 0, "xfer": 0,
                                                                             "dst": "d0"})
        assert (expect["prompt_ids"], expect["stop_ids"], expect["min_tokens"], expect["first_token"]) == \
            ([5, 6, 7], [2], 1, 11)
        got = [req.events.get_nowait() for _ in range(req.events.qsize())]
        assert got == [("token", 11), ("token", 12), ("token", 2), ("done", None)]
        assert (req.tokens, req.last_token, b.inflight, b.counts["finished"]) == (3, 2, 0, 1)
    asyncio.run(go())


def test_live_cluster_fails_every_request_when_a_worker_dies_and_refuses_over_the_limit():
    from testbed.launcher import WorkerFailed
    from testbed.serve_cluster import Unavailable
    b = live_cluster([[], WorkerFailed("worker d0 (pid 7) stopped: it exited with code -9")])
    failures = []
    b.on_failure = failures.append

    async def go():
        first, second = b.submit([5], 4), b.submit([6], 4)
        with pytest.raises(Overloaded, match="--max-inflight 2"):
            b.submit([7], 4)
        b._pump()
        b._pump()
        for req in (first, second):
            assert await req.events.get() == ("error", "worker d0 (pid 7) stopped: it exited with code -9")
        with pytest.raises(Unavailable, match="exited"):
            b.submit([8], 4)
    asyncio.run(go())
    assert failures and b.failed and b.inflight == 0 and b.counts["refused"] == 1
