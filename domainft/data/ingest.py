"""Read raw files of any supported container into :class:`RawItem` s, one per raw record.

Containers (by extension, then by content): JSON array, JSONL, or one JSON object (its only list
of objects, or one record per key when every value is an object) whatever the extension
(``.json``, ``.jsonl``, ``.ndjson``; the first non-blank character decides), CSV (delimiter
``,``/``;``/``|`` picked from the header line), TSV (``.tsv``/``.tab``), Parquet (pyarrow) and
XLSX (pandas + openpyxl, only if installed). Text is UTF-8 with or without BOM, LF or CRLF;
another encoding must be named in ``prepare.encodings`` (glob -> codec). A file that is not
valid UTF-8 is still parsed (bytes replaced by U+FFFD) so that each of its records is rejected
with reason ``encoding_error``, naming the file, byte offset and line, instead of crashing the run.

``line`` is 1-based: the physical line where the record starts for JSONL and CSV/TSV (header =
line 1), the element index for a JSON array, the data row index for Parquet, the Excel row for XLSX.
"""
from __future__ import annotations

import codecs
import csv
import fnmatch
import io
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from domainft.data.records import RecordError, loads
from domainft.data.schemas import Draft, convert, convert_session, detect_schema, resolve_fields

log = logging.getLogger(__name__)

JSON_EXT = {".json", ".jsonl", ".ndjson", ".jsonlines"}
# What the json module raises on bad text: JSONDecodeError, ValueError (an integer of over 4300
# digits), RecursionError (nesting deeper than the interpreter's recursion limit)
_BAD_JSON = (ValueError, RecursionError)
TABLE_EXT = {".csv", ".tsv", ".tab", ".parquet", ".xlsx"}
SNIFF_ROWS = 50  # records whose keys decide the schema of a JSON file
csv.field_size_limit(1 << 30)


@dataclass
class RawItem:
    """One raw record: its origin, its raw content and either a Draft or the error that stopped it."""

    file: str
    line: int
    schema: str | None
    raw: Any
    draft: Draft | None = None
    error: RecordError | None = None
    rows: int = 0  # mapped sources: source records this item starts (1 on a record's first sample)
    context: bool = False  # a thread row used only as history of other samples (not a record itself)


class EncodingProblem(RecordError):
    def __init__(self, file: str, offset: int, line: int, encoding: str):
        super().__init__("encoding_error", f"{file}: not valid {encoding} at byte offset {offset} (line {line}); "
                         f"name its encoding in params prepare.encodings")
        self.offset, self.line = offset, line


def match_glob(rel: str, mapping: dict[str, Any], under: str | None = None) -> Any:
    """Value of the first glob in ``mapping`` matching the file's path under raw_dir (``under``,
    e.g. ``legacy/x.csv``), its path as named in records (``rel``, e.g. ``data/raw/legacy/x.csv``)
    or its file name."""
    names = [n for n in (under, rel, Path(rel).name) if n]
    for pattern, value in mapping.items():
        if any(fnmatch.fnmatch(n, pattern) for n in names):
            return value
    return None


def is_utf8(encoding: str | None) -> bool:
    """True for None and every name of UTF-8 or UTF-8 with BOM (``utf8``, ``u8``, ``cp65001``...)."""
    if encoding is None:
        return True
    try:
        return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")
    except LookupError:
        return False


def decode(data: bytes, file: str, encoding: str | None) -> tuple[str, EncodingProblem | None]:
    """Decode ``data``: the named encoding, else UTF-8 (BOM stripped); CRLF kept for the parsers.

    Returns:
        (text, problem): on a decoding error the text is decoded with U+FFFD replacements and
        ``problem`` names the byte offset and line of the first bad byte.
    """
    enc = encoding or "utf-8"
    if is_utf8(enc) and data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode(enc), None
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        return data.decode(enc, errors="replace"), EncodingProblem(file, err.start, line, enc)


