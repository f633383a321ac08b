"""Evaluate base vs tuned on the test split: generate, score, compare, (judge), write outputs.

Outputs (under ``out_dir``, default ``metrics/``):

* ``eval.json`` (written by the stage adapter): flat keys ``<metric>.<field>`` with field in
  base, tuned, delta, delta_ci_low, delta_ci_high, wins, ties, losses; ``dvc metrics diff`` shows
  them as they are. ``primary.*`` repeats the task's primary metric (``primary.name``) under one
  name, with ``primary.baseline`` (best trivial baseline), ``primary.beats_base`` (CI low > 0) and
  ``primary.beats_baselines`` (0/1); ``baseline.*``, ``collapse.<base|tuned|gold>.*``,
  ``flags.<base|tuned>.{collapse,loop,copy,any}`` (0/1), ``overlap.*`` (evaluated set vs train/val),
  ``confusion`` (label tasks) and ``task.*`` describe the rest (docs/evaluation.md);
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
from domainft.evaluation import collapse as collapse_mod
from domainft.evaluation.metrics import (
    METRICS, Paired, TextScorer, compare, detect_language, paired_bootstrap, response_nll,
)
from domainft.evaluation.task import TaskScorer, baselines, confusion, macro_f1, primary_metric

log = logging.getLogger(__name__)


class EvalDataError(DomainftError, ValueError):
    """A test record is malformed (message names file, line and key)."""


def spread_sample(records: list[dict], n: int, seed: int = 42) -> list[dict]:
    """A seeded, deterministic sample of ``n`` records spread over files and groups (``evaluate.max_samples``).

    Rule:

    1. **Files** (``source.file``: often different tasks, e.g. ACI-Bench notes and MTS-Dialog
       sections) are strata with proportional quotas, largest remainder, at least one record per
       file while ``n`` allows (a small file is not left out; with fewer samples than files, the
       largest files get one each).
    2. **Groups** within a file (``group``: document, encounter, company, thread; a record without
       one is its own group) are visited in the order of ``sha256(f"{seed}:{group}")`` and each
       group's records in the order of ``sha256(f"{seed}:{id}")``; one record per group per round
       (round robin), so a file's quota covers as many groups as it can before any gives two.

    The chosen records keep their order in the file.

    Args:
        records: canonical records (``id``; ``group`` and ``source.file`` optional).
        n: sample size (0 or >= len(records): all records, in file order).
        seed: ``domain.seed``; the same seed and records give the same sample.

    Returns:
        ``min(n, len(records))`` records in file order.
    """
    import hashlib

    if not n or n >= len(records):
        return list(records)

    def h(text: str) -> str:
        return hashlib.sha256(f"{seed}:{text}".encode("utf-8")).hexdigest()

    strata: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        src = rec.get("source")
        strata.setdefault(str(src.get("file", "")) if isinstance(src, dict) else "", []).append(i)
    size = {k: len(v) for k, v in strata.items()}
    target = {k: n * size[k] / len(records) for k in strata}
    if n < len(strata):  # fewer samples than files: one each for the largest files
        quota = dict.fromkeys(strata, 0)
        for k in sorted(strata, key=lambda k: (-size[k], k))[:n]:
            quota[k] = 1
    else:
        quota = {k: min(size[k], max(1, int(target[k]))) for k in strata}
        while sum(quota.values()) < n:  # largest remainder first
            k = max((k for k in strata if quota[k] < size[k]), key=lambda k: (target[k] - quota[k], k))
            quota[k] += 1
        while sum(quota.values()) > n:  # the at-least-one rule overshot: take from the most over target
            k = min((k for k in strata if quota[k] > 1), key=lambda k: (target[k] - quota[k], k))
            quota[k] -= 1
    chosen: list[int] = []
    for k, idx in strata.items():
        groups: dict[str, list[int]] = {}
        for i in idx:
            g = records[i].get("group")
            groups.setdefault(f"g:{g}" if g not in (None, "") else f"r:{records[i]['id']}:{i}", []).append(i)
        queues = [sorted(q, key=lambda i: (h(str(records[i]["id"])), i)) for _, q in
                  sorted(groups.items(), key=lambda kv: (h(kv[0]), kv[0]))]
        picked: list[int] = []
        depth = 0
        while len(picked) < quota[k]:
            for q in queues:
                if depth < len(q):
                    picked.append(q[depth])
                    if len(picked) == quota[k]:
                        break
            depth += 1
        chosen.extend(picked)
    return [records[i] for i in sorted(chosen)]


def load_test(path: str | Path, max_samples: int = 0, seed: int = 42) -> list[dict]:
    """Read canonical records (``{"id", "messages": [..., assistant]}``); with ``max_samples`` > 0,
    a sample of that many spread over the source files and groups (:func:`spread_sample`, seeded),
    not the file's head.

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
    if not records:
        raise EvalDataError(f"{path} holds no records")
    return spread_sample(records, max_samples, seed)


