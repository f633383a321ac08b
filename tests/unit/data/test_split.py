"""Split: stable hash assignment, group awareness, stability when 10% new data arrives, leakage."""
from __future__ import annotations

import pytest

from domainft.config import SplitParams
from domainft.data.records import Record, record_id
from domainft.data.split import assign, leakage, unit_fraction, unit_keys

from conftest import VOCAB, sentence


def rec(i: int, cluster: str | None = None, group: str | None = None, **meta) -> Record:
    msgs = [{"role": "user", "content": sentence(i, 10)}, {"role": "assistant", "content": sentence(10**6 + i)}]
    rid = record_id(msgs)
    return Record(rid, msgs, {"file": "f", "line": i, "schema": "qa"}, cluster or rid, group, meta)


def where(splits):
    return {r.id: name for name, rows in splits.items() for r in rows}


def test_fractions_and_determinism():
    records = [rec(i) for i in range(2000)]
    splits, m = assign(records, SplitParams())
    assert m["sizes"]["train"] + m["sizes"]["val"] + m["sizes"]["test"] == 2000
    assert abs(m["fractions"]["test"] - 0.15) < 0.03 and abs(m["fractions"]["val"] - 0.10) < 0.03
    assert where(splits) == where(assign(list(reversed(records)), SplitParams())[0])
    other = where(assign(records, SplitParams(salt="other"))[0])
    assert sum(other[k] != v for k, v in where(splits).items()) > 500


def test_adding_ten_percent_new_records_moves_nothing():
    old = [rec(i) for i in range(1000)]
    before = where(assign(old, SplitParams())[0])
    new = [rec(i) for i in range(1000, 1100)]
    splits, _ = assign(old[:500] + new + old[500:], SplitParams())
    after = where(splits)
    assert all(after[k] == v for k, v in before.items()) and len(after) == 1100
    assert leakage(splits, 0.8, 5)["total"] == 0


def test_clusters_and_groups_never_straddle():
    records = [rec(i, cluster=f"c{i // 5}") for i in range(500)]
    splits, _ = assign(records, SplitParams())
    seen = {}
    for r in records:
        seen.setdefault(r.cluster, set()).add(where(splits)[r.id])
    assert all(len(s) == 1 for s in seen.values())
    # group_by group: a group and a cluster linked through one record end up together
    grouped = [rec(i, group=f"co{i % 40}") for i in range(400)]
    grouped.append(rec(999, cluster=grouped[0].cluster, group="co-other"))
    keys = unit_keys(grouped, "group")
    assert keys[0] == keys[40] == keys[-1] == "g:co-other"  # smallest group key of the component
    splits, m = assign(grouped, SplitParams(group_by="group"))
    lk = leakage(splits, 0.8, 5, group_by="group")
    assert lk["groups"] == 0 and lk["total"] == 0 and sum(m["groups"].values()) == 41


def test_leakage_check_detects_planted_duplicates():
    a, b = rec(1), rec(2)
    near = Record("x" * 16, [a.messages[0], {"role": "assistant", "content": a.messages[1]["content"] + " Yes."}],
                  a.source, "other-cluster")
    report = leakage({"train": [a, b], "val": [], "test": [near]}, 0.8, 5)
    assert (report["near_conversations"], report["exact_prompts"], report["near_prompts"]) == (1, 1, 1)
    assert report["clusters"] == report["exact_conversations"] == 0 and report["total"] == 3


def test_stratify_reports_strata():
    records = [rec(i, label=("rare" if i % 20 == 0 else "common")) for i in range(400)]
    _, m = assign(records, SplitParams(stratify_field="label"))
    assert sum(m["strata"]["rare"].values()) == 20 and sum(m["strata"]["common"].values()) == 380


def test_unit_fraction_range():
    vals = [unit_fraction(str(i), "s") for i in range(1000)]
    assert 0 <= min(vals) and max(vals) < 1 and abs(sum(vals) / 1000 - 0.5) < 0.05


