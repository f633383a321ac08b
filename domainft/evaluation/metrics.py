"""Automatic metrics per sample, response perplexity, and paired base-vs-tuned statistics.

Per-sample scores (all "higher is better" except ``response_ppl``):

* ``rouge_l``: ROUGE-L F1 in [0, 1] from ``rouge_score``. English uses its default tokenizer with
  Porter stemming; Chinese uses :class:`CJKTokenizer` (one token per CJK character), because the
  default tokenizer drops every non-ASCII character and scores Chinese as 0.
* ``bleu``: sacrebleu sentence BLEU in [0, 100], ``effective_order=True`` (Chen & Cherry 2014
  smoothing as in sacrebleu), tokenizer ``13a`` (en) or ``zh``.
* ``chrf``: sacrebleu sentence chrF (Popovic 2015, n=6, beta=2) in [0, 100].
* ``exact_match``: 1.0 when the answers are equal after :func:`normalize_answer`, else 0.0.
* ``response_ppl``: perplexity of the reference response under the model, from
  :func:`response_nll` (teacher forcing, the training labels).

The aggregate of ``response_ppl`` is ``exp(sum NLL / sum tokens)`` (token weighted), the others
are sample means. Deltas are tuned - base with a paired bootstrap 95% percentile interval
(Koehn 2004, "Statistical significance tests for machine translation evaluation").
"""
from __future__ import annotations

import inspect
import re
import string
import unicodedata
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from domainft.modeling.chat import IGNORE_INDEX, end_of_turn, tokenize_conversation

# CJK Unified Ideographs (+ Ext A, compatibility), Hiragana/Katakana, Hangul syllables.
CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
_CJK_CHAR = re.compile(f"[{CJK}]")
_CJK_TOKEN = re.compile(f"[{CJK}]|[a-z0-9]+")
METRICS = ("rouge_l", "bleu", "chrf", "exact_match")
LOWER_IS_BETTER = {"response_ppl"}


def detect_language(texts: list[str], threshold: float = 0.3) -> str:
    """``zh`` when at least ``threshold`` of the non-space characters are CJK, else ``en``."""
    chars = "".join("".join(t.split()) for t in texts)
    if not chars:
        return "en"
    return "zh" if len(_CJK_CHAR.findall(chars)) / len(chars) >= threshold else "en"


class CJKTokenizer:
    """rouge_score tokenizer: each CJK character is a token, ASCII words/digits lower-cased."""

    def tokenize(self, text: str) -> list[str]:
        return _CJK_TOKEN.findall(unicodedata.normalize("NFKC", text).lower())


_PUNCT = set(string.punctuation) | set("，。！？；：、“”‘’（）《》【】…—·")


def normalize_answer(text: str) -> str:
    """NFKC, lower case, punctuation removed, whitespace collapsed (SQuAD-style, plus CJK punctuation)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(c for c in text if c not in _PUNCT)
    return " ".join(text.split())


class TextScorer:
    """Scores one (prediction, reference) pair on every metric in :data:`METRICS`."""

    def __init__(self, language: str = "en"):
        import sacrebleu
        from rouge_score import rouge_scorer

        if language not in ("en", "zh"):
            raise ValueError(f"language must be en or zh, got {language!r}")
        self.language = language
        if language == "zh":
            self._rouge = rouge_scorer.RougeScorer(["rougeL"], tokenizer=CJKTokenizer())
        else:
            self._rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        self._bleu = sacrebleu.BLEU(tokenize="zh" if language == "zh" else "13a", effective_order=True)
        self._chrf = sacrebleu.CHRF()

    def score(self, prediction: str, reference: str) -> dict[str, float]:
        """Returns {rouge_l in [0,1], bleu in [0,100], chrf in [0,100], exact_match in {0,1}}."""
        return {
            "rouge_l": self._rouge.score(reference, prediction)["rougeL"].fmeasure,
            "bleu": self._bleu.sentence_score(prediction, [reference]).score,
            "chrf": self._chrf.sentence_score(prediction, [reference]).score,
            "exact_match": float(normalize_answer(prediction) == normalize_answer(reference)),
        }


@torch.inference_mode()
def labelled_logprob_sums(model, input_ids: torch.Tensor, labels: torch.Tensor,
                          attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced log-probability of each row's labelled tokens, summed per row (no gradients).

    Position ``t`` predicts token ``t + 1``; a token counts where its label is not
    :data:`~domainft.modeling.chat.IGNORE_INDEX`. The LM head runs only on the positions from the
    batch's first labelled prediction to the end (transformers' ``logits_to_keep``, for models whose
    forward takes it; others project every position), not on the prompt before it: with a long
    source document that is most of the row, and its ``(B, T, V)`` fp32 logits would be most of
    the memory.

    Args:
        model: causal LM (a peft model too) on the tensors' device.
        input_ids, labels: ``(B, T)`` token ids; labels hold the target id or IGNORE_INDEX.
        attention_mask: ``(B, T)`` 1 on real tokens, or None (no padding).

    Returns:
        ``(sums, counts)``: ``(B,)`` fp32 sums of natural-log probabilities (<= 0) and ``(B,)``
        numbers of labelled tokens.
    """
    targets = labels[:, 1:]  # (B, T-1)
    scored = targets != IGNORE_INDEX  # (B, T-1): position t predicts t + 1
    width = input_ids.shape[1]
    first = int(scored.any(0).nonzero()[0]) if bool(scored.any()) else width - 1
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    kwargs = {}
    if "logits_to_keep" in inspect.signature(core.forward).parameters:
        kwargs["logits_to_keep"] = width - first  # the last positions, from the first prediction on
    logits = model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits  # (B, K, V)
    logits = logits[:, logits.shape[1] - (width - first):]  # (B, T - first, V) either way
    logits, targets, scored = logits[:, :-1], targets[:, first:], scored[:, first:]  # (B, T-1-first, ...)
    logp = -torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets.clamp(min=0),
                                              reduction="none")  # (B, T-1-first)
    return (logp * scored).sum(1), scored.sum(1)


