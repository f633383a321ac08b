"""The ``prepare`` pipeline: ingest every raw file, clean, redact PII, deduplicate, account for all.

Flow per raw record: ingest (:mod:`ingest`, :mod:`schemas`) -> clean operators (:mod:`clean`) ->
PII redaction (:mod:`pii`) -> system prompt -> exact dedup -> near dedup -> prompt clusters.
Records are processed in (file path, line) order, so the kept copy of a duplicate is always the
first one and the output is deterministic.

Accounting: for every input file ``read == kept + rejected`` (a chat log counts sessions plus
rows rejected before grouping; ``rows`` gives its physical rows), and every rejected record is
in rejects.jsonl with file, line, kind (``malformed`` | ``filtered`` | ``duplicate``), reason,
detail and raw content (for duplicates, the record it duplicates is named in ``detail``).
"""
from __future__ import annotations

import fnmatch
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domainft.data import dedup
from domainft.data.clean import CleanStats, clean
from domainft.data.ingest import iter_file, match_glob
from domainft.data.pii import Redactor
from domainft.data.records import Record, RecordError, Reject, content_key, loads, record_id, with_system
from domainft.errors import DomainftError


class PrepareError(DomainftError, RuntimeError):
    """``prepare.on_error: fail`` and a record was malformed (message names file, line, reason)."""


@dataclass
class _Candidate:
    file: str
    line: int
    schema: str
    raw: Any
    messages: list[dict[str, str]]
    group: str | None
    meta: dict[str, Any]
    key: str = ""  # content_key(messages), computed once


@dataclass
class PrepareResult:
    records: list[Record]
    rejects: list[Reject]
    metrics: dict[str, Any] = field(default_factory=dict)


def list_raw_files(raw_dir: str | Path, exclude: list[str], include: list[str] = ("*",)) -> list[Path]:
    """Files under ``raw_dir`` (recursive, sorted by relative path) matching an ``include`` glob and
    no ``exclude`` glob (globs match the relative path or the file name)."""
    root = Path(raw_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"raw data folder not found: {root}")
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        def hit(globs):
            return any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(p.name, g) for g in globs)

        if p.is_file() and hit(include) and not hit(exclude):
            out.append(p)
    return out


def prepare(params, system_prompt: str) -> PrepareResult:
    """Run ingest -> clean -> PII -> dedup over ``params.raw_dir``.

    Files are read, cleaned and redacted independently (:func:`_read_file`); with
    ``params.workers`` > 1 (``0`` = one per CPU core) and more than one file holding at least
    :data:`PARALLEL_MIN_BYTES` in all, that happens in worker processes, largest file first. The
    results are merged in file order, so the output is the same byte for byte as with one worker.
    Deduplication then runs once over all files.

    Args:
        params: :class:`domainft.config.PrepareParams`.
        system_prompt: ``domain.system_prompt``, inserted when a record has no system turn.

    Returns:
        records (kept, in (file, line) order), rejects and the metrics dict of metrics/prepare.json.

    Raises:
        FileNotFoundError: raw_dir missing.
        PrepareError: ``on_error: fail`` and a malformed record.
    """
    t0 = time.perf_counter()
    paths = list_raw_files(params.raw_dir, params.exclude, params.include)
    workers = _workers(params.workers, paths)
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        order = sorted(range(len(paths)), key=lambda i: -paths[i].stat().st_size)  # largest first
        with ProcessPoolExecutor(workers) as pool:  # the platform's default start method (fork on Linux)
            futures = {i: pool.submit(_read_file, paths[i], params, system_prompt) for i in order}
            parts = [futures[i].result() for i in range(len(paths))]
    else:
        parts = [_read_file(p, params, system_prompt) for p in paths]
    stats, pii_counts, pii_modified = CleanStats(), Counter(), 0
    files: dict[str, dict[str, Any]] = {}
    rejects: list[Reject] = []
    cands: list[_Candidate] = []
    for part in parts:
        files[part.rel] = part.fm
        rejects += part.rejects
        cands += part.cands
        stats.modified.update(part.stats.modified)
        stats.removed.update(part.stats.removed)
        pii_counts.update(part.pii_counts)
        pii_modified += part.pii_modified

    keep, pairs, dd = _dedup(cands, params.dedup, rejects, files)
    records = _build(keep, pairs, params.dedup)
    for r in records:
        files[r.source["file"]]["kept"] += 1
    rejects.sort(key=lambda r: (r.file, r.line))
    metrics = _metrics(files, stats, pii_counts, pii_modified, dd, records, rejects, time.perf_counter() - t0)
    metrics["workers"] = workers
    return PrepareResult(records, rejects, metrics)


