"""Declarative source mapping: nested, linked and wide records -> conversations, no code.

``prepare.sources`` maps a file glob to a :class:`~domainft.config.SourceParams`; a file it
matches is read here instead of by schema detection. Steps per file::

    container -> records (path) -> explode (list path | column regex) -> join -> where -> templates

- **records**: the file's top level (JSON array, JSONL rows, table rows) or ``records: a.b`` inside
  it; a path ending at an object whose values are all objects gives one record per key (``key``).
- **explode**: one record per element of a list (``item``, ``index``; the parent's fields stay
  visible) or, with ``explode_columns: REGEX``, per matching column (``item = {name, column,
  value}``, ``name`` = the regex's first group), e.g. CUAD's ``(.+)-Answer`` columns.
- **join**: a lookup file (read whole, never as records) keyed by a template over its rows.
- **templates** (jinja2, sandboxed, undefined names are errors) render system/user/assistant,
  ``group`` and ``meta``; filters :func:`table`, :func:`literal` and :func:`company_key` (a
  company name or ticker -> one key, for a group shared by sources that name companies
  differently). Besides the record's fields a template sees ``record`` (the whole record),
  ``item``/``index`` (explode), ``key`` (dict of records) and ``source_file`` (the file's name, e.g. ``mtsdialog_valid.csv``: ids that restart in
  each file, such as MTS-Dialog's ``ID``, make a group key unique with it).
- **dedup_key**: a template whose text near-duplicate removal compares instead of the whole
  conversation (e.g. question + answer, when many records share one long case text).
- **thread**: one sample per agent reply with its history, from a list of turns in each record
  (STC3) or from reply links between rows (twcs); see :func:`_link_threads`.

A thread's customer rows that only serve as history are yielded as context (no draft, no
error): counted in ``rows`` and ``context_rows``, not in ``read``.

Numbering: a sample's ``line`` is its source record's (JSONL/CSV physical line, JSON element
index); ``meta.element`` is its explode index or thread turn. Accounting: ``read`` counts samples
plus records that give none (``where`` false, no reply), so ``read == kept + rejected`` holds.

Errors: a template or path that fails on a file's **first** record is a mapping mistake and raises
:class:`MappingError` (one ``error:`` line naming file:record, the params key and the path); a
later record that fails is rejected with reason ``mapping_error`` naming the same.
"""
from __future__ import annotations

import ast
import fnmatch
import functools
import json
import re
import unicodedata
from pathlib import Path
from typing import Any, Iterator

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from domainft.data.records import RecordError
from domainft.data.schemas import Draft, META_MAX_CHARS
from domainft.errors import DomainftError

SCHEMA = "mapped"
_FALSE = {"", "false", "0"}  # a rendered `where` that is one of these (casefolded) rejects the record


class MappingError(DomainftError, ValueError):
    """A ``prepare.sources`` mapping does not fit its file (message: file:record, key, path)."""


def table(rows: Any) -> str:
    """Render a 2-D list (first row = header) or a list of objects as a pipe table.

    ``[["", "2019"], ["Sales", "1.5"]]`` -> ``"| | 2019 |\\n| --- | --- |\\n| Sales | 1.5 |"``;
    cells are stripped, inner newlines become spaces, ``|`` is escaped. An empty list gives "".
    """
    if isinstance(rows, dict):
        rows = [rows]
    if not rows:
        return ""
    if isinstance(rows[0], dict):
        header = list(dict.fromkeys(k for r in rows for k in r))
        rows = [header] + [[r.get(k, "") for k in header] for r in rows]

    def cell(v):
        return " ".join(str("" if v is None else v).split()).replace("|", "\\|")

    width = max(len(r) for r in rows)
    lines = ["| " + " | ".join(cell(v) for v in list(r) + [""] * (width - len(r))) + " |" for r in rows]
    return "\n".join([lines[0], "|" + " --- |" * width] + lines[1:])


