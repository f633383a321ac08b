"""PII redaction with typed placeholders and per-type counts.

Types (``prepare.pii.types``) and their placeholder:

- ``email`` -> ``[EMAIL]``: RFC 5322-ish ``local@domain.tld``.
- ``cn_id`` -> ``[CN_ID]``: mainland China resident ID (GB 11643-1999): 6-digit region, valid
  birth date 18xx-20xx, 3-digit sequence, ISO 7064 MOD 11-2 check character (``0-9``/``X``).
- ``card``  -> ``[CARD]``: 13-19 digits (single spaces/hyphens allowed between groups), first digit
  2-6, Luhn checksum valid (ISO/IEC 7812).
- ``ip``    -> ``[IP]``: IPv4 with octets 0-255 (not part of a longer dotted number such as a
  version string) and full or ``::``-compressed IPv6.
- ``phone`` -> ``[PHONE]``: (a) ``+`` country code followed by 6-14 digits in groups;
  (b) mainland China mobile ``1[3-9]`` + 9 digits (optional ``+86``/``86``, ``3-4-4`` grouping);
  (c) NANP ``(555) 123-4567`` / ``555-123-4567`` / ``555.123.4567`` / ``1-800-555-1234``, one
  separator throughout (``252.227-7013`` is a clause number); (d) a 7-13 digit number
  (spaces/hyphens allowed) within 60 characters after a phone word (call, phone, tel, mobile, SMS,
  whatsapp, fax, hotline, dial, 电话, 手机, 致电, 热线, 拨打, 联系方式).
- ``ip`` needs an IP's context: a network word (ip, address, server, host, ping, dns, gateway,
  proxy, 地址, 服务器...) within 40 characters before it, a ``:port`` or ``/prefix`` after it, or
  an IPv6 form, so ``EC 3.1.1.11`` (an enzyme number) and section numbers stay.
- ``handle`` -> ``[HANDLE]``, ``address`` -> ``[ADDRESS]``, ``person`` -> ``[NAME]``: found without
  a list (:mod:`domainft.data.names`; jieba for Chinese names, a first-name list for English).
- ``names`` (``prepare.pii.names``) -> ``[NAME]``: whole-word, case-insensitive (CJK: substring).

Digits adjacent to other digits, letters or a decimal point never match, so amounts (``$1,577.00``,
``1500000``), dates (``2023-01-15``, ``20230115``) and statute numbers (``第133条``, ``Article 1234``)
are left alone; see tests/unit/data/test_pii.py for the false-positive cases checked.
"""
from __future__ import annotations

import ipaddress
import re
from collections import Counter
from datetime import date

PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "cn_id": "[CN_ID]", "card": "[CARD]",
                "ip": "[IP]", "handle": "[HANDLE]", "address": "[ADDRESS]", "person": "[NAME]", "name": "[NAME]"}
ORDER = ["email", "cn_id", "card", "ip", "phone", "handle", "address", "person"]  # earlier types win on overlap
TEXT_TYPES = ("handle", "address", "person")  # found in any text (domainft/data/names.py), not only near digits or @

