"""Person names, @handles and street addresses found without a user list (PII types ``person``,
``handle``, ``address`` of :mod:`domainft.data.pii`). Offline; each detector loads on first use.

- ``person``, Chinese: jieba's part-of-speech tag ``nr`` (person name; jieba 0.42, its bundled
  dictionary and HMM), 2-4 CJK characters starting with a common surname (:data:`SURNAMES`), not
  ending like a place (:data:`PLACE_ENDS`), without a repeated character (谢谢) and, for 3-4
  characters, not starting with a common word (安全法: a law).
- ``person``, English: a title (``Dr``, ``Mr``, ``Mrs``, ``Ms``, ``Miss``, ``Prof``, ``Doctor``) then
  a capitalised word, or a common first name (gender-guesser's list, names it tags
  male/female/mostly_* with a frequency digit >= :data:`MIN_POPULARITY` in some country: its rare
  entries include One, Visa and India) then a capitalised surname; first names that are also
  common English words (:data:`NOT_NAMES`), surnames in it and words with an abstract noun's
  ending (:data:`NOUN_ENDS`: Asset Verification) do not count. All-lowercase text (speech
  transcripts) is not searched: capitalisation is the evidence.
- ``handle``: ``@`` + a Twitter/Weibo user name (``@sprintcare``, ``@115712``, ``@中国联通客服``,
  ``@ China Unicom Customer Service`` as STC-3's translation writes them).
- ``address``: a house number and capitalised words ending in a street type (``12 Baker Street``,
  ``Kangle Middle Road``), or a Chinese street on jieba's tokens (``建国路88号``, ``朝阳区人民路``;
  not common nouns such as 道路, 思路 or 十字路口; :func:`_zh_address_spans`).

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
MIN_POPULARITY = 4  # gender-guesser's frequency digit: 11.5k of its 39k first names reach it in some country
# Endings of abstract nouns that surnames do not have: "Asset Verification", "Grace Management" are not people.
NOUN_ENDS = ("tion", "sion", "ment", "ness", "ity", "ship", "ism", "ology")
_TITLED = re.compile(r"\b(?:" + TITLES + r")\s+([A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)\b")
_WORD = re.compile(r"\b[A-Z][a-z]{1,20}(?:-[A-Z][a-z]+)?\b")
HANDLE = re.compile(r"(?<![A-Za-z0-9_@])@(?:[A-Za-z0-9_]{1,30}|[\u4e00-\u9fffA-Za-z0-9_\-]{1,30}"
                    # "@ China Unicom Customer Service" (STC-3 en: a Weibo account name written out)
                    r"| [A-Za-z0-9][\w.]*(?: (?:(?:of|in|the|for|and) )*[A-Z0-9][\w.]*){0,6})")
STREET = (r"(?:Street|St|Road|Rd|Avenue|Ave|Boulevard|Blvd|Lane|Ln|Drive|Dr|Way|Court|Ct|Place|Pl|Highway|Hwy"
          r"|Square|Sq|Terrace|Parkway|Pkwy)")
EN_ADDRESS = re.compile(r"\b(?:\d{1,5}[A-Za-z]?\s+)?(?:[A-Z][a-z]+\s+){1,3}" + STREET + r"\b")
ZH_STREET = ("路", "街", "大道", "巷", "胡同")
ZH_SIDE_STREET = ("东路", "西路", "南路", "北路", "中路")  # 延安 + 西路: jieba splits the side off
ZH_PLACE_TAGS = frozenset({"ns", "nz", "nt", "nr", "i"})  # place, other proper name, organisation, name, idiom (春熙路)
ZH_NAMING_TAGS = frozenset("nagv")  # first letter of the flag of a word a street is named after: 人民, 幸福, 解放
# The ~250 most common Chinese surnames (single characters; they cover over 95% of people): jieba's nr
# tag alone also marks place names and words (雅居园, 福清, 谢谢), so a name must start with one.
SURNAMES = frozenset("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁"
                     "任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃"
                     "武戴莫孔向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符"
                     "舒阮柯纪梅童凌毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳时穆农"
                     "司卓古吉缪简车项连芦麦褚娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师和仇栾隋商"
                     "刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝欧阳司马上官诸葛")
COMMON_FREQ = 1000  # jieba dictionary count of a common word (安全 9921, 高兴 5387; 王小, 李明 are absent)
PLACE_ENDS = frozenset("区园市县镇村路街省州城湾港山河湖桥楼院厅馆店站")  # a jieba nr ending so is a place
ZH_LEAD = set("住在于到去从往至的是我你他她家位")  # verbs and particles before a street name, not part of it
_CJK = re.compile(r"[\u4e00-\u9fff]")


@lru_cache(maxsize=1)
def _first_names() -> frozenset[str]:
    """Lower-cased first names gender-guesser knows as male/female (not andy/unknown)."""
    import gender_guesser.detector as gg

    det = gg.Detector(case_sensitive=False)
    keep = {"male", "female", "mostly_male", "mostly_female"}

    def popularity(by_gender: dict) -> int:  # nam_dict.txt: one hex digit per country, 1 = rare .. D = very common
        return max((int(c, 16) for g, v in by_gender.items() if g in keep for c in v if c.strip()), default=0)

    out = {name for name, by_gender in det.names.items()
           if isinstance(by_gender, dict) and keep & set(by_gender) and popularity(by_gender) >= MIN_POPULARITY}
    return frozenset(n for n in out if n.isalpha() and n not in NOT_NAMES)


@lru_cache(maxsize=1)
def _jieba_posseg():
    import logging

    import jieba
    import jieba.posseg as posseg

    jieba.setLogLevel(logging.WARNING)
    return posseg


def _common_word(word: str) -> bool:
    """A word of jieba's dictionary seen >= :data:`COMMON_FREQ` times under a tag that is not a
    name's (安全 "safe": 安全法 is a law, not a Mr 安)."""
    import jieba

    posseg = _jieba_posseg()
    tag = posseg.dt.word_tag_tab.get(word)
    return tag is not None and not tag.startswith("nr") and jieba.dt.FREQ.get(word, 0) >= COMMON_FREQ