def literal(text: Any) -> Any:
    """A Python or JSON literal held in a string (``"['a', 'b']"`` -> ``['a', 'b']``); non-strings
    pass through. Raises ValueError naming the text's start when it is not a literal."""
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        try:
            return json.loads(text)
        except ValueError:
            raise ValueError(f"not a literal: {text[:60]!r}") from None


# Trailing words dropped by :func:`normalise_company` (after punctuation is removed), repeatedly.
COMPANY_SUFFIXES = frozenset({"inc", "incorporated", "corporation", "corp", "company", "co", "plc", "ltd",
                              "limited", "holdings", "holding", "llc", "lp", "sa", "ag", "se", "nv"})
_TICKER_SHAPE = re.compile(r"[A-Z0-9][A-Z0-9.\-]{0,9}")  # how a ticker is written: CVS, BRK.B, 7267, 3M


def normalise_company(text: Any) -> str:
    """A company name's comparable form: NFKC, casefolded, parentheses dropped, ``& . ' ’`` removed,
    other punctuation -> space, a leading ``the`` and trailing :data:`COMPANY_SUFFIXES` dropped
    (never the last word). ``"The AES Corporation"`` -> ``"aes"``, ``"Johnson & Johnson"`` ->
    ``"johnson johnson"``, ``"Alphabet Inc. (Class A)"`` -> ``"alphabet"``, ``"AT&T Inc."`` -> ``"att"``."""
    s = unicodedata.normalize("NFKC", "" if text is None else str(text)).casefold()
    s = re.sub(r"\([^)]*\)", " ", s)
    s = re.sub(r"[&.'\u2019]", "", s)
    words = re.sub(r"[\W_]+", " ", s).split()
    if len(words) > 1 and words[0] == "the":
        words = words[1:]
    while len(words) > 1 and words[-1] in COMPANY_SUFFIXES:
        words.pop()
    return " ".join(words)


@functools.lru_cache(maxsize=1)
def company_table() -> tuple[dict[str, str], dict[str, str]]:
    """``(name -> key, ticker -> key)`` from pytickersymbols' offline table (loaded on first use,
    once per process, ~0.5 s; see :func:`company_key`).

    A company is every table entry with the same :func:`normalise_company` name (Alphabet's GOOG
    and GOOGL are one); its key is the first of its primary and NYSE/NASDAQ symbols by (has a
    ``.`` suffix, length, text): ``GOOG``, ``ASML`` (not ``ASML.AS``). Tickers: each entry's primary ``symbol``, then the
    NYSE/NASDAQ symbols of its Google list, its Yahoo symbols, then its other exchanges' symbols
    (prefix dropped); a ticker that two companies share goes to the earlier of that order, then to
    the smaller key (``BA``: Boeing's primary symbol, not BAE Systems' London one)."""
    from pytickersymbols import PyTickerSymbols

    symbols: dict[str, set[str]] = {}
    entries = []
    for stock in PyTickerSymbols().get_all_stocks():
        name = normalise_company(stock.get("name"))
        if not name:
            continue
        primary = (stock.get("symbol") or "").strip().upper()
        listed = stock.get("symbols") or []
        us = [g.split(":")[-1] for g in ((x.get("google") or "").strip().upper() for x in listed)
              if g.startswith(("NYSE:", "NASDAQ:"))]
        symbols.setdefault(name, set()).update(t for t in [primary, *us] if t)
        entries.append((name, primary, listed))
    names = {name: min(syms, key=lambda t: ("." in t, len(t), t)) for name, syms in symbols.items() if syms}
    ranked: dict[str, tuple[int, str]] = {}
    for name, primary, listed in entries:
        key = names.get(name)
        if key is None:
            continue
        found = [(0, primary)] if primary else []
        for sym in listed:
            google, yahoo = (sym.get("google") or "").strip().upper(), (sym.get("yahoo") or "").strip().upper()
            if google:
                found.append((1 if google.startswith(("NYSE:", "NASDAQ:")) else 3, google.split(":")[-1]))
            if yahoo:
                found.append((2, yahoo))
        for rank, ticker in found:
            if ticker and (ticker not in ranked or (rank, key) < ranked[ticker]):
                ranked[ticker] = (rank, key)
    return names, {t: key for t, (_, key) in ranked.items()}


