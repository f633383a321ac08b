"""The canonical conversation record, role normalisation and role-order validation.

A record (one line of ``data/processed/records.jsonl`` and of ``data/splits/*.jsonl``)::

    {"id": "<16 hex>", "messages": [{"role": "system"|"user"|"assistant", "content": str}, ...],
     "source": {"file": "data/raw/x.jsonl", "line": 3, "schema": "alpaca"},
     "cluster": "<id of the kept near-duplicate representative>", "group": str | None, "meta": {...}}

Role map (case-insensitive, surrounding whitespace ignored), see :data:`ROLE_MAP`:

===========  ===================================================================
canonical    raw names accepted
===========  ===================================================================
user         user, human, customer, client, question, prompter, q
assistant    assistant, gpt, bot, agent, model, ai, chatgpt, support, answer,
             a, operator, staff, representative, rep
system       system, sys, instruction(s)
===========  ===================================================================

Anything else is an *unknown role*: the record is rejected (reason ``unknown_role``), or, with
``prepare.repair_roles``, the turn is dropped.
"""
from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import orjson

ROLE_MAP: dict[str, str] = {
    **dict.fromkeys(["user", "human", "customer", "client", "question", "prompter", "q"], "user"),
    **dict.fromkeys(["assistant", "gpt", "bot", "agent", "model", "ai", "chatgpt", "support",
                     "answer", "a", "operator", "staff", "representative", "rep"], "assistant"),
    **dict.fromkeys(["system", "sys", "instruction", "instructions"], "system"),
}


def loads(text: str | bytes, numbers_in: tuple[str, ...] | None = None) -> Any:
    """``json.loads`` with orjson's speed (about 2x on our records).

    The result and the error are always the standard library's (for bytes: of the text they hold
    in UTF-8): orjson turns integers beyond 64
    bits into floats, so a result holding a float outside [-2**63, 2**64) is parsed again by
    ``json.loads``, as is text orjson rejects (``NaN``, lone surrogates, ``1e400``), which the
    standard library parses or rejects with its usual ``JSONDecodeError``.

    Args:
        numbers_in: for an object whose numbers from raw data can only be under these keys (our
            records: ``meta``, ``group``), only those values are searched for such floats.
    """
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(_text(text))
    if numbers_in is not None and isinstance(obj, dict):
        return json.loads(_text(text)) if has_big_float([obj.get(k) for k in numbers_in]) else obj
    return json.loads(_text(text)) if has_big_float(obj) else obj


def _text(text: str | bytes) -> str:
    """Bytes decoded as strict UTF-8 (UnicodeDecodeError, a ValueError, otherwise): ``json.loads``
    would guess UTF-16/32 and skip a BOM, which readers of our files in text mode do not."""
    return text.decode("utf-8") if isinstance(text, (bytes, bytearray)) else text


