"""Task metrics: is the answer *right*, for label, numeric, exact-span and free-text tasks.

The task is declared in params ``evaluate.task`` (:class:`domainft.config.TaskParams`); its
**primary metric** is the one promotion gates on. Per-sample scores are in [0, 1], higher is better.

Label tasks (``type: label``), the parsing rule applied to answers and references alike:

1. text is NFKC-normalised and case-folded, except that single ASCII-letter labels (``A``-``D``)
   are matched case-sensitively as an upper-case letter, so the article "a" is never the label
   ``A``;
2. the whole answer, stripped of surrounding punctuation and whitespace, equal to a label or an
   alias (``task.aliases``) gives that label;
3. otherwise the earliest whole-token occurrence of a label or alias in the answer wins (a label
   bounded by ASCII letters or digits does not match: ``unfair`` is not ``fair``); at one position
   the longest match wins;
4. nothing found: the answer is *unparsed*; it counts as wrong and is counted
   (``label_unparsed.<side>``).

Scores: ``accuracy`` (per sample 1/0), ``macro_f1`` (unweighted mean F1 over the labels that occur in
the gold or the predictions; corpus level, so its interval comes from a paired bootstrap of the
statistic itself), ``confusion`` (gold -> predicted -> count, ``<unparsed>`` for unparsed answers).

Numeric tasks (``type: numeric``): every number in a text is read with its sign (``-``, ``(1,234)``),
thousands separators, a percent sign and a scale word (thousand, million/mn, billion/bn, trillion,
万, 亿; ``k``/``m``/``b`` only attached to the number: ``5m``, ``$3B``). The reference's value is its first number; the answer's value is its first number,
skipping bare four-digit years (1900-2100) unless the reference's number is itself such a year.
``numeric_match`` is 1 when ``|pred - gold| <= numeric_rel_tol * |gold|`` (absolute ``tol`` when
gold is 0); when exactly one side carries a scale word or a percent sign, the unscaled numbers may
match instead ("$1,577 million" vs "1577.00").

``exact_match``: normalised strings equal (:func:`domainft.evaluation.metrics.normalize_answer`);
``contains``: the normalised reference is a substring of the normalised answer.

Trivial baselines (:func:`baselines`), drawn from the reference answers of the train/val files
(``evaluate.reference_paths``; the evaluated set's own references when none exist): label tasks get
the *majority* baseline (always the most common train label) and the best *constant* answer on the
evaluated set (always its most common gold label: an upper bound for any constant answer); every
other task gets the constant-answer baseline, the most common train reference answered to every
question and scored with the primary metric.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter

import numpy as np

from domainft.errors import DomainftError

UNPARSED = "<unparsed>"
PRIMARY_BY_TYPE = {"label": "accuracy", "numeric": "numeric_match", "exact": "exact_match", "contains": "contains"}
ALLOWED_PRIMARY = {"label": {"accuracy", "macro_f1"}, "numeric": {"numeric_match"}, "exact": {"exact_match"},
                   "contains": {"contains"}, "text": {"rouge_l", "bleu", "chrf", "judge_correctness", "exact_match"}}
MAX_AUTO_LABELS = 50


class TaskError(DomainftError, ValueError):
    """The task settings do not fit the data (a reference outside the label set, a bad primary)."""


def primary_metric(task, judge_enabled: bool) -> str:
    """The primary metric's name for ``task`` (:class:`TaskParams`).

    Raises:
        TaskError: ``task.primary`` does not apply to ``task.type`` (e.g. rouge_l for a label task).
    """
    if task.primary == "auto":
        if task.type == "text":
            return "judge_correctness" if judge_enabled else "rouge_l"
        return PRIMARY_BY_TYPE[task.type]
    if task.primary not in ALLOWED_PRIMARY[task.type]:
        raise TaskError(f"evaluate.task.primary: {task.primary!r} does not measure a {task.type} task "
                        f"(choose from {sorted(ALLOWED_PRIMARY[task.type])})")
    if task.primary == "judge_correctness" and not judge_enabled:
        raise TaskError("evaluate.task.primary: judge_correctness needs evaluate.judge.enabled: true")
    return task.primary


# ----------------------------------------------------------------------------- labels
def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


_EDGE = " \t\n.,;:!?。，；：！？、\"'“”‘’()[]{}（）【】《》*_`-"


class LabelParser:
    """Maps an answer to one label of a closed set by the rule in the module docstring.

    Args:
        labels: the label set (canonical spellings, as reported).
        aliases: extra answer text -> label (the label must be in ``labels``).

    Raises:
        TaskError: empty label set, an alias to an unknown label.
    """

    def __init__(self, labels: list[str], aliases: dict[str, str] | None = None):
        if not labels:
            raise TaskError("a label task needs at least one label (evaluate.task.labels)")
        self.labels = list(dict.fromkeys(labels))
        canon = {_norm(x): x for x in self.labels}
        pairs = [(x, x) for x in self.labels]
        for alias, label in (aliases or {}).items():
            if _norm(label) not in canon:
                raise TaskError(f"evaluate.task.aliases: {alias!r} maps to {label!r}, not one of {self.labels}")
            pairs.append((alias, canon[_norm(label)]))
        self.letters = {f.upper(): lab for f, lab in pairs if self._letter(f)}  # matched upper-case only
        self.words = {_norm(f): lab for f, lab in pairs if not self._letter(f)}  # matched case-folded
        self._letter_re = re.compile(r"(?<![A-Za-z0-9])([A-Z])(?![A-Za-z0-9])") if self.letters else None
        parts = []
        for form in sorted(self.words, key=len, reverse=True):  # longest first: at one position it wins
            left = r"(?<![a-z0-9])" if form[:1].isascii() and form[:1].isalnum() else ""
            right = r"(?![a-z0-9])" if form[-1:].isascii() and form[-1:].isalnum() else ""
            parts.append(left + r"\s+".join(re.escape(w) for w in form.split(" ")) + right)
        self._word_re = re.compile("|".join(parts)) if parts else None

    @staticmethod
    def _letter(text: str) -> bool:
        return len(text) == 1 and text.isascii() and text.isalpha()

    def parse(self, answer: str) -> str | None:
        """The label of ``answer``, or None when no label is found (unparsed)."""
        text = unicodedata.normalize("NFKC", answer)
        whole = text.strip(_EDGE)
        if len(whole) == 1 and whole.upper() in self.letters:
            return self.letters[whole.upper()]
        if _norm(whole) in self.words:
            return self.words[_norm(whole)]
        hits = []  # (position, -length, label)
        if self._word_re is not None:
            m = self._word_re.search(text.casefold())
            if m:
                hits.append((m.start(), -len(m.group(0)), self.words[_norm(m.group(0))]))
        if self._letter_re is not None:
            for m in self._letter_re.finditer(text):
                if m.group(1) in self.letters:
                    hits.append((m.start(), -1, self.letters[m.group(1)]))
                    break
        return min(hits)[2] if hits else None


def label_set(task, references: list[str], extra_references: list[str]) -> list[str]:
    """``task.labels``, or the distinct references (stripped) of the evaluated and train/val sets.

    Raises:
        TaskError: no labels given and more than :data:`MAX_AUTO_LABELS` distinct references (the
            answers are not labels; set ``evaluate.task.type`` or ``labels``).
    """
    if task.labels:
        return list(task.labels)
    found = sorted({r.strip().strip(_EDGE) or r.strip() for r in [*references, *extra_references]})
    if len(found) > MAX_AUTO_LABELS:
        raise TaskError(f"evaluate.task.type is label but the references hold {len(found)} distinct answers "
                        f"(more than {MAX_AUTO_LABELS}); list the labels in evaluate.task.labels")
    return found


def macro_f1(gold: list[str], pred: list[str | None]) -> float:
    """Unweighted mean F1 over labels in gold or predictions; an unparsed prediction (None) is a miss."""
    labels = sorted({*gold, *(p for p in pred if p is not None)})
    f1s = []
    for lab in labels:
        tp = sum(g == lab and p == lab for g, p in zip(gold, pred))
        fp = sum(g != lab and p == lab for g, p in zip(gold, pred))
        fn = sum(g == lab and p != lab for g, p in zip(gold, pred))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(f1s)) if f1s else 0.0


def confusion(gold: list[str], pred: list[str | None]) -> dict[str, dict[str, int]]:
    """gold label -> predicted label (``<unparsed>`` for None) -> count; only non-zero cells."""
    out: dict[str, dict[str, int]] = {}
    for g, p in zip(gold, pred):
        cell = out.setdefault(g, {})
        key = p if p is not None else UNPARSED
        cell[key] = cell.get(key, 0) + 1
    return out


# ----------------------------------------------------------------------------- numbers
_SCALES = {"thousand": 1e3, "k": 1e3, "million": 1e6, "millions": 1e6, "mn": 1e6, "m": 1e6, "mm": 1e6,
           "billion": 1e9, "billions": 1e9, "bn": 1e9, "b": 1e9, "trillion": 1e12, "万": 1e4, "亿": 1e8,
           "千": 1e3, "百万": 1e6}
_NUMBER = re.compile(
    r"(?P<open>\()?(?P<sign>[-−–])?\s*[$€£¥]?\s*(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?P<close>\))?(?:\s*(?P<pct>%|percent\b))?(?:\s*(?P<scale>thousand|millions?|billions?|trillion|bn|mn|mm|"
    r"百万|万|亿|千)|(?P<scale1>[kmb])(?![a-z]))?", re.IGNORECASE)


def numbers(text: str) -> list[tuple[float, float, bool, str]]:
    """Every number in ``text`` as ``(value with scale, value without scale, percent, matched text)``."""
    out = []
    for m in _NUMBER.finditer(unicodedata.normalize("NFKC", text)):
        raw = float(m.group("num").replace(",", ""))
        if m.group("sign") or (m.group("open") and m.group("close")):
            raw = -raw
        scale = _SCALES.get((m.group("scale") or m.group("scale1") or "").lower(), 1.0)
        out.append((raw * scale, raw, bool(m.group("pct")) or scale != 1.0, m.group(0)))
    return out


def _is_year(n: tuple[float, float, bool, str]) -> bool:
    return not n[2] and n[0] == int(n[0]) and 1900 <= n[0] <= 2100 and re.fullmatch(r"\d{4}", n[3].strip()) is not None


def numeric_match(answer: str, reference: str, rel_tol: float = 0.01) -> float | None:
    """1.0 / 0.0 by the rule in the module docstring; None when the reference holds no number."""
    gold = numbers(reference)
    if not gold:
        return None
    g = gold[0]
    pred = [n for n in numbers(answer) if _is_year(g) or not _is_year(n)]
    if not pred:
        return 0.0
    p = pred[0]

    def close(a: float, b: float) -> bool:
        return abs(a - b) <= rel_tol * abs(b) if b else abs(a) <= rel_tol

    if close(p[0], g[0]):
        return 1.0
    return float(p[2] != g[2] and close(p[1], g[1]))


# ----------------------------------------------------------------------------- scoring
def contains(answer: str, reference: str) -> float:
    """1.0 when the normalised reference appears in the normalised answer."""
    from domainft.evaluation.metrics import normalize_answer

    ref = normalize_answer(reference)
    return float(bool(ref) and ref in normalize_answer(answer))


class TaskScorer:
    """Per-sample task scores for one task definition.

    Args:
        task: :class:`domainft.config.TaskParams`.
        references: the evaluated set's reference answers (n,).
        extra_references: reference answers of train/val (for the automatic label set).

    Raises:
        TaskError: a reference that is not a label / holds no number (names its position).
    """

    def __init__(self, task, references: list[str], extra_references: list[str] | None = None, ids=None):
        self.task = task
        self.parser = None
        ids = ids or [str(i) for i in range(len(references))]
        if task.type == "label":
            self.parser = LabelParser(label_set(task, references, extra_references or []), task.aliases)
            self.gold = []
            for rid, ref in zip(ids, references):
                lab = self.parser.parse(ref)
                if lab is None:
                    raise TaskError(f"test record {rid}: reference {ref[:80]!r} is none of the labels "
                                    f"{self.parser.labels[:12]} (evaluate.task.labels / aliases)")
                self.gold.append(lab)
        elif task.type == "numeric":
            for rid, ref in zip(ids, references):
                if not numbers(ref):
                    raise TaskError(f"test record {rid}: reference {ref[:80]!r} holds no number "
                                    "(evaluate.task.type: numeric)")
        self.references = references

    def per_sample(self, answers: list[str]) -> dict[str, list[float]]:
        """Per-sample scores of the task's own metrics (label: accuracy; numeric: numeric_match ...)."""
        t, refs = self.task.type, self.references
        if t == "label":
            pred = [self.parser.parse(a) for a in answers]
            return {"accuracy": [float(p == g) for p, g in zip(pred, self.gold)]}
        if t == "numeric":
            return {"numeric_match": [numeric_match(a, r, self.task.numeric_rel_tol) or 0.0 for a, r in zip(answers, refs)]}
        if t == "contains":
            return {"contains": [contains(a, r) for a, r in zip(answers, refs)]}
        return {}

    def labels_of(self, answers: list[str]) -> list[str | None]:
        return [self.parser.parse(a) for a in answers]


