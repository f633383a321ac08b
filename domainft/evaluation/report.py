"""Plot data for ``dvc plots`` and a self-contained HTML report of one evaluation run.

Files:

* ``plots/eval_per_metric.json``: one row per (text metric, model):
  ``{"label": "rouge_l tuned", "metric", "model", "value", "raw"}``; ``value`` is on a 0-1 scale
  (BLEU and chrF divided by 100) so one bar chart holds them; perplexity is left out (its scale
  would flatten the others). dvc.yaml: ``{template: bar_horizontal, x: value, y: label}``.
* ``plots/answer_lengths.csv``: histogram of answer lengths in characters, one row per bin
  (``length_chars`` = bin start, counts for reference, base, tuned). dvc.yaml:
  ``{x: length_chars, y: {metrics/plots/answer_lengths.csv: [reference, base, tuned]}}``.
* ``report.html``: the verdict on the primary task metric (against the base and the trivial
  baselines), collapse flags and answer profiles, overlap with train/val, the label confusion,
  the metrics table, judge summary and the worst regressions with their prompts; no external
  resources (inline CSS only), so it can be opened offline or logged to MLflow.
"""
from __future__ import annotations

import csv
import html
import json
from pathlib import Path

from domainft.evaluation.metrics import METRICS

TABLE_METRICS = (*METRICS, "response_ppl")
TASK_METRICS = ("accuracy", "macro_f1", "numeric_match", "contains", "judge_correctness")
PROFILE = ("distinct_rate", "top_share", "loop_rate", "copy_rate", "top_answer")
FIELDS = ("base", "tuned", "delta", "delta_ci_low", "delta_ci_high", "wins", "ties", "losses")


def write_plots(metrics: dict, rows: list[dict], out_dir: str | Path, bin_chars: int = 50) -> list[Path]:
    """Write the two plot files described in the module docstring; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scale = {"bleu": 100.0, "chrf": 100.0}
    per_metric = [{"label": f"{m} {side}", "metric": m, "model": side, "raw": metrics[f"{m}.{side}"],
                   "value": metrics[f"{m}.{side}"] / scale.get(m, 1.0)} for m in METRICS for side in ("base", "tuned")]
    p1 = out / "eval_per_metric.json"
    p1.write_text(json.dumps(per_metric, indent=1) + "\n", encoding="utf-8")
    lengths = {"reference": [len(r["reference"]) for r in rows],
               "base": [len(r["base_answer"]) for r in rows],
               "tuned": [len(r["tuned_answer"]) for r in rows]}
    top = max(max(v) for v in lengths.values()) // bin_chars
    p2 = out / "answer_lengths.csv"
    with open(p2, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["length_chars", *lengths])
        for b in range(top + 1):
            w.writerow([b * bin_chars, *(sum(1 for x in v if x // bin_chars == b) for v in lengths.values())])
    return [p1, p2]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _prompt_text(messages: list[dict]) -> str:
    return "\n\n".join(f"[{m['role']}] {m['content']}" for m in messages if m["role"] != "system")


def worst_regressions(rows: list[dict], metric: str = "rouge_l", k: int = 10) -> list[dict]:
    """The k rows with the most negative ``tuned - base`` on ``metric`` (only rows that got worse)."""
    scored = [(r["scores"][metric]["tuned"] - r["scores"][metric]["base"], i) for i, r in enumerate(rows)]
    return [rows[i] for d, i in sorted(scored) if d < 0][:k]


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f3f3f3}
td.l{text-align:left}.pos{color:#070}.neg{color:#b00}pre{white-space:pre-wrap;background:#f8f8f8;
padding:.5em;margin:.2em 0}.item{border-top:2px solid #999;margin-top:1.5em}"""


def verdict_lines(metrics: dict) -> list[str]:
    """Plain-text verdict on the primary metric, the flags and the overlap (report and ``domainft compare``)."""
    name = metrics.get("primary.name", "?")
    if "primary.tuned" not in metrics:
        return [f"primary metric {name}: not computed (judge: {metrics.get('judge.status', '?')})"]
    lines = [f"primary metric {name}: base {metrics['primary.base']:.4g} -> tuned {metrics['primary.tuned']:.4g}, "
             f"delta {metrics['primary.delta']:+.4g} (95% CI [{metrics['primary.delta_ci_low']:+.4g}, "
             f"{metrics['primary.delta_ci_high']:+.4g}])"]
    lines.append("tuned beats base: " + ("yes (CI above 0)" if metrics.get("primary.beats_base") else
                                         "NO (the CI of the delta includes or lies below 0)"))
    if "primary.baseline" in metrics:
        lines.append(f"tuned beats the trivial baselines: {'yes' if metrics.get('primary.beats_baselines') else 'NO'} "
                     f"(best: {metrics.get('baseline.best_name')} {metrics['primary.baseline']:.4g})")
    for side in ("base", "tuned"):
        raised = [k for k in ("collapse", "loop", "copy") if metrics.get(f"flags.{side}.{k}")]
        if raised:
            lines.append(f"FLAG {side}: {', '.join(raised)} (top share {metrics.get(f'collapse.{side}.top_share', 0):.2f} "
                         f"vs gold {metrics.get('collapse.gold.top_share', 0):.2f}, loop rate "
                         f"{metrics.get(f'collapse.{side}.loop_rate', 0):.2f}, prompt-copy rate "
                         f"{metrics.get(f'collapse.{side}.copy_rate', 0):.2f})")
    if metrics.get("overlap.total"):
        lines.append(f"OVERLAP: {metrics['overlap.total']} of {metrics['n_samples']} evaluated rows match train/val")
    return lines


