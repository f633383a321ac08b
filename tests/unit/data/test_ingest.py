"""Ingest: every schema and container, encodings, column mapping, bad lines."""
from __future__ import annotations

import json

import pytest

from domainft.data.ingest import decode, iter_file
from domainft.data.records import RecordError


def _items(path, **kw):
    return list(iter_file(path, path.name, **kw))


def _turns(item):
    return [(m["role"], m["content"]) for m in item.draft.messages]


@pytest.mark.parametrize("obj, schema, turns", [
    ({"instruction": "Do X", "input": "ctx", "output": "done"}, "alpaca", [("user", "Do X"), ("assistant", "done")]),
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}, "sharegpt",
     [("user", "hi"), ("assistant", "hello")]),
    ({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": [{"type": "text", "text": "q"}]},
                   {"role": "assistant", "content": "a"}]}, "messages", [("system", "S"), ("user", "q"), ("assistant", "a")]),
    ({"prompt": "p", "completion": "c"}, "prompt_completion", [("user", "p"), ("assistant", "c")]),
    ({"Question": "q?", "Answer": "a.", "Class": "x"}, "qa", [("user", "q?"), ("assistant", "a.")]),
])
def test_json_schemas_detected(tmp_path, obj, schema, turns):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps(obj) + "\n", encoding="utf-8")
    [item] = _items(path)
    assert item.schema == schema and item.error is None and _turns(item) == turns
    if schema == "alpaca":
        assert (item.draft.input, item.draft.input_index) == ("ctx", 0)
    if schema == "qa":
        assert item.draft.meta == {"Class": "x"}


