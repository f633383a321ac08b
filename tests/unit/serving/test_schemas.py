"""Request validation: every bad request class maps to a 400 naming the offending parameter."""
from __future__ import annotations

import json

import pytest

from domainft.serving.schemas import MAX_JSON_DEPTH, ApiError, json_depth, parse_request

OK = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def _err(body) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse_request(body if isinstance(body, bytes) else json.dumps(body).encode())
    assert info.value.status == 400
    assert set(info.value.body()["error"]) == {"message", "type", "param", "code"}
    return info.value


@pytest.mark.parametrize("patch, param", [
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[0].type"),
    ({"max_tokens": "10"}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 2.5}, "max_tokens"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"stream": "yes"}, "stream"),
    ({"stop": 7}, "stop"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"tools": []}, "tools"),
    ({"seed": 2**64}, "seed"),  # torch.Generator.manual_seed raised OverflowError inside the batch
    ({"seed": 2**70}, "seed"),
    ({"seed": -(2**63) - 1}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"stop": "x" * 129}, "stop"),
    ({"stop": ["ok", "y" * 129]}, "stop"),
    ({"model": "m" * 257}, "model"),
    ({"user": "u" * 257}, "user"),
])
def test_bad_fields_name_their_param(patch, param):
    assert _err({**OK, **patch}).param == param


def test_missing_model_invalid_json_and_non_object():
    assert _err({"messages": OK["messages"]}).param == "model"
    assert "not valid JSON" in _err(b"{nope").message
    assert "JSON object" in _err(b"[1, 2]").message


def test_valid_request_normalises_roles_parts_and_stop():
    req = parse_request(json.dumps({**OK, "messages": [
        {"role": "developer", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
        {"role": "user", "content": "hi"}], "stop": "END", "temperature": 0, "max_tokens": 5}).encode())
    assert req.chat_messages() == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert req.stop_list() == ["END"] and req.temperature == 0.0 and req.max_tokens == 5


def test_seed_bounds_are_the_64_bit_range_torch_accepts():
    import torch

    for seed in (2**64 - 1, -(2**63), 0):
        assert parse_request(json.dumps({**OK, "seed": seed}).encode()).seed == seed
        torch.Generator().manual_seed(seed)  # what the engine does with it
    assert "[-9223372036854775808, 18446744073709551615]" in _err({**OK, "seed": 2**70}).message


def test_depth_limits_and_what_the_stdlib_parser_lets_through():
    """200k levels made json.loads raise RecursionError (a 500); nesting and non-finite numbers are 400s."""
    deep = b"[" * 200_000 + b"]" * 200_000
    with pytest.raises(RecursionError):
        json.loads(deep)
    assert "not valid JSON" in _err(deep).message
    nested = 1
    for _ in range(MAX_JSON_DEPTH):
        nested = [nested]
    assert json_depth(nested, 99) == MAX_JSON_DEPTH and json_depth({"a": [{}]}, 99) == 3
    err = _err({**OK, "metadata": nested})  # 17 levels with the body itself
    assert err.code == "json_too_deep" and str(MAX_JSON_DEPTH) in err.message
    assert _err({**OK, "n": [[[[[[1]]]]]]}).param == "n"  # a deep value in a known field: 400, short message
    for raw in (b'{"model": "m", "messages": [], "temperature": NaN}',
                b'{"model": "m", "messages": [], "temperature": 1e400}',
                b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}',
                b'{"model": "m", "max_tokens": ' + b"9" * 5000 + b"}",
                b'{"model": "\xff"}'):
        assert "not valid JSON" in _err(raw).message, raw