def company_key(value: Any) -> str:
    """One key for a company however a source names it: ``"CVS Health"`` and ``"CVS"`` -> ``"CVS"``,
    ``"AES Corporation"`` and ``"AES"`` -> ``"AES"``, ``"3M"`` -> ``"MMM"``, ``"Johnson & Johnson"``
    -> ``"JNJ"``; the jinja filter ``company_key`` (e.g. ``group: "{{ company | company_key }}"``).

    Resolution, deterministic: a value written like a ticker (upper-case letters, digits, ``.``
    ``-``, no space, at most 10 characters) is looked up as a ticker first, then by name; any
    other value by its :func:`normalise_company` name first, then as a ticker (upper-cased). So
    ``"HP"`` is Helmerich & Payne's ticker while ``"HP Inc."`` is HP (HPQ). A value found in
    neither gives its normalised name (``"Acme Widgets Ltd."`` -> ``"acme widgets"``; keys from
    the table are upper-case, so the two never collide). Table: pytickersymbols (pinned in
    requirements.txt; S&P 500/600, NASDAQ 100, Dow, DAX, FTSE 100, Nikkei 225 and other indices,
    ~1,800 companies, offline), see :func:`company_table`. Its limits: companies outside those
    indices, and names that differ beyond suffixes (``"JPMorgan"`` vs ``"JPMorgan Chase"``), are
    not matched: name them in ``split.group_aliases``.
    """
    return _company_key("" if value is None else str(value))


@functools.lru_cache(maxsize=65536)
def _company_key(value: str) -> str:
    text = unicodedata.normalize("NFKC", value).strip()
    names, tickers = company_table()
    name = normalise_company(text)
    ticker = text.upper().replace("-", ".") if " " not in text else None
    if _TICKER_SHAPE.fullmatch(text):
        order = [tickers.get(text.replace("-", ".")), tickers.get(text), names.get(name)]
    else:
        order = [names.get(name), tickers.get(ticker) if ticker else None]
    return next((k for k in order if k), name)


_ENV = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False, autoescape=False)
_ENV.filters.update(table=table, literal=literal, company_key=company_key)


def get_path(obj: Any, path: str) -> Any:
    """Value at a dotted path (``a.b.0.c``; list indices are integers); ``""`` = ``obj``.

    Raises:
        KeyError: naming the first step that does not exist.
    """
    if not path:
        return obj
    cur = obj
    for i, step in enumerate(path.split(".")):
        if isinstance(cur, dict) and step in cur:
            cur = cur[step]
        elif isinstance(cur, list) and step.lstrip("-").isdigit() and -len(cur) <= int(step) < len(cur):
            cur = cur[int(step)]
        else:
            have = list(cur)[:12] if isinstance(cur, dict) else type(cur).__name__
            raise KeyError(f"path {path!r}: no {step!r} at {'.'.join(path.split('.')[:i]) or 'top level'} (has {have})")
    return cur


