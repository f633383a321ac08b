"""Atomic outputs: a failed write leaves the old output; a manifest tells a truncated input."""
import pytest

from domainft.atomic import (MANIFEST, IncompleteOutputError, atomic_dir, atomic_file, check_complete,
                             read_jsonl, write_manifest, write_text_atomic)
from domainft.errors import DomainftError


def test_atomic_file_keeps_the_old_content_when_the_write_fails(tmp_path):
    f = write_text_atomic(tmp_path / "m.json", "old\n")
    with pytest.raises(RuntimeError), atomic_file(f) as out:
        out.write("half of the new")
        raise RuntimeError("killed")
    assert f.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]
    with atomic_file(f, "wb") as out:
        out.write(b"new\n")
    assert f.read_bytes() == b"new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_atomic_dir_replaces_the_whole_folder_or_nothing(tmp_path):
    d = tmp_path / "splits"
    with atomic_dir(d) as tmp:
        (tmp / "train.jsonl").write_text("a\n")
        (tmp / "stale.jsonl").write_text("x\n")
    with pytest.raises(RuntimeError), atomic_dir(d) as tmp:
        (tmp / "train.jsonl").write_text("b")
        raise RuntimeError("killed")
    assert sorted(p.name for p in d.iterdir()) == ["stale.jsonl", "train.jsonl"]
    assert (d / "train.jsonl").read_text() == "a\n"
    with atomic_dir(d) as tmp:
        (tmp / "train.jsonl").write_text("c\n")
    assert sorted(p.name for p in d.iterdir()) == ["train.jsonl"]  # old files do not survive a rewrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["splits"]  # no temporary folder left


def test_check_complete_refuses_a_truncated_file_with_sizes_and_a_remedy(tmp_path):
    f = tmp_path / "records.jsonl"
    f.write_text('{"a": 1}\n{"a": 2}\n')
    check_complete(f)  # no manifest: unchecked
    write_manifest(tmp_path, ["records.jsonl"])
    check_complete(f)
    f.write_text('{"a": 1}\n')  # cut at a line boundary: still valid JSONL
    with pytest.raises(IncompleteOutputError) as err:
        check_complete(f)
    assert isinstance(err.value, DomainftError)
    assert "is truncated: 9 bytes, but 18 were written" in str(err.value) and MANIFEST in str(err.value)


def test_read_jsonl_reads_whole_outputs_and_refuses_a_truncated_one(tmp_path):
    """The one JSONL reader of pipeline outputs (splits, predictions: train, merge, review, preference)."""
    f = tmp_path / "predictions.jsonl"
    f.write_text('{"id": 1}\n\n{"id": 2}\n')
    write_manifest(tmp_path, ["predictions.jsonl"])
    assert read_jsonl(f) == [{"id": 1}, {"id": 2}]
    f.write_text('{"id": 1}\n')  # cut after the first row
    with pytest.raises(IncompleteOutputError, match="truncated"):
        read_jsonl(f)