def test_json_array_with_any_extension_and_jsonl_named_json(tmp_path):
    arr = tmp_path / "arr.jsonl"
    arr.write_text(json.dumps([{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"}]), encoding="utf-8")
    lines = tmp_path / "lines.json"
    lines.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": "c", "completion": "d"}\n', encoding="utf-8")
    assert [i.line for i in _items(arr)] == [1, 2]  # element index
    assert [i.line for i in _items(lines)] == [1, 3]  # physical line, blank line skipped


def test_truncated_json_array_rejects_rest(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('[{"prompt": "a", "completion": "b"}, {"prompt": "c", "compl', encoding="utf-8")
    items = _items(path)
    assert [i.error.reason if i.error else None for i in items] == [None, "invalid_json"]
    assert "array element 2" in items[1].error.detail


def test_bom_crlf_csv_and_quoted_newlines(tmp_path):
    path = tmp_path / "faq.csv"
    path.write_bytes(b'\xef\xbb\xbfquestion,answer\r\n"multi\r\nline q",a1\r\nq2,"a, with comma"\r\n')
    items = _items(path)
    assert [i.line for i in items] == [2, 4]
    assert _turns(items[0]) == [("user", "multi\r\nline q"), ("assistant", "a1")]  # CRLF normalised by clean
    assert _turns(items[1])[1] == ("assistant", "a, with comma")


def test_semicolon_csv_tsv_and_bad_field_count(tmp_path):
    semi = tmp_path / "s.csv"
    semi.write_text("question;answer\nq1;a1\nq2;a2;extra\n", encoding="utf-8")
    items = _items(semi)
    assert items[0].error is None and items[1].error.reason == "bad_field_count" and items[1].line == 3
    tsv = tmp_path / "t.tsv"
    tsv.write_text("prompt\tcompletion\np\tc\n", encoding="utf-8")
    assert _turns(_items(tsv)[0]) == [("user", "p"), ("assistant", "c")]


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"question": ["q1", "q2"], "answer": ["a1", "a2"]}), path)
    items = _items(path)
    assert [(i.schema, i.line) for i in items] == [("qa", 1), ("qa", 2)]


def test_column_mapping_and_schema_override(tmp_path):
    path = tmp_path / "odd.csv"
    path.write_text("Frage,Antwort,Thema\nWie?,So.,x\n", encoding="utf-8")
    assert _items(path)[0].error.reason == "unknown_schema"
    [item] = _items(path, columns={"question": "Frage", "answer": "Antwort"})
    assert item.schema == "qa" and _turns(item) == [("user", "Wie?"), ("assistant", "So.")]
    both = tmp_path / "both.jsonl"  # has prompt/completion AND question/answer keys
    both.write_text(json.dumps({"prompt": "p", "completion": "c", "question": "q", "answer": "a"}) + "\n")
    assert _items(both)[0].schema == "prompt_completion"
    assert _turns(_items(both, schema="qa")[0]) == [("user", "q"), ("assistant", "a")]


def test_a_mapped_column_the_file_lacks_is_warned_about_when_a_name_is_read_instead(tmp_path, caplog):
    path = tmp_path / "faq.csv"
    path.write_text("Question,Answer,Reply\nHow?,Like this.,Later.\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="domainft.data.ingest"):
        [item] = _items(path, columns={"answer": "Replly"})
    assert _turns(item) == [("user", "How?"), ("assistant", "Like this.")]  # Answer, by its name
    [msg] = [r.getMessage() for r in caplog.records]
    assert "faq.csv" in msg and "'answer': 'Replly'" in msg and "'answer': 'Answer'" in msg
    caplog.clear()
    with caplog.at_level("WARNING", logger="domainft.data.ingest"):
        [item] = _items(path, columns={"answer": "Reply"})
    assert _turns(item)[1] == ("assistant", "Later.") and not caplog.records


def test_qa_with_instruction_prefix_becomes_input(tmp_path):
    path = tmp_path / "law.json"
    path.write_text(json.dumps([{"instruction": "请回答：", "question": "问题？", "answer": "回答。"}], ensure_ascii=False))
    [item] = _items(path)
    assert item.schema == "qa" and _turns(item)[0] == ("user", "请回答：") and item.draft.input == "问题？"


def test_missing_key_wrong_type_unknown_role(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text("\n".join(json.dumps(o) for o in [
        {"instruction": "a", "output": "b"},
        {"instruction": "a"},
        {"instruction": "a", "output": ["list"]},
        {"instruction": "a", "output": 12.5},
    ]) + "\n")
    items = _items(path)
    assert [i.error.reason if i.error else None for i in items] == [None, "missing_key", "wrong_type", None]
    assert _turns(items[3])[1] == ("assistant", "12.5")
    sg = tmp_path / "sg.jsonl"
    sg.write_text(json.dumps({"conversations": [{"from": "wizard", "value": "x"}]}) + "\n")
    assert _items(sg)[0].error.reason == "unknown_role" and "'wizard'" in _items(sg)[0].error.detail


def test_chatlog_groups_sessions_sorted_by_timestamp(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("conversation_id,speaker,message,time\n"
                    "A,agent,answer 1,2024-01-01T10:01:00Z\n"
                    "B,customer,question B,2024-01-01T09:00:00Z\n"
                    "A,customer,question 1,2024-01-01T10:00:00Z\n"
                    "B,bot,answer B,2024-01-01T09:00:30Z\n"
                    ",customer,orphan,2024-01-01T09:00:30Z\n", encoding="utf-8")
    items = _items(path)
    assert [(i.line, i.error.reason if i.error else None) for i in items] == [(6, "missing_key"), (2, None), (3, None)]
    a, b = items[1], items[2]
    assert _turns(a) == [("user", "question 1"), ("assistant", "answer 1")] and a.draft.group == "A"
    assert a.draft.meta["lines"] == [4, 2] and _turns(b)[1] == ("assistant", "answer B")


def test_decode_reports_byte_offset():
    text, problem = decode("ok\n好".encode("gbk"), "f.csv", None)
    assert problem is not None and problem.offset == 3 and problem.line == 2 and "\ufffd" in text
    text, problem = decode("ok\n好".encode("gbk"), "f.csv", "gbk")
    assert problem is None and text == "ok\n好"
    assert decode(b"\xef\xbb\xbfhi", "f", None) == ("hi", None)


def test_unsupported_format(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("plain text\n")
    with pytest.raises(RecordError, match="unsupported_format"):
        _items(path)


def test_params_name_the_canonical_fields_and_schemas():
    import typing

    from domainft.config import ParamsError, PrepareParams, parse_params
    from domainft.data.schemas import ALIASES, SCHEMAS

    columns = typing.get_args(typing.get_args(PrepareParams.model_fields["columns"].annotation)[0])
    schemas = typing.get_args(typing.get_args(PrepareParams.model_fields["schema_overrides"].annotation)[1])
    assert set(columns) == set(ALIASES) and set(schemas) == set(SCHEMAS)
    with pytest.raises(ParamsError, match="prepare.columns.questoin"):
        parse_params({"prepare": {"columns": {"questoin": "Q"}}})