def test_split_stage_links_planted_pairs_and_the_second_process_finds_the_same(tmp_path, monkeypatch):
    """Planted near and exact copies in clusters of their own straddle splits when assigned alone;
    the split stage links them to their originals (leakage 0), with the conversation pairs found
    in-process (1 worker) or by a second process (2 workers) alike."""
    import json

    import domainft.stages.split as split_stage
    from domainft.config import parse_params
    from domainft.data.prepare import write_jsonl
    from domainft.data.split import conversation_leaks_of_file

    records = [rec(i) for i in range(300)]
    for i in range(0, 300, 10):  # a near copy with its own cluster: lands in a split of its own
        a = records[i]
        msgs = [a.messages[0], {"role": "assistant", "content": a.messages[1]["content"] + " Yes."}]
        records.append(Record(record_id(msgs), msgs, a.source, "", None, {}))
    for i in range(5, 300, 25):  # exact copies under other ids and clusters (a hand-edited file)
        records.append(Record(f"copy{i}", records[i].messages, records[i].source, f"copy{i}", None, {}))
    monkeypatch.chdir(tmp_path)
    write_jsonl("data/processed/records.jsonl", records)
    p = parse_params({"prepare": {"workers": 1}})
    splits, _ = assign(records, p.split)  # without links
    report = leakage(splits, 0.8, 5)
    assert (report["near_conversations"], report["exact_conversations"]) == (14, 5)
    assert conversation_leaks_of_file("data/processed/records.jsonl", p.split, 0.8, 5) == {
        "exact_conversations": 5, "near_conversations": 14}
    one = split_stage.run(p)
    monkeypatch.setattr(split_stage, "PARALLEL_MIN_BYTES", 0)
    pools, real_pool = [], split_stage.process_pool
    monkeypatch.setattr(split_stage, "process_pool", lambda n: pools.append(n) or real_pool(n))
    two = split_stage.run(parse_params({"prepare": {"workers": 2}}))
    assert pools == [1]  # the second process did run
    # 30 near + 12 exact copies, + 6 pairs (near copy, exact copy) of the 6 originals that have both
    assert one["linked"] == {"pairs": 48, "units": 42}
    assert one["leakage"]["total"] == 0 and sum(one["units"].values()) == 300
    assert {k: v for k, v in one.items() if k != "seconds"} == {k: v for k, v in two.items() if k != "seconds"}
    assert json.loads((tmp_path / "metrics/split.json").read_text())["leakage"]["total"] == 0
    source = (tmp_path / "data/processed/records.jsonl").read_text().splitlines(keepends=True)
    copied = [line for name in ("train", "val", "test")
              for line in (tmp_path / f"data/splits/{name}.jsonl").read_text().splitlines(keepends=True)]
    assert sorted(copied) == sorted(source) and len(copied) == 342  # the lines themselves, each once


def test_second_process_links_the_same_with_large_lsh_buckets(tmp_path, monkeypatch):
    """40 near-identical answers (no dedup) share LSH buckets above their 32-record cap (a chain
    and a star of candidate pairs): linked into one unit, in-process and in a second process."""
    import domainft.stages.split as split_stage
    from domainft.config import parse_params
    from domainft.data.prepare import write_jsonl

    common = ("To reset the password open the account settings page, choose security, click reset, confirm "
              "the code sent by e-mail and pick a new password of at least twelve characters.")
    records = []
    for i in range(40):
        msgs = [{"role": "user", "content": f"How do I reset my password? ({i})"},
                {"role": "assistant", "content": common + f" Ref {i}."}]
        records.append(Record(record_id(msgs), msgs, {"file": "f", "line": i, "schema": "alpaca"}, "", None, {}))
    records = [Record(r.id, r.messages, r.source, r.id, None, {}) for r in records]
    monkeypatch.chdir(tmp_path)
    write_jsonl("data/processed/records.jsonl", records)
    splits, _ = assign(records, parse_params({}).split)
    assert leakage(splits, 0.8, 5)["near_conversations"] > 100  # without links
    records_2 = records + [rec(i) for i in range(100)]  # 100 unrelated records so that train and test exist
    write_jsonl("data/processed/records.jsonl", records_2)
    one = split_stage.run(parse_params({"prepare": {"workers": 1}}))
    monkeypatch.setattr(split_stage, "PARALLEL_MIN_BYTES", 0)
    two = split_stage.run(parse_params({"prepare": {"workers": 2}}))
    assert one["linked"]["units"] == 39 and sum(one["units"].values()) == 101
    assert one["leakage"]["total"] == 0 and one["leakage"] == two["leakage"] and one["linked"] == two["linked"]


