"""The OpenAI request bodies `testbed serve` takes, and its errors in OpenAI's shape.

Accepted as OpenAI and vLLM define them: `model`, `prompt` (text, or token ids) /
`messages`, `max_tokens` (chat: also `max_completion_tokens`), `stream`,
`stream_options.include_usage`, and vLLM's `ignore_eos` and `min_tokens` (a benchmark
forces the output length with them). Sampling fields (`temperature`, `top_p`, `seed`, ...)
are accepted and have no effect: the testbed decodes greedily. What it cannot do is
refused with a 400 naming the field: `n` > 1, `best_of` > 1, `echo`, `logprobs`, `stop`
strings, several prompts in one request.

Errors: `{"error": {"message", "type", "param", "code"}}` with the HTTP status.
"""
from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
               405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
               500: "server_error", 503: "service_unavailable"}


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers

    def body(self) -> dict:
        return error_body(self.status, self.message, self.param, self.code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def validation_message(errors: list[dict]) -> tuple[str, str | None]:
    """(message, param) for pydantic's errors on a request body."""
    parts, param = [], None
    bad_json = [e for e in errors if e.get("type") == "json_invalid"]
    if bad_json:
        return f"the body is not valid JSON ({bad_json[0].get('ctx', {}).get('error', 'decode error')})", None
    if any(tuple(e.get("loc", ())) == ("body",) for e in errors):
        return "the body must be a JSON object (send it with Content-Type: application/json)", None
    for e in errors[:3]:
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        where = ".".join(loc) or "body"
        param = param or (loc[0] if loc else None)
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "invalid request: " + "; ".join(parts) + more, param


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")      # unknown fields are ignored, as vLLM does
    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)
    n: int = Field(1, ge=1)
    best_of: int | None = Field(None, ge=1)
    logprobs: Union[bool, int, None] = None
    stop: Union[str, list[str], None] = None
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = None

    def refuse_unsupported(self) -> None:
        if self.n != 1:
            raise APIError(400, "n must be 1: the testbed returns one choice per request", param="n")
        if self.best_of not in (None, 1):
            raise APIError(400, "best_of must be 1 on the testbed", param="best_of")
        if self.logprobs not in (None, False):
            raise APIError(400, "logprobs are not supported by the testbed", param="logprobs")
        if self.stop:
            raise APIError(400, "stop strings are not supported by the testbed; use max_tokens "
                                "(and ignore_eos / min_tokens) to set the length", param="stop")

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


PromptType = Union[str, list[str], list[int], list[list[int]]]


class CompletionRequest(_Common):
    prompt: PromptType
    max_tokens: int | None = Field(16, ge=1)     # OpenAI's default for completions
    echo: bool = False
    suffix: str | None = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.echo:
            raise APIError(400, "echo is not supported by the testbed", param="echo")
        if self.suffix:
            raise APIError(400, "suffix is not supported by the testbed", param="suffix")


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: Union[str, list[TextPart], None] = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)


def prompt_ids(prompt, tokenizer, vocab_size: int) -> list[int]:
    """Token ids of a completion request's prompt (text or ids; one prompt only)."""
    if isinstance(prompt, list):
        if len(prompt) == 0:
            raise APIError(400, "prompt is empty", param="prompt")
        if isinstance(prompt[0], (str, list)):
            if len(prompt) != 1:
                raise APIError(400, f"one prompt per request, got {len(prompt)}", param="prompt")
            prompt = prompt[0]
    if isinstance(prompt, str):
        ids = tokenizer.encode(prompt)
    else:
        ids = [int(i) for i in prompt]
        bad = [i for i in ids if not 0 <= i < vocab_size]
        if bad:
            raise APIError(400, f"prompt token id {bad[0]} is outside the model's vocabulary "
                                f"(0..{vocab_size - 1})", param="prompt")
    if not ids:
        raise APIError(400, "prompt is empty", param="prompt")
    return ids


def check_length(prompt_tokens: int, max_tokens: int, min_tokens: int, max_model_len: int) -> None:
    if min_tokens > max_tokens:
        raise APIError(400, f"min_tokens ({min_tokens}) must not exceed max_tokens ({max_tokens})",
                       param="min_tokens")
    if prompt_tokens + max_tokens > max_model_len:
        raise APIError(400, f"This model's maximum context length is {max_model_len} tokens. However, you "
                            f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, "
                            f"{max_tokens} in the completion). Please reduce the length of the prompt or "
                            "completion.", param="max_tokens", code="context_length_exceeded")
