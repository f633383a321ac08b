"""The four real datasets go through prepare + split with only their example params.

Skipped when ../shared/real-data is absent (fixture ``real_data_dir``). Each test runs both stages
in a temporary folder and asserts the accounting identity, zero leakage and dataset facts.
"""
from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from domainft.config import parse_params
from domainft.data.prepare import read_records

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def run_example(name: str, real_data_dir: Path, tmp_path: Path, monkeypatch):
    from domainft.stages import prepare as prepare_stage
    from domainft.stages import split as split_stage

    data = yaml.safe_load((ROOT / "examples" / f"{name}.params.yaml").read_text(encoding="utf-8"))
    data["prepare"]["raw_dir"] = str(real_data_dir)
    params = parse_params(data)
    monkeypatch.chdir(tmp_path)
    pm, sm = prepare_stage.run(params), split_stage.run(params)
    [(file, fm)] = pm["files"].items()
    assert fm["accounted"] and fm["read"] == fm["kept"] + fm["rejected"] == pm["totals"]["read"]
    rejects = [json.loads(x) for x in Path("data/processed/rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rejects) == fm["rejected"] == sum(fm["rejected_by_reason"].values())
    assert sum(sm["sizes"].values()) == fm["kept"] and sm["leakage"]["total"] == 0
    splits = {s: read_records(f"data/splits/{s}.jsonl") for s in ("train", "val", "test")}
    return pm, sm, fm, rejects, splits


def _norm(q: str) -> str:
    return re.sub(r"\s+", " ", q).strip().casefold()


def test_bank_faq(real_data_dir, tmp_path, monkeypatch):
    pm, sm, fm, rejects, splits = run_example("bank_faq", real_data_dir, tmp_path, monkeypatch)
    with (real_data_dir / "bank_faq.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert fm["read"] == len(rows) == 1499
    by_q = defaultdict(list)
    for i, row in enumerate(rows):
        by_q[_norm(row["Question"])].append(i)
    repeated = sum(len(v) - 1 for v in by_q.values() if len(v) > 1)  # later copies of a question
    dups = fm["rejected_by_reason"]["exact_duplicate"] + fm["rejected_by_reason"]["near_duplicate"]
    assert repeated >= 300 and dups >= 0.9 * repeated  # most repeats are full duplicates...
    where = defaultdict(set)  # ...and the rest (different answers) never straddle splits
    for name, recs in splits.items():
        for r in recs:
            where[_norm(r.messages[1]["content"])].add(name)
    assert all(len(s) == 1 for s in where.values())
    assert pm["pii"]["phone"] >= 10 and "[PHONE]" in Path("data/processed/records.jsonl").read_text(encoding="utf-8")
    assert set(sm["strata"]) == {"accounts", "cards", "fundstransfer", "insurance", "investments", "loans", "security"}


def test_alpaca_5000(real_data_dir, tmp_path, monkeypatch):
    pm, sm, fm, rejects, splits = run_example("alpaca_5000", real_data_dir, tmp_path, monkeypatch)
    raw = json.loads((real_data_dir / "alpaca_5000.json").read_text(encoding="utf-8"))
    placeholder = [r for r in raw if r["input"].strip() and re.fullmatch(r"[\W_]*(no\s*input(\s+(needed|required))?|n/?a|none)[\W_]*", r["input"].strip(), re.I)]
    assert fm["read"] == 5000 and len(placeholder) >= 34
    assert pm["operators"]["placeholders"]["modified"] == len(placeholder)
    kept = [r for s in splits.values() for r in s]
    assert not any(re.search(r"no\s*input", r.messages[1]["content"], re.I) for r in kept)
    assert fm["rejected_by_reason"]["empty_output"] == sum(1 for r in raw if not r["output"].strip()) == 2
    assert fm["rejected_by_reason"]["merged_instruction"] >= 5
    for r in rejects:  # line = element index in the JSON array: the raw record is that element
        assert raw[r["line"] - 1] == r["raw"]


def test_financebench(real_data_dir, tmp_path, monkeypatch):
    pm, sm, fm, rejects, splits = run_example("financebench", real_data_dir, tmp_path, monkeypatch)
    assert fm["read"] == 150 and fm["kept"] == 150
    company = defaultdict(set)
    for name, recs in splits.items():
        for r in recs:
            company[r.group].add(name)
    assert len(company) == 32 and all(len(s) == 1 for s in company.values())
    assert sum(sm["groups"].values()) == 32 and sm["leakage"]["groups"] == 0
    assert min(sm["sizes"].values()) > 0


def test_lawbench_consult_zh(real_data_dir, tmp_path, monkeypatch):
    pm, sm, fm, rejects, splits = run_example("lawbench_consult_zh", real_data_dir, tmp_path, monkeypatch)
    raw = json.loads((real_data_dir / "lawbench_consult_zh.json").read_text(encoding="utf-8"))
    assert fm["read"] == 500 and fm["kept"] >= 480 and fm["rejected_by_reason"].get("language", 0) == 0
    kept = {r.source["line"]: r for s in splits.values() for r in s}
    for line, r in kept.items():
        src = raw[line - 1]
        assert r.messages[1]["content"].startswith(src["instruction"].strip())
        assert r.messages[-1]["content"].count("，") == src["answer"].count("，")  # full-width kept
    assert pm["pii"].get("phone", 0) + pm["pii"].get("card", 0) + pm["pii"].get("cn_id", 0) <= 3


# ----------------------------------------------------------------------------- PII on a labelled sample
def _labelled_texts(real_data_dir: Path):
    labels = json.loads((ROOT / "tests" / "fixtures" / "pii_labels.json").read_text(encoding="utf-8"))["texts"]
    cache: dict[str, object] = {}
    for item in labels:
        f = item["file"]
        if f not in cache:
            cache[f] = (json.loads((real_data_dir / f).read_text(encoding="utf-8")) if f.endswith(".json") else
                        {r[1]: r[5] for r in csv.reader((real_data_dir / f).open(encoding="utf-8")) if len(r) >= 8})
        data = cache[f]
        text = (data[item["dialog"]]["turns"][item["turn"]]["utterances"][item["utterance"]] if "dialog" in item
                else data[item["tweet_id"]])
        yield text, [tuple(s) for s in item["spans"]]


def pii_scores(redactor_types: list[str], real_data_dir: Path) -> dict[str, dict[str, float]]:
    """Per type: precision and recall of the detector spans against the labels, a predicted span
    counting as correct when it overlaps a labelled span of the same type (lenient match)."""
    from domainft.data.pii import Redactor

    r = Redactor(redactor_types)
    tp_p, n_pred, tp_g, n_gold = defaultdict(int), defaultdict(int), defaultdict(int), defaultdict(int)
    for text, gold in _labelled_texts(real_data_dir):
        pred = [(kind, s, e) for kind in r.types for s, e in r._spans(text, kind)]
        for kind, s, e in pred:
            n_pred[kind] += 1
            tp_p[kind] += any(k == kind and s < ge and gs < e for k, gs, ge in gold)
        for kind, gs, ge in gold:
            n_gold[kind] += 1
            tp_g[kind] += any(k == kind and s < ge and gs < e for k, s, e in pred)
    return {k: {"precision": round(tp_p[k] / n_pred[k], 3) if n_pred[k] else None,
                "recall": round(tp_g[k] / n_gold[k], 3) if n_gold[k] else None, "gold": n_gold[k], "predicted": n_pred[k]}
            for k in sorted(set(n_pred) | set(n_gold))}


def test_pii_precision_recall_on_labelled_sample(real_data_dir):
    scores = pii_scores(["email", "phone", "ip", "handle", "address", "person"], real_data_dir)
    print(json.dumps(scores))
    assert scores["handle"]["gold"] == 46 and scores["handle"]["recall"] >= 0.95 and scores["handle"]["precision"] >= 0.95
    assert scores["address"]["gold"] == 3 and scores["address"]["recall"] >= 0.66 and scores["address"]["precision"] >= 0.66
    assert scores["email"] == {"precision": 1.0, "recall": 1.0, "gold": 1, "predicted": 1}
    assert scores.get("person", {"predicted": 0})["predicted"] <= 2  # no person is labelled: few false alarms
    assert "ip" not in scores and "phone" not in scores  # no false IP or phone in these texts
