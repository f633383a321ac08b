"""Person names, @handles and street addresses found without a user list (PII types ``person``,
``handle``, ``address`` of :mod:`domainft.data.pii`). Offline; each detector loads on first use.

- ``person``, Chinese: jieba's part-of-speech tag ``nr`` (person name; jieba 0.42, its bundled
  dictionary and HMM), 2-4 CJK characters starting with a common surname (:data:`SURNAMES`), not
  ending like a place (:data:`PLACE_ENDS`) and without a repeated character (谢谢).
- ``person``, English: a title (``Dr``, ``Mr``, ``Mrs``, ``Ms``, ``Miss``, ``Prof``, ``Doctor``) then
  a capitalised word, or a known first name (gender-guesser's 40k-name list, names it tags
  male/female/mostly_*) then a capitalised surname; first names that are also common English
  words (:data:`NOT_NAMES`) and surnames in it do not count. All-lowercase text (speech
  transcripts) is not searched: capitalisation is the evidence.
- ``handle``: ``@`` + a Twitter/Weibo user name (``@sprintcare``, ``@115712``, ``@中国联通客服``,
  ``@ China Unicom Customer Service`` as STC-3's translation writes them).
- ``address``: a house number and capitalised words ending in a street type (``12 Baker Street``,
  ``Kangle Middle Road``), or Chinese ``...路/街/道/巷`` with an optional number (``建国路88号``).

Precision and recall on a labelled sample of the shared STC-3 and twcs sets are measured by
``tests/integration/test_real_data_prepare.py::test_pii_precision_recall_on_labelled_sample``.
"""
from __future__ import annotations

import re
from functools import lru_cache

TITLES = r"(?:Dr|Mr|Mrs|Ms|Miss|Prof|Doctor|Mister|Madam)\.?"
NOT_NAMES = frozenset("""
a an and are as at be but by can do for from had has have he her his i if in is it its me my no not of on or our
she so than that the their them then there they this to up us was we were what when which who will with you your
may june april august will bill mark rose grace hope faith joy dawn summer autumn art rich chase hunter page lane
king earl duke major sterling guy jack jimmy frank gene ray max sky river stone ivy holly penny ginny sunny
monday tuesday wednesday thursday friday saturday sunday january february march july september october november
december customer service support team help thanks thank hi hello dear sir madam please sorry ok yes good great
china new north south east west city road street mobile bank card account internet online order store
""".split())
_TITLED = re.compile(r"\b(?:" + TITLES + r")\s+([A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)\b")
_WORD = re.compile(r"\b[A-Z][a-z]{1,20}(?:-[A-Z][a-z]+)?\b")
HANDLE = re.compile(r"(?<![A-Za-z0-9_@])@(?:[A-Za-z0-9_]{1,30}|[\u4e00-\u9fffA-Za-z0-9_\-]{1,30}"
                    # "@ China Unicom Customer Service" (STC-3 en: a Weibo account name written out)
                    r"| [A-Za-z0-9][\w.]*(?: (?:(?:of|in|the|for|and) )*[A-Z0-9][\w.]*){0,6})")
STREET = (r"(?:Street|St|Road|Rd|Avenue|Ave|Boulevard|Blvd|Lane|Ln|Drive|Dr|Way|Court|Ct|Place|Pl|Highway|Hwy"
          r"|Square|Sq|Terrace|Parkway|Pkwy)")
EN_ADDRESS = re.compile(r"\b(?:\d{1,5}[A-Za-z]?\s+)?(?:[A-Z][a-z]+\s+){1,3}" + STREET + r"\b")
ZH_ADDRESS = re.compile(r"[\u4e00-\u9fff]{1,8}(?:路|街|大道|巷|胡同)(?:\d{1,5}号)?")
# The ~250 most common Chinese surnames (single characters; they cover over 95% of people): jieba's nr
# tag alone also marks place names and words (雅居园, 福清, 谢谢), so a name must start with one.
SURNAMES = frozenset("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁"
                     "任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃"
                     "武戴莫孔向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符"
                     "舒阮柯纪梅童凌毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳时穆农"
                     "司卓古吉缪简车项连芦麦褚娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师和仇栾隋商"
                     "刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝欧阳司马上官诸葛")
PLACE_ENDS = frozenset("区园市县镇村路街省州城湾港山河湖桥楼院厅馆店站")  # a jieba nr ending so is a place
ZH_LEAD = set("住在于到去从往至的是我你他她家位")  # verbs and particles before a street name, not part of it
_CJK = re.compile(r"[\u4e00-\u9fff]")


@lru_cache(maxsize=1)
def _first_names() -> frozenset[str]:
    """Lower-cased first names gender-guesser knows as male/female (not andy/unknown)."""
    import gender_guesser.detector as gg

    det = gg.Detector(case_sensitive=False)
    keep = {"male", "female", "mostly_male", "mostly_female"}
    out = {name for name, by_gender in det.names.items() if isinstance(by_gender, dict) and keep & set(by_gender)}
    return frozenset(n for n in out if n.isalpha() and n not in NOT_NAMES)


@lru_cache(maxsize=1)
def _jieba_posseg():
    import logging

    import jieba
    import jieba.posseg as posseg

    jieba.setLogLevel(logging.WARNING)
    return posseg


def person_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of person names in ``text`` (see module docstring)."""
    spans = []
    if _CJK.search(text):
        pos = 0
        for w in _jieba_posseg().cut(text):
            word = w.word
            if (w.flag == "nr" and 2 <= len(word) <= 4 and word[0] in SURNAMES and word[-1] not in PLACE_ENDS
                    and len(set(word)) == len(word) and all(_CJK.match(c) for c in word)):
                spans.append((pos, pos + len(word)))
            pos += len(word)
    if text.lower() != text:
        names = _first_names()
        spans += [m.span() for m in _TITLED.finditer(text) if m.group(1).split()[0].lower() not in NOT_NAMES]
        words = list(_WORD.finditer(text))
        for a, b in zip(words, words[1:]):  # every pair of adjacent capitalised words: "Patient Sarah Johnson"
            if (text[a.end():b.start()] == " " and a.group(0).lower() in names
                    and b.group(0).lower() not in NOT_NAMES):
                spans.append((a.start(), b.end()))
    return spans


def handle_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in HANDLE.finditer(text)] if "@" in text else []


def address_spans(text: str) -> list[tuple[int, int]]:
    spans = [m.span() for m in EN_ADDRESS.finditer(text)]
    if _CJK.search(text):
        for m in ZH_ADDRESS.finditer(text):
            start = m.start()
            while start < m.end() - 2 and text[start] in ZH_LEAD:  # 住在建国路 -> 建国路
                start += 1
            spans.append((start, m.end()))
    return spans
