"""Role map, role-order rules (reject vs repair) and stable ids."""
from __future__ import annotations

import pytest

from domainft.data.records import ROLE_MAP, RecordError, check_roles, content_key, normalize_role, record_id, with_system


def m(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


def test_role_map():
    assert [normalize_role(x) for x in ("human", " USER ", "customer", "gpt", "Bot", "agent", "assistant", "system")] == \
        ["user", "user", "user", "assistant", "assistant", "assistant", "assistant", "system"]
    assert normalize_role("wizard") is None and normalize_role(None) is None
    assert set(ROLE_MAP.values()) == {"user", "assistant", "system"}


@pytest.mark.parametrize("turns, reason, fragment", [
    ((("user", "q"), ("assistant", "a"), ("assistant", "b")), "bad_role_order", "two assistant turns in a row"),
    ((("user", "q"), ("assistant", "a"), ("user", "q2")), "bad_role_order", "does not end with an assistant"),
    ((("assistant", "a"), ("user", "q"), ("assistant", "b")), "bad_role_order", "starts with assistant"),
    ((("user", "q"), ("system", "s"), ("assistant", "a")), "bad_role_order", "system turn after"),
    ((("user", ""), ("assistant", "a")), "empty_turn", "turn 0"),
    ((("system", "s"),), "no_exchange", ""),
])
def test_bad_orders_rejected(turns, reason, fragment):
    with pytest.raises(RecordError) as err:
        check_roles(m(*turns))
    assert err.value.reason == reason and fragment in err.value.detail


def test_repair():
    turns = m(("assistant", "hello"), ("user", "q1"), ("user", "q2"), ("assistant", "a"), ("system", "x"),
              ("user", "bye"))
    out, repairs = check_roles(turns, repair=True)
    assert out == m(("user", "q1\n\nq2"), ("assistant", "a"))
    assert repairs == ["drop_leading_assistant", "merge_consecutive", "drop_system_turn", "drop_trailing_user"]


def test_valid_multi_turn_untouched():
    turns = m(("system", "s"), ("user", "q"), ("assistant", "a"), ("user", "q2"), ("assistant", "a2"))
    assert check_roles(turns) == (turns, [])


def test_ids_stable_and_normalised():
    a = m(("user", "What  is the FEE?"), ("assistant", "Five."))
    b = m(("system", "other prompt"), ("user", "what is the fee?"), ("assistant", "five."))
    assert record_id(a) == record_id(b)  # system prompt, case and spacing ignored
    assert len(record_id(a)) == 16 and record_id(a) != record_id(m(("user", "q"), ("assistant", "Five.")))
    assert content_key(a, ("user",)) == "user\x00what is the fee?"
    assert with_system(a, "S")[0] == {"role": "system", "content": "S"} and with_system(b, "S") == b


@pytest.mark.parametrize("text", [
    '{"a": 123456789012345678901234567890, "b": [-99999999999999999999]}',  # orjson would give floats
    '{"a": NaN, "b": Infinity}', '{"a": 1e400}', '{"a": "\\ud800"}',  # orjson refuses these
    '{"a": 18446744073709551615, "b": -9223372036854775808, "c": 1.5, "d": "é中"}', '[1, {"x": null}]',
    '{"a": 18446744073709551616}', '{"a": 1e20, "b": -3e300, "c": 0.12345678901234567890123}',  # 2**64
    '{"card": "4111111111111111111", "n": 1234567890123456789}', b'{"a": 123456789012345678901, "b": "\xc3\xa9"}',
])
def test_loads_gives_the_standard_librarys_result(text):
    import json
    import math

    from domainft.data.records import loads

    got, want = loads(text), json.loads(text)
    assert repr(got) == repr(want) or (math.isnan(got["a"]) and math.isnan(want["a"]))
    assert [type(v) for v in (got.values() if isinstance(got, dict) else got)] == \
        [type(v) for v in (want.values() if isinstance(want, dict) else want)]


def test_loads_raises_the_standard_librarys_error():
    import json

    from domainft.data.records import loads

    with pytest.raises(json.JSONDecodeError, match="Expecting"):
        loads('{"a": 1,}')