_B = r"(?<![0-9A-Za-z.])"  # left boundary: not after an ASCII letter/digit or a dot (CJK is fine)
_E = r"(?![0-9A-Za-z]|\.\d)"  # right boundary
EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}(?![A-Za-z0-9-])")
CN_ID = re.compile(_B + r"(\d{6})((?:18|19|20)\d{2})(\d{2})(\d{2})\d{3}[\dXx]" + _E)
CARD = re.compile(_B + r"(?:[2-6]\d{12,18}|[2-6]\d{3}([ -])\d{4}\1\d{4}\1\d{1,7}|3[47]\d{2}([ -])\d{6}\2\d{5})" + _E)
IPV4 = re.compile(_B + r"(?:\d{1,3}\.){3}\d{1,3}" + _E)
IPV6 = re.compile(r"(?<![0-9A-Za-z:])(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}:){0,5}[0-9A-Fa-f]{1,4})(?![0-9A-Za-z:])")
PHONE_PATTERNS = [
    re.compile(r"(?<![0-9A-Za-z+])\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{2,5}(?:[ .-]?\d{2,5}){1,4}" + _E),
    re.compile(r"(?<![0-9A-Za-z+])(?:(?:\+?86)[ -]?)?1[3-9]\d[ -]?\d{4}[ -]?\d{4}" + _E),
    # NANP: (555) 123-4567, 555-123-4567, 1-800-555-1234 (one separator throughout; 252.227-7013 is a clause number)
    re.compile(r"(?<![0-9A-Za-z(])(?<!\d[-.])(?:1([-. ]))?(?:\(\d{3}\)\s?\d{3}[-.]|\d{3}([-.])\d{3}\2)\d{4}" + _E),
]
PHONE_WORDS = re.compile(
    r"(?i)\b(?:call|calling|phone|telephone|tel|mobile|cell|sms|whatsapp|fax|hotline|helpline|dial|contact)\b"
    r"|电话|手机|致电|热线|拨打|联系方式")
PHONE_RUN = re.compile(r"(?<![0-9A-Za-z.,])\d[\d -]{5,15}\d" + _E)
PHONE_WINDOW = 60  # characters after a phone word searched for a bare number
_DIGIT = re.compile(r"\d")
_ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
_ID_CHECK = "10X98765432"


def cn_id_valid(s: str) -> bool:
    """GB 11643-1999 check: valid birth date and ISO 7064 MOD 11-2 check character."""
    if len(s) != 18 or not s[:17].isdigit():
        return False
    try:
        date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
    except ValueError:
        return False
    total = sum(int(c) * w for c, w in zip(s[:17], _ID_WEIGHTS))
    return _ID_CHECK[total % 11] == s[17].upper()


def luhn_valid(digits: str) -> bool:
    """ISO/IEC 7812 Luhn checksum of a digit string."""
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_ok(m: re.Match) -> bool:
    groups = re.split(r"[ -]", m.group(0))
    if len(groups) > 1 and all(len(g) == 4 and g[:2] in ("19", "20") for g in groups):
        return False  # a row of years, e.g. "2019 2018 2017 2016"
    digits = "".join(groups)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _ip_ok(m: re.Match) -> bool:
    try:
        ipaddress.ip_address(m.group(0))
        return True
    except ValueError:
        return False


IP_WORDS = re.compile(r"(?i)\b(?:ip|ipv4|ipv6|address|addr|server|host|hostname|ping|dns|gateway|router|proxy|"
                      r"subnet|vpn|firewall|connect(?:ed|ing)?|login|logged|from)\b|地址|服务器|网关|登录")
IP_WINDOW = 40  # characters before an IPv4 searched for a network word


def _ip_context(text: str, m: re.Match) -> bool:
    """An IPv4 counts only with an IP's context: a network word shortly before, or a port / prefix after."""
    after = text[m.end():m.end() + 1]
    if after in (":", "/") and text[m.end() + 1:m.end() + 2].isdigit():
        return True
    return IP_WORDS.search(text, max(0, m.start() - IP_WINDOW), m.start()) is not None


def _digits(s: str) -> int:
    return sum(c.isdigit() for c in s)


def _phone_ok(s: str) -> bool:
    digits = re.sub(r"\D", "", s)
    return 7 <= len(digits) <= 15 and len(set(digits[-8:])) > 1  # not 15000000000-style round numbers


def _context_phone(text: str) -> list[tuple[int, int]]:
    spans = []
    for w in PHONE_WORDS.finditer(text):
        for m in PHONE_RUN.finditer(text, w.end()):
            if m.start() > w.end() + PHONE_WINDOW:
                break
            if 7 <= _digits(m.group(0)) <= 13 and _phone_ok(m.group(0)):
                spans.append(m.span())
    return spans


