"""General instruction data mixed into the train split (``split.general_mix``), to counter forgetting.

The split stage calls :func:`mix_general` after assigning the domain records: it draws
``round(weight x domain train records)`` general records and appends them to ``train.jsonl`` only;
val and test, which the task evaluation reads, stay domain-only. It lives in the split stage, not
in prepare, because only after the split is the domain train size known and can the mix be kept
out of val and test; prepare's records.jsonl, clusters and dedup report stay domain-only.

Reading and cleaning are prepare's (one policy per concern): the file is read by
:func:`domainft.data.ingest.iter_file` (any schema prepare detects: alpaca, messages, sharegpt,
prompt/completion, qa; JSON array, JSONL, CSV...), cleaned by :func:`domainft.data.clean.clean_batch`
with ``prepare.clean``, redacted with ``prepare.pii``; a malformed record fails the stage under
``prepare.on_error: fail`` (``<file>:<line>: <reason>: <detail>``), else it is written to
``data/splits/general_rejects.jsonl`` with file, line (JSON array: 1-based element index), kind,
reason, detail and raw content, like prepare's rejects.jsonl. No system turn is added: the general
records are trained as the retention set asks them (``evaluate.retention``: no system prompt), so
the domain's system prompt keeps meaning "answer as the domain assistant" (and the remit probes,
asked with it, are not trained to answer off-domain questions).

Excluded (counted in ``excluded``, not mixed): records of the ``evaluate.retention`` sample (the
same :func:`domainft.evaluation.general_set.load_general` sample, matched by the normalised prompt
of the raw record as retention reads it and of the cleaned record), so the retention set stays
held out; exact repeats within the general file; prompts equal to a domain record's (any split),
which the leakage check would count.

Sampling: ``n = weight x domain train records`` (rounded half up); candidates in order of
``sha256(f"{seed}:{content_key}")``, the first ``n`` taken and
written in file order. The same file, seed and weight give the same records; a record's rank
depends on its own content only, so adding general records moves none of the others. When fewer
candidates remain than asked, all are taken (``short: true`` in the metrics, and a warning).

Each mixed record has ``meta.general: true``, ``source`` = the general file and line, its own
``cluster`` (``general:<id>``) and no group.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domainft.data.clean import CleanStats, clean_batch
from domainft.data.ingest import iter_file
from domainft.data.pii import Redactor, redact_raw
from domainft.data.records import Record, RecordError, Reject, content_key, record_id
from domainft.errors import DomainftError
from domainft.evaluation.general_set import general_messages, load_general

log = logging.getLogger(__name__)

BATCH = 4096  # raw records cleaned together (as prepare's CLEAN_BATCH)


class GeneralMixError(DomainftError, ValueError):
    """The general file is missing or unreadable, or a malformed record under ``prepare.on_error: fail``."""


@dataclass
class MixResult:
    """``records``: the mixed records (file order); ``rejects``: malformed or filtered general
    records; ``metrics``: the ``general_mix`` block of metrics/split.json."""

    records: list[Record]
    rejects: list[Reject] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


def prompt_key(messages: list[dict[str, str]]) -> str:
    """Normalised user turns (:func:`~domainft.data.records.content_key` of the user role)."""
    return content_key(messages, ("user",))


def retention_prompt_keys(path: str, max_samples: int, seed: int) -> set[str]:
    """Prompt keys of the records ``evaluate.retention`` scores (its seeded sample of ``path``);
    empty when ``path`` is "". Raises RetentionDataError as the evaluation would."""
    if not path:
        return set()
    return {prompt_key(r["messages"]) for r in load_general(path, max_samples, seed)}


def mix_general(train: list[Record], domain: list[Record], params) -> MixResult:
    """Draw the general records to append to the train split.

    Args:
        train: the domain train split (its size sets the count).
        domain: every domain record (all splits; their prompts are excluded from the mix).
        params: :class:`domainft.config.Params` (``split.general_mix``, ``prepare.clean``,
            ``prepare.pii``, ``prepare.on_error``, ``prepare.repair_roles``, ``evaluate.retention``,
            ``domain.seed`` (the retention sample's seed)).

    Returns:
        :class:`MixResult`; its metrics: ``path``, ``weight``, ``seed``, ``asked`` (weight x len(train),
        rounded half up), ``mixed``, ``short``, ``read``, ``rejected``, ``rejected_by_reason``,
        ``excluded`` (``retention``, ``duplicate``, ``domain_prompt``), ``candidates``,
        ``train_total`` (domain + mixed), ``share`` (mixed / train_total).

    Raises:
        GeneralMixError: file not found or unreadable as a whole; a malformed record with
            ``prepare.on_error: fail``.
        RetentionDataError: ``evaluate.retention.path`` set but unusable.
    """
    mix, prep = params.split.general_mix, params.prepare
    path = Path(mix.path)
    rel = mix.path
    if not path.is_file():
        raise GeneralMixError(f"split.general_mix.path: file not found: {mix.path}")
    held = retention_prompt_keys(params.evaluate.retention.path, params.evaluate.retention.max_samples,
                                 params.domain.seed)
    domain_prompts = {prompt_key(r.messages) for r in domain}
    redactor = Redactor(prep.pii.types, prep.pii.names) if prep.pii.enabled else None
    raw_redactor = Redactor(prep.pii.types, prep.pii.names) if prep.pii.enabled else None
    stats = CleanStats()
    rejects: list[Reject] = []
    excluded: Counter = Counter()
    seen: set[str] = set()
    candidates: list[tuple[str, int, Record]] = []  # (rank, line, record)
    read = 0

    def reject(line: int, err: RecordError, raw: Any, schema: str | None) -> None:
        if err.kind == "malformed" and prep.on_error == "fail":
            raise GeneralMixError(f"{rel}:{line}: {err.reason}: {err.detail}")
        detail = err.detail
        if raw_redactor is not None:  # general_rejects.jsonl is tracked like rejects.jsonl: redacted
            raw, detail = redact_raw(raw, raw_redactor), raw_redactor.redact(detail)
        rejects.append(Reject(rel, line, err.kind, err.reason, detail, raw, schema))

    try:
        items = iter_file(path, rel)
        while batch := list(itertools.islice(items, BATCH)):
            cleaned = iter(clean_batch([it.draft for it in batch if it.draft is not None and it.error is None],
                                       prep.clean, stats, prep.repair_roles))
            for item in batch:
                read += 1
                if item.error is not None:
                    reject(item.line, item.error, item.raw, item.schema)
                    continue
                messages = next(cleaned)
                if isinstance(messages, RecordError):
                    reject(item.line, messages, item.raw, item.schema)
                    continue
                if redactor is not None:
                    messages, _ = redactor.redact_messages(messages)
                as_retention = general_messages(item.raw)
                pkey = prompt_key(messages)
                if pkey in held or (as_retention is not None and prompt_key(as_retention) in held):
                    excluded["retention"] += 1
                    continue
                key = content_key(messages)
                if key in seen:
                    excluded["duplicate"] += 1
                    continue
                seen.add(key)
                if pkey in domain_prompts:
                    excluded["domain_prompt"] += 1
                    continue
                rid = record_id(messages, key)
                rank = hashlib.sha256(f"{mix.seed}:{key}".encode("utf-8")).hexdigest()
                rec = Record(rid, messages, {"file": rel, "line": item.line, "schema": item.schema},
                             f"general:{rid}", None, {**item.draft.meta, "general": True})
                candidates.append((rank, item.line, rec))
    except RecordError as err:  # the whole file cannot be read (unsupported format)
        raise GeneralMixError(f"split.general_mix.path: {rel}: {err.reason}: {err.detail}") from None
    asked = math.floor(mix.weight * len(train) + 0.5)  # half up
    chosen = sorted(sorted(candidates, key=lambda c: c[0])[:asked], key=lambda c: c[1])
    records = [c[2] for c in chosen]
    if len(records) < asked:
        log.warning("split.general_mix: %d general records asked (weight %s x %d train), only %d usable in %s",
                    asked, mix.weight, len(train), len(records), rel)
    total = len(train) + len(records)
    metrics = {
        "path": rel, "weight": mix.weight, "seed": mix.seed, "asked": asked, "mixed": len(records),
        "short": len(records) < asked, "read": read, "rejected": len(rejects),
        "rejected_by_reason": dict(sorted(Counter(r.reason for r in rejects).items())),
        "excluded": {k: excluded[k] for k in ("retention", "duplicate", "domain_prompt")},
        "candidates": len(candidates), "train_total": total, "share": round(len(records) / max(1, total), 4),
    }
    return MixResult(records, sorted(rejects, key=lambda r: r.line), metrics)