@torch.inference_mode()
def response_nll(model, tokenizer, conversations: list[list[dict[str, str]]],
                 batch_size: int = 8, progress=None) -> list[tuple[float, int]]:
    """Summed NLL of each conversation's final assistant response, with teacher forcing.

    Labels are exactly the training labels of :func:`domainft.modeling.chat.tokenize_conversation`
    with ``last_only=True``: the response content tokens plus its end-of-turn token.

    Args:
        conversations: N message lists ending with the reference assistant turn.
        batch_size: sequences per forward pass (right padded, padding masked).
        progress: optional :class:`domainft.progress.Progress`, advanced per batch.

    Returns:
        N tuples ``(sum of NLL in nats, number of labelled tokens)``.

    Raises:
        ValueError: a conversation has no labelled token (no final assistant content).
    """
    eot = end_of_turn(tokenizer)[0]
    device = next(model.parameters()).device
    samples = [tokenize_conversation(tokenizer, c, eot, last_only=True) for c in conversations]
    for i, s in enumerate(samples):
        if s.num_trainable == 0:
            raise ValueError(f"conversation {i} has no assistant tokens to score")
    # Batches of similar lengths: less right padding, and the head's span (from the batch's first
    # response token on, see labelled_logprob_sums) stays near the responses.
    order = sorted(range(len(samples)), key=lambda i: (len(samples[i].input_ids), i))
    out: list[tuple[float, int] | None] = [None] * len(samples)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        width = max(len(samples[i].input_ids) for i in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)  # (B, T)
        labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)  # (B, T)
        for row, i in enumerate(chunk):
            s = samples[i]
            n = len(s.input_ids)
            ids[row, :n], labels[row, :n], mask[row, :n] = torch.tensor(s.input_ids), torch.tensor(s.labels), 1
        sums, counts = labelled_logprob_sums(model, ids.to(device), labels.to(device), mask.to(device))
        for i, lp, n in zip(chunk, sums.tolist(), counts.tolist()):
            out[i] = (-float(lp), int(n))
        if progress is not None:
            progress.update(len(chunk))
    return out


def perplexity(nll: np.ndarray, tokens: np.ndarray) -> float:
    """Token-weighted perplexity ``exp(sum nll / sum tokens)``."""
    return float(np.exp(nll.sum() / max(tokens.sum(), 1)))


@dataclass
class Paired:
    """Base vs tuned summary of one metric; ``delta = tuned - base`` (negative is better for ppl)."""

    base: float
    tuned: float
    delta: float
    delta_ci_low: float
    delta_ci_high: float
    wins: int
    ties: int
    losses: int

    def flat(self, name: str) -> dict[str, float | int]:
        return {f"{name}.{k}": v for k, v in self.__dict__.items()}


def paired_bootstrap(stat: Callable[[np.ndarray], tuple[float, float]], n: int, samples: int = 1000,
                     seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of ``tuned - base`` under paired resampling of the n samples.

    Args:
        stat: maps an index array (n,) to (base statistic, tuned statistic) on those samples.
        samples: bootstrap replicates; seed: numpy seed.

    Returns:
        (low, high) at the ``alpha/2`` and ``1 - alpha/2`` percentiles.
    """
    rng = np.random.default_rng(seed)
    deltas = np.empty(samples)
    for b in range(samples):
        base, tuned = stat(rng.integers(0, n, size=n))
        deltas[b] = tuned - base
    low, high = np.percentile(deltas, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def compare(base: list[float], tuned: list[float], lower_is_better: bool = False, samples: int = 1000,
            seed: int = 0, weights: tuple[list[int], list[int]] | None = None, eps: float = 1e-9) -> Paired:
    """Paired summary of per-sample scores.

    Args:
        base, tuned: per-sample scores (n,), same sample order. For perplexity pass the summed
            NLL per sample and the token counts as ``weights`` (base, tuned); the statistic is then
            the token-weighted perplexity and per-sample wins compare per-token NLL.
        lower_is_better: a win is tuned < base (perplexity) instead of tuned > base.
        eps: differences within eps count as ties.

    Raises:
        ValueError: empty or unequal-length inputs.
    """
    b, t = np.asarray(base, float), np.asarray(tuned, float)
    if len(b) == 0 or len(b) != len(t):
        raise ValueError(f"need equal, non-empty score lists (got {len(b)} and {len(t)})")
    if weights is None:
        def stat(i):
            return float(b[i].mean()), float(t[i].mean())
        per_b, per_t = b, t
    else:
        wb, wt = np.asarray(weights[0], float), np.asarray(weights[1], float)

        def stat(i):
            return perplexity(b[i], wb[i]), perplexity(t[i], wt[i])
        per_b, per_t = b / np.maximum(wb, 1), t / np.maximum(wt, 1)
    base_v, tuned_v = stat(np.arange(len(b)))
    low, high = paired_bootstrap(stat, len(b), samples, seed)
    diff = per_t - per_b
    if lower_is_better:
        diff = -diff
    return Paired(base_v, tuned_v, tuned_v - base_v, low, high,
                  int((diff > eps).sum()), int((np.abs(diff) <= eps).sum()), int((diff < -eps).sum()))
