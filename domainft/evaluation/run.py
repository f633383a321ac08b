"""Evaluate base vs tuned on the test split: generate, score, compare, (judge), write outputs.

Outputs (under ``out_dir``, default ``metrics/``):

* ``eval.json`` (written by the stage adapter): flat keys ``<metric>.<field>`` with field in
  base, tuned, delta, delta_ci_low, delta_ci_high, wins, ties, losses; ``dvc metrics diff`` shows
  them as they are;
* ``predictions.jsonl``: one row per sample (id, prompt, reference, both answers, scores);
* ``plots/eval_per_metric.json``, ``plots/answer_lengths.csv`` and ``report.html``.
"""
from __future__ import annotations

import gc
import json
import logging
from pathlib import Path

import numpy as np

from domainft.errors import DomainftError
from domainft.evaluation.generate import generate_answers
from domainft.evaluation.metrics import METRICS, TextScorer, compare, detect_language, response_nll

log = logging.getLogger(__name__)


class EvalDataError(DomainftError, ValueError):
    """A test record is malformed (message names file, line and key)."""


def load_test(path: str | Path, max_samples: int = 0) -> list[dict]:
    """Read canonical records (``{"id", "messages": [..., assistant]}``), first ``max_samples`` (0 = all).

    Raises:
        EvalDataError: missing file, bad JSON, missing ``id``/``messages``, a conversation that does
            not end with a non-empty assistant turn or has no user turn; or an empty split.
    """
    path = Path(path)
    if not path.is_file():
        raise EvalDataError(f"test split not found: {path}")
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise EvalDataError(f"{where}: invalid JSON ({err.msg})") from None
        msgs = rec.get("messages") if isinstance(rec, dict) else None
        if not isinstance(rec, dict) or "id" not in rec:
            raise EvalDataError(f"{where}: key 'id' missing")
        if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
            raise EvalDataError(f"{where}: key 'messages' must be a non-empty list of {{role, content}}")
        if msgs[-1]["role"] != "assistant" or not str(msgs[-1]["content"]).strip():
            raise EvalDataError(f"{where}: key 'messages' must end with a non-empty assistant turn")
        if not any(m["role"] == "user" for m in msgs):
            raise EvalDataError(f"{where}: key 'messages' has no user turn")
        records.append(rec)
        if max_samples and len(records) >= max_samples:
            break
    if not records:
        raise EvalDataError(f"{path} holds no records")
    return records


def answer_with(model_dir: str | Path, records: list[dict], params, seed: int) -> dict:
    """Load one model, answer every prompt and score the reference responses (then free it).

    Returns:
        {"answers": [Generation], "nll": [(sum nll, tokens)]}
    """
    from domainft.modeling.base import load_model

    model, tok = load_model(model_dir)
    prompts = [r["messages"][:-1] for r in records]
    answers = generate_answers(model, tok, prompts, params.max_new_tokens, params.batch_size,
                               params.do_sample, params.temperature, params.top_p, seed)
    nll = response_nll(model, tok, [r["messages"] for r in records], params.batch_size)
    del model
    gc.collect()
    return {"answers": answers, "nll": nll}


def score_pair(records: list[dict], base: dict, tuned: dict, language: str,
               bootstrap_samples: int = 1000, seed: int = 0) -> tuple[dict, list[dict]]:
    """Per-sample scores and paired summaries for answers from :func:`answer_with`.

    Returns:
        (flat metrics dict, prediction rows)
    """
    scorer = TextScorer(language)
    rows, per = [], {m: {"base": [], "tuned": []} for m in METRICS}
    for i, rec in enumerate(records):
        ref = rec["messages"][-1]["content"]
        row = {"id": rec["id"], "prompt": rec["messages"][:-1], "reference": ref, "scores": {}}
        for side, res in (("base", base), ("tuned", tuned)):
            gen = res["answers"][i]
            s = scorer.score(gen.text, ref)
            nll, ntok = res["nll"][i]
            s["response_ppl"] = float(np.exp(nll / ntok))
            row[f"{side}_answer"] = gen.text
            row[f"{side}_tokens"] = len(gen.token_ids)
            row[f"{side}_stopped"] = gen.stopped
            for m in METRICS:
                per[m][side].append(s[m])
            for m, v in s.items():
                row["scores"].setdefault(m, {})[side] = round(v, 6)
        rows.append(row)
    metrics: dict = {"n_samples": len(records), "language": language}
    for m in METRICS:
        metrics.update(compare(per[m]["base"], per[m]["tuned"], samples=bootstrap_samples, seed=seed).flat(m))
    nb, nt = ([x[0] for x in r["nll"]] for r in (base, tuned))
    wb, wt = ([x[1] for x in r["nll"]] for r in (base, tuned))
    metrics.update(compare(nb, nt, lower_is_better=True, samples=bootstrap_samples, seed=seed,
                           weights=(wb, wt)).flat("response_ppl"))
    for side, res in (("base", base), ("tuned", tuned)):
        metrics[f"answer_chars.{side}"] = float(np.mean([len(g.text) for g in res["answers"]]))
        metrics[f"answer_tokens.{side}"] = float(np.mean([len(g.token_ids) for g in res["answers"]]))
        metrics[f"stopped_rate.{side}"] = float(np.mean([g.stopped for g in res["answers"]]))
    metrics["response_tokens"] = int(sum(wb))
    return metrics, rows


def evaluate(base_dir: str | Path, tuned_dir: str | Path, test_path: str | Path, params, seed: int = 42,
             out_dir: str | Path = "metrics") -> dict:
    """Run the whole evaluation and write predictions, plots and the HTML report.

    Args:
        base_dir, tuned_dir: model folders (``models/base``, ``models/merged``).
        test_path: canonical records JSONL (``data/splits/test.jsonl``).
        params: :class:`domainft.config.EvaluateParams`.
        seed: seeds sampling (when on) and the bootstrap.
        out_dir: where predictions.jsonl, plots/ and report.html go.

    Returns:
        The flat metrics dict for ``metrics/eval.json``.
    """
    from domainft.evaluation import judge as judge_mod
    from domainft.evaluation import report

    records = load_test(test_path, params.max_samples)
    refs = [r["messages"][-1]["content"] for r in records]
    language = detect_language(refs) if params.language == "auto" else params.language
    log.info("evaluating %d samples (language=%s)", len(records), language)
    base = answer_with(base_dir, records, params, seed)
    tuned = answer_with(tuned_dir, records, params, seed)
    metrics, rows = score_pair(records, base, tuned, language, params.bootstrap_samples, seed)
    metrics.update({"generation.do_sample": params.do_sample, "generation.max_new_tokens": params.max_new_tokens,
                    "generation.temperature": params.temperature if params.do_sample else 0.0,
                    "generation.top_p": params.top_p, "seed": seed})
    metrics.update(judge_mod.judge_predictions(rows, params.judge, seed=seed))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    report.write_plots(metrics, rows, out / "plots")
    report.write_report(metrics, rows, out / "report.html", worst=params.report_worst)
    return metrics
