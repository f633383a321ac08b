"""Stable, group-aware train/val/test assignment and an independent leakage check.

Assignment: every record belongs to a *unit*; the unit's key is hashed with the salt,
``u = sha256(salt + "\\x00" + key)[:8] / 2**64`` in [0, 1), and ``u < test_fraction`` -> test,
``u < test_fraction + val_fraction`` -> val, else train. A record's split therefore depends only on
its own unit key, so adding raw data never moves an existing record unless its unit key changes
(a new record that becomes the first member of its cluster, or bridges two clusters).

Balance (``split.balance``): ``hash`` assigns each unit by its own position (above); ``fill``
(the default for ``group_by: group``, where few large units make hash fractions drift: a test
fraction of 0.15 gave 0.067 on 208 records of 24 cases) walks the units in order of that position
and fills test, then val, to their fractions of the records (:func:`_fill`), the rest train. The
metrics report the actual ``fractions``, the largest ``fraction_error`` against the asked ones and
whether it is ``within_tolerance`` (``split.tolerance``, default 0.03).

Units: ``group_by: cluster`` -> the near-duplicate cluster id written by prepare.
``group_by: group`` -> connected components of records linked by the same ``group`` (e.g. company
or chat session) *or* the same cluster, keyed by the smallest group value in the component (its
cluster id when it has no group), so neither a group nor a near-duplicate cluster straddles splits.
With ``stratify_field`` the salt also contains the unit's stratum (``meta[stratify_field]`` of its
first record), so each stratum is split independently, and the report gives split counts per value.

``split.group_aliases`` maps group values (compared ignoring case and surrounding spaces) to the
group they belong to before the units are formed (a user's own names for one company); the
records keep their ``group``, the report's ``groups`` counts the aliased values.

Near links (:func:`find_links`, what makes the leakage check 0 by construction): prepare removes
near duplicates by a MinHash *estimate* (seed 1), so a pair whose exact Jaccard is at the
threshold can survive in two units (legal-review's CUAD + CLAUDETTE: 43 such pairs crossed splits).
Before assigning, the split finds the pairs that its leakage check would count, over all records,
whatever their split: identical conversations (and prompts, with ``prompts``), and LSH candidates
(seed :data:`LEAK_SEED`) of different units whose *exact* character n-gram Jaccard is >= the
threshold; each such pair joins the two units. One pass, independent of the assignment (a unit
never depends on where another one landed); the metrics report ``linked.pairs`` and
``linked.units`` (units merged into another by them).

Leakage check (metrics ``leakage``, all must be 0): clusters or groups in more than one split;
identical normalised conversations or prompts in two splits; and near-duplicate pairs across
splits found by a fresh MinHash LSH pass (different seed than prepare) over the full text and over
the prompts. After linking, the split stage counts these from the linked pairs under the final
assignment (:func:`leakage` with ``links``), so a pair the links missed can only be one the check's
LSH pass misses too (a candidate needs a shared band; buckets above 32 records give a chain and
a star of pairs, see :func:`domainft.data.dedup.candidate_pairs`).
"""
from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from domainft.data import dedup
from domainft.data.records import Record, content_key

SPLITS = ("train", "val", "test")
LEAK_SEED = 7  # MinHash seed of the leakage check (prepare uses 1)
LEAK_PERM = 64  # bins of the leakage check's signatures: candidates only, verified by exact Jaccard


def unit_fraction(key: str, salt: str) -> float:
    """Deterministic position of ``key`` in [0, 1): first 8 bytes of sha256(salt NUL key) / 2**64."""
    return int.from_bytes(hashlib.sha256(f"{salt}\x00{key}".encode("utf-8")).digest()[:8], "big") / 2.0**64


def group_values(records: list[Record], aliases: dict[str, str] | None = None) -> list[str | None]:
    """Each record's ``group`` after ``aliases`` (``split.group_aliases``: group value -> the group it
    belongs to; keys compared casefolded and stripped, values used as written); None stays None."""
    if not aliases:
        return [r.group for r in records]
    fold = {k.strip().casefold(): v.strip() for k, v in aliases.items()}
    return [None if r.group is None else fold.get(str(r.group).strip().casefold(), r.group) for r in records]


