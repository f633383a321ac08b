"""Blind review export/import through the real CLI (click's CliRunner)."""
from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from domainft.cli import cli
from domainft.evaluation.review import ReviewError, import_review


def _predictions(path, n=8):
    rows = []
    for i in range(n):
        rows.append({"id": f"id{i}", "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": f"Q{i}?"}],
                     "reference": f"R{i}", "base_answer": f"base {i}", "tuned_answer": f"tuned {i}",
                     "judge": {"verdict": "tuned" if i < 6 else "base"}})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _rate(sheet, out, prefer_tuned: set[int], rater: str, tie: set[int] = frozenset(), blank: set[int] = frozenset()):
    with open(sheet) as f:
        items = list(csv.DictReader(f))
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(items[0]))
        w.writeheader()
        for n, it in enumerate(items):
            tuned_letter = "A" if it["answer_a"].startswith("tuned") else "B"
            base_letter = "B" if tuned_letter == "A" else "A"
            it["preference"] = "" if n in blank else "tie" if n in tie else tuned_letter if n in prefer_tuned else base_letter
            it["rater"] = rater
            w.writerow(it)


def test_export_is_blind_and_import_scores(tmp_path):
    preds = tmp_path / "predictions.jsonl"
    _predictions(preds)
    runner = CliRunner()
    res = runner.invoke(cli, ["review", "export", "--predictions", str(preds), "--out", str(tmp_path / "rv"), "--seed", "3"])
    assert res.exit_code == 0, res.output
    sheet = list(csv.DictReader(open(tmp_path / "rv/sheet.csv")))
    key = json.loads((tmp_path / "rv/key.json").read_text())["items"]
    assert len(sheet) == 8 and "tuned" not in " ".join(sheet[0])  # no column names the model
    a_is_tuned = [key[s["item"]]["A"] == "tuned" for s in sheet]
    assert 0 < sum(a_is_tuned) < 8  # order randomised per item
    assert all((s["answer_a"].startswith("tuned")) == t for s, t in zip(sheet, a_is_tuned))
    html = (tmp_path / "rv/sheet.html").read_text()
    assert "item-0008" in html and html.count("<pre>") == 8 * 4 and "data-item=" in html

    # Rater 1 prefers tuned on items 0-4, ties 5, base on 6-7; rater 2 leaves item 7 blank and prefers tuned on 0-5.
    _rate(tmp_path / "rv/sheet.csv", tmp_path / "r1.csv", {0, 1, 2, 3, 4}, "ann", tie={5})
    _rate(tmp_path / "rv/sheet.csv", tmp_path / "r2.csv", {0, 1, 2, 3, 4, 5}, "bob", blank={7})
    out = tmp_path / "review.json"
    res = runner.invoke(cli, ["review", "import", str(tmp_path / "r1.csv"), str(tmp_path / "r2.csv"),
                              "--key", str(tmp_path / "rv/key.json"), "--predictions", str(preds), "--out", str(out)])
    assert res.exit_code == 0, res.output
    m = json.loads(out.read_text())
    assert (m["human.ratings"], m["human.unrated"], m["human.items"]) == (15, 1, 8)
    assert (m["human.wins"], m["human.ties"], m["human.losses"]) == (11, 1, 3)
    assert m["human.win_rate"] == pytest.approx(11.5 / 15)
    # Majority verdicts: 0-4 tuned, 5 tie (ann tie vs bob tuned), 6-7 base; judge says 0-5 tuned, 6-7 base.
    assert m["human.judge_agreement_n"] == 8 and m["human.judge_agreement"] == pytest.approx(7 / 8)
    assert m["human.inter_rater_agreement"] == pytest.approx(6 / 7)


def test_bad_rating_names_file_line_and_column(tmp_path):
    preds = tmp_path / "p.jsonl"
    _predictions(preds, 2)
    CliRunner().invoke(cli, ["review", "export", "--predictions", str(preds), "--out", str(tmp_path / "rv")])
    bad = tmp_path / "bad.csv"
    bad.write_text("item,preference\nitem-0001,A\nitem-0002,maybe\n")
    with pytest.raises(ReviewError, match=r"bad.csv:3: column 'preference'"):
        import_review([bad], tmp_path / "rv/key.json", preds)
    bad.write_text("item,preference\nitem-0099,A\n")
    res = CliRunner().invoke(cli, ["review", "import", str(bad), "--key", str(tmp_path / "rv/key.json"),
                                   "--predictions", str(preds), "--out", str(tmp_path / "x.json")])
    assert res.exit_code != 0 and "unknown item 'item-0099'" in res.output
    # Predictions re-generated after export: judge agreement is not computed on stale answers.
    good = tmp_path / "good.csv"
    good.write_text("item,preference\nitem-0001,A\nitem-0002,B\n")
    rows = [json.loads(x) for x in preds.read_text().splitlines()]
    rows[0]["tuned_answer"] = "changed"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = import_review([good], tmp_path / "rv/key.json", preds)
    assert m["human.stale_items"] == 1 and m["human.judge_agreement_n"] == 1