def answer_with(model_dir: str | Path, records: list[dict], params, seed: int, label: str = "model",
                policy=None) -> dict:
    """Load one model, answer every prompt and score the reference responses (then free it).

    ``policy`` (:class:`domainft.modeling.chat.SourcePolicy`, None = none) is training's long-source
    policy: a prompt over its budget has its source cut by :func:`~domainft.modeling.chat.fit_prompt`
    (the function the server uses), and the reference is scored on the conversation fitted as
    training fitted it (:func:`~domainft.modeling.chat.fit_conversation`).

    Progress is reported per batch (:class:`domainft.progress.Progress`, ``generate <label>`` and
    ``score <label>``).

    Every model is loaded in the one precision of :func:`domainft.modeling.base.pick_dtype` (``auto``:
    bf16 on CUDA and on CPUs with native bf16, else fp32), so base and tuned are compared alike.

    Returns:
        {"answers": [Generation], "nll": [(sum nll, tokens)], "precision": "bfloat16" | "float32" | ...}
    """
    from domainft.hardware import apply_threads
    from domainft.modeling.base import load_model, pick_device, pick_dtype
    from domainft.modeling.chat import fit_conversation
    from domainft.progress import Progress

    apply_threads()
    dtype = pick_dtype("auto", pick_device())
    model, tok = load_model(model_dir, dtype=dtype)
    prompts = [r["messages"][:-1] for r in records]
    with Progress(len(records), f"generate {label}", params.progress_every) as bar:
        answers = generate_answers(model, tok, prompts, params.max_new_tokens, params.batch_size,
                                   params.do_sample, params.temperature, params.top_p, seed, progress=bar,
                                   policy=policy)
    conversations = [fit_conversation(tok, r["messages"], policy)[0] for r in records]
    with Progress(len(records), f"score {label} (reference perplexity)", params.progress_every) as bar:
        nll = response_nll(model, tok, conversations, params.batch_size, progress=bar)
    del model
    gc.collect()
    return {"answers": answers, "nll": nll, "precision": str(dtype).removeprefix("torch.")}


def _user_text(messages: list[dict]) -> str:
    return "\n".join(m["content"] for m in messages if m["role"] == "user")


def _macro_f1_paired(gold: list[str], base: list, tuned: list, samples: int, seed: int) -> Paired:
    """Paired summary of macro-F1 (a corpus statistic): bootstrap of the statistic itself."""
    g = np.array(gold, dtype=object)
    b, t = np.array(base, dtype=object), np.array(tuned, dtype=object)

    def stat(i):
        return macro_f1(list(g[i]), list(b[i])), macro_f1(list(g[i]), list(t[i]))

    bv, tv = stat(np.arange(len(g)))
    low, high = paired_bootstrap(stat, len(g), samples, seed)
    cb, ct = b == g, t == g
    return Paired(bv, tv, tv - bv, low, high, int((ct & ~cb).sum()), int((ct == cb).sum()), int((cb & ~ct).sum()))


