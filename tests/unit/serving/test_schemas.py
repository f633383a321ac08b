"""Request validation: every bad request class maps to a 400 naming the offending parameter."""
from __future__ import annotations

import json

import pytest

from domainft.serving.schemas import ApiError, parse_request

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