def _json_objects(text: str) -> Iterator[tuple[int, Any, RecordError | None]]:
    """Yield ``(line, object, error)`` from a JSON array or JSONL text."""
    stripped = text.lstrip()
    if stripped.startswith("["):  # JSON array: line = 1-based element index
        try:
            whole = loads(text)
        except _BAD_JSON:
            whole = None  # read element by element below, to keep the elements before the error
        if isinstance(whole, list):
            yield from ((i, obj, None) for i, obj in enumerate(whole, 1))
            return
        dec, pos, index = json.JSONDecoder(), len(text) - len(stripped) + 1, 0
        while True:
            while pos < len(text) and text[pos] in " \t\r\n,":
                pos += 1
            if pos < len(text) and text[pos] == "]" and text[pos + 1:].strip():
                line = text.count("\n", 0, pos) + 1
                yield index + 1, text[pos + 1:pos + 2001], RecordError(
                    "invalid_json", f"content after the array's closing ']' (line {line}) is not read; "
                    "a file holds one JSON array or one JSON object per line")
                return
            if pos >= len(text) or text[pos] == "]":
                return
            index += 1
            start = pos
            try:
                obj, pos = dec.raw_decode(text, pos)
            except _BAD_JSON as err:
                where = f"line {err.lineno}, column {err.colno}): {err.msg}" if isinstance(err, json.JSONDecodeError) else f"{err!r})"
                yield index, text[start:start + 2000], RecordError(
                    "invalid_json", f"array element {index} ({where}; the rest of the file cannot be read")
                return
            yield index, obj, None
    lines = text.split("\n")
    if stripped.startswith("{") and len([ln for ln in lines if ln.strip()]) > 1:
        try:  # a single pretty-printed object, e.g. {"data": [...]}
            whole = json.loads(text)
        except _BAD_JSON:
            whole = None
        if isinstance(whole, dict):
            yield from _dict_records(whole)
            return
    if stripped.startswith("{") and len(lines) <= 2 and stripped.rstrip().endswith("}"):  # one object on one line
        try:
            whole = loads(stripped)
        except _BAD_JSON:
            whole = None
        if isinstance(whole, dict) and _keyed_records(whole):
            yield from _dict_records(whole)
            return
    yield from _json_lines(lines)


def _keyed_records(obj: dict) -> bool:
    """An object keyed by record id: at least 2 values, all of them objects."""
    return len(obj) > 1 and all(isinstance(v, dict) for v in obj.values())


