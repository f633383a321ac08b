"""Cleaning operators over one :class:`~domainft.data.schemas.Draft`; each has a name and a count.

Order (names are the keys of ``operators`` in metrics/prepare.json; "modified" counts records
changed, "removed" records rejected with that name as reason, kind ``filtered``):

1. ``placeholders``  alpaca-style inputs such as ``<noinput>``, ``No input.``, ``N/A`` -> empty
   (compared casefolded with brackets, punctuation and spaces removed; AlpacaDataCleaned defect).
2. ``unicode``       ftfy.fix_text (mojibake, HTML entities, NFC) with full-width character and
   quote conversion OFF, so Chinese full-width punctuation stays in training text.
3. ``control_chars`` C0/C1 control and zero-width characters removed (``\\n`` and ``\\t`` kept).
4. ``whitespace``    CRLF -> LF, non-breaking spaces -> space, runs of spaces/tabs inside a line
   -> one (indentation kept), trailing spaces, 3+ newlines -> 2, text stripped.
5. ``empty_output`` / ``empty_prompt``  a blank assistant / user turn (removed).
6. ``roles``         :func:`~domainft.data.records.check_roles` (kind ``malformed``; "modified" =
   repaired when ``prepare.repair_roles``).
7. ``length``        longest assistant turn shorter than ``min_output_chars`` or any assistant turn
   longer than ``max_output_chars``; counted in Unicode characters, a CJK ideograph counting
   ``cjk_char_weight`` (default 3, :func:`output_length`), so one bound suits English and Chinese.
8. ``char_repetition`` data-juicer CharacterRepetitionFilter (rep_len 10, max_ratio 0.5, from
   BigScience ROOTS), on the assistant text.
9. ``word_repetition`` data-juicer WordRepetitionFilter (rep_len 10 words, max_ratio 0.5). Words
   are ``\w+`` runs; CJK text has no spaces, so each 2 characters count as one word (mean Chinese
   word length is about 1.5-2 characters; data-juicer segments with jieba instead).
10. ``merged_instruction`` an assistant turn that continues with a new instruction (``2.
    Instruction:``, ``### Instruction``, a later line starting ``Instruction:``, ``<noinput>``),
    the AlpacaDataCleaned "merged instructions" defect.
11. ``language``     optional: dominant script of user+assistant text (``zh`` when CJK characters
    are >= 30% of letters, ``en`` for Latin, else ``other``) must be in ``languages``.
"""
from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass, field

import ftfy
import numpy as np

from domainft.data.records import RecordError, check_roles
from domainft.data.schemas import Draft

OPERATORS = ["placeholders", "unicode", "control_chars", "whitespace", "empty_prompt", "empty_output",
             "roles", "length", "char_repetition", "word_repetition", "merged_instruction", "language"]
FTFY_CONFIG = ftfy.TextFixerConfig(fix_character_width=False, uncurl_quotes=False, explain=False)
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")
_NBSP = re.compile("[\u00a0\u2000-\u200a\u202f\u205f]")
_INNER_WS = re.compile(r"(?<=\S)[ \t]{2,}")
_TRAIL_WS = re.compile(r"[ \t]+\n")
_MANY_NL = re.compile(r"\n{3,}")
_PLACEHOLDER_STRIP = re.compile(r"[\s<>\[\](){}.,:;!/\\_\-'\"]+")
_MERGED = re.compile(
    r"(?im)(?:^\s*(?:#{1,4}\s*)?\d{1,2}\s*[.)]\s*instruction\s*[:：])|(?:^\s*#{2,4}\s*instruction\b)"
    r"|(?:\n\s*instruction\s*[:：])|(?:<\s*no\s*input\s*>)")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_ASCII_WORDS = re.compile(r"\w+")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
