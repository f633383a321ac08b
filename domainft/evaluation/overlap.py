"""Overlap of the evaluated set with the training data: the split's own leakage checks, per row.

An evaluated row *overlaps* when its normalised conversation or its prompt equals one in the
reference files (``evaluate.reference_paths``, train and val by default), or is a near duplicate of
one: exact character n-gram Jaccard >= ``prepare.dedup.threshold`` on LSH candidates, the check
:func:`domainft.data.split.leakage` runs across splits (same normalisation
:func:`domainft.data.records.content_key`, same MinHash seed and bins).

eval.json gets ``overlap.exact_conversations``, ``overlap.exact_prompts``,
``overlap.near_conversations``, ``overlap.near_prompts`` (evaluated rows with such a match),
``overlap.rows`` (rows with any) and ``overlap.total`` (= ``rows``), plus ``overlap.reference_rows``
(reference records read) and, from the caller, ``overlap.missing`` (reference files not found). The promote gate ``no_leakage`` reads
``eval.overlap.total``.
"""
from __future__ import annotations

from domainft.data import dedup
from domainft.data.records import content_key
from domainft.data.split import LEAK_PERM, LEAK_SEED


def _near_rows(evaluated: list[str], reference: list[str], threshold: float, ngram: int) -> set[int]:
    """Indices into ``evaluated`` with a reference text of exact n-gram Jaccard >= threshold."""
    if not evaluated or not reference:
        return set()
    texts = evaluated + reference
    sig = dedup.signatures(texts, LEAK_PERM, ngram, seed=LEAK_SEED)
    cands = dedup.candidate_pairs(sig, max(0.05, threshold - 0.1))
    n = len(evaluated)
    cross = (cands[:, 0] < n) != (cands[:, 1] < n)
    cands = cands[cross]
    found: set[int] = set()
    shingles: dict[int, set] = {}
    for i, j in cands.tolist():
        e, r = (i, j) if i < n else (j, i)
        if e in found:
            continue
        a = shingles.setdefault(e, dedup.shingles(texts[e], ngram))
        b = shingles.setdefault(r, dedup.shingles(texts[r], ngram))
        if a and b and len(a & b) / len(a | b) >= threshold:
            found.add(e)
    return found


def overlap(evaluated: list[dict], references: list[dict], threshold: float = 0.8, ngram: int = 5) -> dict:
    """Overlap figures of ``evaluated`` against ``references`` (both canonical records with ``messages``).

    Args:
        threshold, ngram: the near-duplicate settings of ``prepare.dedup``.

    Returns:
        flat ``overlap.*`` metrics (module docstring) and ``overlap.row_ids`` (ids of overlapping rows).
    """
    ref_conv = [content_key(d["messages"]) for d in references]
    ref_prompt = [content_key(d["messages"], ("user",)) for d in references]
    conv = [content_key(r["messages"]) for r in evaluated]
    prompt = [content_key(r["messages"], ("user",)) for r in evaluated]
    conv_set, prompt_set = set(ref_conv), set(ref_prompt)
    exact_c = {i for i, k in enumerate(conv) if k in conv_set}
    exact_p = {i for i, k in enumerate(prompt) if k and k in prompt_set}
    near_c = _near_rows(conv, ref_conv, threshold, ngram)
    near_p = _near_rows(prompt, ref_prompt, threshold, ngram)
    rows = exact_c | exact_p | near_c | near_p
    return {"overlap.exact_conversations": len(exact_c), "overlap.exact_prompts": len(exact_p),
            "overlap.near_conversations": len(near_c), "overlap.near_prompts": len(near_p),
            "overlap.rows": len(rows), "overlap.total": len(rows), "overlap.reference_rows": len(references),
            "overlap.row_ids": [evaluated[i]["id"] for i in sorted(rows)]}