def unit_keys(records: list[Record], group_by: str, aliases: dict[str, str] | None = None,
              links: np.ndarray | None = None) -> list[str]:
    """The unit key of each record (see module docstring).

    Args:
        aliases: ``split.group_aliases`` (``group_by: group`` only).
        links: (P, 2) record index pairs that must share a unit (:func:`find_links`); a linked
            component's key is its smallest node key (group keys first).
    """
    return _units(records, group_by, aliases, links)[0]


def _units(records, group_by, aliases=None, links=None) -> tuple[list[str], int]:
    """``(unit key per record, units merged into another by links)``."""
    own = [f"c:{r.cluster or r.id}" for r in records]
    has_links = links is not None and len(links) > 0
    if group_by == "cluster" and not has_links:
        return own, 0
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> bool:
        a, b = find(a), find(b)
        if a == b:
            return False
        lo, hi = sorted((a, b), key=lambda k: (not k.startswith("g:"), k))  # "g:" keys first, then by value
        parent[hi] = lo
        return True

    if group_by == "group":
        for node, g in zip(own, group_values(records, aliases)):
            if g is not None:
                union(node, f"g:{g}")
    merged = 0
    if has_links:
        for i, j in links.tolist():
            merged += union(own[i], own[j])
    return [find(k) for k in own], merged


def assign(records: list[Record], params, links: np.ndarray | None = None) -> tuple[dict[str, list[Record]], dict[str, Any]]:
    """Split records; returns ``({split: records in input order}, metrics)``.

    Args:
        records: prepared records (with ``cluster``; ``group`` used when ``group_by: group``).
        params: :class:`domainft.config.SplitParams`.
        links: (P, 2) index pairs into ``records`` that must share a split (:func:`find_links`);
            reported as ``linked`` ({pairs, units}) when given.
    """
    keys, merged = _units(records, params.group_by, params.group_aliases, links)
    out: dict[str, list[Record]] = {s: [] for s in SPLITS}
    strata: dict[str, Counter] = defaultdict(Counter)
    units: dict[str, set[str]] = {s: set() for s in SPLITS}
    unit_stratum: dict[str, str] = {}  # a unit's stratum is that of its first record
    if params.stratify_field:
        for r, key in zip(records, keys):
            unit_stratum.setdefault(key, str(r.meta.get(params.stratify_field)))
    position = {key: unit_fraction(key, params.salt if unit_stratum.get(key) is None
                                   else f"{params.salt}\x00{unit_stratum[key]}") for key in dict.fromkeys(keys)}
    fill = params.balance == "fill" or (params.balance == "auto" and params.group_by == "group")
    split_of = _fill(keys, position, unit_stratum, params) if fill else None
    for r, key in zip(records, keys):
        stratum = unit_stratum.get(key)
        if split_of is not None:
            name = split_of[key]
        else:
            u = position[key]
            name = "test" if u < params.test_fraction else "val" if u < params.test_fraction + params.val_fraction else "train"
        out[name].append(r)
        units[name].add(key)
        if stratum is not None:
            strata[str(r.meta.get(params.stratify_field))][name] += 1
    n = max(1, len(records))
    metrics: dict[str, Any] = {
        "sizes": {s: len(out[s]) for s in SPLITS},
        "fractions": {s: round(len(out[s]) / n, 4) for s in SPLITS},
        "units": {s: len(units[s]) for s in SPLITS},
        "group_by": params.group_by,
        "groups": {s: len({g for g in group_values(out[s], params.group_aliases) if g is not None}) for s in SPLITS},
    }
    if links is not None:
        metrics["linked"] = {"pairs": int(len(links)), "units": merged}
    asked = {"train": 1 - params.val_fraction - params.test_fraction, "val": params.val_fraction,
             "test": params.test_fraction}
    metrics["balance"] = "fill" if fill else "hash"
    metrics["fraction_error"] = round(max(abs(metrics["fractions"][s] - asked[s]) for s in SPLITS), 4)
    metrics["within_tolerance"] = metrics["fraction_error"] <= params.tolerance
    if params.stratify_field:
        metrics["strata"] = {k: {s: v[s] for s in SPLITS} for k, v in sorted(strata.items())}
    return out, metrics


