"""Blind A/B review in the browser: ``domainft review serve`` (FastAPI + one HTML page, loopback).

Items are those of ``review/key.json`` (written by :func:`domainft.evaluation.review.export_review`
when absent: per-item seeded A/B order, the key never reaches the page). A rater enters a name
(or opens ``/?rater=NAME``), sees the question, the reference and answers A and B, and rates with
the keyboard: ``a`` / ``b`` / ``t`` (tie), ``←`` / ``→`` to move, ``c`` to focus the comment.
Each rater's verdicts are kept apart; a rater who comes back resumes at the first unrated item.

Verdicts are stored in SQLite (``review/verdicts.db``, WAL, synchronous FULL, committed before the
reply): one row per (rater, item) — a double submit or a re-rating updates that row, never adds
one — so a server restart or kill loses no acknowledged verdict. ``domainft review import --db
review/verdicts.db`` turns them into ``metrics/review.json``.

API: ``GET /api/items`` -> ``[{item, question, reference, answer_a, answer_b}]``;
``GET /api/verdicts?rater=R`` -> ``{item: {preference, comment}}``; ``POST /api/verdicts``
``{rater, item, preference: A|B|tie, comment}`` -> ``{saved, rated, total}`` (422 on an unknown
item, a blank rater or another preference).
"""
from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, Field

SCHEMA = """CREATE TABLE IF NOT EXISTS verdicts (rater TEXT NOT NULL, item TEXT NOT NULL,
preference TEXT NOT NULL, comment TEXT NOT NULL DEFAULT '', at TEXT NOT NULL, PRIMARY KEY (rater, item))"""


class VerdictStore:
    """Durable verdicts, one per (rater, item); a new connection per call (safe across threads)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._conn() as c:
            c.execute("PRAGMA journal_mode=WAL")
            c.execute(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        c = sqlite3.connect(self.path, timeout=30)
        c.execute("PRAGMA synchronous=FULL")
        return c

    def save(self, rater: str, item: str, preference: str, comment: str = "") -> None:
        """Insert or replace the verdict of ``rater`` on ``item`` (committed on return)."""
        at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._conn() as c:
            c.execute("INSERT INTO verdicts VALUES (?, ?, ?, ?, ?) ON CONFLICT (rater, item) DO UPDATE SET "
                      "preference = excluded.preference, comment = excluded.comment, at = excluded.at",
                      (rater, item, preference, comment, at))

    def of(self, rater: str) -> dict[str, dict]:
        with self._conn() as c:
            rows = c.execute("SELECT item, preference, comment FROM verdicts WHERE rater = ?", (rater,)).fetchall()
        return {i: {"preference": p, "comment": cm} for i, p, cm in rows}

    def ratings(self) -> list[dict]:
        """Every verdict in the form of :func:`domainft.evaluation.review._read_ratings` rows."""
        with self._conn() as c:
            rows = c.execute("SELECT rater, item, preference, comment FROM verdicts ORDER BY rater, item").fetchall()
        return [{"item": i, "pref": p.lower(), "rater": r, "comment": cm, "where": f"{self.path}:{r}:{i}"}
                for r, i, p, cm in rows]


def load_items(review_dir: str | Path, predictions: str | Path, seed: int = 0, max_items: int = 0) -> list[dict]:
    """Blind items (no key) from ``review_dir/key.json`` and the predictions; the key is written when absent."""
    from domainft.evaluation.review import _question, _read_predictions, export_review

    key_path = Path(review_dir) / "key.json"
    if not key_path.exists():
        export_review(predictions, review_dir, seed, max_items)
    key = json.loads(key_path.read_text(encoding="utf-8"))["items"]
    preds = {r["id"]: r for r in _read_predictions(predictions)}
    items = []
    for item, k in key.items():
        row = preds.get(k["id"])
        if row is None:
            continue
        a, b = (row["tuned_answer"], row["base_answer"]) if k["A"] == "tuned" else (row["base_answer"], row["tuned_answer"])
        items.append({"item": item, "question": _question(row["prompt"]), "reference": row["reference"],
                      "answer_a": a, "answer_b": b})
    return items


class Verdict(BaseModel):
    """Body of ``POST /api/verdicts``."""

    rater: str = Field(min_length=1, max_length=100)
    item: str
    preference: str  # A, B or tie
    comment: str = Field("", max_length=5000)


def create_app(items: list[dict], store: VerdictStore):
    """The FastAPI app over blind ``items`` (:func:`load_items`) and ``store``."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse

    known = {it["item"] for it in items}
    app = FastAPI(title="domainft review")

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE

    @app.get("/api/items")
    def get_items() -> list[dict]:
        return items

    @app.get("/api/verdicts")
    def get_verdicts(rater: str) -> dict:
        return store.of(rater.strip())

    @app.post("/api/verdicts")
    def post_verdict(v: Verdict) -> dict:
        rater, pref = v.rater.strip(), v.preference.strip()
        if not rater:
            raise HTTPException(422, "rater must not be blank")
        if v.item not in known:
            raise HTTPException(422, f"unknown item {v.item!r}")
        if pref.lower() not in ("a", "b", "tie"):
            raise HTTPException(422, "preference must be A, B or tie")
        store.save(rater, v.item, {"a": "A", "b": "B", "tie": "tie"}[pref.lower()], v.comment)
        return {"saved": True, "rated": len(store.of(rater)), "total": len(items)}

    return app


