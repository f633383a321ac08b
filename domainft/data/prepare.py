"""The ``prepare`` pipeline: ingest every raw file, clean, redact PII, deduplicate, account for all.

Flow per raw record: ingest (:mod:`ingest`, :mod:`schemas`) -> clean operators (:mod:`clean`) ->
PII redaction (:mod:`pii`) -> system prompt -> exact dedup -> near dedup -> prompt clusters.
Records are processed in (file path, line) order, so the kept copy of a duplicate is always the
first one and the output is deterministic.

Accounting: for every input file ``read == kept + rejected`` (a chat log counts sessions plus
rows rejected before grouping; ``rows`` gives its physical rows), and every rejected record is
in rejects.jsonl with file, line, kind (``malformed`` | ``filtered`` | ``duplicate``), reason,
detail and raw content (for duplicates, the record it duplicates is named in ``detail``); with
``prepare.pii.enabled`` the raw content and detail are redacted like the records (every string
of the raw object), since rejects.jsonl is tracked and pushed like them.
"""
from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import pickle
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import orjson

from domainft.data import dedup
from domainft.data.clean import CleanStats, clean_batch
from domainft.data.ingest import Chunk, iter_file, iter_source, jsonl_chunks, match_glob
from domainft.data.mapping import Source, join_globs, load_lookup, match_source
from domainft.data.pii import Redactor, redact_raw
from domainft.data.pool import process_pool
from domainft.data.records import Record, RecordError, Reject, content_key, loads, with_system
from domainft.errors import DomainftError


class PrepareError(DomainftError, RuntimeError):
    """``prepare.on_error: fail`` and a record was malformed (message names file, line, reason)."""


class RecordFileError(DomainftError, ValueError):
    """A line of a records.jsonl / split file (a pipeline output) is not a record; names file:line."""


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

    Files are read, cleaned, redacted and MinHashed in parts (:func:`_read_part`): a whole file,
    or with several workers a line range of a large JSONL file (:func:`~domainft.data.ingest.jsonl_chunks`).
    With ``params.workers`` > 1 (``0`` = one per CPU core) and at least :data:`PARALLEL_MIN_BYTES`
    of raw data, the parts run in worker processes, largest first. The results are merged in
    (file, line) order, so the output is the same byte for byte as with one worker.
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
    lookups = join_globs(params.sources)  # join files are read by the sources that join them, not as records
    paths = list_raw_files(params.raw_dir, params.exclude + lookups, params.include)
    workers = _workers(params.workers, paths)
    tasks = _plan(paths, params, workers)
    workers = min(workers, len(tasks))
    if workers > 1:
        order = sorted(range(len(tasks)), key=lambda i: -tasks[i].size)  # largest first
        with process_pool(workers) as pool:
            futures = {i: pool.submit(_read_part, tasks[i], params, system_prompt) for i in order}
            parts = [futures[i].result() for i in range(len(tasks))]
    else:
        parts = [_read_part(t, params, system_prompt) for t in tasks]
    stats, pii_counts, pii_modified = CleanStats(), Counter(), 0
    files: dict[str, dict[str, Any]] = {}
    rejects: list[Reject] = []
    records: list[Record] = []
    raws, digests = [], []  # per record: its packed raw content (for a duplicate's reject), sha256 of its content_key
    for part in parts:
        _merge_file_metrics(files.setdefault(part.rel, _file_metrics()), part.fm)
        rejects += [replace(r, raw=_unpack_raw(r.raw)) for r in part.rejects]
        for rid, messages, line, schema, group, meta, raw, digest in part.rows:
            records.append(Record(rid, messages, {"file": part.rel, "line": line, "schema": schema}, "", group, meta))
            raws.append(raw)
            digests.append(digest)
        stats.modified.update(part.stats.modified)
        stats.removed.update(part.stats.removed)
        pii_counts.update(part.pii_counts)
        pii_modified += part.pii_modified
    sig, keys = _stack([p.sig for p in parts], [p.keys for p in parts])
    psig, pkeys = _stack([p.psig for p in parts], [p.pkeys for p in parts])
    raw_redactor = Redactor(params.pii.types, params.pii.names) if params.pii.enabled else None
    keep, pairs, dd = _dedup(records, raws, digests, sig, keys, params.dedup, rejects, files, raw_redactor)
    records = _cluster([records[i] for i in keep], keep, pairs, psig, pkeys, params.dedup)
    for r in records:
        files[r.source["file"]]["kept"] += 1
    rejects.sort(key=lambda r: (r.file, r.line))
    metrics = _metrics(files, stats, pii_counts, pii_modified, dd, records, rejects, time.perf_counter() - t0)
    metrics["workers"] = workers
    return PrepareResult(records, rejects, metrics)


