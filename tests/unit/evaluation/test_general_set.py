"""The general held-out file: read through prepare's reader, so every container and its errors match."""
import csv
import json

import pytest

from domainft.evaluation.general_set import RetentionDataError, load_general

ROWS = [{"instruction": f"Name colour {i}.", "input": "", "output": f"Colour {i}."} for i in range(5)]


def test_the_same_records_from_a_json_array_jsonl_and_csv(tmp_path):
    (tmp_path / "g.json").write_text(json.dumps(ROWS, indent=1))
    (tmp_path / "g.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS[:2]) + "\n\n"
                                      + "\n".join(json.dumps(r) for r in ROWS[2:]) + "\n")
    with open(tmp_path / "g.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["instruction", "input", "output"])
        w.writeheader()
        w.writerows(ROWS)
    got = [load_general(tmp_path / n, 0) for n in ("g.json", "g.jsonl", "g.csv")]
    assert got[0] == got[1] == got[2]
    assert [r["id"] for r in got[0]] == ["g0", "g1", "g2", "g3", "g4"]  # 0-based over records, blank lines skipped
    assert got[0][3]["messages"] == [{"role": "user", "content": "Name colour 3."}, {"role": "assistant", "content": "Colour 3."}]
    assert [r["id"] for r in load_general(tmp_path / "g.json", 2, seed=7)] == \
        [r["id"] for r in load_general(tmp_path / "g.csv", 2, seed=7)]


def test_a_broken_line_names_file_and_line_and_nothing_is_scored(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[1]) + "\n{broken\n" + json.dumps(ROWS[2]) + "\n")
    with pytest.raises(RetentionDataError, match=r"g\.jsonl:3: invalid_json"):
        load_general(path, 0)


def test_not_utf8_missing_and_unknown_format_are_named(tmp_path):
    bad = tmp_path / "g.jsonl"
    bad.write_bytes(json.dumps(ROWS[0]).encode() + b"\n" + b'{"instruction": "caf\xe9", "output": "x"}\n')
    with pytest.raises(RetentionDataError, match=r"not valid UTF-8 \(line 2\)"):
        load_general(bad, 0)
    with pytest.raises(RetentionDataError, match="file not found"):
        load_general(tmp_path / "none.json", 0)
    (tmp_path / "g.bin").write_text("instruction output")
    with pytest.raises(RetentionDataError, match="unknown extension '.bin'"):
        load_general(tmp_path / "g.bin", 0)
    (tmp_path / "q.json").write_text(json.dumps([{"question": "no answer field"}]))
    with pytest.raises(RetentionDataError, match="holds no record with an answer"):
        load_general(tmp_path / "q.json", 0)
