"""prepare over the messy corpus: no crash, exact accounting, stage outputs and on_error."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from domainft.config import parse_params
from domainft.data.prepare import PrepareError, prepare, read_records

from conftest import alpaca, sentence


def _params(raw, **prepare_kw):
    return parse_params({"prepare": {"raw_dir": str(raw), **prepare_kw}})


def test_messy_corpus_exact_accounting(messy_raw):
    raw, expected = messy_raw
    p = _params(raw)
    res = prepare(p.prepare, p.domain.system_prompt)
    files = res.metrics["files"]
    assert sorted(files) == sorted(f"{raw}/{name}" for name in expected)  # README.md excluded
    for name, exp in expected.items():
        fm = files[f"{raw}/{name}"]
        reasons = {k: v for k, v in exp.items() if k not in ("read", "kept")}
        assert (fm["read"], fm["kept"], fm["rejected_by_reason"]) == (exp["read"], exp["kept"], reasons), name
        assert fm["read"] == fm["kept"] + fm["rejected"]
    t = res.metrics["totals"]
    assert t["read"] == sum(e["read"] for e in expected.values()) == 33
    assert t["kept"] == len(res.records) == 23 and t["rejected"] == len(res.rejects) == 10
    assert t["rejected_by_kind"] == {"duplicate": 1, "filtered": 1, "malformed": 8}
    assert res.metrics["operators"]["placeholders"]["modified"] == 1
    assert files[f"{raw}/d_chats.csv"]["rows"] == 12


def test_rejects_name_file_line_and_keep_raw(messy_raw):
    raw, _ = messy_raw
    p = _params(raw)
    res = prepare(p.prepare, p.domain.system_prompt)
    by_reason = {r.reason: r for r in res.rejects}
    bad = by_reason["invalid_json"]
    assert (bad.file, bad.line, bad.kind) == (f"{raw}/a_alpaca.jsonl", 11, "malformed")
    assert bad.raw.startswith('{"instruction": "broken')
    enc = by_reason["encoding_error"]
    assert "c_gbk.csv" in enc.detail and "byte offset 16 (line 2)" in enc.detail and "prepare.encodings" in enc.detail
    role = by_reason["unknown_role"]
    assert role.line == 10 and "'supervisor'" in role.detail and len(role.raw["rows"]) == 3
    dup = by_reason["exact_duplicate"]
    assert dup.line == 15 and dup.kind == "duplicate" and "a_alpaca.jsonl:4" in dup.detail


def test_records_have_canonical_shape(messy_raw):
    raw, _ = messy_raw
    p = _params(raw)
    res = prepare(p.prepare, p.domain.system_prompt)
    ids = [r.id for r in res.records]
    assert len(set(ids)) == len(ids) and all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
    for r in res.records:
        assert r.messages[0] == {"role": "system", "content": p.domain.system_prompt}
        assert r.messages[-1]["role"] == "assistant" and r.cluster
        assert set(r.source) == {"file", "line", "schema"}
    chats = [r for r in res.records if r.source["schema"] == "chatlog"]
    assert [r.group for r in chats] == ["S0", "S1", "S2", "S3"]
    array = [r for r in res.records if r.source["file"].endswith("b_sharegpt_array.jsonl")]
    assert [r.source["line"] for r in array] == [1, 2, 3, 4, 5]  # element index in a JSON array
    placeholder = next(r for r in res.records if r.source["line"] == 14 and r.source["schema"] == "alpaca")
    assert "No Input" not in placeholder.messages[1]["content"]


def test_encoding_param_reads_gbk_and_repair_roles(messy_raw):
    raw, _ = messy_raw
    p = _params(raw, encodings={"c_gbk.csv": "gbk"}, repair_roles=True)
    res = prepare(p.prepare, p.domain.system_prompt)
    gbk = res.metrics["files"][f"{raw}/c_gbk.csv"]
    assert (gbk["kept"], gbk["rejected"]) == (2, 0)
    zh = [r for r in res.records if r.source["file"].endswith("c_gbk.csv")]
    assert zh[0].messages[1]["content"] == "开户需要什么材料？"
    chats = res.metrics["files"][f"{raw}/d_chats.csv"]
    # repaired: S9 drops the supervisor turn; S8 (customer only) still has no exchange
    assert chats["kept"] == 5 and chats["rejected_by_reason"] == {"no_exchange": 1}
    sharegpt = res.metrics["files"][f"{raw}/b_sharegpt_array.jsonl"]
    assert sharegpt["rejected_by_reason"] == {"no_exchange": 1}  # [gpt, human]: nothing left
    assert res.metrics["operators"]["roles"] == {"modified": 1, "removed": 2}


def test_on_error_fail_names_file_and_line(messy_raw):
    raw, _ = messy_raw
    p = _params(raw, on_error="fail")
    with pytest.raises(PrepareError, match=r"a_alpaca\.jsonl:11: invalid_json"):
        prepare(p.prepare, p.domain.system_prompt)


def test_stages_write_outputs_and_metrics(messy_raw, monkeypatch):
    raw, _ = messy_raw
    root = raw.parent.parent
    monkeypatch.chdir(root)
    from domainft.stages import prepare as prepare_stage
    from domainft.stages import split as split_stage

    p = parse_params({})
    m = prepare_stage.run(p)
    assert (root / "data/processed/records.jsonl").exists()
    rejects = [json.loads(x) for x in (root / "data/processed/rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == m["totals"]["rejected"] == 10
    assert all({"file", "line", "kind", "reason", "detail", "raw"} <= set(r) for r in rejects)
    assert json.loads((root / "metrics/prepare.json").read_text())["totals"]["accounted"] is True
    s = split_stage.run(p)
    sizes = {n: len(read_records(root / f"data/splits/{n}.jsonl")) for n in ("train", "val", "test")}
    assert sizes == s["sizes"] and sum(sizes.values()) == 23
    assert s["leakage"]["total"] == 0


def test_worker_processes_give_the_same_output_as_one(messy_raw, monkeypatch):
    """Files read in 2 worker processes: identical records, rejects (with lines) and counts."""
    import domainft.data.prepare as prep

    raw, _ = messy_raw
    p1 = _params(raw, workers=1, pii={"enabled": True, "names": ["Alice Wong"]})
    one = prepare(p1.prepare, p1.domain.system_prompt)
    monkeypatch.setattr(prep, "PARALLEL_MIN_BYTES", 0)
    p2 = _params(raw, workers=2, pii={"enabled": True, "names": ["Alice Wong"]})
    two = prepare(p2.prepare, p2.domain.system_prompt)
    assert (one.metrics["workers"], two.metrics["workers"]) == (1, 2)
    assert [r.to_json() for r in two.records] == [r.to_json() for r in one.records] and len(one.records) == 23
    assert [r.to_json() for r in two.rejects] == [r.to_json() for r in one.rejects] and len(one.rejects) == 10
    drop = ("seconds", "records_per_s", "workers")
    assert {k: v for k, v in two.metrics.items() if k not in drop} == {k: v for k, v in one.metrics.items() if k not in drop}


def test_worker_processes_report_a_malformed_record_with_on_error_fail(messy_raw, monkeypatch):
    import domainft.data.prepare as prep

    raw, _ = messy_raw
    monkeypatch.setattr(prep, "PARALLEL_MIN_BYTES", 0)
    p = _params(raw, on_error="fail", workers=2)
    with pytest.raises(PrepareError, match=r"a_alpaca\.jsonl:11: invalid_json"):
        prepare(p.prepare, p.domain.system_prompt)


def test_workers_stay_one_for_small_input(tmp_path):
    from domainft.data.prepare import PARALLEL_MIN_BYTES, _workers

    small = [tmp_path / "a", tmp_path / "b"]
    for f in small:
        f.write_text("x")
    big = tmp_path / "big"
    big.write_bytes(b"x" * PARALLEL_MIN_BYTES)
    assert _workers(0, small) == 1 and _workers(1, [big]) == 1
    assert _workers(4, [big]) == 4 and _workers(2, [big, small[0]]) == 2  # prepare caps it at the parts


def _chunky_raw(raw):
    """A JSONL file with a BOM, CRLF, blank lines, malformed lines, a mid-file BOM line and near
    duplicates far apart; a JSON array; a chat log stored as JSONL (one turn per line)."""
    raw.mkdir(parents=True)
    lines = []
    for i in range(300):
        lines.append(json.dumps(alpaca(i)))
        if i % 37 == 5:
            lines += ["", '{"instruction": "cut', "\ufeff" + json.dumps(alpaca(5000 + i))]
    lines.append(json.dumps(alpaca(7, output=sentence(1007, 16).replace(".", "!"))))  # near duplicate of line 8
    lines.append(json.dumps(alpaca(3)))  # exact duplicate
    (raw / "big.jsonl").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    (raw / "array.json").write_text(json.dumps([alpaca(900 + i) for i in range(60)]))
    turns = [{"session_id": f"S{i // 2}", "role": "user" if i % 2 == 0 else "assistant",
              "text": sentence(800 + i, 10)} for i in range(80)]
    (raw / "log.jsonl").write_text("\n".join(json.dumps(t) for t in turns) + "\n")


def test_jsonl_chunks_give_the_same_output_as_the_whole_file(tmp_path, monkeypatch):
    """Line ranges of a large JSONL file read by 2 workers: same records, rejects (file, line,
    reason), duplicates across chunks and counts as one process; chat logs and arrays stay whole."""
    import domainft.data.prepare as prep
    from domainft.data.ingest import jsonl_chunks

    raw = tmp_path / "data" / "raw"
    _chunky_raw(raw)
    chunks = jsonl_chunks(raw / "big.jsonl", "big.jsonl", 4000)
    assert chunks is not None and len(chunks) >= 5
    assert [c.start for c in chunks[1:]] == [c.end for c in chunks[:-1]] and chunks[-1].end == (raw / "big.jsonl").stat().st_size
    data = (raw / "big.jsonl").read_bytes()
    assert all(data[c.start - 1:c.start] == b"\n" and c.first_line == data.count(b"\n", 0, c.start) + 1 for c in chunks[1:])
    assert jsonl_chunks(raw / "log.jsonl", "log.jsonl", 1000) is None  # chatlog: grouped across the file
    assert jsonl_chunks(raw / "array.json", "array.json", 1000) is None

    p1 = _params(raw, workers=1)
    one = prepare(p1.prepare, p1.domain.system_prompt)
    monkeypatch.setattr(prep, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(prep, "CHUNK_MIN_BYTES", 4000)
    p2 = _params(raw, workers=2)
    assert len(prep._plan(prep.list_raw_files(raw, [], ["*"]), p2.prepare, 2)) >= 7
    two = prepare(p2.prepare, p2.domain.system_prompt)
    assert two.metrics["workers"] == 2
    assert [r.to_json() for r in two.records] == [r.to_json() for r in one.records]
    assert [r.to_json() for r in two.rejects] == [r.to_json() for r in one.rejects]
    drop = ("seconds", "records_per_s", "workers")
    assert {k: v for k, v in two.metrics.items() if k not in drop} == {k: v for k, v in one.metrics.items() if k not in drop}
    big = one.metrics["files"][f"{raw}/big.jsonl"]
    assert big["read"] == 318 and big["rejected_by_reason"] == {"exact_duplicate": 1, "invalid_json": 16,
                                                                  "near_duplicate": 1}
    cut = [r.line for r in one.rejects if r.reason == "invalid_json"]
    assert cut[:2] == [8, 9] and len(cut) == 16  # line 7 blank, 8 cut, 9 starts with a BOM
    assert one.metrics["files"][f"{raw}/log.jsonl"]["kept"] == 40


def _project(tmp_path, monkeypatch, files: dict[str, bytes], params: dict | None = None):
    raw = tmp_path / "data" / "raw"
    for name, data in files.items():
        (raw / name).parent.mkdir(parents=True, exist_ok=True)
        (raw / name).write_bytes(data)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(json.dumps(params or {}))
    return tmp_path


GBK_CSV = "question,answer\n如何开户？,请携带身份证到任一网点办理开户手续，工作人员会为您办理。\n".encode("gbk")


def test_an_encoding_glob_matches_the_path_under_raw_dir(tmp_path, monkeypatch):
    """`legacy/*.csv` (path under raw_dir, as params.yaml documents it) selects data/raw/legacy/x.csv."""
    from domainft.stages import prepare as prepare_stage

    _project(tmp_path, monkeypatch, {"legacy/x.csv": GBK_CSV})
    m = prepare_stage.run(parse_params({"prepare": {"encodings": {"legacy/*.csv": "gbk"}}}))
    assert (m["totals"]["kept"], m["totals"]["rejected"]) == (1, 0)
    rec = read_records(tmp_path / "data/processed/records.jsonl")[0]
    assert rec.messages[-2]["content"] == "如何开户？"


def test_unknown_codec_is_a_params_error_naming_the_key():
    from domainft.config import ParamsError

    with pytest.raises(ParamsError, match=r"prepare\.encodings: .*unknown encoding 'gbkk' for '\*\.csv'"):
        parse_params({"prepare": {"encodings": {"*.csv": "gbkk"}}})


def test_a_mapped_column_missing_from_the_header_is_named(tmp_path, monkeypatch):
    from domainft.stages import prepare as prepare_stage

    _project(tmp_path, monkeypatch, {"faq.csv": b"Frage,Antwort\nWie?,So geht das ganz einfach und schnell.\n"})
    p = parse_params({"prepare": {"columns": {"question": "Question", "answer": "Answer"}}})
    with pytest.raises(PrepareError, match=r"no record kept of 1 read .*missing_column"):
        prepare_stage.run(p)
    rej = json.loads((tmp_path / "data/processed/rejects.jsonl").read_text())
    assert (rej["reason"], rej["line"]) == ("missing_column", 2)
    assert "['Question', 'Answer']" in rej["detail"] and "Frage" in rej["detail"]


def test_cli_prints_one_error_line_and_removes_stale_outputs(tmp_path, monkeypatch):
    """on_error: fail -> exit 1 with `error: <file>:<line>: ...`, no traceback; last run's outputs gone."""
    from click.testing import CliRunner

    from domainft.cli import cli

    good = json.dumps({"instruction": "How do I open an account?", "output": "Bring an ID card to any branch."})
    _project(tmp_path, monkeypatch, {"a.jsonl": (good + "\n").encode()})
    assert CliRunner().invoke(cli, ["prepare"]).exit_code == 0
    assert (tmp_path / "data/processed/records.jsonl").exists()
    (tmp_path / "data/raw/a.jsonl").write_text(good + "\n{broken\n")
    (tmp_path / "params.yaml").write_text(json.dumps({"prepare": {"on_error": "fail"}}))
    res = CliRunner().invoke(cli, ["prepare"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "error: data/raw/a.jsonl:2: invalid_json" in res.output and "Error:" not in res.output
    assert not (tmp_path / "data/processed/records.jsonl").exists() and not (tmp_path / "metrics/prepare.json").exists()


def test_split_refuses_an_empty_train_or_test_split(tmp_path, monkeypatch):
    from domainft.stages import prepare as prepare_stage
    from domainft.stages import split as split_stage

    one = json.dumps({"instruction": "How do I open an account?", "output": "Bring an ID card to any branch."})
    _project(tmp_path, monkeypatch, {"a.jsonl": (one + "\n").encode()})
    p = parse_params({})
    prepare_stage.run(p)
    with pytest.raises(split_stage.SplitError, match=r"(train|test) split empty with 1 records"):
        split_stage.run(p)


def test_workers_start_after_rensa_threads_without_deadlock(tmp_path):
    """A process whose rensa thread pool is running (a large MinHash batch) then runs the prepare
    stage with 2 workers and the split stage with its second process: forked children would hang
    (seen); fork-server ones finish."""
    import subprocess
    import sys
    import textwrap

    raw = tmp_path / "data" / "raw"
    _chunky_raw(raw)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent("""
        import os, sys
        import domainft.data.prepare as prep
        import domainft.stages.split as split_stage
        from domainft.config import parse_params
        from domainft.data import dedup
        from domainft.stages import prepare as prepare_stage

        if __name__ == "__main__":
            before = len(os.listdir("/proc/self/task"))
            dedup.signatures([f"text number {i} of the batch" for i in range(50_000)], 128, 5)
            print("threads", before, len(os.listdir("/proc/self/task")))
            prep.PARALLEL_MIN_BYTES, prep.CHUNK_MIN_BYTES, split_stage.PARALLEL_MIN_BYTES = 0, 4000, 0
            p = parse_params({"prepare": {"raw_dir": "data/raw", "workers": 2}})
            pm = prepare_stage.run(p)
            sm = split_stage.run(p)
            print("done", pm["workers"], pm["totals"]["kept"], sm["leakage"]["total"])
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    threads = out.stdout.split("threads ")[1].split()
    assert int(threads[1]) > int(threads[0])  # rensa's pool did start
    assert out.stdout.strip().endswith("done 2 400 0"), out.stdout


GOOD_LINE = '{"instruction": "How do I reset my password?", "output": "Open settings, choose security and click reset."}\n'


def test_damaged_input_becomes_rejects_not_tracebacks(tmp_path, monkeypatch):
    """Each of these raised out of prepare before (RecursionError, ValueError, ArrowInvalid,
    BadZipFile, KeyError) or lost the records after a closed array; now each is a reject."""
    from domainft.stages import prepare as prepare_stage

    deep = '{"instruction": "q?", "output": "a long enough answer.", "x": ' + "[" * 1100 + "]" * 1100 + "}\n"
    huge = '{"instruction": "q?", "output": "a long enough answer.", "n": ' + "1" * 5000 + "}\n"
    _project(tmp_path, monkeypatch, {
        "a.jsonl": (GOOD_LINE + deep + huge).encode(),
        "b.json": ("[" + GOOD_LINE.replace("password", "PIN").strip() + "]\n"
                   + GOOD_LINE.replace("reset", "change") * 3).encode(),
        "c.parquet": b"not a parquet file", "d.xlsx": b"not a zip",
        "forced/e.jsonl": GOOD_LINE.encode(),
    }, {"prepare": {"schema_overrides": {"forced/*.jsonl": "chatlog"}}})
    m = prepare_stage.run(parse_params({"prepare": {"schema_overrides": {"forced/*.jsonl": "chatlog"}}}))
    files = m["files"]
    assert files["data/raw/a.jsonl"]["rejected_by_reason"] == {"invalid_json": 2}
    assert (files["data/raw/b.json"]["read"], files["data/raw/b.json"]["rejected_by_reason"]) == (2, {"invalid_json": 1})
    assert files["data/raw/c.parquet"]["rejected_by_reason"] == {"unreadable_file": 1}
    assert files["data/raw/d.xlsx"]["rejected_by_reason"] == {"unreadable_file": 1}
    assert files["data/raw/forced/e.jsonl"]["rejected_by_reason"] == {"missing_key": 1}
    assert m["totals"]["accounted"] and m["totals"]["kept"] == 2
    rejects = [json.loads(x) for x in (tmp_path / "data/processed/rejects.jsonl").read_text().splitlines()]
    trailing = next(r for r in rejects if r["file"] == "data/raw/b.json")
    assert "after the array's closing ']' (line 1)" in trailing["detail"] and "change" in trailing["raw"]


def test_a_lone_surrogate_is_written_escaped_and_read_back(tmp_path, monkeypatch):
    from domainft.stages import prepare as prepare_stage

    line = GOOD_LINE.replace('"}', '", "tag": "\\ud800"}')
    short = '{"instruction": "\\udfff?", "output": "short", "tag": "\\ud800"}\n'
    _project(tmp_path, monkeypatch, {"a.jsonl": (line + short).encode()})
    m = prepare_stage.run(parse_params({}))
    assert (m["totals"]["kept"], m["totals"]["rejected_by_reason"]) == (1, {"length": 1})
    assert read_records(tmp_path / "data/processed/records.jsonl")[0].meta == {"tag": "\ud800"}
    rej = json.loads((tmp_path / "data/processed/rejects.jsonl").read_text())
    assert rej["raw"]["tag"] == "\ud800" and rej["reason"] == "length"


@pytest.mark.parametrize("codec", ["u8", "cp65001", "UTF8", "utf-8-sig"])
def test_a_bom_is_stripped_under_any_name_of_utf8(tmp_path, monkeypatch, codec):
    from domainft.stages import prepare as prepare_stage

    _project(tmp_path, monkeypatch, {"a.jsonl": b"\xef\xbb\xbf" + GOOD_LINE.encode()})
    m = prepare_stage.run(parse_params({"prepare": {"encodings": {"*.jsonl": codec}}}))
    assert (m["totals"]["kept"], m["totals"]["rejected"]) == (1, 0)


def test_workers_run_the_parents_copy_of_domainft(tmp_path):
    """A script that puts another copy of domainft first on sys.path: the workers run that copy too.
    The fork server used to preload domainft with a fresh interpreter's sys.path, so the workers ran
    the installed copy (a benchmark of an older checkout ran this checkout's workers)."""
    import shutil
    import subprocess
    import sys
    import textwrap

    import domainft

    lib = tmp_path / "lib"
    shutil.copytree(Path(domainft.__file__).parent, lib / "domainft", ignore=shutil.ignore_patterns("__pycache__"))
    (lib / "domainft" / "probe_copy.py").write_text(
        "def where():\n    import domainft.data.prepare as p\n    return p.__file__\n")
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(lib)!r})
        import domainft.probe_copy
        from domainft.data.pool import process_pool

        if __name__ == "__main__":
            with process_pool(1) as pool:
                print("worker", pool.submit(domainft.probe_copy.where).result(timeout=120))
            print("parent", domainft.probe_copy.where())
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd="/")
    assert out.returncode == 0, out.stderr[-2000:]
    expected = str(lib / "domainft" / "data" / "prepare.py")
    assert out.stdout.split() == ["worker", expected, "parent", expected]


def test_duplicate_rejects_keep_their_raw_content(tmp_path, monkeypatch):
    """Kept records' raw content travels packed as JSON bytes (or as the object where orjson cannot
    encode it); a duplicate's reject gets the same raw object back, written as before."""
    from domainft.stages import prepare as prepare_stage

    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    big = 123456789012345678901234567890
    lines = [alpaca(1, ticket={"id": 7, "tags": ["a", "é中"], "score": 0.5}), alpaca(2, ticket=big),
             alpaca(3, note="\\ud800")]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines) * 2
    (raw / "a.jsonl").write_text(text.replace('"\\\\ud800"', '"\\ud800"'), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    prepare_stage.run(parse_params({"prepare": {"raw_dir": "data/raw"}}))
    rejects = [json.loads(x) for x in (tmp_path / "data/processed/rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in rejects] == [(4, "exact_duplicate"), (5, "exact_duplicate"),
                                                         (6, "exact_duplicate")]
    assert rejects[0]["raw"]["ticket"] == {"id": 7, "tags": ["a", "é中"], "score": 0.5}
    assert rejects[1]["raw"]["ticket"] == big and type(rejects[1]["raw"]["ticket"]) is int
    assert rejects[2]["raw"]["note"] == "\ud800"


def test_workers_run_the_parents_copy_after_a_chdir(tmp_path):
    """``python -c`` (sys.path entry "") from the folder of a copy of domainft, then a chdir before
    multiprocessing is imported: multiprocessing hands the workers the new folder for "", where
    there is no domainft, so they imported the installed copy."""
    import shutil
    import subprocess
    import sys

    import domainft

    lib, other = tmp_path / "lib", tmp_path / "other"
    other.mkdir()
    shutil.copytree(Path(domainft.__file__).parent, lib / "domainft", ignore=shutil.ignore_patterns("__pycache__"))
    (lib / "domainft" / "probe_copy.py").write_text(
        "def where():\n    import domainft.data.prepare as p\n    return p.__file__\n")
    code = (f"import os, sys, domainft.probe_copy; assert 'multiprocessing' not in sys.modules; os.chdir({str(other)!r})\n"
            "from domainft.data.pool import process_pool\n"
            "with process_pool(1) as pool:\n"
            "    print('worker', pool.submit(domainft.probe_copy.where).result(timeout=120))\n"
            "print('parent', domainft.probe_copy.where())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=lib)
    assert out.returncode == 0, out.stderr[-2000:]
    expected = str(lib / "domainft" / "data" / "prepare.py")
    assert out.stdout.split() == ["worker", expected, "parent", expected]


def test_raw_content_too_deep_to_pickle_travels_as_json():
    """A worker's raw content that orjson refuses (nesting beyond 255) and pickle cannot write
    (it recursed twice per level) comes back as JSON text; with workers it had crashed prepare."""
    import pickle

    from domainft.data.prepare import _pack_raw, _unpack_raw

    deep: list = []
    cur = deep
    for _ in range(700):
        cur.append([])
        cur = cur[0]
    raw = {"instruction": "q", "x": deep, "n": 2**70}
    with pytest.raises(RecursionError):
        pickle.dumps(raw)
    packed = pickle.loads(pickle.dumps(_pack_raw(raw)))
    assert isinstance(packed, str) and json.dumps(_unpack_raw(packed)) == json.dumps(raw)
    for plain in ({"a": "é中", "b": [1, 2.5, None]}, {"n": 2**70}, "not json {", {1: "int key"}):
        assert _unpack_raw(pickle.loads(pickle.dumps(_pack_raw(plain)))) == plain