def score_pair(records: list[dict], base: dict, tuned: dict, language: str,
               bootstrap_samples: int = 1000, seed: int = 0, task=None, collapse=None,
               train_references: list[str] | None = None, judge_enabled: bool = False) -> tuple[dict, list[dict]]:
    """Per-sample scores and paired summaries for answers from :func:`answer_with`.

    Args:
        task: :class:`domainft.config.TaskParams` (default: free text).
        collapse: :class:`domainft.config.CollapseParams` (default thresholds).
        train_references: reference answers of train/val, for the trivial baselines and the
            automatic label set ([] or None: the evaluated set's own).
        judge_enabled: a text task's ``primary: auto`` is then ``judge_correctness`` (filled in by
            :func:`add_primary` after the judge ran).

    Returns:
        (flat metrics dict, prediction rows)

    Raises:
        TaskError: the task settings do not fit the references (see :class:`TaskScorer`).
    """
    from domainft.config import CollapseParams, TaskParams

    task = task or TaskParams()
    collapse_params = collapse or CollapseParams()
    primary = primary_metric(task, judge_enabled)
    refs = [rec["messages"][-1]["content"] for rec in records]
    scorer = TaskScorer(task, refs, train_references or [], ids=[str(r["id"]) for r in records])
    text = TextScorer(language)
    rows, per = [], {m: {"base": [], "tuned": []} for m in METRICS}
    task_per = {}
    for side, res in (("base", base), ("tuned", tuned)):
        for m, v in scorer.per_sample([g.text for g in res["answers"]]).items():
            task_per.setdefault(m, {})[side] = v
    for i, rec in enumerate(records):
        ref = refs[i]
        row = {"id": rec["id"], "prompt": rec["messages"][:-1], "reference": ref, "scores": {}}
        for side, res in (("base", base), ("tuned", tuned)):
            gen = res["answers"][i]
            s = text.score(gen.text, ref)
            nll, ntok = res["nll"][i]
            s["response_ppl"] = float(np.exp(nll / ntok))
            for m, v in task_per.items():
                s[m] = v[side][i]
            row[f"{side}_answer"] = gen.text
            row[f"{side}_tokens"] = len(gen.token_ids)
            row[f"{side}_stopped"] = gen.stopped
            for m in METRICS:
                per[m][side].append(s[m])
            for m, v in s.items():
                row["scores"].setdefault(m, {})[side] = round(v, 6)
        rows.append(row)
    metrics: dict = {"n_samples": len(records), "language": language, "task.type": task.type,
                     "primary.name": primary}
    for m in METRICS:
        metrics.update(compare(per[m]["base"], per[m]["tuned"], samples=bootstrap_samples, seed=seed).flat(m))
    for m, v in task_per.items():
        metrics.update(compare(v["base"], v["tuned"], samples=bootstrap_samples, seed=seed).flat(m))
    nb, nt = ([x[0] for x in r["nll"]] for r in (base, tuned))
    wb, wt = ([x[1] for x in r["nll"]] for r in (base, tuned))
    metrics.update(compare(nb, nt, lower_is_better=True, samples=bootstrap_samples, seed=seed,
                           weights=(wb, wt)).flat("response_ppl"))
    for side, res in (("base", base), ("tuned", tuned)):
        metrics[f"answer_chars.{side}"] = float(np.mean([len(g.text) for g in res["answers"]]))
        metrics[f"answer_tokens.{side}"] = float(np.mean([len(g.token_ids) for g in res["answers"]]))
        metrics[f"stopped_rate.{side}"] = float(np.mean([g.stopped for g in res["answers"]]))
    metrics["response_tokens"] = int(sum(wb))

    labels = {}
    if task.type == "label":
        metrics["task.labels"] = scorer.parser.labels
        for side, res in (("base", base), ("tuned", tuned)):
            labels[side] = scorer.labels_of([g.text for g in res["answers"]])
            unparsed = sum(x is None for x in labels[side])
            metrics[f"label_unparsed.{side}"] = unparsed
            metrics[f"label_unparsed_rate.{side}"] = unparsed / len(records)
            for row, lab in zip(rows, labels[side]):
                row[f"{side}_label"] = lab
        for row, g in zip(rows, scorer.gold):
            row["reference_label"] = g
        metrics.update(_macro_f1_paired(scorer.gold, labels["base"], labels["tuned"], bootstrap_samples, seed).flat("macro_f1"))
        metrics["confusion"] = {side: confusion(scorer.gold, labels[side]) for side in ("base", "tuned")}
    if primary != "judge_correctness":
        metrics.update(baselines(scorer, primary, train_references or [], text))

    prompts = [_user_text(r["messages"][:-1]) for r in records]
    gold_profile = collapse_mod.profile(refs, prompts, scorer.gold if task.type == "label" else None)
    metrics.update({f"collapse.gold.{k}": v for k, v in gold_profile.items()})
    for side, res in (("base", base), ("tuned", tuned)):
        prof = collapse_mod.profile([g.text for g in res["answers"]], prompts, labels.get(side))
        metrics.update({f"collapse.{side}.{k}": v for k, v in prof.items()})
        metrics.update({f"flags.{side}.{k}": v for k, v in
                        collapse_mod.flags(prof, gold_profile, len(records), collapse_params).items()})
    add_primary(metrics)
    return metrics, rows


