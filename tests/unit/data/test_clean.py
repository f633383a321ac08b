"""Each cleaning operator: what it modifies or removes, with its count."""
from __future__ import annotations

import pytest

from domainft.config import CleanParams
from domainft.data.clean import (CleanStats, char_repetition_ratio, clean, detect_language, fix_unicode,
                                 is_placeholder, normalize_whitespace, word_repetition_ratio)
from domainft.data.records import RecordError
from domainft.data.schemas import Draft

ANSWER = "Transfers above the daily limit need a call to the branch on a working day."


def draft(user="What is the limit?", answer=ANSWER, inp=None):
    return Draft([{"role": "user", "content": user}, {"role": "assistant", "content": answer}], input=inp)


def run(d, **cfg):
    stats = CleanStats()
    return clean(d, CleanParams(**cfg), stats), stats


def rejected(d, **cfg):
    stats = CleanStats()
    with pytest.raises(RecordError) as err:
        clean(d, CleanParams(**cfg), stats)
    return err.value, stats


@pytest.mark.parametrize("text", ["<noinput>", "No input.", "<No Input>", "N/A", "none", "  ", "[noinput]", "(No input)", '"<noinput>"', "\\<noinput\\>", "{\\noinput}", "-"])
def test_placeholders(text):
    assert is_placeholder(text, CleanParams().placeholders)


@pytest.mark.parametrize("text", ["No", "input data", "Nonetheless", "0", "Sentence: none of them", "\\-- \\-\\ \\.-", "..."])
def test_not_placeholders(text):
    assert not is_placeholder(text, CleanParams().placeholders)


def test_placeholder_input_dropped_real_input_appended():
    out, stats = run(draft(inp="<No input>"))
    assert out[0]["content"] == "What is the limit?" and stats.modified["placeholders"] == 1
    out, stats = run(draft(inp="Account: Gold"))
    assert out[0]["content"] == "What is the limit?\n\nAccount: Gold" and stats.modified["placeholders"] == 0


def test_unicode_fixes_mojibake_keeps_fullwidth_punctuation():
    assert fix_unicode("caf\u00c3\u00a9 &amp; more") == "café & more"
    zh = "开户需要什么材料？请带上身份证，谢谢！"
    assert fix_unicode(zh) == zh
    out, stats = run(draft(answer="The fee is 5 \u00e2\u20ac\u201c 10 pounds per month for the account."))
    assert out[1]["content"] == "The fee is 5 \u2013 10 pounds per month for the account." and stats.modified["unicode"] == 1


def test_control_chars_and_whitespace():
    out, stats = run(draft(user="What\x07 is\u200b the  limit?\r\n", answer=ANSWER + "\x00  \n\n\n\nSecond   para."))
    assert out[0]["content"] == "What is the limit?"
    assert out[1]["content"] == ANSWER + "\n\nSecond para."
    assert (stats.modified["control_chars"], stats.modified["whitespace"]) == (1, 1)
    assert normalize_whitespace("def f():\n    return 1  \n") == "def f():\n    return 1"  # indentation kept


def test_empty_output_and_prompt():
    err, stats = rejected(draft(answer="   "))
    assert (err.reason, err.kind, stats.removed["empty_output"]) == ("empty_output", "filtered", 1)
    err, _ = rejected(draft(user="\x00"))
    assert err.reason == "empty_prompt"


def test_length_bounds_count_cjk_per_character():
    err, stats = rejected(draft(answer="Too short."))
    assert err.reason == "length" and "10 chars < min_output_chars 20" in err.detail
    run(draft(answer="需要身份证和手机号码。"))  # 10 ideographs x 3 + 1 = 31 >= 20: kept (was rejected at 11)
    run(draft(answer="脾切除术。"), min_output_chars=10)  # 4 x 3 + 1 = 13 >= min 10
    err, _ = rejected(draft(answer="脾切除。"), min_output_chars=11)  # 3 x 3 + 1 = 10
    assert "10 chars < min_output_chars 11" in err.detail
    err, _ = rejected(draft(answer="中" * 600), max_output_chars=1500)  # 1800 weighted
    assert "1800 chars > max_output_chars 1500" in err.detail
    run(draft(answer="中" * 600), max_output_chars=1500, cjk_char_weight=1, max_char_repetition=1, max_word_repetition=1)  # per character, as before
    err, _ = rejected(draft(answer="x" * 30), max_output_chars=25)
    assert "30 chars > max_output_chars 25" in err.detail


def test_repetition_thresholds():
    assert char_repetition_ratio("abcdefghijklmnop") == 0.0
    assert char_repetition_ratio("ha" * 50) == 46 / 91  # 2 distinct 10-grams, top int(sqrt(2)) = 1 counted
    assert word_repetition_ratio(ANSWER) == 0.0
    spam = " ".join(["buy now and save money on every card today"] * 4)
    assert word_repetition_ratio(spam) > 0.5
    err, stats = rejected(draft(answer="C D D D D D D D D D D E E C C C C C C C C C C D D D D D D D D D E E."))
    assert err.reason == "char_repetition" and stats.removed["char_repetition"] == 1
    err, _ = rejected(draft(answer=spam), max_char_repetition=1.0)
    assert err.reason == "word_repetition"


def test_merged_instruction():
    err, _ = rejected(draft(answer=ANSWER + "\n\n2. Instruction: Write a poem about cats.\n3. Output: ..."))
    assert err.reason == "merged_instruction" and "Instruction" in err.detail
    err, _ = rejected(draft(answer="<noinput>\n<output image>"), min_output_chars=1)
    assert err.reason == "merged_instruction"
    run(draft(answer="Input: 5\nOutput: 120, the factorial of five computed recursively."))  # not merged