def test_split_files_copy_hand_edited_lines(tmp_path, monkeypatch):
    """records.jsonl edited by hand: CRLF line ends, blank lines, no newline at the end. Each split
    file holds the records' own lines (newline added to the last one), blank lines dropped. A line
    that a UTF-8 text-mode reader (the train stage) would not read as the same record is a
    ValueError naming file:line: invalid UTF-8, a BOM, a bare CR, UTF-16."""
    import domainft.stages.split as split_stage
    from domainft.config import parse_params
    from domainft.data.prepare import read_records

    lines = [rec(i).to_json().encode() for i in range(60)]
    body = b"\r\n".join(lines[:30]) + b"\r\n\r\n\n" + b"\n".join(lines[30:])  # no final newline
    (tmp_path / "data/processed").mkdir(parents=True)
    (tmp_path / "data/processed/records.jsonl").write_bytes(body)
    monkeypatch.chdir(tmp_path)
    m = split_stage.run(parse_params({"prepare": {"workers": 1}}))
    out = {n: (tmp_path / f"data/splits/{n}.jsonl").read_bytes() for n in ("train", "val", "test")}
    copied = sorted(line for data in out.values() for line in data.splitlines(keepends=True))
    want = sorted([x + b"\r\n" for x in lines[:30]] + [x + b"\n" for x in lines[30:]])
    assert copied == want and sum(m["sizes"].values()) == 60
    assert sorted(r.id for n in out for r in read_records(tmp_path / f"data/splits/{n}.jsonl")) == \
        sorted(rec(i).id for i in range(60))
    bad = [b'{"id": "\xff\xfe"}',  # invalid UTF-8
           b"\xef\xbb\xbf" + lines[3],  # a BOM (a text-mode UTF-8 reader keeps it: JSON error there)
           lines[3].replace(b',"source"', b',\r"source"'),  # a bare CR: a text-mode reader ends the line
           lines[3].decode().encode("utf-16-be")]  # another encoding
    for line in bad:
        (tmp_path / "data/processed/records.jsonl").write_bytes(b"\n".join(lines[:3] + [line]) + b"\n")
        with pytest.raises(ValueError, match=r"records.jsonl:4: not a record"):
            split_stage.run(parse_params({"prepare": {"workers": 1}}))


def test_group_split_fill_honours_fractions_where_hash_drifts():
    import random

    rng = random.Random(3)
    sizes = [rng.choice([2, 4, 6, 8, 12, 20]) for _ in range(24)]  # 24 cases, questions per case uneven
    records = [rec(1000 * g + j, group=f"case{g}") for g, n in enumerate(sizes) for j in range(n)]
    _, hashed = assign(records, SplitParams(group_by="group", balance="hash"))
    splits, filled = assign(records, SplitParams(group_by="group"))
    assert filled["balance"] == "fill" and hashed["balance"] == "hash"
    assert hashed["fraction_error"] > 0.03 and not hashed["within_tolerance"]
    assert filled["fraction_error"] <= 0.03 and filled["within_tolerance"]
    assert abs(filled["fractions"]["test"] - 0.15) <= 0.03 and abs(filled["fractions"]["val"] - 0.10) <= 0.03
    assert leakage(splits, 0.8, 5, group_by="group")["groups"] == 0
    assert where(splits) == where(assign(list(reversed(records)), SplitParams(group_by="group"))[0])


def test_group_aliases_merge_groups_case_insensitively_before_units_form():
    records = [rec(i, group=g) for i, g in enumerate(["Acme Widgets Ltd."] * 6 + ["ACME"] * 4 + ["acme corp"] * 5
                                                    + [f"other{k}" for k in range(60)])]
    plain = SplitParams(group_by="group")
    assert len(set(unit_keys(records, "group")[:15])) == 3
    aliases = {"acme widgets ltd.": "ACME", " ACME CORP ": "ACME"}
    keys = unit_keys(records, "group", aliases)
    assert set(keys[:15]) == {"g:ACME"} and len(set(keys)) == 61
    splits, m = assign(records, plain.model_copy(update={"group_aliases": aliases}))
    assert len({name for name, rows in splits.items() for r in rows if r.source["line"] < 15}) == 1
    assert sum(m["groups"].values()) == 61 and sum(assign(records, plain)[1]["groups"].values()) == 63
    assert [records[k].group for k in (0, 6, 10)] == ["Acme Widgets Ltd.", "ACME", "acme corp"]  # records keep theirs
    lk = leakage(splits, 0.8, 5, group_by="group", aliases=aliases)
    assert lk["groups"] == 0 and lk["total"] == 0