def long_source_metrics(answers: list, policy, max_new_tokens: int) -> dict:
    """``long_source.*`` of eval.json from the :class:`~domainft.evaluation.generate.Generation` list:
    ``policy`` (``trim_source/<cut>`` or ``none``), ``prompt_budget`` (tokens, 0 = no policy),
    ``trimmed_prompts``, ``overlong_prompts`` (over the budget, used whole) and
    ``cut_tokens_mean`` (source tokens cut per trimmed prompt)."""
    cut = [g.source_cut for g in answers if g.source_cut]
    return {
        "long_source.policy": f"trim_source/{policy.cut}" if policy is not None and policy.trim else "none",
        "long_source.prompt_budget": policy.prompt_budget(max_new_tokens) if policy is not None else 0,
        "long_source.trimmed_prompts": len(cut),
        "long_source.overlong_prompts": sum(bool(g.overlong) for g in answers),
        "long_source.cut_tokens_mean": float(np.mean(cut)) if cut else 0.0,
    }


def add_primary(metrics: dict) -> dict:
    """Copy the paired figures of ``metrics["primary.name"]`` to ``primary.*`` and decide.

    ``primary.beats_base`` is 1 when the 95% interval of tuned - base lies above 0;
    ``primary.beats_baselines`` is 1 when tuned > ``baseline.best`` (or no baseline applies).
    A primary metric that is missing (the judge did not run) leaves ``primary.*`` out, so the
    promote gates fail for want of it.
    """
    name = metrics["primary.name"]
    if f"{name}.tuned" not in metrics:
        return metrics
    for f in ("base", "tuned", "delta", "delta_ci_low", "delta_ci_high", "wins", "ties", "losses"):
        metrics[f"primary.{f}"] = metrics[f"{name}.{f}"]
    metrics["primary.beats_base"] = int(metrics["primary.delta_ci_low"] > 0)
    if "baseline.best" in metrics:
        metrics["primary.baseline"] = metrics["baseline.best"]
        metrics["primary.beats_baselines"] = int(metrics["primary.tuned"] > metrics["baseline.best"])
    else:
        metrics["primary.beats_baselines"] = 1
    return metrics


def read_references(paths: list[str | Path]) -> tuple[list[dict], list[str]]:
    """Records of the reference files (train/val) and the paths that do not exist.

    Raises:
        EvalDataError: a reference file is malformed (names file:line).
    """
    from domainft.data.prepare import iter_record_dicts

    records, missing = [], []
    for path in paths:
        if not Path(path).is_file():
            missing.append(str(path))
            continue
        try:
            records.extend(d for _, d in iter_record_dicts(path))
        except ValueError as err:
            raise EvalDataError(str(err)) from None
    return records, missing


def task_references(references: list[dict]) -> list[str]:
    """The reference answers (last assistant turns) the trivial baselines and the label set come
    from: the domain records of :func:`read_references`, without those ``split.general_mix`` added
    to train (``meta.general``), whose general answers are no answer to the domain task (a repeated
    alpaca answer would become the constant baseline)."""
    return [d["messages"][-1]["content"] for d in references
            if d.get("messages") and d["messages"][-1].get("role") == "assistant"
            and not (d.get("meta") or {}).get("general")]


def judge_primary(metrics: dict, rows: list[dict], bootstrap_samples: int, seed: int) -> dict:
    """``judge_correctness.*``: the judge's correctness grade mapped to [0, 1] ((g - 1) / 4), paired
    over the rows where both answers were graded; ``judge_correctness.n`` says how many."""
    from domainft.evaluation.judge import CORRECTNESS

    pairs = []
    for r in rows:
        single = (r.get("judge") or {}).get("single") or {}
        b, t = single.get("base"), single.get("tuned")
        if b and t:
            pairs.append(((b[CORRECTNESS] - 1) / 4, (t[CORRECTNESS] - 1) / 4))
            r["scores"]["judge_correctness"] = {"base": pairs[-1][0], "tuned": pairs[-1][1]}
    if pairs:
        metrics.update(compare([p[0] for p in pairs], [p[1] for p in pairs], samples=bootstrap_samples,
                               seed=seed).flat("judge_correctness"))
        metrics["judge_correctness.n"] = len(pairs)
    return metrics