def serve(predictions: str | Path, review_dir: str | Path = "review", seed: int = 0, max_items: int = 0,
          host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the review page until interrupted (SIGINT/SIGTERM)."""
    import uvicorn

    items = load_items(review_dir, predictions, seed, max_items)
    store = VerdictStore(Path(review_dir) / "verdicts.db")
    print(f"review: {len(items)} items at http://{host}:{port}/ (verdicts in {store.path})", flush=True)
    uvicorn.run(create_app(items, store), host=host, port=port, log_level="warning")


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Blind review</title><style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}.row{display:flex;gap:1em}.row>div{flex:1}
pre{white-space:pre-wrap;background:#f6f6f6;padding:.5em}.sel{outline:3px solid #36c}kbd{border:1px solid #999;padding:0 .3em}
</style></head><body><h1>Blind review: which answer is better?</h1>
<p id="login">Rater: <input id="rater" autofocus> <button id="start">Start</button></p>
<div id="main" hidden><p><span id="progress"></span> &middot; rater <b id="who"></b> &middot;
<kbd>a</kbd> A better, <kbd>b</kbd> B better, <kbd>t</kbd> tie, <kbd>&larr;</kbd>/<kbd>&rarr;</kbd> move,
<kbd>c</kbd> comment</p><h3 id="title"></h3><b>Question</b><pre id="question"></pre><b>Reference</b><pre id="reference"></pre>
<div class="row"><div><b>A</b><pre id="a"></pre></div><div><b>B</b><pre id="b"></pre></div></div>
<p><textarea id="comment" rows="2" cols="80" placeholder="comment (optional)"></textarea></p>
<p><button id="btn-a">A better</button> <button id="btn-b">B better</button> <button id="btn-tie">Tie</button>
<span id="status"></span></p><p id="done" hidden>All items rated. Thank you.</p></div>
<script>
let items=[],done={},pos=0,rater="",busy=false;const $=id=>document.getElementById(id);
async function start(name){rater=name.trim();if(!rater)return;localStorage.setItem("rater",rater);
 items=await (await fetch("/api/items")).json();done=await (await fetch("/api/verdicts?rater="+encodeURIComponent(rater))).json();
 $("rater").blur();$("login").hidden=true;$("main").hidden=false;$("who").textContent=rater;const f=items.findIndex(i=>!(i.item in done));
 pos=f<0?0:f;show()}
function show(){const it=items[pos];const n=Object.keys(done).length;$("progress").textContent=n+" / "+items.length+" rated";
 $("done").hidden=n<items.length;$("title").textContent=it.item+" ("+(pos+1)+" of "+items.length+")";
 $("question").textContent=it.question;$("reference").textContent=it.reference;$("a").textContent=it.answer_a;
 $("b").textContent=it.answer_b;const d=done[it.item];$("comment").value=d?d.comment:"";
 for(const [k,v] of [["btn-a","A"],["btn-b","B"],["btn-tie","tie"]])$(k).classList.toggle("sel",!!d&&d.preference===v)}
async function rate(p){if(busy)return;busy=true;const it=items[pos];$("status").textContent="saving...";
 try{const r=await fetch("/api/verdicts",{method:"POST",headers:{"Content-Type":"application/json"},
  body:JSON.stringify({rater:rater,item:it.item,preference:p,comment:$("comment").value})});
  if(!r.ok)throw new Error(await r.text());done[it.item]={preference:p,comment:$("comment").value};$("status").textContent="saved";
  const next=items.findIndex((i,k)=>k>pos&&!(i.item in done));const any=items.findIndex(i=>!(i.item in done));
  pos=next>=0?next:(any>=0?any:pos);show()}catch(e){$("status").textContent="not saved: "+e.message}finally{busy=false}}
$("start").onclick=()=>start($("rater").value);$("rater").onkeydown=e=>{if(e.key==="Enter")start($("rater").value)};
$("btn-a").onclick=()=>rate("A");$("btn-b").onclick=()=>rate("B");$("btn-tie").onclick=()=>rate("tie");
document.addEventListener("keydown",e=>{if($("main").hidden||e.target.tagName==="TEXTAREA"||e.target.tagName==="INPUT")return;
 const k=e.key.toLowerCase();if(k==="a")rate("A");else if(k==="b")rate("B");else if(k==="t")rate("tie");
 else if(k==="c"){e.preventDefault();$("comment").focus()}else if(e.key==="ArrowRight"&&pos<items.length-1){pos++;show()}
 else if(e.key==="ArrowLeft"&&pos>0){pos--;show()}});
$("comment").addEventListener("keydown",e=>{if(e.key==="Escape")$("comment").blur()});
const q=new URLSearchParams(location.search).get("rater")||localStorage.getItem("rater");if(q){$("rater").value=q;start(q)}
</script></body></html>
"""
