"""prepare and split stages: outputs appear whole (temporary folder renamed), a truncated input is refused."""
import json

import pytest

from domainft.atomic import IncompleteOutputError
from domainft.config import parse_params


@pytest.fixture()
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    import hashlib

    h = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(60)]  # no two rows near-duplicates
    rows = [{"instruction": f"What does status code {x[:20]} mean?",
             "output": f"Code {x[20:44]} means the transfer {x[44:]} is on hold."} for x in h]
    (raw / "faq.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path, parse_params({"prepare": {"workers": 1}, "split": {"test_fraction": 0.2}})


def test_prepare_then_split_write_whole_folders_and_split_refuses_a_truncated_input(project):
    from domainft.stages import prepare, split

    root, params = project
    m = prepare.run(params)
    processed = root / "data" / "processed"
    assert sorted(p.name for p in processed.iterdir()) == ["MANIFEST.json", "records.jsonl", "rejects.jsonl"]
    manifest = json.loads((processed / "MANIFEST.json").read_text())
    assert manifest["records.jsonl"]["bytes"] == (processed / "records.jsonl").stat().st_size
    assert m["totals"]["kept"] == 60
    s = split.run(params)
    splits = root / "data" / "splits"
    assert sorted(p.name for p in splits.iterdir()) == ["MANIFEST.json", "test.jsonl", "train.jsonl", "val.jsonl"]
    assert sum(s["sizes"].values()) == 60
    assert not [p for p in (root / "data").iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    # records.jsonl cut at a line boundary (a full disk, an interrupted copy): a valid, shorter JSONL
    records = processed / "records.jsonl"
    lines = records.read_bytes().splitlines(keepends=True)
    records.write_bytes(b"".join(lines[:40]))
    before = (splits / "train.jsonl").read_bytes()
    with pytest.raises(IncompleteOutputError, match=r"records\.jsonl is truncated: \d+ bytes, but \d+ were written"):
        split.run(params)
    assert (splits / "train.jsonl").read_bytes() == before  # the previous splits are untouched