def _fill(keys: list[str], position: dict[str, float], unit_stratum: dict[str, str], params) -> dict[str, str]:
    """Split of each unit for ``balance: fill``: per stratum, units in order of their hash position
    go to test until its records reach ``test_fraction`` of the stratum, then to val, the rest to
    train; a unit joins a split only if that brings the split's count closer to its target, so a
    unit larger than what is left skips to the next split (and later smaller units fill the gap).
    Deterministic; adding records moves only units near a boundary of that order."""
    sizes = Counter(keys)
    strata: dict[str | None, list[str]] = defaultdict(list)
    for key in sizes:
        strata[unit_stratum.get(key)].append(key)
    out = {}
    for units in strata.values():
        units.sort(key=lambda k: (position[k], k))
        total = sum(sizes[k] for k in units)
        targets = [("test", params.test_fraction * total), ("val", params.val_fraction * total)]
        counts = {"test": 0, "val": 0}
        for key in units:
            out[key] = "train"
            for name, target in targets:
                n = sizes[key]
                if abs(counts[name] + n - target) < abs(counts[name] - target) and counts[name] < target:
                    counts[name] += n
                    out[key] = name
                    break
    return out


def leakage(splits: dict[str, list[Record]], threshold: float, ngram: int, group_by: str = "cluster",
            prompts: bool = True, conversations: dict[str, int] | Future | None = None,
            aliases: dict[str, str] | None = None, links: "Links | None" = None,
            records: list[Record] | None = None) -> dict[str, int]:
    """Count cross-split overlaps (see module docstring); every value should be 0.

    Near pairs: candidates from a MinHash LSH pass with seed :data:`LEAK_SEED`, counted when their
    *exact* character n-gram Jaccard similarity is >= ``threshold``.

    Args:
        conversations: ``exact_conversations`` and ``near_conversations`` when another process
            computes them (:func:`conversation_leaks_of_file`), as a dict or a Future of one;
            None = computed here. Ignored with ``links``.
        aliases: ``split.group_aliases``, for the ``groups`` count.
        links: the pairs :func:`find_links` found over ``records`` (the list they index, every
            record of ``splits``): the exact and near counts are those of its pairs whose records
            are in different splits (no second LSH pass).

    Returns:
        ``clusters``, ``exact_conversations``, ``groups`` (``group_by: group`` only),
        ``exact_prompts``, ``near_conversations``, ``near_prompts`` (the prompt counts only with
        ``prompts``) and their ``total``.
    """
    rows = [(s, r) for s in SPLITS for r in splits.get(s, [])]
    split_of = np.array([SPLITS.index(s) for s, _ in rows], dtype=np.int64)
    report = {"clusters": _exact_cross([r.cluster for _, r in rows], split_of)}
    if group_by == "group":
        report["groups"] = _exact_cross(group_values([r for _, r in rows], aliases), split_of)
    if links is not None:
        where = {id(r): k for k, (_, r) in zip(split_of.tolist(), rows)}
        at = np.array([where[id(r)] for r in records], dtype=np.int64)
        report.update(links.cross(at, prompts))
    else:
        if conversations is None:
            conversations = conversation_leaks([content_key(r.messages) for _, r in rows], split_of, threshold, ngram)
        if prompts:
            prompt = [content_key(r.messages, ("user",)) for _, r in rows]
            report["exact_prompts"] = _exact_cross(prompt, split_of)
            report["near_prompts"] = _near_cross_pairs(prompt, split_of, threshold, ngram)
        if isinstance(conversations, Future):
            conversations = conversations.result()
        report.update(conversations)
    order = ("clusters", "exact_conversations", "groups", "exact_prompts", "near_conversations", "near_prompts")
    report = {name: int(report[name]) for name in order if name in report}
    report["total"] = sum(report.values())
    return report