# Below this much raw data in all, worker processes and pickling the results back cost more than they save.
PARALLEL_MIN_BYTES = 8 * 2**20


def _workers(setting: int, paths: list[Path]) -> int:
    """Processes for :func:`prepare`: 1 for one file or under PARALLEL_MIN_BYTES, else at most
    ``setting`` (0 = ``os.cpu_count()``) and at most one per file."""
    import os

    if setting == 1 or len(paths) < 2 or sum(p.stat().st_size for p in paths) < PARALLEL_MIN_BYTES:
        return 1
    return max(1, min(setting or os.cpu_count() or 1, len(paths)))


@dataclass
class _FilePart:
    """What one raw file contributed: its metrics entry, rejects, candidates and operator counts."""

    rel: str
    fm: dict[str, Any]
    rejects: list[Reject]
    cands: list[_Candidate]
    stats: CleanStats
    pii_counts: Counter
    pii_modified: int


def _read_file(path: Path, params, system_prompt: str) -> _FilePart:
    """Ingest, clean and redact one raw file (runs in a worker process when prepare uses several)."""
    rel = f"{params.raw_dir.rstrip('/')}/{path.relative_to(params.raw_dir).as_posix()}"
    part = _FilePart(rel, {"schema": None, "read": 0, "kept": 0, "rejected": 0, "rejected_by_reason": Counter()},
                     [], [], CleanStats(), Counter(), 0)
    fm, stats = part.fm, part.stats
    redactor = Redactor(params.pii.types, params.pii.names) if params.pii.enabled else None

    def reject(line, kind, reason, detail, raw, schema):
        if kind == "malformed" and params.on_error == "fail":
            raise PrepareError(f"{rel}:{line}: {reason}: {detail}")
        part.rejects.append(Reject(rel, line, kind, reason, detail, raw, schema))
        fm["rejected"] += 1
        fm["rejected_by_reason"][reason] += 1

    try:
        under = path.relative_to(params.raw_dir).as_posix()
        items = iter_file(path, rel, schema=match_glob(rel, params.schema_overrides, under), columns=params.columns,
                          encoding=match_glob(rel, params.encodings, under), group_field=params.group_field,
                          repair_roles=params.repair_roles)
        for item in items:
            fm["read"] += 1
            fm["schema"] = fm["schema"] or item.schema
            if item.schema == "chatlog":
                grouped = isinstance(item.raw, dict) and isinstance(item.raw.get("rows"), list)
                fm["rows"] = fm.get("rows", 0) + (len(item.raw["rows"]) if grouped else 1)
            if item.error is not None:
                reject(item.line, item.error.kind, item.error.reason, item.error.detail, item.raw, item.schema)
                continue
            try:
                messages = clean(item.draft, params.clean, stats, params.repair_roles)
            except RecordError as err:
                reject(item.line, err.kind, err.reason, err.detail, item.raw, item.schema)
                continue
            if redactor is not None:
                messages, changed = redactor.redact_messages(messages)
                part.pii_modified += changed
            meta = dict(item.draft.meta)
            if item.draft.repairs:
                meta["repairs"] = item.draft.repairs
            part.cands.append(_Candidate(rel, item.line, item.schema, item.raw, with_system(messages, system_prompt),
                                         item.draft.group, meta))
    except RecordError as err:  # the whole file is unreadable (e.g. unsupported format)
        fm["read"] += 1
        reject(0, err.kind, err.reason, err.detail, None, None)
    if redactor is not None:
        part.pii_counts = redactor.counts
    return part