def test_language_filter():
    assert detect_language("开户需要什么材料？") == "zh" and detect_language(ANSWER) == "en"
    assert detect_language("12345 !!") == "other"
    run(draft(), languages=["en"])
    err, _ = rejected(draft(), languages=["zh"])
    assert err.reason == "language" and "'en'" in err.detail


def _repetitive_corpus(n: int = 400) -> list[str]:
    """Answers from no repetition to nearly all repeats, around both 0.5 thresholds, some Chinese."""
    import random

    rng = random.Random(0)
    words = ["card", "fee", "limit", "branch", "loan", "rate", "money", "save", "today", "call", "银行", "账户"]
    out = []
    for i in range(n):
        base = " ".join(rng.choice(words) for _ in range(rng.randint(3, 30)))
        if i % 4 == 0:
            out.append(base)  # little repetition
        elif i % 4 == 1:
            out.append(" ".join([base] * rng.randint(2, 5)) + " " + " ".join(rng.choice(words) for _ in range(40)))
        elif i % 4 == 2:
            out.append("".join(rng.choice("需要身份证和手机号码") for _ in range(rng.randint(30, 200))))
        else:  # a short unit repeated, then ordinary words: char repetition ratios from 0 to 1
            unit = "".join(rng.choice("xyz") for _ in range(rng.randint(1, 3)))
            out.append(unit * rng.randint(5, 60) + " " + base)
    return out


def test_repeats_upper_bound_is_exact_or_above():
    import numpy as np

    from domainft.data.clean import _char_tokens, repeats_upper_bound

    texts = _repetitive_corpus()
    toks = [_char_tokens(t) for t in texts]
    bound = repeats_upper_bound(np.concatenate(toks).astype(np.uint64), np.array([len(t) for t in toks]), 10)
    exact = [max(len(t) - 9, 0) - len({t[i:i + 10] for i in range(len(t) - 9)}) for t in texts]
    assert all(b >= e for b, e in zip(bound, exact))
    assert sum(bound) == sum(exact) > 10_000  # 34-bit hashes: no collision in a few hundred texts


def test_clean_batch_decides_as_the_exact_ratios(monkeypatch):
    """The hashed bound only skips texts that cannot exceed a threshold: forcing the exact ratio
    everywhere gives the same kept turns, rejections and counts."""
    import numpy as np

    import domainft.data.clean as cl

    drafts = [draft(answer=a) for a in _repetitive_corpus()]
    cfg = CleanParams(min_output_chars=1)
    fast_stats, exact_stats = CleanStats(), CleanStats()
    fast = cl.clean_batch(drafts, cfg, fast_stats)
    monkeypatch.setattr(cl, "_may_exceed", lambda texts, threshold, words: np.ones(len(texts), dtype=bool))
    exact = cl.clean_batch(drafts, cfg, exact_stats)

    def show(r):
        return (r.reason, r.detail) if isinstance(r, RecordError) else r

    assert [show(r) for r in fast] == [show(r) for r in exact]
    assert fast_stats == exact_stats
    assert 30 < exact_stats.removed["char_repetition"] and 30 < exact_stats.removed["word_repetition"]
    assert sum(not isinstance(r, RecordError) for r in fast) > 100


def test_ascii_fast_path_skips_only_text_no_operator_changes():
    import random

    from domainft.data.clean import _strip_control, _unchanged_ascii

    rng = random.Random(1)
    alphabet = "ab .,\n\n\t\r&;\x1b\x00\x0b\x0c\x1c\x7f\u00a0é"
    skipped = 0
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        if _unchanged_ascii(text):
            skipped += 1
            assert fix_unicode(text) == _strip_control(text) == normalize_whitespace(text) == text, repr(text)
    assert skipped > 500


def test_cjk_fast_path_returns_what_ftfy_returns():
    """fix_unicode skips ftfy for text of _FTFY_INERT characters: on random non-ASCII strings of those
    (and of their neighbours, which must go through ftfy) the result is ftfy's own."""
    import random

    import ftfy

    from domainft.data.clean import _FTFY_INERT, FTFY_CONFIG

    rng = random.Random(2)
    inert = "a Z9\n\t,.?!;:'\"<>" + "中文测试龥一" + "\u3000\u3001\u3002\u3008\u3029\u3030\u303f" + "，？！（）：ｆＡ～"
    other = "&\r\x1b\x00\u302a\u302b\u302f\u00e9\u00c3\u00a9\u00a0\u2028\uff5f\uf900\u3099\ufeff"
    skipped = 0
    for _ in range(20_000):
        text = "".join(rng.choice(inert if rng.random() < 0.97 else other) for _ in range(rng.randint(0, 16)))
        if text.isascii():  # the ASCII fast path leaves controls to control_chars (tested above)
            continue
        assert fix_unicode(text) == ftfy.fix_text(text, FTFY_CONFIG), repr(text)
        skipped += bool(_FTFY_INERT.fullmatch(text))
    assert skipped > 5_000
    # what ftfy changes is never inert: tone marks reordered by NFC, HTML entities, mojibake
    for changed in ("\u302b\u302a", "中&amp;文", "中caf\u00c3\u00a9", "\u4e2d\uf900"):
        assert ftfy.fix_text(changed, FTFY_CONFIG) != changed and not _FTFY_INERT.fullmatch(changed)
