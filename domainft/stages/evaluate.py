"""`evaluate` stage: base vs tuned on the test split -> metrics/eval.json, predictions, plots, report.

Reads params: base.out_dir, merge.out_dir, domain.seed and the whole ``evaluate`` section
(max_samples, max_new_tokens, batch_size, do_sample, temperature, top_p, bootstrap_samples,
language, test_path, out_dir, report_worst, judge.*).

Run: ``python stages/evaluate.py`` (DVC) or ``domainft evaluate``.
"""
from __future__ import annotations

import logging

from domainft.config import Params
from domainft.stages import write_metrics

log = logging.getLogger(__name__)


def run(params: Params) -> dict:
    """Evaluate ``base.out_dir`` against ``merge.out_dir``; returns the eval.json metrics."""
    from domainft.evaluation.run import evaluate

    ev = params.evaluate
    metrics = evaluate(params.base.out_dir, params.merge.out_dir, ev.test_path, ev,
                       seed=params.domain.seed, out_dir=ev.out_dir)
    write_metrics("eval", metrics)
    log.info("rouge_l %.4f -> %.4f, response_ppl %.2f -> %.2f (n=%d)",
             metrics["rouge_l.base"], metrics["rouge_l.tuned"],
             metrics["response_ppl.base"], metrics["response_ppl.tuned"], metrics["n_samples"])
    return metrics