def _dedup(cands: list[_Candidate], cfg, rejects: list[Reject], files) -> tuple[list[_Candidate], list, dict]:
    """Drop exact then near duplicates (kept = first); return kept, their conversation-similarity
    pairs at ``threshold - cluster_margin`` (for clustering) and counts."""
    def drop(c: _Candidate, reason: str, detail: str):
        rejects.append(Reject(c.file, c.line, "duplicate", reason, detail, c.raw, c.schema))
        files[c.file]["rejected"] += 1
        files[c.file]["rejected_by_reason"][reason] += 1

    dd = {"exact_duplicates": 0, "near_duplicates": 0}
    for c in cands:
        c.key = content_key(c.messages)
    if cfg.exact:
        dups = dedup.exact_duplicates([c.key for c in cands])
        for i, first in dups.items():
            drop(cands[i], "exact_duplicate", f"same normalised text as {cands[first].file}:{cands[first].line}")
        dd["exact_duplicates"] = len(dups)
        cands = [c for i, c in enumerate(cands) if i not in dups]
    if not (cfg.near or cfg.prompt_clusters) or len(cands) < 2:
        return cands, [], dd
    sig = dedup.signatures([c.key for c in cands], cfg.num_perm, cfg.ngram)
    pairs = dedup.similar_pairs(sig, max(0.05, cfg.threshold - cfg.cluster_margin))
    if not cfg.near:
        return cands, pairs, dd
    near = dedup.near_duplicates(len(cands), pairs, cfg.threshold)
    for i, (root, match, sim) in sorted(near.items()):
        m = cands[match]
        drop(cands[i], "near_duplicate", f"Jaccard~{sim:.2f} with {m.file}:{m.line}; kept {cands[root].file}:{cands[root].line}")
    dd["near_duplicates"] = len(near)
    index = {}
    kept = []
    for i, c in enumerate(cands):
        if i not in near:
            index[i] = len(kept)
            kept.append(c)
    pairs = [(index[i], index[j], s) for i, j, s in pairs if i in index and j in index]
    return kept, pairs, dd


def _build(cands: list[_Candidate], pairs: list, cfg) -> list[Record]:
    """Records with cluster = id of the first record of their component, linking conversation pairs
    and (``prompt_clusters``) prompt pairs with similarity >= threshold - cluster_margin."""
    records = [Record(record_id(c.messages, c.key or None), c.messages,
                      {"file": c.file, "line": c.line, "schema": c.schema}, "", c.group, c.meta) for c in cands]
    links = list(pairs)
    if cfg.prompt_clusters and len(records) > 1:
        sig = dedup.signatures([content_key(r.messages, ("user",)) for r in records], cfg.num_perm, cfg.ngram)
        links += dedup.similar_pairs(sig, max(0.05, cfg.threshold - cfg.cluster_margin))
    comp = dedup.Components.of(len(records), links)
    for i, r in enumerate(records):
        r.cluster = records[comp.find(i)].id
    return records


def _metrics(files, stats, pii_counts, pii_modified, dd, records, rejects, seconds) -> dict[str, Any]:
    for fm in files.values():
        fm["rejected_by_reason"] = dict(sorted(fm["rejected_by_reason"].items()))
        fm["accounted"] = fm["read"] == fm["kept"] + fm["rejected"]
    sizes = Counter(r.cluster for r in records)
    read = sum(f["read"] for f in files.values())
    ops = stats.as_dict()
    ops["pii"] = {"modified": pii_modified, "removed": 0}
    ops["exact_dedup"] = {"modified": 0, "removed": dd["exact_duplicates"]}
    ops["near_dedup"] = {"modified": 0, "removed": dd["near_duplicates"]}
    return {
        "files": files,
        "totals": {"files": len(files), "read": read, "kept": len(records), "rejected": len(rejects),
                   "accounted": read == len(records) + len(rejects),
                   "rejected_by_kind": dict(sorted(Counter(r.kind for r in rejects).items())),
                   "rejected_by_reason": dict(sorted(Counter(r.reason for r in rejects).items()))},
        "operators": ops,
        "pii": dict(sorted(pii_counts.items())),
        "dedup": {**dd, "clusters": len(sizes), "multi_record_clusters": sum(1 for n in sizes.values() if n > 1),
                  "records_in_multi_record_clusters": sum(n for n in sizes.values() if n > 1)},
        "schemas": dict(sorted(Counter(r.source["schema"] for r in records).items())),
        "seconds": round(seconds, 3),
        "records_per_s": round(read / seconds, 1) if seconds > 0 else None,
    }


def write_jsonl(path: str | Path, rows) -> int:
    """Write objects with ``to_json()`` one per line (UTF-8); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(r.to_json() + "\n")
            n += 1
    return n


def read_records(path: str | Path) -> list[Record]:
    """Records of a records.jsonl / split file (raises ValueError naming file:line on bad JSON)."""
    out = []
    with Path(path).open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(Record.from_dict(loads(line)))
                except (json.JSONDecodeError, KeyError) as err:
                    raise ValueError(f"{path}:{i}: not a record ({err})") from None
    return out
