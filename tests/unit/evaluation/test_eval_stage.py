"""The `evaluate` stage end to end on tiny models: eval.json layout, predictions, plots, report."""
from __future__ import annotations

import csv
import json
import shutil

import pytest

from domainft.config import parse_params
from domainft.evaluation.run import EvalDataError, load_test
from domainft.stages.evaluate import run


def _project(tmp_path, base_dir, tuned_dir, records):
    shutil.copytree(base_dir, tmp_path / "models/base")
    shutil.copytree(tuned_dir, tmp_path / "models/merged")
    (tmp_path / "data/splits").mkdir(parents=True)
    (tmp_path / "data/splits/test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_stage_writes_all_outputs(tmp_path, monkeypatch, tiny_model_dir, varied_model_dir, make_records):
    records = make_records(6)
    _project(tmp_path, tiny_model_dir, varied_model_dir, records)
    monkeypatch.chdir(tmp_path)
    params = parse_params({"evaluate": {"max_new_tokens": 6, "batch_size": 4, "bootstrap_samples": 100, "report_worst": 3}})
    metrics = run(params)
    on_disk = json.loads((tmp_path / "metrics/eval.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    for m in ("rouge_l", "bleu", "chrf", "exact_match", "response_ppl"):
        for f in ("base", "tuned", "delta", "delta_ci_low", "delta_ci_high"):
            assert isinstance(on_disk[f"{m}.{f}"], float), f"{m}.{f}"
        assert on_disk[f"{m}.wins"] + on_disk[f"{m}.ties"] + on_disk[f"{m}.losses"] == 6
        assert on_disk[f"{m}.delta_ci_low"] <= on_disk[f"{m}.delta"] + 1e-9 or m == "response_ppl"
    assert on_disk["n_samples"] == 6 and on_disk["language"] == "en"
    assert on_disk["judge.status"] == "skipped" and "enabled" in on_disk["judge.reason"]
    # A random 49k-vocab model is near uniform: perplexity of the order of the vocabulary; the
    # noisy copy is much worse, and every sample says so.
    assert 1_000 < on_disk["response_ppl.base"] < 500_000
    assert on_disk["response_ppl.tuned"] > on_disk["response_ppl.base"] and on_disk["response_ppl.losses"] == 6
    assert on_disk["answer_tokens.base"] == on_disk["answer_tokens.tuned"] == 6.0

    rows = [json.loads(x) for x in (tmp_path / "metrics/predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in records]
    assert rows[0]["reference"] == records[0]["messages"][-1]["content"]
    assert set(rows[0]["scores"]) == {"rouge_l", "bleu", "chrf", "exact_match", "response_ppl"}
    assert rows[0]["base_answer"] != rows[0]["tuned_answer"]

    per_metric = json.loads((tmp_path / "metrics/plots/eval_per_metric.json").read_text())
    assert [p["label"] for p in per_metric[:3]] == ["rouge_l base", "rouge_l tuned", "bleu base"]
    assert per_metric[3]["value"] == per_metric[3]["raw"] / 100 and per_metric[3]["raw"] == on_disk["bleu.tuned"]
    with open(tmp_path / "metrics/plots/answer_lengths.csv") as f:
        hist = list(csv.DictReader(f))
    assert sum(int(h["tuned"]) for h in hist) == sum(int(h["reference"]) for h in hist) == 6
    report = (tmp_path / "metrics/report.html").read_text()
    assert "<table>" in report and "response_ppl" in report and "http" not in report.lower().replace("<!doctype html>", "")


def test_same_model_gives_zero_deltas(tmp_path, monkeypatch, varied_model_dir, make_records):
    _project(tmp_path, varied_model_dir, varied_model_dir, make_records(4))
    monkeypatch.chdir(tmp_path)
    m = run(parse_params({"evaluate": {"max_new_tokens": 4, "bootstrap_samples": 100, "max_samples": 3}}))
    assert m["n_samples"] == 3
    for k in ("rouge_l", "chrf", "response_ppl"):
        assert m[f"{k}.delta"] == 0.0 and m[f"{k}.ties"] == 3
        assert m[f"{k}.delta_ci_low"] == m[f"{k}.delta_ci_high"] == 0.0


@pytest.mark.parametrize("line,needle", [
    ("{not json", "invalid JSON"),
    ('{"messages": []}', "'id' missing"),
    ('{"id": "a", "messages": [{"role": "user", "content": "q"}]}', "end with a non-empty assistant"),
    ('{"id": "a", "messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "x"}]}', "no user turn"),
])
def test_bad_test_record_names_file_and_line(tmp_path, make_records, line, needle):
    good = json.dumps(make_records(1)[0])
    path = tmp_path / "test.jsonl"
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(EvalDataError, match=rf"test.jsonl:2: .*{needle}"):
        load_test(path)
    with pytest.raises(EvalDataError, match=r"test.jsonl:2: "):  # a sample reads (and checks) every line
        load_test(path, max_samples=1)


def test_overlap_with_train_is_reported_and_progress_is_logged(tmp_path, monkeypatch, caplog, tiny_model_dir):
    import logging

    topics = ["wire transfers abroad", "a lost debit card", "overdraft protection", "mortgage prepayment",
              "student savings accounts", "cheque deposits by phone", "foreign currency cash", "closing a joint account",
              "credit limit increases", "safe deposit boxes", "standing orders", "business loan collateral"]
    records = [{"id": f"r{i:02d}", "messages": [
        {"role": "user", "content": f"How does the bank handle {t}? Explain the rules in detail."},
        {"role": "assistant", "content": f"For {t}, the bank follows its published policy number {i * 7}."}]}
        for i, t in enumerate(topics)]
    _project(tmp_path, tiny_model_dir, tiny_model_dir, records[:8])
    near = json.loads(json.dumps(records[5]))
    near["id"] = "near"
    near["messages"][-1]["content"] = near["messages"][-1]["content"].replace("policy", "policy,")
    train = [records[1], records[3], near] + records[8:]  # 2 exact copies, 1 near copy, 4 unrelated
    (tmp_path / "data/splits/train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)
    m = run(parse_params({"evaluate": {"max_new_tokens": 3, "batch_size": 4, "bootstrap_samples": 100,
                                       "progress_every": 0.5}}))
    assert m["overlap.exact_conversations"] == 2 and m["overlap.near_conversations"] >= 1
    assert m["overlap.total"] == 3 and m["overlap.reference_rows"] == 7
    assert m["overlap.row_ids"] == sorted([records[1]["id"], records[3]["id"], records[5]["id"]])
    assert m["overlap.missing"] == ["data/splits/val.jsonl"]
    lines = [r.getMessage() for r in caplog.records if r.name == "domainft.progress"]
    assert [x.split(" (")[0] for x in lines if x.startswith("generate base")] == ["generate base: 50%", "generate base: 100%"]
    assert any(x.startswith("generate tuned: 100% (8/8)") and "ETA 0 s" in x for x in lines)
    assert "3 evaluated rows overlap train/val" in caplog.text


def _grouped(n_groups, per_group):
    return [{"id": f"{g}-{k}", "group": f"doc{g}"} for g in range(n_groups) for k in range(per_group)]


def test_spread_sample_covers_groups_not_the_head():
    from domainft.evaluation.run import spread_sample

    recs = _grouped(10, 6)  # 60 records, 10 documents in file order (the head is one document)
    s = spread_sample(recs, 12, seed=42)
    groups = [r["group"] for r in s]
    assert len(s) == 12 and len(set(groups)) == 10  # every group before any group twice
    assert max(groups.count(g) for g in set(groups)) == 2 and sorted(groups.count(g) for g in set(groups))[:8] == [1] * 8
    assert [recs.index(r) for r in s] == sorted(recs.index(r) for r in s)  # file order kept
    assert spread_sample(recs, 12, seed=42) == s  # deterministic
    assert spread_sample(recs, 12, seed=7) != s  # seeded
    assert spread_sample(recs, 0) == recs and spread_sample(recs, 100) == recs
    solo = [{"id": str(i)} for i in range(50)]  # no group: each record its own unit, hashed order
    picked = [int(r["id"]) for r in spread_sample(solo, 10, seed=1)]
    assert len(picked) == 10 and picked != list(range(10)) and max(picked) >= 25


def test_load_test_max_samples_is_the_spread_sample(tmp_path):
    from domainft.evaluation.run import spread_sample

    recs = [{"id": f"r{i}", "group": f"doc{i // 5}", "messages": [{"role": "user", "content": f"q{i}"},
            {"role": "assistant", "content": f"a{i}"}]} for i in range(40)]
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    got = load_test(path, max_samples=8, seed=3)
    assert [r["id"] for r in got] == [r["id"] for r in spread_sample(recs, 8, seed=3)]
    assert len({r["group"] for r in got}) == 8  # 8 documents, not the first 8 records (2 documents)


def test_evaluate_stage_cuts_long_sources_like_training_and_counts_them(tmp_path, monkeypatch, tiny_model_dir):
    source = " ".join(f"Line {i}: the patient reports symptom {i}." for i in range(60))
    records = [{"id": f"r{i}", "group": f"enc{i}", "messages": [
        {"role": "user", "content": (source if i < 3 else "Short visit.") + f"\n\nWrite note {i}."},
        {"role": "assistant", "content": f"Stable {i}, review in {i + 1} weeks."}]} for i in range(5)]
    _project(tmp_path, tiny_model_dir, tiny_model_dir, records)
    monkeypatch.chdir(tmp_path)
    m = run(parse_params({"train": {"max_seq_length": 200, "overlong": "trim_source", "source_cut": "middle"},
                          "evaluate": {"max_new_tokens": 8, "batch_size": 4, "bootstrap_samples": 100}}))
    assert m["long_source.policy"] == "trim_source/middle" and m["long_source.prompt_budget"] == 192
    assert m["long_source.trimmed_prompts"] == 3 and m["long_source.overlong_prompts"] == 0
    assert m["long_source.cut_tokens_mean"] > 200
    rows = [json.loads(x) for x in (tmp_path / "metrics/predictions.jsonl").read_text().splitlines()]
    assert [r["prompt_cut_tokens"] > 0 for r in rows] == [True, True, True, False, False]
    m = run(parse_params({"train": {"max_seq_length": 200}, "evaluate": {"max_new_tokens": 8, "batch_size": 4,
                                                                          "bootstrap_samples": 100}}))
    assert (m["long_source.policy"], m["long_source.trimmed_prompts"], m["long_source.overlong_prompts"]) == ("none", 0, 3)


def test_spread_sample_gives_every_source_file_its_share():
    """Like the medical test split: 181 MTS-Dialog train, 15 valid, 5 + 4 ACI-Bench records."""
    from collections import Counter

    from domainft.evaluation.run import spread_sample

    sizes = {"mts_train.csv": 181, "mts_valid.csv": 15, "aci_train.csv": 5, "aci_valid.csv": 4}
    recs = [{"id": f"{f}-{i}", "group": f"{f}:{i // 2}", "source": {"file": f}} for f, k in sizes.items() for i in range(k)]
    got = Counter(r["source"]["file"] for r in spread_sample(recs, 24, seed=42))
    assert got == {"mts_train.csv": 21, "mts_valid.csv": 1, "aci_train.csv": 1, "aci_valid.csv": 1}  # 21.2, 1.8, 0.6, 0.5 of 24: at least one each
    assert Counter(r["source"]["file"] for r in spread_sample(recs, 3, seed=42)) == {
        "mts_train.csv": 1, "mts_valid.csv": 1, "aci_train.csv": 1}  # fewer samples than files: the largest
    s = spread_sample(recs, 100, seed=5)
    by = Counter(r["source"]["file"] for r in s)
    assert len(s) == 100 and by["aci_train.csv"] >= 2 and by["aci_valid.csv"] >= 1 and sum(by.values()) == 100
    mts = [r for r in s if r["source"]["file"] == "mts_train.csv"]
    assert len({r["group"] for r in mts}) == len(mts)  # 91 groups of 2: none twice before all once
