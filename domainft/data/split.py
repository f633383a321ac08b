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

Leakage check (metrics ``leakage``, all must be 0): clusters or groups in more than one split;
identical normalised conversations or prompts in two splits; and near-duplicate pairs across
splits found by a fresh MinHash LSH pass (different seed than prepare) over the full text and over
the prompts.
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


def unit_keys(records: list[Record], group_by: str) -> list[str]:
    """The unit key of each record (see module docstring)."""
    if group_by == "cluster":
        return [f"c:{r.cluster or r.id}" for r in records]
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for r in records:
        a, b = find(f"c:{r.cluster or r.id}"), find(f"g:{r.group}" if r.group is not None else f"c:{r.cluster or r.id}")
        if a != b:  # the root is the smaller key; "c:" < "g:", so order by (is-group first, value)
            lo, hi = sorted((a, b), key=lambda k: (not k.startswith("g:"), k))
            parent[hi] = lo
    return [find(f"c:{r.cluster or r.id}") for r in records]


def assign(records: list[Record], params) -> tuple[dict[str, list[Record]], dict[str, Any]]:
    """Split records; returns ``({split: records in input order}, metrics)``.

    Args:
        records: prepared records (with ``cluster``; ``group`` used when ``group_by: group``).
        params: :class:`domainft.config.SplitParams`.
    """
    keys = unit_keys(records, params.group_by)
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
        "groups": {s: len({r.group for r in out[s] if r.group is not None}) for s in SPLITS},
    }
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
            prompts: bool = True, conversations: dict[str, int] | Future | None = None) -> dict[str, int]:
    """Count cross-split overlaps (see module docstring); every value should be 0.

    Near pairs: candidates from a MinHash LSH pass with seed :data:`LEAK_SEED`, counted when their
    *exact* character n-gram Jaccard similarity is >= ``threshold``.

    Args:
        conversations: ``exact_conversations`` and ``near_conversations`` when another process
            computes them (:func:`conversation_leaks_of_file`), as a dict or a Future of one;
            None = computed here.

    Returns:
        ``clusters``, ``exact_conversations``, ``groups`` (``group_by: group`` only),
        ``exact_prompts``, ``near_conversations``, ``near_prompts`` (the prompt counts only with
        ``prompts``) and their ``total``.
    """
    rows = [(s, r) for s in SPLITS for r in splits.get(s, [])]
    split_of = np.array([SPLITS.index(s) for s, _ in rows], dtype=np.int64)
    if conversations is None:
        conversations = conversation_leaks([content_key(r.messages) for _, r in rows], split_of, threshold, ngram)
    report = {"clusters": _exact_cross([r.cluster for _, r in rows], split_of)}
    if group_by == "group":
        report["groups"] = _exact_cross([r.group for _, r in rows], split_of)
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
    the caller's) and counts. The split stage runs it in a second process from the start, while it
    reads, assigns, writes and checks prompts, clusters and groups itself; keeping no messages holds
    that process to a fraction of the first one's memory."""
    from domainft.data.prepare import iter_record_dicts

    keys, light = [], []
    for _, d in iter_record_dicts(records_path):
        keys.append(content_key(d["messages"]))
        meta = d.get("meta") or {}
        stratum = {params.stratify_field: meta.get(params.stratify_field)} if params.stratify_field else {}
        light.append(Record(d["id"], [], {}, d.get("cluster", ""), d.get("group"), stratum))
    splits, _ = assign(light, params)
    position = {id(r): i for i, r in enumerate(light)}
    order = [position[id(r)] for name in SPLITS for r in splits[name]]  # leakage()'s order: LSH groups depend on it
    split_of = np.array([k for k, name in enumerate(SPLITS) for _ in splits[name]], dtype=np.int64)
    return conversation_leaks([keys[i] for i in order], split_of, threshold, ngram)


def _exact_cross(values: list, split_of: np.ndarray) -> int:
    """Distinct values (not None or "") that occur in more than one split."""
    first: dict[Any, int] = {}
    leaked = set()
    for v, s in zip(values, split_of.tolist()):
        if v is not None and v != "" and first.setdefault(v, s) != s:
            leaked.add(v)
    return len(leaked)


def _near_cross_pairs(texts: list[str], split_of: np.ndarray, threshold: float, ngram: int) -> int:
    """Pairs in different splits with exact n-gram Jaccard >= threshold (LSH candidates, seed LEAK_SEED)."""
    if len(texts) < 2:
        return 0
    sig = dedup.signatures(texts, LEAK_PERM, ngram, seed=LEAK_SEED)
    cands = dedup.candidate_pairs(sig, max(0.05, threshold - 0.1))
    cands = cands[split_of[cands[:, 0]] != split_of[cands[:, 1]]]  # cross-split only
    if not len(cands):
        return 0
    est = (sig[cands[:, 0]] == sig[cands[:, 1]]).mean(axis=1)
    count, shingles = 0, {}
    for i, j in cands[est >= threshold - 0.25].tolist():  # estimate prefilter (> 4 sd at 64 bins)
        a = shingles.setdefault(i, dedup.shingles(texts[i], ngram))
        b = shingles.setdefault(j, dedup.shingles(texts[j], ngram))
        count += len(a & b) / len(a | b) >= threshold
    return int(count)
