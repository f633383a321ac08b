"""OpenAI chat-completions request schema, validation and error bodies.

Requests are validated strictly (no type coercion: ``"max_tokens": "10"`` is an error, as with
the OpenAI API) and unknown fields are rejected rather than silently ignored. The body is parsed with
orjson, which refuses what ``json.loads`` lets through to later stages: ``NaN`` / ``Infinity``,
numbers that overflow a double, lone UTF-16 surrogates and nesting deeper than 1024 (the stdlib
parser recurses and raises RecursionError). Values nested deeper than :data:`MAX_JSON_DEPTH` are
refused before validation (the schema itself needs 4 levels). Integers within 64 bits stay
integers; larger ones arrive as floats and fail the strict integer fields. Every failure is an
:class:`ApiError` whose body follows the OpenAI shape::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens", "code": null}}
"""
from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ROLES = ("system", "developer", "user", "assistant")  # "developer" is rendered as "system"
_TYPE_TAGS = {"str", "int", "float", "bool", "none", "list", "dict"}
MAX_JSON_DEPTH = 16  # objects/arrays inside one another; a valid request needs 4
MAX_NAME_CHARS = 256  # model, name, user
MAX_STOP_CHARS = 128  # each stop string: the stop scanner checks every suffix of the unsent text against it
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1  # what torch.Generator.manual_seed accepts


class ApiError(Exception):
    """An error answered as OpenAI-style JSON with an HTTP status (and optional headers)."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal[ROLES]  # type: ignore[valid-type]
    content: str | list[TextPart]
    name: str | None = Field(None, max_length=MAX_NAME_CHARS)  # accepted (the OpenAI client may send it); templates do not render it


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(_Strict):
    """The supported subset of ``POST /v1/chat/completions``; anything else is a 400."""

    model: str = Field(max_length=MAX_NAME_CHARS)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=1)  # one choice per request
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None  # at most 4, each at most MAX_STOP_CHARS
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    user: str | None = Field(None, max_length=MAX_NAME_CHARS)
    presence_penalty: float = Field(0.0, ge=0, le=0)  # penalties are not implemented: only 0
    frequency_penalty: float = Field(0.0, ge=0, le=0)
    logprobs: Literal[False] | None = None  # not implemented

    @field_validator("stop")
    @classmethod
    def _stop_bounds(cls, v):
        if isinstance(v, list) and len(v) > 4:
            raise ValueError(f"at most 4 stop sequences are allowed, got {len(v)}")
        if any(len(s) > MAX_STOP_CHARS for s in ([v] if isinstance(v, str) else v or [])):
            raise ValueError(f"each stop sequence is limited to {MAX_STOP_CHARS} characters")
        return v

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def chat_messages(self) -> list[dict[str, str]]:
        """Messages as ``{"role", "content"}`` dicts for the chat template (text parts joined)."""
        out = []
        for m in self.messages:
            text = m.content if isinstance(m.content, str) else "".join(p.text for p in m.content)
            out.append({"role": "system" if m.role == "developer" else m.role, "content": text})
        return out


def _param(loc: tuple) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]"] if parts else [f"[{p}]"]
        elif "[" in p or p in _TYPE_TAGS or p.startswith("function-"):
            continue  # a union member's type tag, not a field name
        else:
            parts.append(p)
    return ".".join(parts)


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, ``[]`` is 1), counted up to ``limit + 1``.

    Iterative, so any depth the parser produced is measured without recursion.
    """
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            d += 1
            if d > limit:
                return d
            deepest = max(deepest, d)
            stack.extend((c, d) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value) if json_depth(value, 4) <= 4 else f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def parse_request(body: bytes) -> ChatCompletionRequest:
    """Validate a request body (at most what ``serve.max_body_bytes`` lets through).

    Raises:
        ApiError: 400 for invalid JSON (including NaN/Infinity, lone surrogates, invalid UTF-8),
            nesting deeper than :data:`MAX_JSON_DEPTH`, a non-object body, or the first invalid /
            unknown field (named in ``param``, e.g. ``messages[1].role``; ``seed`` outside
            [-2**63, 2**64 - 1]).
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise ApiError(400, f"request body is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"request body must be a JSON object, got {type(data).__name__}")
    if json_depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ApiError(400, f"request body nests JSON values deeper than {MAX_JSON_DEPTH} levels",
                       code="json_too_deep")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as err:
        e = max(err.errors(), key=lambda x: len(x["loc"]))  # the deepest is the most specific
        param = _param(e["loc"])
        if e["type"] == "extra_forbidden":
            msg = f"unrecognized request argument: {param}"
        elif e["type"] == "missing":
            msg = f"missing required argument: {param}"
        elif param in ("presence_penalty", "frequency_penalty", "logprobs", "n"):
            msg = f"{param}={_short(e['input'])} is not supported by this server"
        elif param == "seed":
            msg = f"seed must be an integer in [{SEED_MIN}, {SEED_MAX}], got {_short(e['input'])}"
        elif param == "messages" and e["type"] == "too_short":
            msg = "messages must contain at least one message"
        else:
            msg = f"invalid value for {param}: {e['msg']}"
        raise ApiError(400, msg, param=param or None) from None