def conversation_leaks(texts: list[str], split_of: np.ndarray, threshold: float, ngram: int) -> dict[str, int]:
    """``exact_conversations`` (normalised conversations found in more than one split) and
    ``near_conversations`` (cross-split pairs, see :func:`leakage`) of conversation keys
    ``texts`` in :func:`leakage`'s order (``split_of``: the split index of each)."""
    return {"exact_conversations": _exact_cross(texts, split_of),
            "near_conversations": _near_cross_pairs(texts, split_of, threshold, ngram)}


def conversation_leaks_of_file(records_path: str | Path, params, threshold: float, ngram: int) -> dict[str, int]:
    """:func:`conversation_leaks` from records.jsonl on its own: streams the records, keeping only
    each one's conversation key and what :func:`assign` reads (id, cluster, group, stratum), assigns
    them with ``params`` (:class:`domainft.config.SplitParams`; deterministic, so the same splits as
    the caller's, without near links) and counts."""
    keys, light = _light_records(records_path, params)
    splits, _ = assign(light, params)
    position = {id(r): i for i, r in enumerate(light)}
    order = [position[id(r)] for name in SPLITS for r in splits[name]]  # leakage()'s order: LSH groups depend on it
    split_of = np.array([k for k, name in enumerate(SPLITS) for _ in splits[name]], dtype=np.int64)
    return conversation_leaks([keys[i] for i in order], split_of, threshold, ngram)


def _light_records(records_path: str | Path, params) -> tuple[list[str], list[Record]]:
    """Conversation keys and message-less records (id, cluster, group, stratum) of records.jsonl."""
    from domainft.data.prepare import iter_record_dicts

    keys, light = [], []
    for _, d in iter_record_dicts(records_path):
        keys.append(content_key(d["messages"]))
        meta = d.get("meta") or {}
        stratum = {params.stratify_field: meta.get(params.stratify_field)} if params.stratify_field else {}
        light.append(Record(d["id"], [], {}, d.get("cluster", ""), d.get("group"), stratum))
    return keys, light


class Links:
    """Record index pairs (into the caller's record list) that must share a split, by kind:
    ``exact_conversations``, ``near_conversations`` and, when checked, ``exact_prompts`` and
    ``near_prompts``; each a (P, 2) int64 array of pairs of different (unlinked) units."""

    def __init__(self, pairs: dict[str, np.ndarray]):
        self.pairs = pairs

    def all(self) -> np.ndarray:
        """Every pair, sorted and unique, as one (P, 2) array."""
        found = [p for p in self.pairs.values() if len(p)]
        return np.unique(np.concatenate(found), axis=0) if found else np.empty((0, 2), dtype=np.int64)

    def cross(self, split_of: np.ndarray, prompts: bool = True) -> dict[str, int]:
        """Counts as :func:`leakage` reports them, for ``split_of`` (split index of each record):
        exact kinds count distinct texts in more than one split (a pair is (first copy, copy)),
        near kinds count pairs."""
        out = {}
        for kind, p in self.pairs.items():
            if not prompts and kind.endswith("_prompts"):
                continue
            crossing = p[split_of[p[:, 0]] != split_of[p[:, 1]]] if len(p) else p
            out[kind] = len(np.unique(crossing[:, 0])) if kind.startswith("exact") else len(crossing)
        return out


def find_links(records: list[Record], params, threshold: float, ngram: int, prompts: bool = True,
               conversations: dict[str, np.ndarray] | Future | None = None) -> Links:
    """The pairs of ``records`` (in this order) that the leakage check would count if they were in
    different splits and that are in different units before linking (module docstring).

    Args:
        params: :class:`domainft.config.SplitParams` (the units before linking).
        prompts: also link identical and near-duplicate prompts (``prepare.dedup.prompt_clusters``).
        conversations: the conversation pairs when another process finds them
            (:func:`conversation_links_of_file` on the file ``records`` were read from), as a dict or
            a Future of one; None = found here.
    """
    base = _unit_ids(unit_keys(records, params.group_by, params.group_aliases))
    pairs = {}
    if prompts:
        prompt = [content_key(r.messages, ("user",)) for r in records]
        pairs["exact_prompts"], pairs["near_prompts"] = text_links(prompt, base, threshold, ngram)
    if conversations is None:
        conversations = _conversation_pairs([content_key(r.messages) for r in records], base, threshold, ngram)
    elif isinstance(conversations, Future):
        conversations = conversations.result()
    pairs.update(conversations)
    return Links(pairs)