# Below this much raw data in all, worker processes and pickling the results back cost more than they save.
PARALLEL_MIN_BYTES = 8 * 2**20
CHUNK_MIN_BYTES = 2 * 2**20  # smallest line range of a JSONL file given to a worker
CLEAN_BATCH = 4096  # raw records cleaned together (clean_batch)


def _workers(setting: int, paths: list[Path]) -> int:
    """Processes for :func:`prepare`: 1 under PARALLEL_MIN_BYTES of raw data, else ``setting``
    (0 = ``os.cpu_count()``); :func:`prepare` then caps it at the number of parts."""
    import os

    if setting == 1 or not paths or sum(p.stat().st_size for p in paths) < PARALLEL_MIN_BYTES:
        return 1
    return max(1, setting or os.cpu_count() or 1)


@dataclass
class _Task:
    """One part of the raw data: a whole file, or a line range (``chunk``) of a large JSONL file."""

    path: Path
    rel: str  # how records and rejects name the file (raw_dir/...)
    under: str  # path under raw_dir, matched by the params globs
    size: int  # bytes, for scheduling
    chunk: Chunk | None = None


def _plan(paths: list[Path], params, workers: int) -> list[_Task]:
    """Parts in (file, line) order; with several workers, JSONL files over the chunk size (the raw
    data over 4 parts per worker, at least CHUNK_MIN_BYTES) are cut at line boundaries."""
    sizes = [p.stat().st_size for p in paths]
    chunk_bytes = max(CHUNK_MIN_BYTES, sum(sizes) // (4 * workers))
    tasks = []
    for path, size in zip(paths, sizes):
        under = path.relative_to(params.raw_dir).as_posix()
        rel = f"{params.raw_dir.rstrip('/')}/{under}"
        chunks = None
        if workers > 1 and size > chunk_bytes and match_source(rel, under, params.sources) is None:
            chunks = jsonl_chunks(path, rel, chunk_bytes, schema=match_glob(rel, params.schema_overrides, under),
                                  columns=params.columns, encoding=match_glob(rel, params.encodings, under))
        if chunks:
            tasks += [_Task(path, rel, under, c.end - c.start, c) for c in chunks]
        else:
            tasks.append(_Task(path, rel, under, size))
    return tasks


def _file_metrics() -> dict[str, Any]:
    return {"schema": None, "read": 0, "kept": 0, "rejected": 0, "rejected_by_reason": Counter()}


def _merge_file_metrics(into: dict[str, Any], fm: dict[str, Any]) -> None:
    """Add one part's counts to its file's entry (the schema is the first part's)."""
    into["schema"] = into["schema"] or fm["schema"]
    for key in ("read", "kept", "rejected"):
        into[key] += fm[key]
    into["rejected_by_reason"].update(fm["rejected_by_reason"])
    for key in ("rows", "context_rows"):
        if key in fm:
            into[key] = into.get(key, 0) + fm[key]


def _stack(sigs: list, keys: list) -> tuple[dedup.StackedRows | None, np.ndarray | None]:
    """The parts' signatures as one row-indexable matrix (not copied) and their band keys, (bands, N)."""
    sigs = [a for a in sigs if a is not None]
    if not sigs:
        return None, None
    return dedup.StackedRows(sigs), np.concatenate([k for k in keys if k is not None], axis=1)


@dataclass
class _FilePart:
    """What one part contributed: its file's counts, rejects, operator counts, the cleaned records
    as tuples ``(id, messages, line, schema, group, meta, packed raw, sha256 of content_key)`` (tuples pickle back
    from a worker about twice as fast as objects), the MinHash signatures of their conversations
    (``sig``) and prompts (``psig``), row i = ``rows[i]``, and the LSH band keys of both at the
    pair threshold (``keys``, ``pkeys``: (bands, rows), :func:`~domainft.data.dedup.band_keys`)."""

    rel: str
    fm: dict[str, Any]
    rejects: list[Reject]
    rows: list[tuple]
    stats: CleanStats
    pii_counts: Counter
    pii_modified: int
    sig: np.ndarray | None = None
    psig: np.ndarray | None = None
    keys: np.ndarray | None = None
    pkeys: np.ndarray | None = None


def _read_part(task: _Task, params, system_prompt: str) -> _FilePart:
    """Ingest, clean, redact and MinHash one part (runs in a worker process when prepare uses several)."""
    rel = task.rel
    part = _FilePart(rel, _file_metrics(), [], [], CleanStats(), Counter(), 0)
    fm, stats = part.fm, part.stats
    keys: list[str] = []  # content_key of each row, for the signatures (rows carry its sha256 only)
    redactor = Redactor(params.pii.types, params.pii.names) if params.pii.enabled else None
    raw_redactor = Redactor(params.pii.types, params.pii.names) if params.pii.enabled else None  # its counts unused

    def reject(line, kind, reason, detail, raw, schema):
        if kind == "malformed" and params.on_error == "fail":
            raise PrepareError(f"{rel}:{line}: {reason}: {detail}")
        if raw_redactor is not None:  # rejects.jsonl is tracked and pushed: redacted like the records
            raw, detail = redact_raw(raw, raw_redactor), raw_redactor.redact(detail)
        part.rejects.append(Reject(rel, line, kind, reason, detail, raw, schema))
        fm["rejected"] += 1
        fm["rejected_by_reason"][reason] += 1

    try:
        source = match_source(rel, task.under, params.sources)
        encoding = match_glob(rel, params.encodings, task.under)
        if source is not None:
            items = iter_source(task.path, rel, _compile_source(source, params), encoding)
        else:
            items = iter_file(task.path, rel, schema=match_glob(rel, params.schema_overrides, task.under),
                              columns=params.columns, encoding=encoding,
                              group_field=params.group_field, repair_roles=params.repair_roles, chunk=task.chunk)
        while batch := list(itertools.islice(items, CLEAN_BATCH)):  # clean_batch hashes n-grams per batch
            cleaned = iter(clean_batch([it.draft for it in batch if it.draft is not None and it.error is None],
                                       params.clean, stats, params.repair_roles))
            for item in batch:
                if source is not None:
                    fm["rows"] = fm.get("rows", 0) + item.rows
                    if item.context:
                        fm["context_rows"] = fm.get("context_rows", 0) + 1
                        continue
                fm["read"] += 1
                fm["schema"] = fm["schema"] or item.schema
                if item.schema == "chatlog":
                    grouped = isinstance(item.raw, dict) and isinstance(item.raw.get("rows"), list)
                    fm["rows"] = fm.get("rows", 0) + (len(item.raw["rows"]) if grouped else 1)
                if item.error is not None:
                    reject(item.line, item.error.kind, item.error.reason, item.error.detail, item.raw, item.schema)
                    continue
                messages = next(cleaned)
                if isinstance(messages, RecordError):
                    reject(item.line, messages.kind, messages.reason, messages.detail, item.raw, item.schema)
                    continue
                if redactor is not None:
                    messages, changed = redactor.redact_messages(messages)
                    part.pii_modified += changed
                meta = dict(item.draft.meta)
                if item.draft.repairs:
                    meta["repairs"] = item.draft.repairs
                messages = with_system(messages, system_prompt)
                key = content_key(messages)
                digest = hashlib.sha256(key.encode("utf-8")).digest()  # record_id(messages) is its first 16 hex
                part.rows.append((digest[:8].hex(), messages, item.line, item.schema, item.draft.group, meta,
                                  _pack_raw(item.raw), digest))
                dkey = meta.get("dedup_key") if source is not None else None  # prepare.sources[...].dedup_key
                keys.append(key if dkey is None else " ".join(str(dkey).split()).casefold())
    except RecordError as err:  # the whole file is unreadable (e.g. unsupported format)
        fm["read"] += 1
        reject(0, err.kind, err.reason, err.detail, None, None)
    if redactor is not None:
        part.pii_counts = redactor.counts
    part.rejects = [replace(r, raw=_pack_raw(r.raw)) for r in part.rejects]  # unpacked by prepare()
    d = params.dedup
    if part.rows and (d.near or d.prompt_clusters):
        part.sig = dedup.signatures(keys, d.num_perm, d.ngram)
        part.keys = dedup.band_keys(part.sig, pair_threshold(d))
    if part.rows and d.prompt_clusters:
        part.psig = dedup.signatures([content_key(row[1], ("user",)) for row in part.rows], d.num_perm, d.ngram)
        part.pkeys = dedup.band_keys(part.psig, pair_threshold(d))
    return part


def _compile_source(source: tuple[str, Any], params) -> Source:
    """The :class:`~domainft.data.mapping.Source` of ``(glob, SourceParams)``, its join files loaded
    from ``params.raw_dir`` (the first file matching each join glob).

    Raises:
        MappingError: a join file is missing or a template does not compile.
    """
    from domainft.data.mapping import MappingError

    glob, cfg = source
    lookups = {}
    root = Path(params.raw_dir)
    for j in cfg.join:
        hits = [p for p in sorted(root.rglob("*")) if p.is_file() and (
            fnmatch.fnmatch(p.relative_to(root).as_posix(), j.file) or fnmatch.fnmatch(p.name, j.file))]
        if not hits:
            raise MappingError(f"prepare.sources[{glob!r}].join: no file {j.file!r} under {root}")
        under = hits[0].relative_to(root).as_posix()
        rel = f"{params.raw_dir.rstrip('/')}/{under}"
        lookups[j.name] = load_lookup(hits[0], rel, j, glob, match_glob(rel, params.encodings, under))
    return Source(glob, cfg, lookups)


def _pack_raw(raw: Any) -> bytes | str | tuple:
    """Raw content for the trip back from a worker: orjson bytes (a tenth of the cost of pickling
    the object, and far smaller in memory); where orjson cannot encode it, ``(raw,)``, or JSON text
    when the object is nested too deep for pickle (which recurses twice per level, json once).
    A kept record's is only read again for a duplicate's reject (:func:`_unpack_raw`)."""
    try:  # copied: orjson's own bytes objects hold ~4 KiB of allocation each (275 MB per 70,000 kept)
        return bytes(memoryview(orjson.dumps(raw)))
    except TypeError:  # integers beyond 64 bits, non-string keys, unknown types, nesting beyond 255
        pass
    try:
        pickle.dumps(raw, protocol=pickle.HIGHEST_PROTOCOL)  # rare: only what orjson refused
        return (raw,)
    except RecursionError:
        return json.dumps(raw)


def _unpack_raw(packed: bytes | str | tuple) -> Any:
    """The raw object of :func:`_pack_raw` (written to rejects.jsonl as the same JSON)."""
    if isinstance(packed, bytes):
        return orjson.loads(packed)
    return json.loads(packed) if isinstance(packed, str) else packed[0]


def pair_threshold(cfg) -> float:
    """Similarity from which pairs link clusters: ``threshold - cluster_margin``, at least 0.05."""
    return max(0.05, cfg.threshold - cfg.cluster_margin)


def _dedup(records: list[Record], raws: list, digests: list[bytes], sig, keys: np.ndarray | None, cfg,
           rejects: list[Reject], files, redactor: Redactor | None = None) -> tuple[list[int], list, dict]:
    """Drop exact then near duplicates (kept = first).

    Args:
        records, raws, digests: every cleaned record, its raw content (:func:`_pack_raw`) and the SHA-256 of its
            content_key (exact duplicates share it; a collision would need a SHA-256 collision).
        sig, keys: their conversation signatures (row i = records[i]) and band keys (column i).

    Returns:
        (indices of the kept records, their conversation-similarity pairs at ``threshold -
        cluster_margin`` as positions in that list, counts).
    """
    def drop(i: int, reason: str, detail: str):
        src = records[i].source
        raw = _unpack_raw(raws[i]) if redactor is None else redact_raw(_unpack_raw(raws[i]), redactor)
        rejects.append(Reject(src["file"], src["line"], "duplicate", reason, detail, raw, src["schema"]))
        files[src["file"]]["rejected"] += 1
        files[src["file"]]["rejected_by_reason"][reason] += 1

    def where(i: int) -> str:
        return f"{records[i].source['file']}:{records[i].source['line']}"

    dd = {"exact_duplicates": 0, "near_duplicates": 0}
    idx = list(range(len(records)))
    if cfg.exact:
        dups = dedup.exact_duplicates(digests)
        for i, first in dups.items():
            drop(i, "exact_duplicate", f"same normalised text as {where(first)}")
        dd["exact_duplicates"] = len(dups)
        idx = [i for i in idx if i not in dups]
    if not (cfg.near or cfg.prompt_clusters) or len(idx) < 2:
        return idx, [], dd
    rows = np.array(idx, dtype=np.int64)
    pairs = dedup.similar_pairs(sig, pair_threshold(cfg), keys=keys[:, rows], rows=rows)
    if not cfg.near:
        return idx, pairs, dd
    near = dedup.near_duplicates(len(idx), pairs, cfg.threshold)
    for p, (root, match, sim) in sorted(near.items()):
        drop(idx[p], "near_duplicate", f"Jaccard~{sim:.2f} with {where(idx[match])}; kept {where(idx[root])}")
    dd["near_duplicates"] = len(near)
    position = {}
    kept = []
    for p, i in enumerate(idx):
        if p not in near:
            position[p] = len(kept)
            kept.append(i)
    pairs = [(position[i], position[j], s) for i, j, s in pairs if i in position and j in position]
    return kept, pairs, dd


def _cluster(records: list[Record], rows: list[int], pairs: list, psig, pkeys: np.ndarray | None,
             cfg) -> list[Record]:
    """Set each record's cluster to the id of the first record of its component, linking
    conversation ``pairs`` and (``prompt_clusters``) prompt pairs with similarity >= threshold -
    cluster_margin (``psig[rows[k]]``, ``pkeys[:, rows[k]]`` = prompt signature and band keys of ``records[k]``)."""
    links = list(pairs)
    if cfg.prompt_clusters and len(records) > 1:
        rows = np.array(rows, dtype=np.int64)
        links += dedup.similar_pairs(psig, pair_threshold(cfg), keys=pkeys[:, rows], rows=rows)
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
    """Records of a records.jsonl / split file (raises :class:`RecordFileError`, a ValueError,
    naming file:line on a line that is not a record)."""
    return [_record(path, i, d) for i, d, _ in _iter_lines(path)]


def read_records_and_lines(path: str | Path) -> tuple[list[Record], list[bytes]]:
    """:func:`read_records` and, for each record, its line of the file as UTF-8 bytes (newline
    included), for a stage that copies records to another file without serialising them again.

    Raises:
        RecordFileError: a line is not a record, naming file:line.
    """
    records, lines = [], []
    for i, d, line in _iter_lines(path):
        records.append(_record(path, i, d))
        lines.append(line if line.endswith(b"\n") else line + b"\n")
    return records, lines


def _record(path: str | Path, i: int, d: dict) -> Record:
    try:
        return Record.from_dict(d)
    except (KeyError, TypeError) as err:
        raise RecordFileError(f"{path}:{i}: not a record (missing or wrong {err})") from None


def iter_record_dicts(path: str | Path) -> Iterator[tuple[int, dict]]:
    """``(line number, JSON object)`` for each non-blank line of a records.jsonl / split file.

    Parsed by :func:`~domainft.data.records.loads`; numbers from the raw data can only be in
    ``meta`` and ``group``, so only those are checked for orjson's big-integer floats.

    Raises:
        RecordFileError: a line is not a JSON object, naming file:line.
    """
    for i, d, _ in _iter_lines(path):
        yield i, d


def _iter_lines(path: str | Path) -> Iterator[tuple[int, dict, bytes]]:
    """(line number, object, line) per non-blank line. The bytes go to the parser undecoded (orjson
    validates UTF-8 itself; :func:`~domainft.data.records.loads` decodes strict UTF-8 for its
    fallback), so a line is accepted only if a UTF-8 text-mode reader sees the same line: no BOM,
    no other encoding, no carriage return but the one of a CRLF line end."""
    with Path(path).open("rb") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                if b"\r" in line and b"\r" in line.rstrip(b"\r\n"):  # text-mode readers (training) end a line there
                    raise ValueError("a carriage return inside the line")
                d = loads(line, numbers_in=("meta", "group"))
                if not isinstance(d, dict):
                    raise ValueError(f"a JSON {type(d).__name__}, not an object")
            except (ValueError, RecursionError) as err:  # json.JSONDecodeError is a ValueError
                raise RecordFileError(f"{path}:{i}: not a record ({err}); rerun the stage that wrote it") from None
            yield i, d, line