def baselines(scorer: TaskScorer, primary: str, train_references: list[str], text_scorer) -> dict:
    """Trivial baselines (module docstring) scored with ``primary`` on the evaluated set.

    Args:
        train_references: reference answers of the train/val files ([] = none: the evaluated set's).
        text_scorer: :class:`domainft.evaluation.metrics.TextScorer` for text metrics.

    Returns:
        flat ``baseline.<name>.<metric>`` values, ``baseline.<name>.answer`` (the constant answer),
        and ``baseline.best`` (the highest primary value among them) with ``baseline.best_name``.
    """
    refs = scorer.references
    pool = train_references or refs
    out: dict = {}
    candidates: dict[str, float] = {}
    if scorer.task.type == "label":
        gold = scorer.gold
        train_labels = [lab for lab in (scorer.parser.parse(r) for r in pool) if lab is not None] or gold
        majority = Counter(train_labels).most_common(1)[0][0]
        best_const = Counter(gold).most_common(1)[0][0]
        for name, lab in (("majority", majority), ("constant", best_const)):
            pred = [lab] * len(gold)
            acc = float(np.mean([p == g for p, g in zip(pred, gold)]))
            f1 = macro_f1(gold, pred)
            out.update({f"baseline.{name}.answer": lab, f"baseline.{name}.accuracy": acc, f"baseline.{name}.macro_f1": f1})
            candidates[name] = acc if primary == "accuracy" else f1
    elif primary != "judge_correctness":
        counts = Counter(r.strip() for r in pool)
        top = max(counts.items(), key=lambda kv: (kv[1], -len(kv[0])))[0]  # most common; tie: shortest
        answers = [top] * len(refs)
        task_scores = scorer.per_sample(answers)
        if primary in task_scores:
            value = float(np.mean(task_scores[primary]))
        else:  # text metrics and exact_match
            value = float(np.mean([text_scorer.score(a, r)[primary] for a, r in zip(answers, refs)]))
        out.update({"baseline.constant.answer": top[:200], f"baseline.constant.{primary}": value})
        candidates["constant"] = value
    if candidates:
        name = max(candidates, key=candidates.get)
        out.update({"baseline.best": candidates[name], "baseline.best_name": name})
    return out