_WORDS = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]{1,2}|[^\W\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


@dataclass
class CleanStats:
    """Per-operator counts: ``modified[name]`` and ``removed[name]`` (records)."""

    modified: Counter = field(default_factory=Counter)
    removed: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {op: {"modified": self.modified[op], "removed": self.removed[op]} for op in OPERATORS}


def is_placeholder(text: str, placeholders: list[str]) -> bool:
    """True when ``text`` is blank, or equals one of ``placeholders`` ignoring case, spaces, brackets,
    backslashes and punctuation (``<No Input>``, ``\\<noinput\\>``, ``No input.``). Text made only of
    punctuation (e.g. Morse code) is not a placeholder unless listed literally (``-``)."""
    stripped = text.strip()
    if not stripped or stripped.casefold() in {p.strip().casefold() for p in placeholders}:
        return True
    key = _PLACEHOLDER_STRIP.sub("", stripped).casefold()
    return key != "" and key in {_PLACEHOLDER_STRIP.sub("", p).casefold() for p in placeholders}


def fix_unicode(text: str) -> str:
    """ftfy with :data:`FTFY_CONFIG`. Fast paths return the text unchanged: pure ASCII without
    ``&``/ESC, and text made only of :data:`_FTFY_INERT` characters (ftfy's own result there,
    tested on random strings of them)."""
    if text.isascii() and "&" not in text and "\x1b" not in text:
        return text
    if _FTFY_INERT.fullmatch(text):
        return text
    return ftfy.fix_text(text, FTFY_CONFIG)


# Characters that ftfy with FTFY_CONFIG leaves as they are, in any order: printable ASCII but "&" (HTML
# entities), tab, newline, CJK unified ideographs, CJK symbols and punctuation except the combining
# tone marks U+302A-U+302F (NFC reorders them), full-width forms U+FF01-U+FF5E (character width fixing
# is off). Mojibake repair needs characters of a legacy 8-bit code page, which none of these is. ftfy
# costs ~50 us per Chinese text; this check ~1 us.
_FTFY_INERT = re.compile("[\t\n\x20-\x25\x27-\x7e\u3000-\u3029\u3030-\u303f\u4e00-\u9fff\uff01-\uff5e]*")


_WS_NEEDED = re.compile("[\r\t\u00a0\u2000-\u200a\u202f\u205f]|  | \n|\n\n\n|^\\s|\\s$")


def normalize_whitespace(text: str) -> str:
    if not _WS_NEEDED.search(text):  # fast path: nothing to change
        return text
    text = _NBSP.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _MANY_NL.sub("\n\n", _TRAIL_WS.sub("\n", _INNER_WS.sub(" ", text)))
    return text.strip()


def char_repetition_ratio(text: str, rep_len: int = 10, above: float | None = None) -> float:
    """data-juicer ``character_repetition_filter`` ratio: share of the sqrt(#distinct) most frequent
    repeated char n-grams in all n-grams (0.0 when the text is shorter than ``rep_len``).

    With ``above``, returns 0.0 early when the ratio provably cannot exceed it: the counted grams
    occur at least twice, so ratio > r needs at least r/2 of all positions to be repeats.
    """
    total = len(text) - rep_len + 1
    if total <= 0:
        return 0.0
    grams = map(text.__getitem__, map(slice, range(total), range(rep_len, total + rep_len)))
    distinct = len(set(grams))  # counted without a list: the common case stops here
    if distinct == total or (above is not None and total - distinct < above / 2 * total):
        return 0.0
    grams = map(text.__getitem__, map(slice, range(total), range(rep_len, total + rep_len)))
    freq = sorted(Counter(grams).values(), reverse=True)
    n_rep = min(int(len(freq) ** 0.5), len(freq) - sum(1 for f in freq if f == 1))
    return sum(freq[:n_rep]) / total


def word_repetition_ratio(text: str, rep_len: int = 10, above: float | None = None) -> float:
    """data-juicer ``word_repetition_filter`` ratio: share of word n-grams occurring more than once
    (``above``: early 0.0 as in :func:`char_repetition_ratio`)."""
    words = _word_tokens(text)
    grams = [" ".join(words[i:i + rep_len]) for i in range(len(words) - rep_len + 1)]
    if not grams:
        return 0.0
    distinct = len(set(grams))
    if distinct == len(grams) or (above is not None and len(grams) - distinct < above / 2 * len(grams)):
        return 0.0
    return sum(f for f in Counter(grams).values() if f > 1) / len(grams)


def detect_language(text: str) -> str:
    """``zh`` | ``en`` | ``other`` by script counts (heuristic, no model)."""
    cjk, latin = len(_CJK.findall(text)), len(_LATIN.findall(text))
    if cjk + latin == 0:
        return "other"
    return "zh" if cjk >= 0.3 * (cjk + latin) else "en" if latin else "other"


_ASCII_FIX = re.compile("[&\x00-\x08\x0b-\x1f\x7f]")  # ASCII that fix_unicode, _CONTROL or _WS_NEEDED may change


def _unchanged_ascii(text: str) -> bool:
    """True when ``text`` is ASCII that none of unicode / control_chars / whitespace would change
    (str searches are faster than one regex of alternatives; covers every branch of _WS_NEEDED)."""
    return (text.isascii() and "  " not in text and " \n" not in text and "\n\n\n" not in text
            and "\t" not in text and not text[:1].isspace() and not text[-1:].isspace()
            and not _ASCII_FIX.search(text))


def _normalise_text(messages: list[dict[str, str]], stats: CleanStats) -> list[dict[str, str]]:
    """Operators ``unicode``, ``control_chars`` and ``whitespace``, in that order, on every turn;
    each counts a record once when it changed any turn."""
    out, changed = [], set()
    for m in messages:
        text = m["content"]
        if _unchanged_ascii(text):  # the common case: nothing to change
            out.append(m)
            continue
        for name, fn in (("unicode", fix_unicode), ("control_chars", _strip_control), ("whitespace", normalize_whitespace)):
            new = fn(text)
            if new != text:
                changed.add(name)
                text = new
        out.append({"role": m["role"], "content": text})
    for name in changed:
        stats.modified[name] += 1
    return out


def _strip_control(text: str) -> str:
    return _CONTROL.sub("", text) if _CONTROL.search(text) else text


def _fail(stats: CleanStats, name: str, detail: str, kind: str = "filtered") -> RecordError:
    stats.removed[name] += 1
    return RecordError(name, detail, kind=kind)


def clean(draft: Draft, cfg, stats: CleanStats, repair_roles: bool = False) -> list[dict[str, str]]:
    """Run the operators on one draft and return its cleaned turns (:func:`clean_batch` of one).

    Args:
        draft: turns from ingest.
        cfg: :class:`domainft.config.CleanParams`.
        stats: counters updated in place.
        repair_roles: let the ``roles`` operator repair instead of reject.

    Raises:
        RecordError: reason = operator name (kind ``filtered``; ``roles`` failures keep their own
            reason such as ``bad_role_order`` with kind ``malformed``).
    """
    result = clean_batch([draft], cfg, stats, repair_roles)[0]
    if isinstance(result, RecordError):
        raise result
    return result


def clean_batch(drafts: list[Draft], cfg, stats: CleanStats,
                repair_roles: bool = False) -> list[list[dict[str, str]] | RecordError]:
    """Run the operators on each draft, in the order of the module docstring; returns, per draft,
    its cleaned turns or the :class:`RecordError` of the first operator that rejected it.

    The repetition operators are the costly ones (a set of every 10-gram). For the whole batch they
    first count hashed n-gram repeats (:func:`repeats_upper_bound`, numpy); a hash collision can only
    add repeats, so a text whose bound cannot exceed the threshold is passed without the exact
    count, and the exact data-juicer ratio is computed for the others. Results equal per-record
    :func:`char_repetition_ratio` / :func:`word_repetition_ratio` decisions.
    """
    out: list = []
    for d in drafts:
        try:
            out.append(_clean_to_length(d, cfg, stats, repair_roles))
        except RecordError as err:
            out.append(err)
    alive = [i for i, r in enumerate(out) if not isinstance(r, RecordError)]
    answers = ["\n".join(m["content"] for m in out[i] if m["role"] == "assistant") for i in alive]
    char_check = _may_exceed(answers, cfg.max_char_repetition, words=False)
    word_check = _may_exceed(answers, cfg.max_word_repetition, words=True)
    for k, i in enumerate(alive):
        try:
            out[i] = _clean_after_length(out[i], answers[k], cfg, stats, char_check[k], word_check[k])
        except RecordError as err:
            out[i] = err
    return out


def output_length(text: str, cjk_weight: float) -> float:
    """Length for the length bounds: characters, each CJK ideograph counting ``cjk_weight``
    (``prepare.clean.cjk_char_weight``, default 3: an English rendering of Chinese text is about 3-4
    times as many characters, e.g. 需要身份证和手机号码 / "You need your ID card and mobile number")."""
    if text.isascii() or cjk_weight == 1:
        return len(text)
    return len(text) + (cjk_weight - 1) * len(_CJK.findall(text))


def _n(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def _clean_to_length(draft: Draft, cfg, stats: CleanStats, repair_roles: bool) -> list[dict[str, str]]:
    """Operators 1-7 (placeholders ... length)."""
    messages = list(draft.messages)  # turns are replaced, never changed in place
    if draft.input is not None:
        inp = draft.input
        if inp and is_placeholder(inp, cfg.placeholders):
            stats.modified["placeholders"] += 1
            inp = ""
        if inp.strip():
            m = messages[draft.input_index]
            messages[draft.input_index] = {"role": m["role"], "content": m["content"].rstrip() + "\n\n" + inp}
    messages = _normalise_text(messages, stats)
    if any(m["role"] == "assistant" and not m["content"] for m in messages):
        raise _fail(stats, "empty_output", "an assistant turn is empty")
    if any(m["role"] == "user" and not m["content"] for m in messages) and not repair_roles:
        raise _fail(stats, "empty_prompt", "a user turn is empty")
    try:
        messages, repairs = check_roles(messages, repair=repair_roles)
    except RecordError:
        stats.removed["roles"] += 1
        raise
    if repairs or draft.repairs:
        stats.modified["roles"] += 1
    longest = max(output_length(m["content"], cfg.cjk_char_weight) for m in messages if m["role"] == "assistant")
    if longest < cfg.min_output_chars:
        raise _fail(stats, "length", f"longest assistant turn has {_n(longest)} chars < min_output_chars {cfg.min_output_chars}")
    if longest > cfg.max_output_chars:
        raise _fail(stats, "length", f"assistant turn has {_n(longest)} chars > max_output_chars {cfg.max_output_chars}")
    return messages


def _clean_after_length(messages: list[dict[str, str]], answer: str, cfg, stats: CleanStats,
                        char_check: bool, word_check: bool) -> list[dict[str, str]]:
    """Operators 8-11 (char_repetition ... language); ``*_check`` False = the bound says it passes."""
    ratio = char_repetition_ratio(answer, above=cfg.max_char_repetition) if char_check else 0.0
    if ratio > cfg.max_char_repetition:
        raise _fail(stats, "char_repetition", f"char 10-gram repetition ratio {ratio:.2f} > {cfg.max_char_repetition}")
    ratio = word_repetition_ratio(answer, above=cfg.max_word_repetition) if word_check else 0.0
    if ratio > cfg.max_word_repetition:
        raise _fail(stats, "word_repetition", f"word 10-gram repetition ratio {ratio:.2f} > {cfg.max_word_repetition}")
    for m in messages:
        if m["role"] == "assistant" and _may_merge(m["content"]):
            hit = _MERGED.search(m["content"])
            if hit:
                raise _fail(stats, "merged_instruction", f"assistant text continues with {hit.group(0).strip()!r}")
    if cfg.languages:
        lang = detect_language(" ".join(m["content"] for m in messages if m["role"] != "system"))
        if lang not in cfg.languages:
            raise _fail(stats, "language", f"language {lang!r} not in {cfg.languages}")
    return messages


def _may_merge(text: str) -> bool:
    """False when :data:`_MERGED` cannot match: every branch needs "instruction" or "input", and for
    ASCII text the pattern's IGNORECASE is plain ASCII case-insensitivity."""
    if not text.isascii():
        return True
    low = text.lower()
    return "instruction" in low or "input" in low


REP_LEN = 10  # n-gram size of both repetition operators (data-juicer's rep_len default)
_U64 = np.uint64
_TEXT_BITS = 30  # repeats_upper_bound packs (text index, hash) into 64 bits: up to 2**30 texts per call
# Tokens hashed and sorted per numpy pass: 512 KiB per uint64 temporary stays in the CPU cache, which
# made the character bound 2.5x and the word bound 1.4x faster than 4M tokens per pass (150,000 texts).
_BATCH_TOKENS = 1 << 16


def _char_tokens(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _word_tokens(text: str) -> list[str]:
    """Words of the repetition operator (ASCII text has no CJK, so ``\\w+`` is the same, faster pattern)."""
    text = text.casefold()
    return _ASCII_WORDS.findall(text) if text.isascii() else _WORDS.findall(text)


def _may_exceed(texts: list[str], threshold: float, words: bool) -> np.ndarray:
    """Per text: True unless its hashed repeat bound shows the character (or, with ``words``, word)
    repetition ratio cannot exceed ``threshold`` (the exact functions' own early exit: repeats <
    threshold / 2 * n-grams)."""
    result = np.ones(len(texts), dtype=bool)
    start = 0
    while start < len(texts):  # batches of about _BATCH_TOKENS characters
        stop, chars = start, 0
        while stop < len(texts) and (chars < _BATCH_TOKENS or stop == start):
            chars += len(texts[stop])
            stop += 1
        if not words:  # one encode for the batch: code points, lengths in characters
            lengths = np.fromiter(map(len, texts[start:stop]), dtype=np.int64, count=stop - start)
            flat = _char_tokens("".join(texts[start:stop])).astype(_U64)
        else:  # Python's str hash (equal words, equal hashes within a process)
            toks = [_word_tokens(t) for t in texts[start:stop]]
            lengths = np.fromiter(map(len, toks), dtype=np.int64, count=len(toks))
            flat = np.fromiter(map(hash, itertools.chain.from_iterable(toks)), dtype=np.int64,
                               count=int(lengths.sum())).view(_U64)
        grams = np.maximum(lengths - REP_LEN + 1, 0)
        repeats = repeats_upper_bound(flat, lengths, REP_LEN)
        result[start:stop] = (grams > 0) & (repeats >= threshold / 2 * grams)
        start = stop
    return result


def repeats_upper_bound(tokens: np.ndarray, lengths: np.ndarray, n: int) -> np.ndarray:
    """Upper bound on the repeated n-grams of each text (n-grams minus distinct n-grams).

    Args:
        tokens: (S,) uint64 token hashes of all texts, concatenated.
        lengths: (T,) tokens per text (sum S).
        n: n-gram size.

    Returns:
        (T,) int64. Each n-gram is hashed (polynomial rolling hash, 34 bits kept) and the repeats of
        a text are its n-grams minus its distinct hashes. Equal n-grams have equal hashes, and a
        collision can only merge two distinct n-grams, so the count is >= the exact one.
    """
    total = len(tokens) - n + 1
    if total <= 0:
        return np.zeros(len(lengths), dtype=np.int64)
    with np.errstate(over="ignore"):
        h = tokens[:total].copy()
        for j in range(1, n):
            h *= _U64(0x100000001B3)
            h += tokens[j:j + total]
        h ^= h >> _U64(29)
        h *= _U64(0xBF58476D1CE4E5B9)
        h ^= h >> _U64(32)
    ends = np.cumsum(lengths)
    text = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)[:total]
    valid = np.arange(n, total + n, dtype=np.int64) <= ends[text]  # the n-gram lies inside its text
    keys = (text[valid].astype(_U64) << _U64(64 - _TEXT_BITS)) | (h[valid] >> _U64(_TEXT_BITS))
    keys.sort()
    same = keys[1:] == keys[:-1]
    return np.bincount((keys[1:][same] >> _U64(64 - _TEXT_BITS)).astype(np.int64), minlength=len(lengths))
