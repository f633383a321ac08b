"""MinHash signatures estimate Jaccard; LSH finds near-duplicates; kept record is the first."""
from __future__ import annotations

import random

import numpy as np
import pytest

from domainft.data import dedup

from conftest import sentence


def mutate(text: str, n: int, seed: int) -> str:
    rng = random.Random(seed)
    words = text.split()
    for _ in range(n):
        words[rng.randrange(len(words))] = rng.choice(["alpha", "beta", "gamma"])
    return " ".join(words)


def test_signature_estimates_jaccard():
    errors = []
    for i in range(200):
        a = sentence(i, 30)
        b = mutate(a, i % 8, i)
        sig = dedup.signatures([a, b], num_perm=128, ngram=5)
        errors.append((sig[0] == sig[1]).mean() - dedup.jaccard(a, b, 5))
    assert abs(np.mean(errors)) < 0.02 and np.std(errors) < 0.06  # classic 128-perm MinHash sd <= 0.044


def test_signatures_deterministic_and_shapes():
    texts = [sentence(i) for i in range(5)] + ["ab", ""]
    s1 = dedup.signatures(texts, num_perm=64, ngram=5)
    assert s1.shape == (7, 64) and s1.dtype == np.uint32
    assert np.array_equal(s1, dedup.signatures(texts, num_perm=64, ngram=5))
    assert not np.array_equal(s1, dedup.signatures(texts, num_perm=64, ngram=5, seed=2))
    assert np.array_equal(dedup.signatures(texts[:1] * 2, 64, 5)[0], s1[0])  # independent of batch


def test_chinese_without_segmentation():
    a = "根据规定，醉酒驾驶的构成了犯罪，应当以危险驾驶罪定罪处罚，处拘役并处罚金。"
    b = "根据规定，醉酒驾驶的构成犯罪，应当以危险驾驶罪定罪处罚，处拘役并处罚金。"
    sig = dedup.signatures([a, b, sentence(1)], 128, 3)
    assert (sig[0] == sig[1]).mean() > 0.7 and (sig[0] == sig[2]).mean() < 0.1


def test_near_duplicates_first_kept_and_no_false_pairs():
    base = [sentence(i, 40) for i in range(300)]
    texts = base + [mutate(base[i], 1, i) for i in range(0, 300, 10)]  # 30 near copies, 1 word changed
    pairs = dedup.similar_pairs(dedup.signatures(texts, 128, 5), 0.8)
    near = dedup.near_duplicates(len(texts), pairs, 0.8)
    assert set(near) == set(range(300, 330))  # every copy found, no original flagged
    assert all(near[300 + k] == (10 * k, 10 * k, near[300 + k][2]) for k in range(30))
    assert all(dedup.jaccard(texts[i], texts[j], 5) > 0.6 for i, j, _ in pairs)


def test_exact_duplicates_and_components():
    assert dedup.exact_duplicates(["a", "b", "a", "c", "b"]) == {2: 0, 4: 1}
    comp = dedup.Components.of(5, [(3, 4, 1.0), (1, 4, 1.0)])
    assert [comp.find(i) for i in range(5)] == [0, 1, 2, 1, 1]


def test_lsh_params_favour_recall():
    b, r = dedup.lsh_params(0.8, 128)
    assert b * r <= 128 and 1 - (1 - 0.8 ** r) ** b > 0.85


@pytest.mark.parametrize("num_perm", [16, 64, 128, 256])
def test_lsh_params_are_datasketchs_choice(num_perm):
    from datasketch.lsh import _optimal_param

    for threshold in [x / 20 for x in range(1, 20)]:
        assert dedup.lsh_params(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.1, 0.9)


def test_similar_pairs_from_parts_equal_the_stacked_matrix():
    """prepare's path: per-part signatures and band keys (workers), a subset of rows (after exact
    dedup), read through StackedRows; the pairs equal those of the copied-together matrix."""
    rng = random.Random(3)
    base = [sentence(i, 30) for i in range(120)]
    texts = base + [t.replace(" ", "  ", 1) + " x" for t in base[:60]] + [base[5] + " y" for _ in range(40)]
    rng.shuffle(texts)
    sig = dedup.signatures(texts, 64, 5)
    parts = [sig[:70], sig[70:71], sig[71:]]
    stacked = dedup.StackedRows(parts)
    assert len(stacked) == len(sig) and (stacked[np.array([0, 70, 71, 219, 3])] == sig[[0, 70, 71, 219, 3]]).all()
    keys = np.concatenate([dedup.band_keys(p, 0.7) for p in parts], axis=1)
    assert (keys == dedup.band_keys(sig, 0.7)).all()
    rows = np.array([i for i in range(len(texts)) if i % 7], dtype=np.int64)
    want = dedup.similar_pairs(sig[rows], 0.7)
    got = dedup.similar_pairs(stacked, 0.7, keys=keys[:, rows], rows=rows)
    assert got == want and len(want) > 100  # includes a bucket above max_group (the 40 copies)