def evaluate(base_dir: str | Path, tuned_dir: str | Path, test_path: str | Path, params, seed: int = 42,
             out_dir: str | Path = "metrics", dedup_threshold: float = 0.8, dedup_ngram: int = 5,
             system_prompt: str | None = None, source_policy=None) -> dict:
    """Run the whole evaluation and write predictions, plots and the HTML report.

    Args:
        base_dir, tuned_dir: model folders (``models/base``, ``models/merged``).
        test_path: canonical records JSONL (``data/splits/test.jsonl``).
        params: :class:`domainft.config.EvaluateParams`.
        seed: seeds sampling (when on) and the bootstrap.
        out_dir: where predictions.jsonl, plots/ and report.html go.
        dedup_threshold, dedup_ngram: ``prepare.dedup`` settings of the overlap check.
        source_policy: training's long-source policy (:class:`domainft.modeling.chat.SourcePolicy`,
            the stage passes ``SourcePolicy.from_params(train, evaluate.max_new_tokens)``; None = prompts
            whole). ``long_source.*`` counts the prompts whose source was cut (``trimmed_prompts``),
            those still over the budget (``overlong_prompts``) and the mean tokens cut per trimmed
            prompt; each prediction row has ``prompt_cut_tokens``.
        system_prompt: ``domain.system_prompt``, given with the remit probes (``evaluate.remit``).
            With ``evaluate.retention.path`` or ``evaluate.remit.prompts`` set, ``retention.*`` and
            ``remit.*`` figures are added and their answers written to ``retention.jsonl``.

    Returns:
        The flat metrics dict for ``metrics/eval.json``.

    Raises:
        EvalDataError: a malformed test or reference file; TaskError: the task does not fit the
            references (checked before any model is loaded).
    """
    from domainft.evaluation import judge as judge_mod
    from domainft.evaluation import report
    from domainft.evaluation.overlap import overlap

    records = load_test(test_path, params.max_samples, seed)
    refs = [r["messages"][-1]["content"] for r in records]
    language = detect_language(refs) if params.language == "auto" else params.language
    references, missing = read_references(params.reference_paths)
    train_refs = task_references(references)  # the overlap check below still reads every reference
    primary = primary_metric(params.task, params.judge.enabled)
    TaskScorer(params.task, refs, train_refs, ids=[str(r["id"]) for r in records])  # fail before loading models
    log.info("evaluating %d samples (language=%s, task=%s, primary metric=%s)", len(records), language,
             params.task.type, primary)
    base = answer_with(base_dir, records, params, seed, "base", source_policy)
    tuned = answer_with(tuned_dir, records, params, seed, "tuned", source_policy)
    metrics, rows = score_pair(records, base, tuned, language, params.bootstrap_samples, seed, params.task,
                               params.collapse, train_refs, params.judge.enabled)
    metrics.update(long_source_metrics(tuned["answers"], source_policy, params.max_new_tokens))
    for row, gen in zip(rows, tuned["answers"]):
        row["prompt_cut_tokens"] = gen.source_cut
    metrics.update({"generation.do_sample": params.do_sample, "generation.max_new_tokens": params.max_new_tokens,
                    "generation.temperature": params.temperature if params.do_sample else 0.0,
                    "generation.top_p": params.top_p, "seed": seed, "precision": tuned["precision"]})
    assert base["precision"] == tuned["precision"], "base and tuned must be evaluated in the same precision"
    metrics.update(overlap(records, references, dedup_threshold, dedup_ngram))
    metrics["overlap.missing"] = missing
    metrics.update(judge_mod.judge_predictions(rows, params.judge, seed=seed))
    if metrics["judge.status"] == "skipped":  # the replies file is a stage output: present, and empty
        Path(params.judge.replies_path).parent.mkdir(parents=True, exist_ok=True)
        Path(params.judge.replies_path).write_text("", encoding="utf-8")
    if primary == "judge_correctness":
        add_primary(judge_primary(metrics, rows, params.bootstrap_samples, seed))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if params.retention.path or params.remit.prompts:  # general ability and remit (evaluation/retention.py)
        from domainft.evaluation.retention import evaluate_retention

        ret_metrics, ret_rows = evaluate_retention(base_dir, tuned_dir, params, seed, system_prompt)
        metrics.update(ret_metrics)
        with open(out / "retention.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in ret_rows)
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    report.write_plots(metrics, rows, out / "plots")
    report.write_report(metrics, rows, out / "report.html", worst=params.report_worst)
    return metrics
