"""The general held-out set of ``evaluate.retention``: reading a general file and its seeded sample.

Kept apart from :mod:`domainft.evaluation.retention` (which loads models) and free of heavy
imports, because the split stage reads the same sample to keep it out of the general mix
(:mod:`domainft.data.general_mix`): the split stage's code is then this file, not the model code.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from domainft.errors import DomainftError


class RetentionDataError(DomainftError, ValueError):
    """The general held-out file is missing or holds no usable record."""


def general_messages(r) -> list[dict] | None:
    """The conversation :func:`load_general` takes from one raw record of a general file: a
    canonical record's ``messages`` (ending with a non-empty assistant turn), or alpaca's
    ``[user: instruction + "\\n\\n" + input, assistant: output]``; None for anything else."""
    if isinstance(r, dict) and isinstance(r.get("messages"), list) and r["messages"] \
            and isinstance(r["messages"][-1], dict) and r["messages"][-1].get("role") == "assistant" \
            and str(r["messages"][-1].get("content", "")).strip():
        return r["messages"]
    if isinstance(r, dict) and str(r.get("output", "")).strip() and str(r.get("instruction", "")).strip():
        q = r["instruction"] + (("\n\n" + r["input"]) if str(r.get("input", "")).strip() else "")
        return [{"role": "user", "content": q}, {"role": "assistant", "content": r["output"]}]
    return None


def load_general(path: str | Path, max_samples: int, seed: int = 0) -> list[dict]:
    """Records of a general held-out file: alpaca (instruction, input, output) or canonical
    (``messages`` ending with an assistant turn) records, in any container prepare reads
    (:func:`domainft.data.ingest.read_objects`: JSON array or object, JSONL, CSV/TSV, Parquet,
    XLSX). Records of other shapes are skipped.

    Args:
        max_samples: keep this many, chosen by a seeded hash of each record's text (0 = all); the
            same file and seed give the same sample.

    Returns:
        ``[{"id": "g<i>", "messages": [user, assistant]}]`` (canonical form).

    Raises:
        RetentionDataError: missing file, not UTF-8, a line that is not JSON (``file:line:
            reason``; the set is scored whole or not at all), an unknown format, or no record
            with a non-empty answer.
    """
    from domainft.data.ingest import read_objects
    from domainft.data.records import RecordError

    path = Path(path)
    if not path.is_file():
        raise RetentionDataError(f"evaluate.retention.path: file not found: {path}")
    try:
        objects, problem = read_objects(path, str(path), "utf-8")
        if problem is not None:
            raise RetentionDataError(f"evaluate.retention.path: {path} is not valid UTF-8 (line {problem.line})")
        raw = []
        for line, obj, err in objects:
            if err is not None:
                raise RetentionDataError(f"evaluate.retention.path: {path}:{line}: {err}")
            raw.append(obj)
    except RecordError as err:  # not a format ingest reads
        raise RetentionDataError(f"evaluate.retention.path: {err}") from None
    records = []
    for i, r in enumerate(raw):
        msgs = general_messages(r)
        if msgs is None:
            continue
        records.append({"id": f"g{i}", "messages": msgs})
    if not records:
        raise RetentionDataError(f"evaluate.retention.path: {path} holds no record with an answer")
    if max_samples and len(records) > max_samples:
        def key(rec):
            return hashlib.sha256(f"{seed}:{json.dumps(rec['messages'], sort_keys=True)}".encode()).hexdigest()
        records = sorted(sorted(records, key=key)[:max_samples], key=lambda r: int(r["id"][1:]))
    return records