def task_section(metrics: dict) -> list[str]:
    """HTML of the verdict, answer profiles and (label tasks) confusion tables."""
    e = html.escape
    parts = [f"<h2>Task: {e(str(metrics.get('task.type', 'text')))}</h2><ul>"]
    parts += [f"<li>{e(line)}</li>" for line in verdict_lines(metrics)]
    parts.append("</ul><h3>Answer profiles (collapse detectors)</h3><table><tr><th></th>"
                 + "".join(f"<th>{p}</th>" for p in PROFILE) + "<th>flags</th></tr>")
    for side in ("gold", "base", "tuned"):
        flags = ", ".join(k for k in ("collapse", "loop", "copy") if metrics.get(f"flags.{side}.{k}")) or "-"
        parts.append(f"<tr><td class='l'>{side}</td>" + "".join(
            f"<td>{_fmt(metrics.get(f'collapse.{side}.{p}', '-'))}</td>" for p in PROFILE)
            + f"<td class='l'>{e(flags) if side != 'gold' else ''}</td></tr>")
    parts.append("</table>")
    conf = metrics.get("confusion")
    if isinstance(conf, dict):
        for side in ("base", "tuned"):
            cells = conf.get(side, {})
            preds = sorted({p for row in cells.values() for p in row})
            parts.append(f"<h3>Confusion ({side}): gold rows, predicted columns</h3><table><tr><th></th>"
                         + "".join(f"<th>{e(p)}</th>" for p in preds) + "</tr>")
            for g in sorted(cells):
                parts.append(f"<tr><td class='l'>{e(g)}</td>" + "".join(f"<td>{cells[g].get(p, 0)}</td>" for p in preds) + "</tr>")
            parts.append("</table>")
    return parts


def render_report(metrics: dict, rows: list[dict], worst: int = 10) -> str:
    """HTML text of the report (see module docstring)."""
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>domainft evaluation</title>"
             f"<style>{CSS}</style></head><body><h1>Base vs tuned</h1>", *task_section(metrics),
             f"<p>{metrics['n_samples']} test samples, language {e(str(metrics.get('language')))}, "
             f"greedy={not metrics.get('generation.do_sample', False)}, "
             f"max_new_tokens={metrics.get('generation.max_new_tokens')}. Delta = tuned - base with a "
             f"paired bootstrap 95% interval; lower perplexity is better.</p>",
             "<table><tr><th>metric</th>" + "".join(f"<th>{f}</th>" for f in FIELDS) + "</tr>"]
    for m in (*[t for t in TASK_METRICS if f"{t}.delta" in metrics], *TABLE_METRICS):
        good = metrics[f"{m}.delta"] * (-1 if m == "response_ppl" else 1)
        cls = "pos" if good > 0 else "neg" if good < 0 else ""
        cells = "".join(f"<td class='{cls if f == 'delta' else ''}'>{_fmt(metrics[f'{m}.{f}'])}</td>" for f in FIELDS)
        parts.append(f"<tr><td class='l'>{m}</td>{cells}</tr>")
    parts.append("</table><h2>Answer length</h2><table><tr><th></th><th>base</th><th>tuned</th></tr>")
    for k in ("answer_chars", "answer_tokens", "stopped_rate"):
        parts.append(f"<tr><td class='l'>{k}</td><td>{_fmt(metrics[f'{k}.base'])}</td><td>{_fmt(metrics[f'{k}.tuned'])}</td></tr>")
    parts.append("</table><h2>LLM judge</h2><table>")
    for k, v in sorted(metrics.items()):
        if k.startswith("judge"):
            parts.append(f"<tr><td class='l'>{e(k)}</td><td class='l'>{_fmt(v)}</td></tr>")
    parts.append("</table>")
    bad = worst_regressions(rows, k=worst)
    parts.append(f"<h2>Worst regressions (ROUGE-L, {len(bad)} shown)</h2>")
    for r in bad:
        s = r["scores"]
        parts.append(
            f"<div class='item'><p><b>{e(str(r['id']))}</b> rouge_l {s['rouge_l']['base']:.3f} &rarr; "
            f"{s['rouge_l']['tuned']:.3f}, chrf {s['chrf']['base']:.1f} &rarr; {s['chrf']['tuned']:.1f}</p>"
            f"<b>prompt</b><pre>{e(_prompt_text(r['prompt']))}</pre><b>reference</b><pre>{e(r['reference'])}</pre>"
            f"<b>base</b><pre>{e(r['base_answer'])}</pre><b>tuned</b><pre>{e(r['tuned_answer'])}</pre></div>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(metrics: dict, rows: list[dict], path: str | Path, worst: int = 10) -> Path:
    """Write :func:`render_report` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(metrics, rows, worst), encoding="utf-8")
    return path