class Redactor:
    """Replace PII of the configured types; ``counts`` accumulates matches per type.

    Args:
        types: subset of :data:`ORDER` (``email, cn_id, card, ip, phone, handle, address, person``).
        names: literal names/terms replaced by ``[NAME]``.
    """

    def __init__(self, types: list[str], names: list[str] | None = None):
        unknown = set(types) - set(ORDER)
        if unknown:
            raise ValueError(f"prepare.pii.types: unknown PII types {sorted(unknown)}; known: {ORDER}")
        self.types = [t for t in ORDER if t in types]
        self.text_types = any(t in TEXT_TYPES for t in self.types)
        self.counts: Counter = Counter()
        names = sorted({n for n in (names or []) if n.strip()}, key=len, reverse=True)
        self.names = re.compile("|".join(
            re.escape(n) if re.search(r"[\u3400-\u9fff]", n) else rf"(?<!\w){re.escape(n)}(?!\w)" for n in names),
            re.IGNORECASE) if names else None

    def _spans(self, text: str, kind: str) -> list[tuple[int, int]]:
        if kind == "email":
            return [m.span() for m in EMAIL.finditer(text)] if "@" in text else []
        if kind == "cn_id":
            return [m.span() for m in CN_ID.finditer(text) if cn_id_valid(m.group(0))]
        if kind == "card":
            return [m.span() for m in CARD.finditer(text) if _card_ok(m)]
        if kind in TEXT_TYPES:
            from domainft.data import names

            return getattr(names, f"{kind}_spans")(text)
        if kind == "ip":
            spans = [m.span() for m in IPV4.finditer(text) if _ip_ok(m) and _ip_context(text, m)] if "." in text else []
            return spans + ([m.span() for m in IPV6.finditer(text) if _ip_ok(m)] if "::" in text or text.count(":") >= 7 else [])
        spans = [m.span() for p in PHONE_PATTERNS for m in p.finditer(text) if _phone_ok(m.group(0))]
        return spans + _context_phone(text)

    def redact(self, text: str) -> str:
        """Return ``text`` with PII replaced by typed placeholders (non-overlapping, earlier type wins)."""
        taken: list[tuple[int, int, str]] = []
        if self.text_types or "@" in text or _DIGIT.search(text):
            for kind in self.types:
                for s, e in self._spans(text, kind):
                    if all(e <= a or s >= b for a, b, _ in taken):
                        taken.append((s, e, kind))
        if self.names is not None:
            for m in self.names.finditer(text):
                if all(m.end() <= a or m.start() >= b for a, b, _ in taken):
                    taken.append((m.start(), m.end(), "name"))
        if not taken:
            return text
        out, pos = [], 0
        for s, e, kind in sorted(taken):
            out.append(text[pos:s])
            out.append(PLACEHOLDERS[kind])
            self.counts[kind] += 1
            pos = e
        out.append(text[pos:])
        return "".join(out)

    def redact_messages(self, messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], bool]:
        """Redact user/assistant turns; returns (messages, changed)."""
        out, changed = [], False
        for m in messages:
            text = m["content"] if m["role"] == "system" else self.redact(m["content"])
            if text is m["content"]:
                out.append(m)
            else:
                out.append({"role": m["role"], "content": text})
                changed = changed or text != m["content"]
        return out, changed


def redact_raw(raw, redactor: "Redactor"):
    """A raw record (rejects.jsonl) with every string in it redacted like the records' turns:
    nested lists and objects are walked, keys kept; other values unchanged."""
    if isinstance(raw, str):
        return redactor.redact(raw)
    if isinstance(raw, list):
        return [redact_raw(v, redactor) for v in raw]
    if isinstance(raw, dict):
        return {k: redact_raw(v, redactor) for k, v in raw.items()}
    return raw
