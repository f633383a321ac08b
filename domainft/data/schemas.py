"""Schema detection and conversion of one raw record (a JSON object or table row) to turns.

Schemas (auto-detected per file from the keys of its first records; ``prepare.schema_overrides``
forces one per file glob). Keys are matched case-insensitively through :data:`ALIASES`, and
``prepare.columns`` maps a canonical field to the file's own column (``{question: Frage}``):

=================  ===========================================================  ==============
schema             required fields (canonical names)                            example
=================  ===========================================================  ==============
messages           messages: [{role, content}]                                  OpenAI chat
sharegpt           conversations: [{from, value}]                               ShareGPT
chatlog            session, role, text (+ timestamp), one turn per row          support logs
alpaca             instruction, output (+ input, system)                        Stanford Alpaca
prompt_completion  prompt, completion                                           OpenAI legacy
qa                 question, answer (+ instruction prefix)                      FAQ tables
=================  ===========================================================  ==============
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from domainft.data.records import RecordError, normalize_role

SCHEMAS = ("messages", "sharegpt", "chatlog", "alpaca", "prompt_completion", "qa")

ALIASES: dict[str, list[str]] = {
    "messages": ["messages"],
    "conversations": ["conversations", "conversation", "dialog", "dialogue", "turns"],
    "instruction": ["instruction", "instructions"],
    "input": ["input", "inputs", "context"],
    "output": ["output", "outputs", "response"],
    "system": ["system", "system_prompt"],
    "prompt": ["prompt"],
    "completion": ["completion", "response", "target"],
    "question": ["question", "query", "q", "questions"],
    "answer": ["answer", "answers", "a", "reply"],
    "session": ["session_id", "session", "conversation_id", "conv_id", "chat_id", "dialog_id",
                "dialogue_id", "thread_id", "ticket_id"],
    "role": ["role", "speaker", "from", "sender", "author"],
    "text": ["text", "content", "message", "utterance", "value", "body"],
    "timestamp": ["timestamp", "time", "ts", "created_at", "datetime"],
}
REQUIRED = {
    "messages": ["messages"], "sharegpt": ["conversations"], "chatlog": ["session", "role", "text"],
    "alpaca": ["instruction", "output"], "prompt_completion": ["prompt", "completion"],
    "qa": ["question", "answer"],
}
OPTIONAL = {"alpaca": ["input", "system"], "qa": ["instruction", "system"], "chatlog": ["timestamp"],
            "prompt_completion": ["system"]}
META_MAX_CHARS = 200  # scalar fields longer than this are not copied into meta


@dataclass
class Draft:
    """Turns of one raw record before cleaning.

    ``input`` (alpaca input / qa question under an instruction) is appended to
    ``messages[input_index]`` after the placeholder operator has looked at it.
    """

    messages: list[dict[str, str]]
    input: str | None = None
    input_index: int = 0
    group: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    repairs: list[str] = field(default_factory=list)


def resolve_fields(keys: list[str], columns: dict[str, str]) -> dict[str, str]:
    """Canonical field -> actual key, from ``columns`` (when that key exists) else :data:`ALIASES`."""
    lower = {k.strip().lower(): k for k in keys if isinstance(k, str)}
    out: dict[str, str] = {}
    for canon, aliases in ALIASES.items():
        if canon in columns and columns[canon] in keys:
            out[canon] = columns[canon]
            continue
        for alias in aliases:
            if alias in lower:
                out[canon] = lower[alias]
                break
    return out


def detect_schema(fields: dict[str, str]) -> str | None:
    """First schema of :data:`SCHEMAS` whose required fields are all present, else None."""
    for schema in SCHEMAS:
        if all(f in fields for f in REQUIRED[schema]):
            return schema
    return None


def _text(obj: dict, key: str | None, name: str, required: bool = True) -> str:
    if key is None or key not in obj or obj[key] is None:
        if required:
            raise RecordError("missing_key", f"missing field {name!r}" + (f" (column {key!r})" if key else ""))
        return ""
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RecordError("wrong_type", f"field {key!r} must be text, got {type(value).__name__}")
    return value if isinstance(value, str) else str(value)


def _turns(items: Any, key: str, role_keys: tuple[str, str], repair: bool) -> tuple[list[dict], list[str]]:
    if not isinstance(items, list) or not items:
        raise RecordError("wrong_type", f"field {key!r} must be a non-empty list of turns")
    out, repairs = [], []
    for i, turn in enumerate(items):
        if not isinstance(turn, dict):
            raise RecordError("wrong_type", f"{key}[{i}] must be an object")
        rk = next((k for k in (role_keys[0], "role", "from") if k in turn), None)
        ck = next((k for k in (role_keys[1], "content", "value", "text") if k in turn), None)
        if rk is None or ck is None:
            raise RecordError("missing_key", f"{key}[{i}] needs {role_keys[0]!r} and {role_keys[1]!r}")
        role = normalize_role(turn[rk])
        if role is None:
            if not repair:
                raise RecordError("unknown_role", f"{key}[{i}].{rk} = {turn[rk]!r}")
            repairs.append("drop_unknown_role")
            continue
        content = turn[ck]
        if isinstance(content, list):  # OpenAI content parts: keep the text parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise RecordError("wrong_type", f"{key}[{i}].{ck} must be text")
        out.append({"role": role, "content": content})
    return out, repairs


def _meta(obj: dict, used: set[str]) -> dict[str, Any]:
    meta = {}
    for k, v in obj.items():
        if k in used or isinstance(v, (list, dict)):
            continue
        if isinstance(v, str) and len(v) > META_MAX_CHARS:
            continue
        meta[k] = v
    return meta


def convert(obj: Any, schema: str, fields: dict[str, str], group_field: str | None,
            repair: bool = False) -> Draft:
    """Turn one JSON object / table row of ``schema`` into a :class:`Draft`.

    Raises:
        RecordError: ``not_an_object``, ``missing_key``, ``wrong_type`` or ``unknown_role``,
            with a detail naming the key.
    """
    if not isinstance(obj, dict):
        raise RecordError("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    f = fields.get
    used = {f(n) for n in REQUIRED[schema] + OPTIONAL.get(schema, [])} - {None}
    repairs: list[str] = []
    system = _text(obj, f("system"), "system", required=False) if schema in OPTIONAL and "system" in OPTIONAL[schema] else ""
    head = [{"role": "system", "content": system}] if system.strip() else []
    inp, idx = None, len(head)
    if schema == "messages":
        msgs, repairs = _turns(obj.get(f("messages")), f("messages"), ("role", "content"), repair)
    elif schema == "sharegpt":
        msgs, repairs = _turns(obj.get(f("conversations")), f("conversations"), ("from", "value"), repair)
    elif schema == "alpaca":
        msgs = head + [{"role": "user", "content": _text(obj, f("instruction"), "instruction")},
                       {"role": "assistant", "content": _text(obj, f("output"), "output")}]
        inp = _text(obj, f("input"), "input", required=False)
    elif schema == "prompt_completion":
        msgs = head + [{"role": "user", "content": _text(obj, f("prompt"), "prompt")},
                       {"role": "assistant", "content": _text(obj, f("completion"), "completion")}]
    elif schema == "qa":
        question = _text(obj, f("question"), "question")
        instruction = _text(obj, f("instruction"), "instruction", required=False) if f("instruction") else ""
        user, inp = (instruction, question) if instruction.strip() else (question, None)
        msgs = head + [{"role": "user", "content": user},
                       {"role": "assistant", "content": _text(obj, f("answer"), "answer")}]
    else:
        raise RecordError("unknown_schema", f"schema {schema!r} cannot convert a single object")
    group = None
    if group_field:
        g = obj.get(group_field)
        group = None if g is None or g == "" else str(g)
    return Draft(msgs, inp, idx, group, _meta(obj, used), repairs)


def convert_session(rows: list[tuple[int, dict]], fields: dict[str, str], repair: bool) -> Draft:
    """Turn the rows of one chat-log session (``(line, row)`` in turn order) into a Draft.

    Rows with role ``system`` are log events, not instructions: they go to
    ``meta["system_events"]`` (line and text) and the domain system prompt is used instead.

    Raises:
        RecordError: ``unknown_role`` naming the line and value (unless ``repair``).
    """
    msgs, repairs, events = [], [], []
    for line, row in rows:
        role = normalize_role(row.get(fields["role"]))
        if role == "system":  # a log event ("chat started", "transferred"), not an instruction
            events.append({"line": line, "text": _text(row, fields["text"], "text", required=False)})
            continue
        if role is None:
            if not repair:
                raise RecordError("unknown_role", f"line {line}: {fields['role']} = {row.get(fields['role'])!r}")
            repairs.append("drop_unknown_role")
            continue
        msgs.append({"role": role, "content": _text(row, fields["text"], "text", required=False)})
    return Draft(msgs, repairs=repairs, meta={"system_events": events} if events else {})
