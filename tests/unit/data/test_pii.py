"""PII redaction: true positives per type and false positives on amounts, dates, statutes."""
from __future__ import annotations

import json

import pytest

from domainft.data.pii import Redactor, cn_id_valid, luhn_valid

ALL = ["email", "phone", "cn_id", "card", "ip"]


@pytest.mark.parametrize("text, expected", [
    ("Write to jane.doe+bank@example.co.uk today.", "Write to [EMAIL] today."),
    ("邮箱abc.d@x-y.com联系", "邮箱[EMAIL]联系"),
    ("Call +44 20 7946 0958 now", "Call [PHONE] now"),
    ("call (555) 123-4567 or 555-987-6543", "call [PHONE] or [PHONE]"),
    ("致电13812345678或+86 138-1234-5678", "致电[PHONE]或[PHONE]"),
    ("Send an SMS 'PWD 1234' to 9717465555 or to 5676712 from your phone", "Send an SMS 'PWD 1234' to [PHONE] or to [PHONE] from your phone"),
    ("Helpline: 1800 22 4060", "Helpline: [PHONE]"),
    ("身份证11010519491231002X号", "身份证[CN_ID]号"),
    ("card 4111 1111 1111 1111 expired", "card [CARD] expired"),
    ("pay with 5500-0000-0000-0004.", "pay with [CARD]."),
    ("amex 3782 822463 10005", "amex [CARD]"),
    ("server 192.168.1.10 and fe80::1ff:fe23:4567:890a", "server [IP] and [IP]"),
])
def test_true_positives(text, expected):
    assert Redactor(ALL).redact(text) == expected


@pytest.mark.parametrize("text", [
    "The fee is $1,577.00 and the limit 1500000 per year.",
    "Revenue was 15000000000 in FY2019; capex 1,577 million.",
    "Opened on 2023-01-15, statement dated 20230115, at 12:30:45.",
    "依据《刑法》第133条和第一百三十三条，罚款2000元。",
    "Article 1234 of Regulation (EU) 2016/679, section 4.2.1.",
    "Figures for 2019 2018 2017 2016 are restated.",
    "Version 1.2.3.4.5 of the app; IP-like 999.1.1.1 is invalid.",
    "Account 30016642 at sort code 40-71-99 with reference 123456.",
    "身份证110105194912310021号",  # wrong check digit
    "card 4111 1111 1111 1112",  # fails Luhn
    "Rates: 4.29% for 5 years; 3.10% AER; APR 6.9% on £7,500-£25,000.",
])
def test_false_positives_left_alone(text):
    r = Redactor(ALL)
    assert r.redact(text) == text and sum(r.counts.values()) == 0


def test_counts_types_and_names():
    r = Redactor(["email", "phone"], names=["Alice Chen", "张伟"])
    out = r.redact("Alice Chen (alice@x.org) met alice chen and 张伟先生; card 4111111111111111")
    assert out == "[NAME] ([EMAIL]) met [NAME] and [NAME]先生; card 4111111111111111"  # card type off
    assert dict(r.counts) == {"name": 3, "email": 1}
    assert Redactor(ALL).redact("Alicent Chenson") == "Alicent Chenson"
    with pytest.raises(ValueError, match="unknown PII types"):
        Redactor(["ssn"])


def test_system_turn_untouched():
    r = Redactor(ALL)
    msgs = [{"role": "system", "content": "mail a@b.io"}, {"role": "user", "content": "mail a@b.io"}]
    out, changed = r.redact_messages(msgs)
    assert changed and out[0]["content"] == "mail a@b.io" and out[1]["content"] == "mail [EMAIL]"


def test_checksums():
    assert cn_id_valid("11010519491231002X") and not cn_id_valid("110105194913310028")  # month 13
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")


def test_ip_needs_an_ip_context():
    r = Redactor(["ip"])
    assert r.redact("The enzyme EC 3.1.1.11 cleaves pectin; see section 1.2.3.4.") == \
        "The enzyme EC 3.1.1.11 cleaves pectin; see section 1.2.3.4."
    assert r.redact("Your router's IP address is 192.168.0.1 now") == "Your router's IP address is [IP] now"
    assert r.redact("connect to 10.0.0.7:8080 or 10.1.0.0/16") == "connect to [IP]:8080 or [IP]/16"
    assert r.redact("服务器地址是 8.8.8.8") == "服务器地址是 [IP]"


def test_person_names_handles_and_addresses_without_a_list():
    r = Redactor(["person", "handle", "address"])
    out = r.redact("患者张伟，男，45岁，由李明医生接诊，住在建国路88号。")
    assert out == "患者[NAME]，男，45岁，由[NAME]医生接诊，住在[ADDRESS]。"
    assert r.redact("Patient Sarah Johnson was seen by Dr. Okafor at 221 Baker Street.") == \
        "Patient [NAME] was seen by [NAME] at [ADDRESS]."
    assert r.redact("@sprintcare @115712 I am at Kangle Middle Road, help @中国联通客服") == \
        "[HANDLE] [HANDLE] I am at [ADDRESS], help [HANDLE]"
    same = "May I ask about the Customer Service hours? Thank you. mail me at a@b.co"  # no name here
    assert r.redact(same) == same
    assert r.counts == {"person": 4, "address": 3, "handle": 3}


def test_ordinary_text_is_not_redacted_as_names_addresses_or_phones():
    """Title-case product words, laws, street-type nouns and clause numbers stay as written."""
    r = Redactor(["phone", "address", "person"])
    keep = ["Your One Time Code arrives within One Minute.", "Apply for Visa Gold via Bank of India Online.",
            "Asset Verification and Grace Management are done by the branch.",
            "依据《中华人民共和国道路交通安全法》第七十六条，对方应承担责任。", "两车在十字路口相撞，双方的思路不同。",
            "See DFARS 252.227-7014(a)(1) and FAR 52.227-19."]
    for text in keep:
        assert r.redact(text) == text, text
    assert r.redact("Call 1-888-555-0199 or (212) 555-0147, ask for Priya Sharma at 5 Elm Street.") == \
        "Call [PHONE] or [PHONE], ask for [NAME] at [ADDRESS]."
    assert r.redact("他住在朝阳区人民路12号，王小明也住在延安西路。") == "他住在[ADDRESS]，[NAME]也住在[ADDRESS]。"
    assert r.counts == {"phone": 2, "person": 2, "address": 3}


def test_rejects_are_redacted_like_records(tmp_path):
    from domainft.config import parse_params
    from domainft.data.prepare import prepare

    raw = tmp_path / "raw"
    raw.mkdir()
    rows = ["question,answer", '"Call Jane Roe on +44 20 7946 0958 about my card","ok"',  # answer too short
            '"My email is jane.roe@example.org, what now?","Please call our hotline so that we can verify it."',
            '"My email is jane.roe@example.org, what now?","Please call our hotline so that we can verify it."']
    (raw / "faq.csv").write_text("\n".join(rows) + "\n")
    p = parse_params({"prepare": {"raw_dir": str(raw), "pii": {"types": ["email", "phone", "person"], "names": ["Roe"]}}})
    res = prepare(p.prepare, "SYS")
    assert [r.reason for r in res.rejects] == ["length", "exact_duplicate"]
    text = json.dumps([r.raw for r in res.rejects])
    assert "jane.roe" not in text and "7946" not in text and "Jane" not in text
    assert res.rejects[0].raw["question"] == "Call [NAME] on [PHONE] about my card"
    assert res.metrics["pii"] == {"email": 2}  # the records' counts (redacted before dedup), not the rejects'