def has_big_float(obj: Any) -> bool:
    """True when ``obj`` (nested lists and dicts) holds a float outside [-2**63, 2**64)."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)
        elif isinstance(o, float) and not -2.0**63 <= o < 2.0**64:
            return True
    return False


def dumps(obj: Any, default=None) -> str:
    """One-line compact JSON, UTF-8 text not escaped (orjson); objects orjson refuses (integers
    beyond 64 bits, lone surrogates, non-string keys) go to ``json.dumps``, which escapes non-ASCII
    text only when the object holds a lone surrogate (not encodable in UTF-8)."""
    try:
        return orjson.dumps(obj, default=default).decode("utf-8")
    except TypeError:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=default)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape: keep it escaped
        return json.dumps(obj, ensure_ascii=True, separators=(",", ":"), default=default)


class RecordError(ValueError):
    """A raw record cannot become a training conversation.

    Attributes:
        reason: short machine-readable reason (``invalid_json``, ``unknown_role``, ...), the key
            of ``rejected_by_reason`` in metrics/prepare.json.
        kind: ``malformed`` (cannot be parsed or mapped) or ``filtered`` (a quality rule).
        detail: human-readable explanation naming the offending key/value.
    """

    def __init__(self, reason: str, detail: str = "", kind: str = "malformed"):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail, self.kind = reason, detail, kind


@dataclass
class Record:
    """One conversation ready for training (see the module docstring for the JSON shape)."""

    id: str
    messages: list[dict[str, str]]
    source: dict[str, Any]
    cluster: str = ""
    group: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return dumps({"id": self.id, "messages": self.messages, "source": self.source, "cluster": self.cluster,
                      "group": self.group, "meta": self.meta})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Record":
        return cls(id=d["id"], messages=d["messages"], source=d["source"], cluster=d.get("cluster", ""),
                   group=d.get("group"), meta=d.get("meta") or {})


@dataclass
class Reject:
    """One raw record that did not make it into records.jsonl, with where it came from and why."""

    file: str
    line: int
    kind: str  # "malformed" | "filtered" | "duplicate"
    reason: str
    detail: str
    raw: Any
    schema: str | None = None

    def to_json(self) -> str:
        return dumps({"file": self.file, "line": self.line, "kind": self.kind, "reason": self.reason,
                      "detail": self.detail, "raw": self.raw, "schema": self.schema}, default=str)


def normalize_role(name: Any) -> str | None:
    """Map a raw role name through :data:`ROLE_MAP`; ``None`` when unknown."""
    if not isinstance(name, str):
        return None
    return ROLE_MAP.get(name.strip().lower())


def check_roles(messages: list[dict[str, str]], repair: bool = False) -> tuple[list[dict[str, str]], list[str]]:
    """Validate (or repair) the turn order: [system], user, assistant, user, assistant, ...

    Rules: at most one system turn and only first; user and assistant strictly alternate,
    starting with user and ending with assistant; no empty turns.

    Args:
        messages: turns with canonical roles (unknown roles must already be handled).
        repair: drop misplaced system turns, empty turns, leading assistant turns and trailing
            user turns; merge consecutive same-role turns with a blank line.

    Returns:
        (messages, repairs): the (possibly repaired) turns and the names of repairs applied.

    Raises:
        RecordError: ``bad_role_order`` / ``empty_turn`` / ``no_exchange`` with a detail naming the
            turn index, when ``repair`` is off (or nothing usable remains after repair).
    """
    repairs: list[str] = []
    out: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        role, content = m["role"], m["content"]
        if not content.strip():
            if not repair:
                raise RecordError("empty_turn", f"turn {i} ({role}) is empty")
            repairs.append("drop_empty_turn")
            continue
        if role == "system" and (out or i > 0):
            if not repair:
                raise RecordError("bad_role_order", f"turn {i}: system turn after the first turn")
            repairs.append("drop_system_turn")
            continue
        if role == "assistant" and (not out or (len(out) == 1 and out[0]["role"] == "system")):  # no user turn yet
            if not repair:
                raise RecordError("bad_role_order", f"turn {i}: conversation starts with assistant")
            repairs.append("drop_leading_assistant")
            continue
        if out and out[-1]["role"] == role:
            if not repair:
                raise RecordError("bad_role_order", f"turn {i}: two {role} turns in a row")
            out[-1] = {"role": role, "content": out[-1]["content"] + "\n\n" + content}
            repairs.append("merge_consecutive")
            continue
        out.append(m if len(m) == 2 else {"role": role, "content": content})  # turns are never changed in place
    while out and out[-1]["role"] == "user":
        if not repair:
            raise RecordError("bad_role_order", "conversation does not end with an assistant turn")
        out.pop()
        repairs.append("drop_trailing_user")
    if not out or out[-1]["role"] != "assistant":  # else only a system turn is left
        raise RecordError("no_exchange", "no user/assistant exchange")
    return out, repairs


def with_system(messages: list[dict[str, str]], system_prompt: str) -> list[dict[str, str]]:
    """Prepend ``system_prompt`` unless the conversation already has a system turn (or it is empty)."""
    if not system_prompt or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


def content_key(messages: list[dict[str, str]], roles: tuple[str, ...] = ("user", "assistant")) -> str:
    """Normalised text of the turns with ``roles``: NFKC, casefolded, whitespace collapsed.

    Used for ids, exact deduplication and the split leakage check; system turns are excluded by
    default so that changing ``domain.system_prompt`` changes no id.
    """
    # " ".join(s.split()) equals re.sub(r"\s+", " ", s).strip(): both split on str.isspace(); faster
    text = "\x01".join([f"{m['role']}\x00{' '.join(m['content'].split())}" for m in messages if m["role"] in roles])
    return (text if text.isascii() else unicodedata.normalize("NFKC", text)).casefold()  # ASCII is NFKC already


def record_id(messages: list[dict[str, str]], key: str | None = None) -> str:
    """16 hex chars: sha256 of :func:`content_key` (``key`` when already computed); stable across
    runs and machines."""
    return hashlib.sha256((key if key is not None else content_key(messages)).encode("utf-8")).hexdigest()[:16]
