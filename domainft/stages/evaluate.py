"""`evaluate` stage: base vs tuned on the test split -> metrics/eval.json, predictions, plots, report.

Reads params: base.out_dir, merge.out_dir, domain.seed, train.max_seq_length, train.overlong and
train.source_cut (the long-source policy, as training applied it) and the whole ``evaluate`` section
(max_samples, max_new_tokens, batch_size, do_sample, temperature, top_p, bootstrap_samples,
language, test_path, out_dir, report_worst, reference_paths, progress_every, task.*, collapse.*,
judge.*), prepare.dedup.threshold and prepare.dedup.ngram (the overlap check).

Run: ``python -m domainft.stages evaluate`` (DVC) or ``domainft evaluate``.
"""
from __future__ import annotations

import logging

from domainft.config import Params
from domainft.stages import write_metrics

log = logging.getLogger(__name__)


def evaluate_models(params: Params, reference_dir: str, tuned_dir: str, out_dir: str, ev=None) -> dict:
    """:func:`domainft.evaluation.run.evaluate` of ``tuned_dir`` against ``reference_dir`` with every
    setting taken from ``params`` (seed, system prompt, overlap check, training's long-source
    policy); ``ev`` replaces ``params.evaluate`` (the preference stage points the judge's replies
    elsewhere). The one place the evaluate and preference stages build that call."""
    from domainft.evaluation.run import evaluate
    from domainft.modeling.chat import SourcePolicy

    ev = ev or params.evaluate
    return evaluate(reference_dir, tuned_dir, ev.test_path, ev, seed=params.domain.seed, out_dir=out_dir,
                    dedup_threshold=params.prepare.dedup.threshold, dedup_ngram=params.prepare.dedup.ngram,
                    system_prompt=params.domain.system_prompt,
                    source_policy=SourcePolicy.from_params(params.train, ev.max_new_tokens))


def run(params: Params) -> dict:
    """Evaluate ``base.out_dir`` against ``merge.out_dir``; returns the eval.json metrics."""
    metrics = evaluate_models(params, params.base.out_dir, params.merge.out_dir, params.evaluate.out_dir)
    write_metrics("eval", metrics)
    name = metrics["primary.name"]
    if "primary.tuned" in metrics:
        log.info("%s %.4f -> %.4f (95%% CI of delta [%.4f, %.4f]; best trivial baseline %s), n=%d",
                 name, metrics["primary.base"], metrics["primary.tuned"], metrics["primary.delta_ci_low"],
                 metrics["primary.delta_ci_high"], metrics.get("primary.baseline", "-"), metrics["n_samples"])
    else:
        log.warning("primary metric %s could not be computed (see judge.status)", name)
    for side in ("base", "tuned"):
        raised = [k for k in ("collapse", "loop", "copy") if metrics.get(f"flags.{side}.{k}")]
        if raised:
            log.warning("%s answers flagged: %s (see collapse.%s.* in metrics/eval.json)", side, ", ".join(raised), side)
    if metrics.get("overlap.total"):
        log.warning("%d evaluated rows overlap train/val (overlap.* in metrics/eval.json)", metrics["overlap.total"])
    return metrics