class Source:
    """One compiled mapping (templates parsed once) for the files of one glob."""

    def __init__(self, glob: str, cfg, lookups: dict[str, dict[str, Any]] | None = None):
        self.glob, self.cfg, self.where_key = glob, cfg, f"prepare.sources[{glob!r}]"
        self.lookups = lookups or {}
        self.templates = {}
        names = ["system", "user", "assistant", "group", "where", "dedup_key"]
        if cfg.thread is None and (cfg.user is None or cfg.assistant is None):
            raise MappingError(f"{self.where_key}: needs user and assistant templates (or a thread)")
        if cfg.thread is not None and not (cfg.thread.turns or (cfg.thread.id and cfg.thread.reply_to)):
            raise MappingError(f"{self.where_key}.thread: set turns (a list of turns) or id + reply_to (reply links)")
        items = [(n, getattr(cfg, n)) for n in names] + [(f"meta.{k}", v) for k, v in cfg.meta.items()]
        items += [(f"join[{i}].match", j.match) for i, j in enumerate(cfg.join)]
        for name, text in items:
            if text is None:
                continue
            try:
                self.templates[name] = _ENV.from_string(text)
            except TemplateError as err:
                raise MappingError(f"{self.where_key}.{name}: bad template ({err})") from None
        self.columns = re.compile(cfg.explode_columns) if cfg.explode_columns else None

    def render(self, name: str, ctx: dict) -> str:
        return self.templates[name].render(ctx).strip()


def load_lookup(path: Path, rel: str, join, glob: str, encoding: str | None) -> dict[str, Any]:
    """Rows of a join file keyed by the rendered ``join.key`` (first row wins).

    Raises:
        MappingError: the file cannot be read, or the key template fails on a row.
    """
    from domainft.data.ingest import read_objects

    try:
        tpl = _ENV.from_string(join.key)
        objects, problem = read_objects(path, rel, encoding)
        out: dict[str, Any] = {}
        for line, row, err in objects:
            if err is None and isinstance(row, dict):
                try:
                    out.setdefault(tpl.render(_context(row)).strip(), row)
                except (TemplateError, TypeError, ValueError, KeyError) as e:
                    raise MappingError(f"{rel}:{line}: prepare.sources[{glob!r}].join.key: {e}") from None
        return out
    except (TemplateError, RecordError) as err:
        raise MappingError(f"{rel}: prepare.sources[{glob!r}].join ({join.file}): {err}") from None


def _context(record: Any, **extra) -> dict:
    ctx = {k: v for k, v in record.items() if isinstance(k, str)} if isinstance(record, dict) else {}
    ctx["record"] = record
    ctx.update(extra)
    return ctx


def expand_records(objects: Iterator, path: str) -> Iterator[tuple[int, Any, Any, RecordError | None]]:
    """``(line, key, record, error)`` for every record under ``path`` of each top-level object.

    A list yields its elements (line = element index, 1-based, for a file that is one JSON value);
    an object whose values are all objects yields one record per key; anything else is one record.
    """
    for line, obj, err in objects:
        if err is not None:
            yield line, None, obj, err
            continue
        try:
            target = get_path(obj, path)
        except KeyError as e:
            yield line, None, obj, RecordError("mapping_error", f"records: {e.args[0]}")
            continue
        if isinstance(target, list) and (path or line == 0):
            for i, rec in enumerate(target, 1):
                yield (i if line == 0 else line), None, rec, None
        elif isinstance(target, dict) and len(target) > 1 and all(isinstance(v, dict) for v in target.values()):
            for i, (k, rec) in enumerate(target.items(), 1):
                yield (i if line == 0 else line), k, rec, None
        else:
            yield (1 if line == 0 else line), None, target, None


def whole_json(text: str) -> Iterator[tuple[int, Any, RecordError | None]] | None:
    """The file as one JSON value (``[(0, value, None)]``), or None when it is not one (JSONL)."""
    try:
        return iter([(0, json.loads(text), None)])
    except ValueError:
        return None


