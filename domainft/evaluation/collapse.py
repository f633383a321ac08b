"""Collapse detectors: answers that all say the same thing, loop, or copy the prompt back.

Computed for base, tuned and the gold references alike (the gold figures are the yardstick: a
dataset whose answers are all "Yes" makes a high top share normal):

* ``distinct_rate``: distinct normalised answers / n (label tasks: distinct parsed labels / n,
  unparsed answers as one more value);
* ``top_share``: share of the most common normalised answer (label tasks: parsed label);
* ``loop_rate``: share of answers that loop: at least :data:`LOOP_MIN_TOKENS` tokens and at least
  :data:`LOOP_SHARE` of their token 4-grams repeat an earlier 4-gram of the same answer;
* ``copy_rate``: share of answers that copy the prompt: at least :data:`COPY_MIN_TOKENS` tokens and
  at least :data:`COPY_SHARE` of their token 6-grams occur in the prompt's user turns.

Tokens are lower-cased words and digits, and single CJK characters
(:class:`domainft.evaluation.metrics.CJKTokenizer`), so the figures mean the same in English and
Chinese.

Flags (params ``evaluate.collapse``), each 1 when set, for base and tuned: ``collapse`` when
``top_share > gold top_share + top_share_margin``, ``loop`` when ``loop_rate > gold loop_rate +
loop_rate_margin``, ``copy`` when ``copy_rate > gold copy_rate + copy_rate_margin``; ``any`` is their
maximum. With fewer than ``min_samples`` answers nothing is flagged.
"""
from __future__ import annotations

from collections import Counter

from domainft.evaluation.metrics import CJKTokenizer, normalize_answer

LOOP_N, LOOP_MIN_TOKENS, LOOP_SHARE = 4, 16, 0.4
COPY_N, COPY_MIN_TOKENS, COPY_SHARE = 6, 12, 0.7
_TOK = CJKTokenizer()


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def loops(text: str) -> bool:
    """True when the answer repeats itself (module docstring: 4-gram repeat share >= 0.4)."""
    tokens = _TOK.tokenize(text)
    if len(tokens) < LOOP_MIN_TOKENS:
        return False
    grams = _ngrams(tokens, LOOP_N)
    return 1 - len(set(grams)) / len(grams) >= LOOP_SHARE


def copies(text: str, prompt: str) -> bool:
    """True when >= 70% of the answer's token 6-grams occur in ``prompt`` (answers >= 12 tokens)."""
    tokens = _TOK.tokenize(text)
    if len(tokens) < COPY_MIN_TOKENS:
        return False
    source = set(_ngrams(_TOK.tokenize(prompt), COPY_N))
    grams = _ngrams(tokens, COPY_N)
    return sum(g in source for g in grams) / len(grams) >= COPY_SHARE


def profile(answers: list[str], prompts: list[str], labels: list[str | None] | None = None) -> dict[str, float]:
    """``distinct_rate``, ``top_share``, ``top_answer``, ``loop_rate``, ``copy_rate`` of n answers.

    Args:
        answers: n texts; prompts: the n prompts' user text (for the copy rate).
        labels: parsed labels for a label task (None = unparsed), else None.
    """
    n = len(answers)
    keys = [("<unparsed>" if x is None else x) for x in labels] if labels is not None \
        else [normalize_answer(a) for a in answers]
    top, count = Counter(keys).most_common(1)[0] if n else ("", 0)
    return {"distinct_rate": len(set(keys)) / n if n else 0.0, "top_share": count / n if n else 0.0,
            "top_answer": str(top)[:120],
            "loop_rate": sum(map(loops, answers)) / n if n else 0.0,
            "copy_rate": sum(copies(a, p) for a, p in zip(answers, prompts)) / n if n else 0.0}


def flags(side: dict[str, float], gold: dict[str, float], n: int, params) -> dict[str, int]:
    """``collapse``, ``loop``, ``copy`` and ``any`` (0/1) of one side against the gold profile.

    Args:
        params: :class:`domainft.config.CollapseParams`.
    """
    if n < params.min_samples:
        out = {"collapse": 0, "loop": 0, "copy": 0}
    else:
        out = {"collapse": int(side["top_share"] > gold["top_share"] + params.top_share_margin),
               "loop": int(side["loop_rate"] > gold["loop_rate"] + params.loop_rate_margin),
               "copy": int(side["copy_rate"] > gold["copy_rate"] + params.copy_rate_margin)}
    out["any"] = max(out.values())
    return out
