"""OpenAI chat-completions request schema, validation and error bodies.

Requests are validated strictly (no type coercion: ``"max_tokens": "10"`` is an error, as with
the OpenAI API) and unknown fields are rejected rather than silently ignored. Every failure is an
:class:`ApiError` whose body follows the OpenAI shape::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens", "code": null}}
"""
from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ROLES = ("system", "developer", "user", "assistant")  # "developer" is rendered as "system"
_TYPE_TAGS = {"str", "int", "float", "bool", "none", "list", "dict"}


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
    name: str | None = None  # accepted (the OpenAI client may send it); templates do not render it


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(_Strict):
    """The supported subset of ``POST /v1/chat/completions``; anything else is a 400."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=1)  # one choice per request
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(None, max_length=4)
    seed: int | None = None
    user: str | None = None
    presence_penalty: float = Field(0.0, ge=0, le=0)  # penalties are not implemented: only 0
    frequency_penalty: float = Field(0.0, ge=0, le=0)
    logprobs: Literal[False] | None = None  # not implemented

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


def parse_request(body: bytes) -> ChatCompletionRequest:
    """Validate a request body.

    Raises:
        ApiError: 400 for invalid JSON, a non-object body, or the first invalid / unknown field
            (named in ``param``, e.g. ``messages[1].role``).
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ApiError(400, f"request body is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"request body must be a JSON object, got {type(data).__name__}")
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
            msg = f"{param}={e['input']!r} is not supported by this server"
        elif param == "messages" and e["type"] == "too_short":
            msg = "messages must contain at least one message"
        else:
            msg = f"invalid value for {param}: {e['msg']}"
        raise ApiError(400, msg, param=param or None) from None
