"""The OpenAI-compatible HTTP front of `testbed serve` (FastAPI on uvicorn).

Routes: POST /v1/completions and /v1/chat/completions (server-sent events with
`stream: true`, one event per generated token, `data: [DONE]` last; else one JSON
response), GET /v1/models, GET /health. With an API key every /v1 route wants
`Authorization: Bearer KEY` (as vLLM's server does; /health stays open).

Status codes: 400 bad request (OpenAI's error shape, the field in `param`), 401 missing
or wrong key, 404 unknown model or route, 429 more requests in flight than
--max-inflight (with Retry-After), 503 while shutting down or after the processes failed.
A failure during a stream ends it with an `{"error": ...}` event and `[DONE]`.
"""
from __future__ import annotations

import json
import secrets
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .serve_cluster import Overloaded, Unavailable
from .serve_protocol import (APIError, ChatRequest, CompletionRequest, check_length, error_body, prompt_ids,
                             validation_message)
from .serve_tokenizer import Detokenizer


class Served:
    """What the routes need: the processes, the tokenizer and the model's limits."""

    def __init__(self, backend, tokenizer, *, model_name: str, max_model_len: int, vocab_size: int,
                 eos_token_id: int | None, api_key: str | None = None):
        self.backend, self.tokenizer = backend, tokenizer
        self.model_name, self.max_model_len, self.vocab_size = model_name, max_model_len, vocab_size
        self.eos_token_id, self.api_key = eos_token_id, api_key
        self.created = int(time.time())


def make_app(served: Served, *, on_startup=None, on_shutdown=None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app):
        if on_startup is not None:
            on_startup()
        try:
            yield
        finally:
            if on_shutdown is not None:
                on_shutdown()

    app = FastAPI(title="testbed serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        message, param = validation_message(exc.errors())
        return JSONResponse(error_body(400, message, param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return JSONResponse(error_body(exc.status_code, message), status_code=exc.status_code, headers=exc.headers)

    def authorize(request: Request) -> None:
        if served.api_key is None:
            return
        got = request.headers.get("authorization", "")
        if not secrets.compare_digest(got.encode(), f"Bearer {served.api_key}".encode()):
            raise APIError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                           code="invalid_api_key")

    def check_model(name: str | None) -> None:
        if name is not None and name != served.model_name:
            raise APIError(404, f"The model `{name}` does not exist; this server serves `{served.model_name}`",
                           param="model", code="model_not_found")

    @app.get("/health")
    async def health():
        b = served.backend
        if b.failed:
            return JSONResponse({"status": "failed", "error": b.failed.splitlines()[0]}, status_code=503)
        if b.stopping:
            return JSONResponse({"status": "draining", "in_flight": b.inflight}, status_code=503)
        return {"status": "ok", "in_flight": b.inflight}

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        return {"object": "list", "data": [{
            "id": served.model_name, "object": "model", "created": served.created, "owned_by": "testbed",
            "root": served.model_name, "max_model_len": served.max_model_len,
            "tokenizer": served.tokenizer.name, "chat_template": served.tokenizer.chat_template,
            "decoding": "greedy (sampling fields are accepted and ignored)"}]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        authorize(request)
        check_model(body.model)
        body.refuse_unsupported()
        ids = prompt_ids(body.prompt, served.tokenizer, served.vocab_size)
        return await _respond(served, body, ids, body.max_tokens, chat=False)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        authorize(request)
        check_model(body.model)
        body.refuse_unsupported()
        text = served.tokenizer.chat_prompt([{"role": m.role, "content": m.text()} for m in body.messages])
        ids = served.tokenizer.encode(text)
        max_tokens = body.max_completion_tokens or body.max_tokens or max(served.max_model_len - len(ids), 1)
        return await _respond(served, body, ids, max_tokens, chat=True)

    return app


async def _respond(served: Served, body, ids: list[int], max_tokens: int, chat: bool):
    check_length(len(ids), max_tokens, body.min_tokens, served.max_model_len)
    stop = () if body.ignore_eos or served.eos_token_id is None else (int(served.eos_token_id),)
    try:
        req = served.backend.submit(ids, max_tokens, min_tokens=body.min_tokens, stop_ids=stop)
    except Overloaded as e:
        raise APIError(429, str(e), headers={"Retry-After": "1"}) from None
    except Unavailable as e:
        raise APIError(503, str(e)) from None
    meta = {"id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex, "created": int(time.time()),
            "model": served.model_name}
    if body.stream:
        return StreamingResponse(_sse(served, req, meta, chat, body.include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    detok = Detokenizer(served.tokenizer)
    try:
        async for tok, _ in _tokens(req):
            detok.add(tok)
    except _Failed as e:
        raise APIError(503, f"the request failed in the testbed: {e}") from None
    detok.flush()
    finish = _finish_reason(req, stop)
    usage = _usage(req)
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": detok.text}, "logprobs": None,
                  "finish_reason": finish}
        return {**meta, "object": "chat.completion", "choices": [choice], "usage": usage}
    choice = {"index": 0, "text": detok.text, "logprobs": None, "finish_reason": finish}
    return {**meta, "object": "text_completion", "choices": [choice], "usage": usage}


class _Failed(RuntimeError):
    pass


async def _tokens(req):
    """(token, is_last) as the processes make them; is_last when the end is already known."""
    item = await req.events.get()
    while True:
        kind, val = item
        if kind == "error":
            raise _Failed(val)
        if kind == "done":
            return
        nxt = None if req.events.empty() else req.events.get_nowait()
        yield val, nxt is not None and nxt[0] == "done"
        item = nxt if nxt is not None else await req.events.get()


def _finish_reason(req, stop) -> str:
    return "stop" if stop and req.last_token in stop else "length"


def _usage(req) -> dict:
    return {"prompt_tokens": req.prompt_tokens, "completion_tokens": req.tokens,
            "total_tokens": req.prompt_tokens + req.tokens}


def _event(obj) -> str:
    return "data: " + json.dumps(obj, separators=(",", ":")) + "\n\n"


async def _sse(served: Served, req, meta: dict, chat: bool, include_usage: bool):
    stop = req.stop_ids
    detok = Detokenizer(served.tokenizer)
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(text: str, finish: str | None, role: bool = False) -> str:
        if chat:
            delta = {"role": "assistant", "content": text} if role else {"content": text}
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return _event({**meta, "object": kind, "choices": [choice]})

    first, finished = True, False
    try:
        async for tok, last in _tokens(req):
            text = detok.add(tok) + (detok.flush() if last else "")
            out = chunk("", None, role=True) if chat and first else ""
            first = False
            finished = last
            yield out + chunk(text, _finish_reason(req, stop) if last else None)
        if not finished:
            yield chunk(detok.flush(), _finish_reason(req, stop))
        if include_usage:
            yield _event({**meta, "object": kind, "choices": [], "usage": _usage(req)})
    except _Failed as e:
        yield _event(error_body(503, f"the request failed in the testbed: {e}"))
    yield "data: [DONE]\n\n"
