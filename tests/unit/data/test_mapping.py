"""prepare.sources: containers, explode, join, templates, table, threads, group key, mapping errors."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from domainft.config import parse_params
from domainft.data.mapping import MappingError, table
from domainft.data.prepare import prepare
from domainft.errors import DomainftError

from conftest import sentence


def _run(raw: Path, sources: dict, **kw):
    p = parse_params({"prepare": {"raw_dir": str(raw), "sources": sources,
                                  "clean": {"min_output_chars": 1}, "dedup": {"near": False}, **kw}})
    return prepare(p.prepare, "SYS")


def _turns(rec):
    return [(m["role"], m["content"]) for m in rec.messages]


def test_table_filter_renders_2d_list_and_objects():
    assert table([["", "2019"], ["Sales", " 1.5 "], ["a|b"]]) == "|  | 2019 |\n| --- | --- |\n| Sales | 1.5 |\n| a\\|b |  |"
    assert table([{"x": 1, "y": 2}, {"x": 3}]) == "| x | y |\n| --- | --- |\n| 1 | 2 |\n| 3 |  |"
    assert table([]) == ""


def test_dict_of_records_nested_path_and_key(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    data = {"meta": {"v": 1}, "data": {"cases": {
        "c1": {"q": "What is the deposit limit?", "a": "Ten thousand."},
        "c2": {"q": "Is there a fee?", "a": "No fee."}}}}
    (raw / "cases.json").write_text(json.dumps(data, indent=1))
    res = _run(raw, {"cases.json": {"records": "data.cases", "user": "{{ q }}", "assistant": "{{ a }}",
                                     "group": "{{ key }}"}})
    assert [(r.group, r.source["line"], r.meta["key"]) for r in res.records] == [("c1", 1, "c1"), ("c2", 2, "c2")]
    assert _turns(res.records[1]) == [("system", "SYS"), ("user", "Is there a fee?"), ("assistant", "No fee.")]
    fm = res.metrics["files"][f"{raw}/cases.json"]
    assert (fm["schema"], fm["read"], fm["kept"], fm["rows"]) == ("mapped", 2, 2, 2)


def test_dict_of_records_auto_detected_without_mapping(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "faq.json").write_text(json.dumps({"id1": {"question": "How do I reset my PIN?", "answer": "At any ATM."},
                                              "id2": {"question": "Where is my branch?", "answer": "See the map."}}))
    res = _run(raw, {})
    assert res.metrics["files"][f"{raw}/faq.json"]["kept"] == 2  # was: read 1, kept 0


def test_explode_questions_with_table_and_paragraphs(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    ctx = [{"table": {"uid": "T1", "table": [["", "2019"], ["Sales", "1.5"]]},
            "paragraphs": [{"order": 2, "text": "Second."}, {"order": 1, "text": "First."}],
            "questions": [{"question": "Sales in 2019?", "answer": ["1.5"], "scale": "million"},
                          {"question": "Which year?", "answer": ["2019"], "scale": ""},
                          {"question": "Skip me", "answer": [], "scale": ""}]},
           {"table": {"uid": "T2", "table": [["a"]]}, "paragraphs": [], "questions": [
               {"question": "Q?", "answer": ["x"], "scale": ""}]}]
    (raw / "tatqa.json").write_text(json.dumps(ctx))
    src = {"tat*.json": {
        "explode": "questions",
        "where": "{{ item.answer | length > 0 }}",
        "user": "{{ table.table | table }}\n{{ paragraphs | sort(attribute='order') | map(attribute='text') | join(' ') }}"
                "\nQuestion: {{ item.question }}",
        "assistant": "{{ item.answer | join(', ') }}{% if item.scale %} {{ item.scale }}{% endif %}",
        "group": "{{ table.uid }}", "meta": {"scale": "{{ item.scale }}"}}}
    res = _run(raw, src)
    assert [(r.group, r.source["line"], r.meta["element"]) for r in res.records] == [("T1", 1, 0), ("T1", 1, 1), ("T2", 2, 0)]
    assert res.records[0].messages[1]["content"] == ("| | 2019 |\n| --- | --- |\n| Sales | 1.5 |\nFirst. Second.\n"
                                                      "Question: Sales in 2019?")
    assert res.records[0].messages[2]["content"] == "1.5 million" and res.records[0].meta["scale"] == "million"
    fm = res.metrics["files"][f"{raw}/tatqa.json"]
    assert (fm["rows"], fm["read"], fm["kept"], fm["rejected_by_reason"]) == (2, 4, 3, {"where": 1})
    rej = res.rejects[0]
    assert (rej.line, rej.kind, rej.reason, rej.raw["index"]) == (1, "filtered", "where", 2)


def test_explode_columns_join_and_literal(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    with (raw / "clauses.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Filename", "Governing Law", "Governing Law-Answer", "Non-Compete", "Non-Compete-Answer"])
        w.writerow(["k1.pdf", "['This Agreement is governed by New York law.']", "New York", "[]", "No"])
        w.writerow(["k2.pdf", "[]", "", "['Shall not compete.', 'for two years']", "Yes"])
    (raw / "desc.csv").write_text("\ufeffCategory,Description\nCategory: Governing Law,Which state's law governs?\n"
                                  "Category: Non-Compete,Is there a non-compete?\n", encoding="utf-8")
    src = {"clauses.csv": {
        "explode_columns": "(.+)-Answer",
        "join": [{"file": "desc.csv", "key": "{{ Category | replace('Category: ', '') }}", "match": "{{ item.name }}",
                  "name": "cat"}],
        "where": "{{ item.value | trim }}",
        "user": "{{ cat.Description }}\nClauses:\n{{ record[item.name] | literal | join('\\n') or '(none)' }}",
        "assistant": "{{ item.value }}", "group": "{{ Filename }}", "meta": {"category": "{{ item.name }}"}}}
    res = _run(raw, src)
    got = [(r.group, r.meta["category"], r.messages[-1]["content"]) for r in res.records]
    assert got == [("k1.pdf", "Governing Law", "New York"), ("k1.pdf", "Non-Compete", "No"), ("k2.pdf", "Non-Compete", "Yes")]
    assert res.records[1].messages[1]["content"] == "Is there a non-compete?\nClauses:\n(none)"
    assert res.records[2].messages[1]["content"] == "Is there a non-compete?\nClauses:\nShall not compete.\nfor two years"
    assert sorted(res.metrics["files"]) == [f"{raw}/clauses.csv"]  # the join file is a lookup, not records
    assert res.metrics["files"][f"{raw}/clauses.csv"]["rejected_by_reason"] == {"where": 1}


def test_turn_list_threads_one_sample_per_agent_reply(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    dialogs = [{"id": 11, "turns": [
        {"sender": "customer", "utterances": ["My line is down.", "", "Since noon."]},
        {"sender": "helpdesk", "utterances": ["Sorry! Which district?"]},
        {"sender": "customer", "utterances": ["Kangle Road."]},
        {"sender": "helpdesk", "utterances": ["A technician is on the way."]},
        {"sender": "customer", "utterances": ["Thanks"]}]},
        {"id": 12, "turns": [{"sender": "customer", "utterances": ["Hello?"]}]}]
    (raw / "stc.json").write_text(json.dumps(dialogs))
    src = {"stc*.json": {"thread": {"turns": "turns", "role": "sender", "text": "utterances",
                                    "roles": {"customer": "user", "helpdesk": "assistant"}}, "group": "{{ id }}"}}
    res = _run(raw, src)
    assert [_turns(r)[1:] for r in res.records] == [
        [("user", "My line is down.\nSince noon."), ("assistant", "Sorry! Which district?")],
        [("user", "My line is down.\nSince noon."), ("assistant", "Sorry! Which district?"),
         ("user", "Kangle Road."), ("assistant", "A technician is on the way.")]]
    assert {r.group for r in res.records} == {"11"} and [r.meta["element"] for r in res.records] == [1, 3]
    fm = res.metrics["files"][f"{raw}/stc.json"]
    assert (fm["rows"], fm["read"], fm["kept"], fm["rejected_by_reason"]) == (2, 3, 2, {"thread_unanswered": 1})
    res2 = _run(raw, {"stc*.json": {**src["stc*.json"], "thread": {**src["stc*.json"]["thread"], "max_history": 1}}})
    assert _turns(res2.records[1])[1:] == [("user", "Kangle Road."), ("assistant", "A technician is on the way.")]


def test_reply_link_threads_twcs_style(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = [",tweet_id,author_id,inbound,text,response_tweet_id,in_response_to_tweet_id",
            "0,1,acme,False,@u1 We can help: please DM us.,2,3.0",
            "1,2,u1,True,@acme thanks,,1.0",
            "2,3,u1,True,@acme my order never arrived,1,",
            "3,7,u2,True,@acme hello??,,",
            "4,8,acme,False,@u3 Following up on your ticket.,,99.0",
            "5,9,u4,True,broken,row",
            "6,10,acme,False,@u1 Glad to help!,,2.0"]
    (raw / "twcs.csv").write_text("\n".join(rows) + "\n")
    src = {"twcs*.csv": {"thread": {"id": "tweet_id", "reply_to": "in_response_to_tweet_id", "role": "inbound",
                                    "roles": {"True": "user", "False": "assistant"}}}}
    res = _run(raw, src)
    assert [(_turns(r)[1:], r.group, r.source["line"]) for r in res.records] == [
        ([("user", "@acme my order never arrived"), ("assistant", "@u1 We can help: please DM us.")], "3", 2),
        ([("user", "@acme my order never arrived"), ("assistant", "@u1 We can help: please DM us."),
          ("user", "@acme thanks"), ("assistant", "@u1 Glad to help!")], "3", 8)]
    fm = res.metrics["files"][f"{raw}/twcs.csv"]
    # rows 3 and 2 (customer) are history; 7 unanswered; 8 answers a tweet not in the file; one bad row
    assert (fm["rows"], fm["context_rows"], fm["read"], fm["kept"]) == (7, 2, 5, 2)
    assert fm["rejected_by_reason"] == {"thread_unanswered": 2, "bad_field_count": 1}
    assert fm["read"] == fm["kept"] + fm["rejected"]


def test_mapping_error_on_first_record_is_one_line_naming_file_record_and_path(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "x.jsonl").write_text('{"q": "a?", "a": "b"}\n{"q": "c?", "a": "d"}\n')
    with pytest.raises(MappingError) as err:
        _run(raw, {"x.jsonl": {"user": "{{ record.qq }}", "assistant": "{{ a }}"}})
    assert isinstance(err.value, DomainftError) and "\n" not in str(err.value)
    assert str(err.value).startswith(f"{raw}/x.jsonl:1: prepare.sources['x.jsonl'].user: ") and "qq" in str(err.value)
    with pytest.raises(MappingError, match=r"x.jsonl:1: prepare.sources\['x.jsonl'\].explode: path 'items'"):
        _run(raw, {"x.jsonl": {"explode": "items", "user": "{{ q }}", "assistant": "{{ a }}"}})
    with pytest.raises(MappingError, match=r"prepare.sources\['x.jsonl'\].user: bad template"):
        _run(raw, {"x.jsonl": {"user": "{{ q ", "assistant": "{{ a }}"}})


def test_mapping_error_on_a_later_record_rejects_it(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "x.jsonl").write_text('{"q": "a?", "a": "b"}\n{"q": "c?"}\n{"q": "e?", "a": "f"}\n')
    res = _run(raw, {"x.jsonl": {"user": "{{ q }}", "assistant": "{{ a }}"}})
    assert len(res.records) == 2
    (rej,) = res.rejects
    assert (rej.line, rej.reason, rej.kind) == (2, "mapping_error", "malformed")
    assert rej.detail.startswith("prepare.sources['x.jsonl'].assistant: ") and "'a'" in rej.detail


def test_dedup_key_keeps_different_questions_about_one_long_case(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    case = " ".join(f"word{i} fact{i * 7 % 13}" for i in range(400))  # a long shared case text
    cases = [{"case": case, "qa": [{"q": f"Question number {i} about the case?", "a": f"Answer {i}: see paragraph {i}."}
                                   for i in range(10)]}]
    (raw / "cases.json").write_text(json.dumps(cases))
    src = {"user": "{{ case }}\n\n{{ item.q }}", "assistant": "{{ item.a }}", "explode": "qa"}
    p = parse_params({"prepare": {"raw_dir": str(raw), "sources": {"cases.json": src}}})
    assert len(prepare(p.prepare, "SYS").records) < 10  # the shared case text makes them near-duplicates
    p = parse_params({"prepare": {"raw_dir": str(raw), "sources": {"cases.json": {
        **src, "dedup_key": "{{ item.q }} {{ item.a }}"}}}})
    res = prepare(p.prepare, "SYS")
    assert len(res.records) == 10 and res.metrics["dedup"]["near_duplicates"] == 0


def test_thread_samples_sharing_a_long_history_are_not_near_duplicates(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    long = " ".join(f"detail{i} of my problem" for i in range(200))
    turns = [{"sender": "customer", "utterances": [long]}]
    for i in range(4):
        turns += [{"sender": "helpdesk", "utterances": [f"Reply {i}: please try step {i}."]},
                  {"sender": "customer", "utterances": [f"Step {i} did not work."]}]
    (raw / "stc.json").write_text(json.dumps([{"id": 1, "turns": turns}]))
    src = {"stc.json": {"thread": {"turns": "turns", "role": "sender", "text": "utterances",
                                   "roles": {"customer": "user", "helpdesk": "assistant"}}}}
    p = parse_params({"prepare": {"raw_dir": str(raw), "sources": src}})
    res = prepare(p.prepare, "SYS")
    assert len(res.records) == 4 and res.records[0].meta["dedup_key"] == long + "\nReply 0: please try step 0."


def test_list_paths_of_explode_and_thread_turns_fail_alike(tmp_path):
    """One helper (mapping._list_at) reads explode and thread.turns: the same errors, keyed by the params key."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "x.jsonl").write_text('{"q": "a?", "a": "b", "items": "not a list", "turns": {"k": 1}}\n')
    with pytest.raises(MappingError, match=r"x.jsonl:1: prepare.sources\['x.jsonl'\].explode: explode path 'items' is a str, not a list"):
        _run(raw, {"x.jsonl": {"explode": "items", "user": "{{ q }}", "assistant": "{{ a }}"}})
    thread = {"turns": "turns", "role": "sender", "text": "text", "roles": {"c": "user", "h": "assistant"}}
    with pytest.raises(MappingError, match=r"x.jsonl:1: prepare.sources\['x.jsonl'\].thread.turns: thread.turns path 'turns' is a dict, not a list"):
        _run(raw, {"x.jsonl": {"thread": thread}})
    with pytest.raises(MappingError, match=r"x.jsonl:1: prepare.sources\['x.jsonl'\].thread.turns: .*'dialog'"):
        _run(raw, {"x.jsonl": {"thread": {**thread, "turns": "dialog"}}})