def person_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of person names in ``text`` (see module docstring)."""
    spans = []
    if _CJK.search(text):
        pos = 0
        for w in _jieba_posseg().cut(text):
            word = w.word
            if (w.flag == "nr" and 2 <= len(word) <= 4 and word[0] in SURNAMES and word[-1] not in PLACE_ENDS
                    and len(set(word)) == len(word) and all(_CJK.match(c) for c in word)
                    and not (len(word) > 2 and _common_word(word[:2]))):
                spans.append((pos, pos + len(word)))
            pos += len(word)
    if text.lower() != text:
        names = _first_names()
        spans += [m.span() for m in _TITLED.finditer(text) if m.group(1).split()[0].lower() not in NOT_NAMES]
        words = list(_WORD.finditer(text))
        for a, b in zip(words, words[1:]):  # every pair of adjacent capitalised words: "Patient Sarah Johnson"
            if (text[a.end():b.start()] == " " and a.group(0).lower() in names
                    and b.group(0).lower() not in NOT_NAMES and not b.group(0).lower().endswith(NOUN_ENDS)):
                spans.append((a.start(), b.end()))
    return spans


def handle_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in HANDLE.finditer(text)] if "@" in text else []


def _tokens(text: str) -> list[tuple[int, str, str]]:
    """jieba's ``(start, word, part-of-speech flag)`` for each token of ``text``."""
    out, pos = [], 0
    for w in _jieba_posseg().cut(text):
        out.append((pos, w.word, w.flag))
        pos += len(w.word)
    return out


def _zh_address_spans(text: str) -> list[tuple[int, int]]:
    """Chinese street addresses on jieba's tokens: a token ending in a street type that jieba tags
    as a place or proper name (建国路 nz, 长安街 ns), or a bare street type after a naming word
    (人民 + 路, 幸福 + 巷); extended back over place tokens (朝阳区) and forward over ``<number>号``.
    Common nouns that end in a street type are not addresses (道路, 思路, 公路, 条路, 十字路口)."""
    toks = _tokens(text)
    spans = []
    for i, (start, word, flag) in enumerate(toks):
        if not word.endswith(ZH_STREET):
            continue
        if word in ZH_STREET or word[-2:] in ZH_SIDE_STREET and len(word) == 2:
            if i == 0 or toks[i - 1][2][:1] not in ZH_NAMING_TAGS or toks[i - 1][1] in ZH_LEAD:
                continue
            i0 = i - 1
        elif flag in ZH_PLACE_TAGS:
            i0 = i
        else:
            continue
        while i0 > 0 and toks[i0 - 1][2] == "ns":
            i0 -= 1
        end = start + len(word)
        if i + 2 < len(toks) and toks[i + 1][1].isdigit() and toks[i + 2][1] == "号":
            end = toks[i + 2][0] + 1
        spans.append((toks[i0][0], end))
    return spans


def address_spans(text: str) -> list[tuple[int, int]]:
    spans = [m.span() for m in EN_ADDRESS.finditer(text)]
    if _CJK.search(text) and any(t in text for t in ZH_STREET):
        spans += _zh_address_spans(text)
    return spans