def conversation_links_of_file(records_path: str | Path, params, threshold: float, ngram: int) -> dict[str, np.ndarray]:
    """:func:`find_links`' conversation pairs from records.jsonl on its own, in the file's order:
    streams the records keeping only each one's conversation key and what the units need (id,
    cluster, group). The split stage runs it in a second process while it reads the records and
    links their prompts; keeping no messages holds that process to a fraction of the first one's
    memory."""
    keys, light = _light_records(records_path, params)
    return _conversation_pairs(keys, _unit_ids(unit_keys(light, params.group_by, params.group_aliases)),
                               threshold, ngram)


def _conversation_pairs(texts, base, threshold, ngram) -> dict[str, np.ndarray]:
    exact, near = text_links(texts, base, threshold, ngram)
    return {"exact_conversations": exact, "near_conversations": near}


def _unit_ids(keys: list[str]) -> np.ndarray:
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64)


def text_links(texts: list[str], unit: np.ndarray, threshold: float, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """``(exact, near)`` pairs (i, j) of ``texts`` in different units (``unit``: an id per text).

    exact: (first occurrence, later copy) of identical texts (not ""); near: LSH candidates (seed
    :data:`LEAK_SEED`, :data:`LEAK_PERM` bins, candidate threshold ``threshold - 0.1``, estimate
    prefilter ``threshold - 0.25``) with exact n-gram Jaccard >= ``threshold``. Both (P, 2) int64,
    sorted.
    """
    first: dict[str, int] = {}
    exact = []
    for i, t in enumerate(texts):
        if t:
            f = first.setdefault(t, i)
            if f != i and unit[f] != unit[i]:
                exact.append((f, i))
    exact_arr = np.array(exact, dtype=np.int64).reshape(-1, 2)
    return exact_arr, _near_pairs(texts, unit, threshold, ngram)


def _exact_cross(values: list, split_of: np.ndarray) -> int:
    """Distinct values (not None or "") that occur in more than one split."""
    first: dict[Any, int] = {}
    leaked = set()
    for v, s in zip(values, split_of.tolist()):
        if v is not None and v != "" and first.setdefault(v, s) != s:
            leaked.add(v)
    return len(leaked)


def _near_pairs(texts: list[str], group: np.ndarray, threshold: float, ngram: int) -> np.ndarray:
    """(P, 2) pairs with ``group[i] != group[j]`` and exact n-gram Jaccard >= threshold (LSH
    candidates, seed LEAK_SEED), sorted."""
    if len(texts) < 2:
        return np.empty((0, 2), dtype=np.int64)
    sig = dedup.signatures(texts, LEAK_PERM, ngram, seed=LEAK_SEED)
    cands = dedup.candidate_pairs(sig, max(0.05, threshold - 0.1))
    cands = cands[group[cands[:, 0]] != group[cands[:, 1]]]
    if not len(cands):
        return np.empty((0, 2), dtype=np.int64)
    est = (sig[cands[:, 0]] == sig[cands[:, 1]]).mean(axis=1)
    found, shingles = [], {}
    for i, j in cands[est >= threshold - 0.25].tolist():  # estimate prefilter (> 4 sd at 64 bins)
        a = shingles.get(i)
        if a is None:
            a = shingles[i] = dedup.shingles(texts[i], ngram)
        b = shingles.get(j)
        if b is None:
            b = shingles[j] = dedup.shingles(texts[j], ngram)
        inter = len(a & b)
        if inter / (len(a) + len(b) - inter) >= threshold:  # = len(a | b), without building the union (5x)
            found.append((i, j))
    return np.array(found, dtype=np.int64).reshape(-1, 2)


def _near_cross_pairs(texts: list[str], split_of: np.ndarray, threshold: float, ngram: int) -> int:
    """Pairs in different splits with exact n-gram Jaccard >= threshold (LSH candidates, seed LEAK_SEED)."""
    return len(_near_pairs(texts, split_of, threshold, ngram))