@pytest.mark.parametrize("aliases, message", [
    ({" ": "ACME"}, "split.group_aliases: Value error, key ' ' is blank"),
    ({"Acme": ""}, "split.group_aliases: Value error, 'Acme': target '' is blank"),
    ({"Acme": "ACME", "ACME": "Other"}, "'ACME' and 'Acme' are the same key ignoring case"),
    ({"Acme Ltd": "acme", "Acme": "ACME"}, "'Acme Ltd': target 'acme' is itself an alias (of 'ACME')"),
    ({"Acme": ["ACME"]}, "split.group_aliases.Acme: Input should be a valid string"),
])
def test_group_aliases_errors_name_the_key(aliases, message):
    from domainft.config import ParamsError, parse_params

    with pytest.raises(ParamsError) as err:
        parse_params({"split": {"group_aliases": aliases}})
    assert message in str(err.value)
    assert parse_params({"split": {"group_aliases": {"Acme": "ACME", "acme ": "ACME"}}}).split.group_aliases


def test_near_pairs_that_prepare_keeps_straddle_splits_without_links_and_never_with_them(tmp_path, monkeypatch):
    """Pairs of answers with 5-7 of 60 words changed: exact 5-gram Jaccard 0.77-0.92, around the 0.8
    threshold. prepare's MinHash estimate (seed 1) removes most of those above 0.8, but keeps some
    in units of their own (legal-review's 43 cross-split pairs came from such pairs). Assigned
    alone, some of those straddle splits; the split stage links them, so none does."""
    import json
    import random

    import domainft.stages.split as split_stage
    from domainft.config import parse_params
    from domainft.data import dedup
    from domainft.data.prepare import read_records
    from domainft.data.records import content_key
    from domainft.stages import prepare as prepare_stage

    rows = [{"instruction": sentence(k, 8) + "?", "output": sentence(3000 + k, 40)} for k in range(200)]
    for k in range(80):
        words = sentence(7000 + k, 60).rstrip(".").split()
        rng = random.Random(k)
        other = list(words)
        for pos in rng.sample(range(60), 5 + k % 3):
            other[pos] = rng.choice(VOCAB)
        q = sentence(500 + k, 8) + "?"
        rows += [{"instruction": q, "output": " ".join(words) + "."}, {"instruction": q, "output": " ".join(other) + "."}]
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(tmp_path)
    p = parse_params({"prepare": {"workers": 1, "dedup": {"prompt_clusters": False, "cluster_margin": 0}},
                      "split": {"group_by": "group"}})
    pm = prepare_stage.run(p)
    records = read_records("data/processed/records.jsonl")
    texts = [content_key(r.messages) for r in records]
    by_prompt: dict[str, list[int]] = {}  # the two answers of a pair share their question
    for i, r in enumerate(records):
        by_prompt.setdefault(r.messages[1]["content"], []).append(i)
    pairs = [v for v in by_prompt.values() if len(v) == 2]
    close = [(i, j) for i, j in pairs if dedup.jaccard(texts[i], texts[j], 5) >= 0.8]
    assert pm["totals"]["rejected_by_reason"] == {"near_duplicate": 58} and len(pairs) == 22 and len(close) == 14
    assert all(records[i].cluster != records[j].cluster for i, j in close)
    splits, _ = assign(records, p.split)  # without links
    assert leakage(splits, 0.8, 5, group_by="group", prompts=False)["near_conversations"] == 4
    m = split_stage.run(p)
    assert m["linked"] == {"pairs": 14, "units": 14} and m["leakage"]["total"] == 0  # each close pair, one unit
    monkeypatch.setattr(split_stage, "PARALLEL_MIN_BYTES", 0)
    two = split_stage.run(parse_params({**p.model_dump(), "prepare": {**p.prepare.model_dump(), "workers": 2}}))
    assert {k: v for k, v in m.items() if k != "seconds"} == {k: v for k, v in two.items() if k != "seconds"}