def iter_mapped(objects: Iterator, rel: str, src: Source) -> Iterator[tuple[int, Any, Draft | None, RecordError | None, int]]:
    """Map one file's objects: ``(line, raw, draft, error, source_records)`` per sample or reject.

    ``source_records`` is 1 on the first output of each source record, else 0 (for ``rows``).

    Raises:
        MappingError: a template or path fails on the file's first record (see module docstring).
    """
    cfg = src.cfg
    records = expand_records(objects, cfg.records)
    if cfg.thread is not None and cfg.thread.reply_to:
        yield from _link_threads(records, rel, src)
        return
    first = True
    fname = Path(rel).name
    for line, key, rec, err in records:
        if err is not None:
            if first and err.reason == "mapping_error":
                raise MappingError(f"{rel}:{line}: {src.where_key}.{err.detail}")
            yield line, rec, None, err, 1
            first = False
            continue
        new = 1
        try:
            for element, raw, draft, rerr in _map_record(rec, key, src, fname):
                yield line, raw, draft, rerr, new
                new = 0
        except (TemplateError, TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
            detail = f"{_where(src, e)}: {e.args[0] if isinstance(e, KeyError) and e.args else e}"
            if first:
                raise MappingError(f"{rel}:{line}: {detail}") from None
            yield line, rec, None, RecordError("mapping_error", detail), new
        first = False


def _where(src: Source, err: Exception) -> str:
    return f"{src.where_key}.{getattr(err, 'mapping_key', '?')}"


def _render(src: Source, name: str, ctx: dict) -> str:
    try:
        return src.render(name, ctx)
    except Exception as e:
        e.mapping_key = name
        raise


def _items(rec: Any, src: Source) -> list[tuple[Any, Any]]:
    cfg = src.cfg
    if src.columns is not None:
        if not isinstance(rec, dict):
            raise TypeError(f"explode_columns needs an object, got {type(rec).__name__}")
        out = []
        for col, value in rec.items():
            m = src.columns.fullmatch(col)
            if m:
                name = m.group(1) if m.groups() else col
                out.append((len(out), {"name": name, "column": col, "value": value}))
        return out
    if cfg.explode:
        return list(enumerate(_list_at(rec, cfg.explode, "explode")))
    return [(None, None)]


def _list_at(rec: Any, path: str, key: str) -> list:
    """The list at dotted ``path`` of ``rec`` (explode, thread.turns).

    Raises:
        KeyError: the path is missing; TypeError: it holds no list. Both carry ``mapping_key = key``
        (the params key named in the error, e.g. ``explode`` or ``thread.turns``).
    """
    try:
        value = get_path(rec, path)
    except KeyError as e:
        e.mapping_key = key
        raise
    if not isinstance(value, list):
        err = TypeError(f"{key} path {path!r} is a {type(value).__name__}, not a list")
        err.mapping_key = key
        raise err
    return value


def _map_record(rec: Any, key: Any, src: Source, fname: str = "") -> Iterator[tuple[Any, Any, Draft | None, RecordError | None]]:
    """``(element, raw, draft, error)`` for each sample of one source record (``fname``: the file's
    name, ``source_file`` in templates)."""
    cfg = src.cfg
    base = _meta(rec)
    for index, item in _items(rec, src):
        ctx = _context(rec, item=item, index=index, key=key, source_file=fname)
        raw = rec if item is None else {"item": item, "index": index}
        missing = None
        for i, j in enumerate(cfg.join):
            on = _render(src, f"join[{i}].match", ctx)
            row = src.lookups.get(j.name, {}).get(on)
            if row is None and j.required:
                missing = RecordError("join_missing", f"{src.where_key}.join[{i}]: no row of {j.file} with key {on!r}")
            ctx[j.name] = row
        if missing is not None:
            yield index, raw, None, missing
            continue
        if "where" in src.templates and _render(src, "where", ctx).lower() in _FALSE:
            yield index, raw, None, RecordError("where", f"{src.where_key}.where is false", kind="filtered")
            continue
        meta = dict(base)
        if index is not None:
            meta["element"] = index
        if key is not None:
            meta["key"] = key
        meta.update({k: _render(src, f"meta.{k}", ctx) for k in cfg.meta})
        if "dedup_key" in src.templates:
            meta["dedup_key"] = _render(src, "dedup_key", ctx)
        group = _render(src, "group", ctx) if "group" in src.templates else None
        head = _system(src, ctx)
        if cfg.thread is not None:
            yield from _turn_threads(rec, ctx, src, head, group, meta)
            continue
        msgs = head + [{"role": "user", "content": _render(src, "user", ctx)},
                       {"role": "assistant", "content": _render(src, "assistant", ctx)}]
        yield index, raw, Draft(msgs, group=group or None, meta=meta), None


def _system(src: Source, ctx: dict) -> list[dict[str, str]]:
    if "system" not in src.templates:
        return []
    text = _render(src, "system", ctx)
    return [{"role": "system", "content": text}] if text else []


def _meta(rec: Any) -> dict[str, Any]:
    if not isinstance(rec, dict):
        return {}
    return {k: v for k, v in rec.items() if isinstance(k, str) and not isinstance(v, (list, dict))
            and not (isinstance(v, str) and len(v) > META_MAX_CHARS)}


def _turn_text(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(str(v).strip() for v in value if v is not None and str(v).strip())
    return "" if value is None else str(value).strip()


def _samples(turns: list[tuple[str, str]], max_history: int) -> Iterator[tuple[int, list[dict[str, str]]]]:
    """``(turn index, messages)`` per assistant turn that follows a user turn: empty turns dropped,
    consecutive same-role turns merged (newline), leading assistant turns dropped, the history cut
    to the last ``max_history`` turns before the reply (0 = all) starting with a user turn."""
    merged: list[list] = []  # [role, text, index of the last raw turn]
    for i, (role, text) in enumerate(turns):
        if not text:
            continue
        if merged and merged[-1][0] == role:
            merged[-1][1] += "\n" + text
            merged[-1][2] = i
        elif merged or role == "user":
            merged.append([role, text, i])
    for j, (role, _, i) in enumerate(merged):
        if role != "assistant" or j == 0:
            continue
        start = 0 if not max_history else max(0, j - max_history)
        if merged[start][0] != "user":
            start += 1
        yield i, [{"role": r, "content": t} for r, t, _ in merged[start:j + 1]]


def _role(value: Any, th) -> str | None:
    return th.roles.get(str(value).strip()) if value is not None else None


def _turn_threads(rec, ctx, src, head, group, meta) -> Iterator:
    th = src.cfg.thread
    turns = _list_at(rec, th.turns, "thread.turns")
    pairs = []
    for t in turns:
        role = _role(t.get(th.role) if isinstance(t, dict) else None, th)
        if role is None:
            yield None, rec, None, RecordError("unknown_role", f"{src.where_key}.thread.roles: no role for "
                                               f"{th.role} = {t.get(th.role) if isinstance(t, dict) else t!r}")
            return
        pairs.append((role, _turn_text(t.get(th.text))))
    out = list(_samples(pairs, th.max_history))
    if not out:
        yield None, rec, None, RecordError("thread_unanswered", "no agent reply after a customer turn", kind="filtered")
    for i, msgs in out:
        yield i, {"turn": i}, Draft(head + msgs, group=group, meta={**meta, "element": i, **_thread_key(meta, msgs)}), None


def _thread_key(meta: dict, msgs: list[dict[str, str]]) -> dict[str, str]:
    """A thread sample's near-dedup text unless ``dedup_key`` is set: its last user turn and the
    reply (the samples of one thread share their history, which would make them near-duplicates)."""
    if "dedup_key" in meta:
        return {}
    return {"dedup_key": "\n".join(m["content"] for m in msgs[-2:])}


def _norm_id(value: Any) -> str | None:
    """Reply ids as text: ``123.0`` (a float column) -> ``123``; blank/NaN -> None."""
    if value is None:
        return None
    s = str(value).strip()
    if s == "" or s.lower() == "nan":
        return None
    if s.endswith(".0") and s[:-2].isdigit():
        s = s[:-2]
    return s


def _link_threads(records: Iterator, rel: str, src: Source) -> Iterator:
    """Threads from reply links: rows ``{id, reply_to, role, text}``; each agent row (role ->
    assistant) whose chain of ``reply_to`` reaches a customer row gives one sample: the chain from
    its root down to it. Group = the root's id (unless ``group`` is set). Rows that are in no
    sample's history and give none are rejected (``thread_unanswered``); rows with an unknown
    speaker, and agent rows whose parent is missing from the file, are rejected too."""
    th, cfg = src.cfg.thread, src.cfg
    rows: dict[str, tuple[int, dict]] = {}
    order: list[tuple[int, Any, RecordError | None]] = []
    for line, _, rec, err in records:
        order.append((line, rec, err))
        if err is None and isinstance(rec, dict):
            rid = _norm_id(rec.get(th.id))
            if rid is not None:
                rows.setdefault(rid, (line, rec))
    first = next(((ln, r) for ln, r, e in order if e is None), None)
    if first is not None and (not isinstance(first[1], dict) or th.id not in first[1] or th.reply_to not in first[1]):
        has = list(first[1])[:12] if isinstance(first[1], dict) else type(first[1]).__name__
        raise MappingError(f"{rel}:{first[0]}: {src.where_key}.thread: fields {th.id!r} and {th.reply_to!r} "
                           f"not in the record (has {has})")
    used: set[str] = set()
    results = []
    for line, rec, err in order:
        if err is not None:
            results.append((line, rec, None, err))
            continue
        rid = _norm_id(rec.get(th.id))
        role = _role(rec.get(th.role), th)
        if role is None:
            results.append((line, rec, None, RecordError("unknown_role", f"{src.where_key}.thread.roles: no role for "
                                                         f"{th.role} = {rec.get(th.role)!r}")))
            continue
        if role != "assistant":
            results.append((line, rec, None, None))  # decided below: history of a sample or unanswered
            continue
        chain, seen, cur = [rec], {rid}, _norm_id(rec.get(th.reply_to))
        while cur is not None and cur in rows and cur not in seen:
            seen.add(cur)
            chain.append(rows[cur][1])
            cur = _norm_id(rows[cur][1].get(th.reply_to))
        chain.reverse()
        pairs = [(_role(r.get(th.role), th) or "user", _turn_text(r.get(th.text))) for r in chain]
        msgs = list(_samples(pairs, th.max_history))
        if not msgs or msgs[-1][0] != len(pairs) - 1:
            results.append((line, rec, None, None))
            continue
        used.update(s for s in seen if s != rid)
        ctx = _context(rec, source_file=Path(rel).name)
        root = _norm_id(chain[0].get(th.id))
        group = _render(src, "group", ctx) if "group" in src.templates else root
        meta = {**_meta(rec), "thread": root, "turns": len(msgs[-1][1])}
        meta.update({k: _render(src, f"meta.{k}", ctx) for k in cfg.meta})
        if "dedup_key" in src.templates:
            meta["dedup_key"] = _render(src, "dedup_key", ctx)
        meta.update(_thread_key(meta, msgs[-1][1]))
        results.append((line, rec, Draft(_system(src, ctx) + msgs[-1][1], group=group, meta=meta), None))
    for line, rec, draft, err in results:
        if draft is None and err is None:
            rid = _norm_id(rec.get(th.id))
            if rid in used:  # a customer message inside a sample's history: context, not a sample
                yield line, rec, None, None, 1
                continue
            err = RecordError("thread_unanswered", "no agent reply follows this message in the file", kind="filtered")
        yield line, rec, draft, err, 1


def match_source(rel: str, under: str, sources: dict) -> tuple[str, Any] | None:
    """``(glob, SourceParams)`` of the first ``prepare.sources`` glob matching the file, or None."""
    for glob, cfg in sources.items():
        if any(fnmatch.fnmatch(n, glob) for n in (under, rel, Path(rel).name)):
            return glob, cfg
    return None


def join_globs(sources: dict) -> list[str]:
    """Globs of every join file (read as lookups, never as records)."""
    return [j.file for cfg in sources.values() for j in cfg.join]
