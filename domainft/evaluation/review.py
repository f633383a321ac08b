"""Blind human review of base vs tuned answers: in the browser or on a rating sheet; import the ratings.

``domainft review serve`` reviews in the browser (domainft/evaluation/review_app.py; verdicts in
``review/verdicts.db``, imported with ``domainft review import --db review/verdicts.db``).

``domainft review export`` writes, from metrics/predictions.jsonl:

* ``review/sheet.csv``: item, question, reference, answer_a, answer_b, preference (blank; raters
  write A, B or tie), rater, comment;
* ``review/sheet.html``: the same items side by side, self-contained; its form downloads a
  ratings CSV in the same format;
* ``review/key.json``: which of A/B is the tuned model, per item (A/B order drawn per item with a
  seeded RNG). Keep it away from raters.

``domainft review import RATINGS.csv...`` maps preferences back to base/tuned and writes
``metrics/review.json``: human win rate of the tuned model ((wins + ties / 2) / ratings), per-item
majority verdicts, agreement with the LLM judge's verdict (items judged by both) and, with
several raters, their pairwise agreement. It is a separate metrics file so the DVC-produced
eval.json stays untouched.
"""
from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import random
from collections import Counter, defaultdict
from itertools import combinations
from pathlib import Path

from domainft.errors import DomainftError

COLUMNS = ["item", "question", "reference", "answer_a", "answer_b", "preference", "rater", "comment"]


class ReviewError(DomainftError, ValueError):
    """A ratings file or key is malformed (message names file, line and column)."""


def _answers_sha(row: dict) -> str:
    return hashlib.sha256(json.dumps([row["base_answer"], row["tuned_answer"]]).encode()).hexdigest()[:16]


def _read_predictions(path: str | Path) -> list[dict]:
    from domainft.atomic import read_jsonl

    return read_jsonl(path)


def _question(prompt: list[dict]) -> str:
    return "\n\n".join(m["content"] for m in prompt if m["role"] == "user")


def export_review(predictions: str | Path, out_dir: str | Path, seed: int = 0, max_items: int = 0) -> dict[str, Path]:
    """Write sheet.csv, sheet.html and key.json for the first ``max_items`` rows (0 = all).

    Returns:
        {"csv": path, "html": path, "key": path}
    """
    rows = _read_predictions(predictions)[: max_items or None]
    rng = random.Random(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items, key = [], {}
    for n, row in enumerate(rows, 1):
        tuned_is_a = rng.random() < 0.5
        a, b = (row["tuned_answer"], row["base_answer"]) if tuned_is_a else (row["base_answer"], row["tuned_answer"])
        item = f"item-{n:04d}"
        key[item] = {"id": row["id"], "A": "tuned" if tuned_is_a else "base", "answers_sha": _answers_sha(row)}
        items.append({"item": item, "question": _question(row["prompt"]), "reference": row["reference"],
                      "answer_a": a, "answer_b": b, "preference": "", "rater": "", "comment": ""})
    paths = {"csv": out / "sheet.csv", "html": out / "sheet.html", "key": out / "key.json"}
    with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(items)
    paths["html"].write_text(_html(items), encoding="utf-8")
    paths["key"].write_text(json.dumps({"seed": seed, "predictions": str(predictions), "items": key}, indent=1),
                            encoding="utf-8")
    return paths


def _html(items: list[dict]) -> str:
    e = html.escape
    cards = []
    for it in items:
        radios = "".join(f"<label><input type=radio name='{it['item']}' value='{v}'> {v}</label> " for v in ("A", "B", "tie"))
        cards.append(
            f"<div class=item data-item='{it['item']}'><h3>{it['item']}</h3><b>Question</b><pre>{e(it['question'])}</pre>"
            f"<b>Reference</b><pre>{e(it['reference'])}</pre><div class=row><div><b>A</b><pre>{e(it['answer_a'])}</pre></div>"
            f"<div><b>B</b><pre>{e(it['answer_b'])}</pre></div></div>{radios}<input class=c placeholder=comment></div>")
    script = """function dl(){const q=s=>'"'+String(s).replace(/"/g,'""')+'"';const r=document.getElementById('rater').value;
let out='item,preference,rater,comment\\n';document.querySelectorAll('.item').forEach(d=>{const i=d.dataset.item;
const c=d.querySelector('input[name="'+i+'"]:checked');out+=[i,c?c.value:'',r,d.querySelector('.c').value].map(q).join(',')+'\\n'});
const a=document.createElement('a');a.href=URL.createObjectURL(new Blob([out],{type:'text/csv'}));a.download='ratings.csv';a.click()}"""
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Blind review</title><style>"
            "body{font-family:system-ui,sans-serif;margin:2em}.row{display:flex;gap:1em}.row>div{flex:1}"
            "pre{white-space:pre-wrap;background:#f6f6f6;padding:.5em}.item{border-top:2px solid #999;margin:1.5em 0}"
            f"</style></head><body><h1>Blind review: which answer is better?</h1><p>Rater: <input id=rater>"
            f" <button onclick='dl()'>Download ratings CSV</button></p>{''.join(cards)}<script>{script}</script>"
            "</body></html>\n")