def test_source_file_makes_ids_that_restart_per_file_unique_groups(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("mts_train.csv", "mts_valid.csv"):  # MTS-Dialog: ID restarts at 0 in each file
        with open(raw / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ID", "dialogue", "section_text"])
            w.writerows([[i, f"{name} dialogue {i} about the knee", f"{name} note {i}"] for i in range(2)])
    res = _run(raw, {"mts*.csv": {"user": "{{ dialogue }}", "assistant": "{{ section_text }}",
                                  "group": "{{ source_file }}:{{ ID }}"}})
    assert sorted(r.group for r in res.records) == ["mts_train.csv:0", "mts_train.csv:1", "mts_valid.csv:0", "mts_valid.csv:1"]


def test_company_key_maps_names_and_tickers_to_one_key():
    from domainft.data.mapping import company_key, normalise_company

    expected = {
        "CVS Health": "CVS", "CVS": "CVS", "cvs": "CVS",            # FinanceBench name, ECTSum ticker
        "AES Corporation": "AES", "The AES Corporation": "AES", "AES": "AES",
        "3M": "MMM", "MMM": "MMM", "Johnson & Johnson": "JNJ", "JNJ": "JNJ",
        "The Boeing Company": "BA", "Boeing": "BA", "BA": "BA",     # BA: Boeing's symbol, not BAE's London one
        "Alphabet Inc.": "GOOG", "GOOGL": "GOOG", "GOOG": "GOOG",  # share classes: one company
        "ASML Holding N.V.": "ASML", "ASML.AS": "ASML",
        "HP Inc.": "HPQ", "HP": "HP",                               # a ticker-shaped value is a ticker first
        "BRK-B": "BRK.B", "Berkshire Hathaway": "BRK.B",
        "Acme Widgets Ltd.": "acme widgets", "JPMorgan": "jpmorgan",  # not in the table: the normalised name
        "": "", None: "",
    }
    assert {k: company_key(k) for k in expected} == expected
    assert [normalise_company(x) for x in ("The AES Corporation", "Johnson & Johnson", "AT&T Inc.",
                                           "Alphabet Inc. (Class A)", "Holdings", "Acme Holdings, Co.")] == \
        ["aes", "johnson johnson", "att", "alphabet", "holdings", "acme"]


def test_company_key_puts_a_company_named_and_ticked_in_two_files_into_one_split_unit(tmp_path):
    """FinanceBench names companies ("CVS Health"), ECTSum gives tickers ("CVS"): grouped through
    company_key, the two files' records of one company form one unit, so one split."""
    from domainft.data.split import assign, leakage, unit_keys

    raw = tmp_path / "raw"
    raw.mkdir()
    names = ["CVS Health", "AES Corporation", "3M", "Johnson & Johnson", "Boeing", "Nike", "Pfizer", "Netflix"]
    tickers = ["CVS", "AES", "MMM", "JNJ", "BA", "NKE", "PFE", "NFLX"]
    fb = [{"company": c, "question": f"{c}: {sentence(10 * i + k)}?", "answer": f"{k + 3}.{i} billion"}
          for i, c in enumerate(names) for k in range(3)]
    ec = [{"ticker": t, "transcript": f"Call of {t}: {sentence(500 + 10 * i + q, 30)}",
           "summary": sentence(900 + 10 * i + q)} for i, t in enumerate(tickers) for q in (1, 2)]
    (raw / "financebench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in fb))
    (raw / "ectsum_val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ec))
    res = _run(raw, {"financebench*.jsonl": {"user": "{{ question }}", "assistant": "{{ answer }}",
                                             "group": "{{ company | company_key }}"},
                     "ectsum*.jsonl": {"user": "{{ transcript }}", "assistant": "{{ summary }}",
                                       "group": "{{ ticker | company_key }}"}})
    assert len(res.records) == 40
    assert sorted({r.group for r in res.records}) == sorted(tickers)
    keys = unit_keys(res.records, "group")
    assert len(set(keys)) == 8  # one unit per company, across both files (16 by raw name and ticker)
    splits, m = assign(res.records, parse_params({"split": {"group_by": "group"}}).split)
    split_of = {r.id: s for s, rows in splits.items() for r in rows}
    for t in tickers:
        assert len({split_of[r.id] for r in res.records if r.group == t}) == 1
    assert sum(m["groups"].values()) == 8 and leakage(splits, 0.8, 5, group_by="group")["groups"] == 0
