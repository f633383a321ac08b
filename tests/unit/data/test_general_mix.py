"""split.general_mix: general instruction data in the train split only, seeded, the retention sample held out."""
import hashlib
import json

import pytest

from conftest import sentence

from domainft.config import parse_params
from domainft.data.general_mix import GeneralMixError, prompt_key
from domainft.evaluation.retention import load_general

N_GENERAL = 120


def general_rows(n: int = N_GENERAL) -> list[dict]:
    return [{"instruction": sentence(7000 + i, 8) + "?", "input": "", "output": sentence(9000 + i, 16)}
            for i in range(n)]


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """60 domain FAQ records prepared (data/processed) and a general alpaca JSON array file."""
    from domainft.stages import prepare

    monkeypatch.chdir(tmp_path)
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    h = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(60)]
    rows = [{"instruction": f"What does status code {x[:20]} mean?",
             "output": f"Code {x[20:44]} means the transfer {x[44:]} is on hold."} for x in h]
    (raw / "faq.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    prepare.run(parse_params({"prepare": {"workers": 1}}))
    general = tmp_path / "general.json"
    general.write_text(json.dumps(general_rows()))
    return tmp_path, general


def params(general="", weight=0.0, seed=42, retention="", on_error="skip", max_samples=10):
    return parse_params({"prepare": {"workers": 1, "on_error": on_error},
                         "split": {"test_fraction": 0.2, "general_mix": {"path": str(general), "weight": weight,
                                                                         "seed": seed}},
                         "evaluate": {"retention": {"path": str(retention), "max_samples": max_samples}}})


def split_files(root) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "data" / "splits").iterdir())}


def rows_of(data: bytes) -> list[dict]:
    return [json.loads(x) for x in data.splitlines()]


def test_weight_zero_writes_the_same_bytes_as_no_mix_block(project):
    from domainft.stages import split

    root, general = project
    m0 = split.run(params())
    before = split_files(root)
    m1 = split.run(params(general, 0.0))  # a path, but weight 0: off
    assert split_files(root) == before
    assert sorted(before) == ["MANIFEST.json", "test.jsonl", "train.jsonl", "val.jsonl"]
    assert "general_mix" not in m0 and "general_mix" not in m1
    assert m0["sizes"] == m1["sizes"]


def test_mix_adds_weight_x_train_general_records_to_train_only(project):
    from domainft.stages import split

    root, general = project
    m0 = split.run(params())
    plain = split_files(root)
    m = split.run(params(general, 0.5))
    mixed = split_files(root)
    n_train = m0["sizes"]["train"]
    assert m["sizes"] == m0["sizes"] and n_train == 35  # sizes and fractions: the domain records
    g = m["general_mix"]
    assert g["asked"] == g["mixed"] == 18  # 0.5 x 35, half up
    assert g["read"] == N_GENERAL and g["rejected"] == 0 and g["candidates"] == N_GENERAL
    assert g["excluded"] == {"retention": 0, "duplicate": 0, "domain_prompt": 0}
    assert g["train_total"] == 53 and g["share"] == round(18 / 53, 4) and g["short"] is False
    assert mixed["val.jsonl"] == plain["val.jsonl"] and mixed["test.jsonl"] == plain["test.jsonl"]
    assert mixed["train.jsonl"].startswith(plain["train.jsonl"])  # domain lines first, unchanged
    train = rows_of(mixed["train.jsonl"])
    extra = train[n_train:]
    assert len(train) == 53 and all(r["meta"]["general"] is True for r in extra)
    assert not any(r["meta"].get("general") for r in train[:n_train])
    assert all(r["source"]["file"] == str(general) and r["cluster"] == f"general:{r['id']}" for r in extra)
    assert [r["source"]["line"] for r in extra] == sorted(r["source"]["line"] for r in extra)  # file order
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in extra)  # no system prompt added
    assert m["leakage"]["total"] == 0
    assert sorted(mixed) == ["MANIFEST.json", "general_rejects.jsonl", "test.jsonl", "train.jsonl", "val.jsonl"]
    assert mixed["general_rejects.jsonl"] == b""


def test_mix_is_seeded_and_deterministic(project):
    from domainft.stages import split

    root, general = project
    split.run(params(general, 0.5, seed=1))
    first = split_files(root)["train.jsonl"]
    split.run(params(general, 0.5, seed=1))
    assert split_files(root)["train.jsonl"] == first
    split.run(params(general, 0.5, seed=2))
    other = split_files(root)["train.jsonl"]
    lines = {r["source"]["line"] for r in rows_of(first) if r["meta"].get("general")}
    lines2 = {r["source"]["line"] for r in rows_of(other) if r["meta"].get("general")}
    assert len(lines) == len(lines2) == 18 and lines != lines2
    # a record's rank is its own content's: appending general records keeps or displaces, never reshuffles
    general.write_text(json.dumps(general_rows() + general_rows(200)[N_GENERAL:]))
    split.run(params(general, 0.5, seed=1))
    lines3 = {r["source"]["line"] for r in rows_of(split_files(root)["train.jsonl"]) if r["meta"].get("general")}
    assert {x for x in lines3 if x <= N_GENERAL} <= lines


def test_the_retention_sample_is_never_mixed(project):
    from domainft.stages import split

    root, general = project
    held = {prompt_key(r["messages"]) for r in load_general(general, 10, 42)}  # domain.seed 42, as evaluate
    assert len(held) == 10
    m = split.run(params(general, 4.0, retention=general, max_samples=10))  # asks more than there is
    g = m["general_mix"]
    assert g["excluded"]["retention"] == 10 and g["candidates"] == N_GENERAL - 10
    assert g["asked"] == 140 and g["mixed"] == N_GENERAL - 10 and g["short"] is True
    mixed = [r for r in rows_of(split_files(root)["train.jsonl"]) if r["meta"].get("general")]
    assert len(mixed) == 110 and not {prompt_key(r["messages"]) for r in mixed} & held


def test_bad_general_records_are_rejected_with_file_and_line(project):
    from domainft.stages import split

    root, general = project
    rows = general_rows(10) + [42, {"instruction": "Say hi?", "input": "", "output": ""},
                               {"instruction": sentence(7001, 8) + "?", "input": "", "output": sentence(9001, 16)},
                               {"instruction": "Short?", "output": "Too short."}]
    general.write_text(json.dumps(rows))
    m = split.run(params(general, 1.0))
    g = m["general_mix"]
    assert g["read"] == 14 and g["rejected"] == 3 and g["excluded"]["duplicate"] == 1 and g["mixed"] == 10
    assert g["rejected_by_reason"] == {"empty_output": 1, "length": 1, "not_an_object": 1}
    rejects = rows_of(split_files(root)["general_rejects.jsonl"])
    assert [(r["file"], r["line"], r["reason"]) for r in rejects] == [
        (str(general), 11, "not_an_object"), (str(general), 12, "empty_output"), (str(general), 14, "length")]
    with pytest.raises(GeneralMixError, match=rf"^{general}:11: not_an_object: "):
        split.run(params(general, 1.0, on_error="fail"))


def test_missing_file_and_weight_without_path_are_named(project):
    from domainft.config import ParamsError
    from domainft.stages import split

    root, _ = project
    with pytest.raises(GeneralMixError, match=r"split\.general_mix\.path: file not found: nope\.json"):
        split.run(params("nope.json", 0.5))
    with pytest.raises(ParamsError, match=r"general_mix\.weight > 0 needs general_mix\.path"):
        params("", 0.5)