def _read_ratings(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ReviewError(f"{path}: not UTF-8 at byte {err.start}; save the sheet as UTF-8 CSV") from None
    try:
        return _parse_ratings(path, text)
    except csv.Error as err:
        raise ReviewError(f"{path}: not a readable CSV ({err})") from None


def _parse_ratings(path: Path, text: str) -> list[dict]:
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f, strict=True)
        missing = {"item", "preference"} - set(reader.fieldnames or [])
        if missing:
            raise ReviewError(f"{path}: missing column(s) {sorted(missing)}")
        out = []
        for line, rec in enumerate(reader, 2):
            pref = (rec.get("preference") or "").strip().lower()
            if pref not in ("", "a", "b", "tie"):
                raise ReviewError(f"{path}:{line}: column 'preference' must be A, B or tie, got {rec['preference']!r}")
            out.append({"item": rec["item"].strip(), "pref": pref, "rater": (rec.get("rater") or path.stem).strip(),
                        "where": f"{path}:{line}"})
        return out


def import_review(ratings: list[str | Path], key_path: str | Path, predictions: str | Path,
                  db: str | Path | None = None) -> dict:
    """Turn rating CSVs and/or the browser review's verdict store into ``human.*`` metrics.

    Args:
        ratings: rating CSVs (columns item, preference[, rater, comment]).
        db: SQLite verdict store of ``domainft review serve`` (domainft/evaluation/review_app.py);
            one verdict per (rater, item), the last one given.

    Returns:
        ``human.*`` figures (see the module docstring) and ``human.verdicts``: prediction id ->
        majority verdict (base, tuned or tie) of the items that are not stale.

    Raises:
        ReviewError: bad preference value, unknown item, missing column, a file that is not UTF-8
            CSV, a key that is not review export's key.json, a verdict store that is not SQLite.
    """
    try:
        key = json.loads(Path(key_path).read_text(encoding="utf-8"))["items"]
        if not isinstance(key, dict):
            raise TypeError
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise ReviewError(f"{key_path}: not a key.json of `domainft review export` (JSON with an 'items' "
                          "object)") from None
    preds = {r["id"]: r for r in _read_predictions(predictions)}
    votes: dict[str, dict[str, str]] = defaultdict(dict)  # item -> rater -> base|tuned|tie
    unrated = 0
    sources = [_read_ratings(Path(path)) for path in ratings]
    if db is not None:
        from domainft.evaluation.review_app import VerdictStore

        import sqlite3

        try:
            sources.append(VerdictStore(db).ratings())
        except sqlite3.DatabaseError as err:
            raise ReviewError(f"{db}: not a verdict store of `domainft review serve` ({err})") from None
    for rows in sources:
        for r in rows:
            if r["item"] not in key:
                raise ReviewError(f"{r['where']}: column 'item' names unknown item {r['item']!r}")
            if not r["pref"]:
                unrated += 1
                continue
            a = key[r["item"]]["A"]
            votes[r["item"]][r["rater"]] = {"a": a, "b": "base" if a == "tuned" else "tuned", "tie": "tie"}[r["pref"]]
    all_votes = [v for rv in votes.values() for v in rv.values()]
    c = Counter(all_votes)
    m: dict = {"human.ratings": len(all_votes), "human.items": len(votes), "human.unrated": unrated,
               "human.wins": c["tuned"], "human.ties": c["tie"], "human.losses": c["base"]}
    if all_votes:
        m["human.win_rate"] = (c["tuned"] + 0.5 * c["tie"]) / len(all_votes)
    agree, judged, stale = 0, 0, 0
    verdicts: dict[str, str] = {}
    for item, rv in votes.items():
        top = Counter(rv.values()).most_common()
        verdict = top[0][0] if len(top) == 1 or top[0][1] > top[1][1] else "tie"
        row = preds.get(key[item]["id"])
        if row is None or _answers_sha(row) != key[item]["answers_sha"]:
            stale += 1
            continue
        verdicts[str(key[item]["id"])] = verdict
        jv = (row.get("judge") or {}).get("verdict")
        if jv is not None:
            judged += 1
            agree += jv == verdict
    m["human.stale_items"] = stale
    m["human.verdicts"] = verdicts
    m["human.judge_agreement_n"] = judged
    if judged:
        m["human.judge_agreement"] = agree / judged
    pairs = [(x, y) for rv in votes.values() for x, y in combinations(rv.values(), 2)]
    if pairs:
        m["human.inter_rater_agreement"] = sum(x == y for x, y in pairs) / len(pairs)
    return m