def _dict_records(whole: dict) -> Iterator[tuple[int, Any, RecordError | None]]:
    """The records of one JSON object: its only list of objects (``{"data": [...]}``), else one
    per key when it is keyed by record id (the key is kept as ``key`` unless the record has one),
    else the object itself."""
    lists = [v for v in whole.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
    if len(lists) == 1:
        yield from ((i, obj, None) for i, obj in enumerate(lists[0], 1))
    elif _keyed_records(whole):
        yield from ((i, v if "key" in v else {"key": k, **v}, None) for i, (k, v) in enumerate(whole.items(), 1))
    else:
        yield 1, whole, None


def _json_lines(lines: list[str], first_line: int = 1) -> Iterator[tuple[int, Any, RecordError | None]]:
    """JSONL: ``(line, object, error)`` per non-blank line, numbered from ``first_line``."""
    for i, ln in enumerate(lines, first_line):
        ln = ln.strip()
        if not ln:
            continue
        try:
            yield i, loads(ln), None
        except _BAD_JSON as err:
            yield i, ln, RecordError("invalid_json", f"{err.msg} at column {err.colno}" if isinstance(
                err, json.JSONDecodeError) else f"{type(err).__name__}: {str(err)[:200]}")


@dataclass(frozen=True)
class Chunk:
    """Bytes ``[start, end)`` of a JSONL file, starting at physical line ``first_line``, with the
    keys sniffed from the head of the whole file (so every chunk resolves the same schema)."""

    start: int
    end: int
    first_line: int
    keys: tuple[str, ...]


def jsonl_chunks(path: Path, rel: str, chunk_bytes: int, *, schema: str | None = None,
                 columns: dict[str, str] | None = None, encoding: str | None = None) -> list[Chunk] | None:
    """Split a large JSONL file at line boundaries into chunks of about ``chunk_bytes`` that
    :func:`iter_file` reads independently, with the same items as reading the whole file.

    Returns None (read the file whole) when it is not over ``chunk_bytes``, is not UTF-8 JSONL
    (JSON arrays, pretty-printed objects, tables, other encodings or any decoding error), its first
    line is not a JSON object on its own, or its schema is ``chatlog`` (turns are grouped across
    the whole file).
    """
    if path.stat().st_size <= chunk_bytes or path.suffix.lower() in TABLE_EXT:
        return None
    if not is_utf8(encoding):
        return None
    data = path.read_bytes()
    text, problem = decode(data, rel, encoding)
    stripped = text.lstrip()
    if problem is not None or not stripped.startswith("{"):
        return None
    try:
        if not isinstance(loads(stripped.split("\n", 1)[0]), dict):
            return None
    except _BAD_JSON:
        return None
    keys = _sniff_keys(_json_lines(_head_lines(text)))  # what _json_objects(text) reads for JSONL
    if (schema or detect_schema(resolve_fields(keys, columns or {}))) == "chatlog":
        return None
    chunks, start, line = [], 0, 1
    while start < len(data):
        end = data.find(b"\n", start + chunk_bytes)
        end = len(data) if end < 0 else end + 1
        chunks.append(Chunk(start, end, line, tuple(keys)))
        line += data.count(b"\n", start, end)
        start = end
    return chunks if len(chunks) > 1 else None


def _head_lines(text: str) -> list[str]:
    """The first lines of ``text`` holding :data:`SNIFF_ROWS` non-blank lines (all lines if fewer)."""
    cut = 4 * SNIFF_ROWS
    while True:
        lines = text.split("\n", cut)
        if len(lines) <= cut or sum(1 for ln in lines[:-1] if ln.strip()) >= SNIFF_ROWS:
            return lines[:-1] if len(lines) > cut else lines
        cut *= 4


def _sniff_keys(items: list | Iterator) -> list[str]:
    """Keys (first-appearance order) of the objects among the first :data:`SNIFF_ROWS` items."""
    head = items[:SNIFF_ROWS] if isinstance(items, list) else [x for _, x in zip(range(SNIFF_ROWS), items)]
    return list(OrderedDict.fromkeys(k for _, o, e in head if e is None and isinstance(o, dict) for k in o))


def _csv_rows(text: str, delimiter: str | None) -> Iterator[tuple[int, Any, RecordError | None]]:
    first = text.split("\n", 1)[0]
    if delimiter is None:
        delimiter = max([",", ";", "|", "\t"], key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            yield start, None, RecordError("bad_csv", str(err))
            start = reader.line_num + 1
            continue
        line, start = start, reader.line_num + 1
        if not row:
            continue
        if len(row) != len(header):
            yield line, row, RecordError("bad_field_count", f"{len(row)} fields, header has {len(header)}")
            continue
        yield line, dict(zip(header, row)), None


def _binary_rows(path: Path) -> Iterator[tuple[int, Any, RecordError | None]]:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ... on a damaged file
            raise RecordError("unreadable_file", f"{path}: not a readable Parquet file ({err})") from None
        for i, row in enumerate(rows):
            yield i + 1, row, None
        return
    try:
        import pandas as pd

        frame = pd.read_excel(path, dtype=str, keep_default_na=False)
    except ImportError as err:
        raise RecordError("unsupported_format", f"{path}: XLSX needs openpyxl ({err}); export it as CSV") from None
    except Exception as err:  # zipfile.BadZipFile, ValueError, KeyError ... on a damaged file
        raise RecordError("unreadable_file", f"{path}: not a readable XLSX file ({type(err).__name__}: {err})") from None
    for i, row in enumerate(frame.to_dict("records")):
        yield i + 2, row, None


def read_objects(path: Path, rel: str, encoding: str | None,
                 chunk: Chunk | None = None) -> tuple[Iterator, EncodingProblem | None]:
    """``(iterator of (line, obj, error), encoding problem)`` for any supported container, or for
    one :class:`Chunk` of a JSONL file."""
    ext = path.suffix.lower()
    if chunk is not None:
        with path.open("rb") as f:
            f.seek(chunk.start)
            data = f.read(chunk.end - chunk.start)
        if chunk.start > 0:  # jsonl_chunks checked that the whole file decodes; a BOM only counts at byte 0
            text, problem = data.decode("utf-8"), None
        else:
            text, problem = decode(data, rel, encoding)
        return _json_lines(text.split("\n"), chunk.first_line), problem
    if ext in (".parquet", ".xlsx"):
        return _binary_rows(path), None
    text, problem = decode(path.read_bytes(), rel, encoding)
    head = text.lstrip()[:1]
    if ext in JSON_EXT or (ext not in TABLE_EXT and head in ("[", "{")):
        return _json_objects(text), problem
    if ext in TABLE_EXT:
        return _csv_rows(text, "\t" if ext in (".tsv", ".tab") else None), problem
    raise RecordError("unsupported_format", f"{rel}: unknown extension {ext!r} and content is not JSON")


def _ts(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        return None


def iter_file(path: Path, rel: str, *, schema: str | None = None, columns: dict[str, str] | None = None,
              encoding: str | None = None, group_field: str | None = None,
              repair_roles: bool = False, chunk: Chunk | None = None) -> Iterator[RawItem]:
    """Every raw record of one file, converted to a Draft or carrying the error that rejects it.

    Args:
        path: the file; ``rel`` is how it is named in records/rejects (e.g. ``data/raw/faq.csv``).
        schema: force a schema (``prepare.schema_overrides``); default auto-detect.
        columns: canonical field -> column name (``prepare.columns``).
        encoding: codec for a non-UTF-8 file (``prepare.encodings``).
        group_field: key copied into ``Draft.group`` (chat logs default to the session id).
        repair_roles: drop unknown-role turns instead of rejecting.
        chunk: read only this part of a JSONL file (:func:`jsonl_chunks`); the schema comes from
            the keys of the whole file's head.

    Raises:
        RecordError: ``unsupported_format`` for a container that cannot be read at all.
    """
    objects, problem = read_objects(path, rel, encoding, chunk)
    buffered = [] if chunk is not None else [x for _, x in zip(range(SNIFF_ROWS), objects)]
    keys = list(chunk.keys) if chunk is not None else _sniff_keys(buffered)
    fields = resolve_fields(keys, columns or {})
    schema = schema or detect_schema(fields)
    missing_columns = [c for c in (columns or {}).values() if c not in keys] if keys else []
    guessed = {canon: fields[canon] for canon, col in (columns or {}).items() if keys and col not in keys and canon in fields}
    if guessed and (chunk is None or chunk.start == 0):  # a typo must not pass unseen; a preset's mapping may not fit every file
        log.warning("%s: prepare.columns %s name no column of this file; read by name instead: %s (columns %s)",
                    rel, {c: columns[c] for c in guessed}, guessed, keys[:12])

    def all_items():
        yield from buffered
        yield from objects

    if schema == "chatlog":
        yield from _sessions(all_items(), rel, fields, group_field, repair_roles, problem)
        return
    for line, obj, err in all_items():
        item = RawItem(rel, line, schema, obj)
        if problem is not None:
            item.error = problem
        elif err is not None:
            item.error = err
        elif schema is None and missing_columns:
            item.error = RecordError("missing_column", f"prepare.columns maps to {missing_columns}, not among "
                                     f"the file's keys {keys[:12]}; fix the mapping or the header")
        elif schema is None:
            item.error = RecordError("unknown_schema", f"keys {sorted(keys)[:12]} match no schema; set prepare.columns or prepare.schema_overrides")
        else:
            try:
                item.draft = convert(obj, schema, fields, group_field, repair_roles)
            except RecordError as e:
                item.error = e
        yield item


def _sessions(items, rel, fields, group_field, repair, problem) -> Iterator[RawItem]:
    """Group chat-log rows by session (first-appearance order); turns ordered by timestamp when all parse."""
    sessions: dict[str, list[tuple[int, dict]]] = OrderedDict()
    missing = [f for f in ("session", "role", "text") if f not in fields]
    for line, row, err in items:
        if err is None and problem is None and missing:  # e.g. schema_overrides forced chatlog on other data
            err = RecordError("missing_key", f"schema chatlog needs the fields {missing}; map them in prepare.columns")
        if err is None and problem is None and not isinstance(row, dict):
            err = RecordError("not_an_object", f"expected an object, got {type(row).__name__}")
        if err is None and problem is None:
            sid = row.get(fields["session"])
            if sid is None or str(sid).strip() == "":
                err = RecordError("missing_key", f"empty session id ({fields['session']!r})")
            elif row.get(fields["role"]) in (None, ""):
                err = RecordError("missing_key", f"empty role ({fields['role']!r})")
        if err is not None or problem is not None:
            yield RawItem(rel, line, "chatlog", row, error=problem or err)
            continue
        sessions.setdefault(str(sid).strip(), []).append((line, row))
    tkey = fields.get("timestamp")
    for sid, rows in sessions.items():
        if tkey:
            stamps = [_ts(r.get(tkey)) for _, r in rows]
            if all(s is not None for s in stamps):
                try:
                    rows = [r for _, r in sorted(zip(stamps, rows), key=lambda p: (p[0], p[1][0]))]
                except TypeError:  # naive and aware timestamps mixed: keep file order
                    pass
        item = RawItem(rel, min(ln for ln, _ in rows), "chatlog", {"session": sid, "rows": [r for _, r in rows]})
        try:
            item.draft = convert_session(rows, fields, repair)
            item.draft.group = sid
            if group_field and rows[0][1].get(group_field) not in (None, ""):
                item.draft.group = str(rows[0][1][group_field])
            item.draft.meta = {"session_id": sid, "lines": [ln for ln, _ in rows], **item.draft.meta}
        except RecordError as e:
            item.error = e
        yield item


def iter_source(path: Path, rel: str, src, encoding: str | None = None) -> Iterator[RawItem]:
    """Every sample of a file mapped by ``prepare.sources`` (:mod:`domainft.data.mapping`), with
    schema ``mapped``; a file that is one JSON value is mapped whole, JSONL and tables per row.

    Raises:
        RecordError: ``unsupported_format`` for a container that cannot be read at all.
        MappingError: the mapping fails on the file's first record.
    """
    from domainft.data.mapping import SCHEMA, iter_mapped, whole_json

    objects, problem = read_objects(path, rel, encoding)
    if problem is not None:
        for line, obj, _ in objects:
            yield RawItem(rel, line, SCHEMA, obj, error=problem, rows=1)
        return
    ext = path.suffix.lower()
    if ext not in TABLE_EXT:
        text, _ = decode(path.read_bytes(), rel, encoding)
        objects = whole_json(text) or objects
    for line, raw, draft, err, rows in iter_mapped(objects, rel, src):
        yield RawItem(rel, line, SCHEMA, raw, draft, err, rows, context=draft is None and err is None)
