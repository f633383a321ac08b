"""Retention and remit: did tuning cost general ability, and does the model stay in its remit?

* Retention (``evaluate.retention``): base and tuned answer a general held-out set (a file outside
  the domain, e.g. a sample of ``../shared/real-data/alpaca_5000.json``), scored by the response
  perplexity of the reference answers (token-weighted) and by ROUGE-L of the generated answers,
  each paired with a 95% bootstrap CI (``retention.response_ppl.*``, ``retention.rouge_l.*``).
  ROUGE-L is the general set's primary metric whatever the domain task is: a label or numeric
  task's metric does not apply to open instructions.
* Remit (``evaluate.remit``): base and tuned answer off-domain probe prompts (a params list); the
  expected behaviour is to decline or redirect. The documented rule: an answer declines when it
  matches any of ``evaluate.remit.decline_patterns`` (case-insensitive regular expressions, e.g.
  ``I can only help with``, ``outside (of )?my``, ``please contact``).
  ``remit.rate.<side>`` is the fraction of probes declined (1.0 = always stays in its remit).

``promote`` gates on both (``promote.max_general_ppl_increase``, ``promote.max_general_metric_drop``,
``promote.min_remit_rate``; domainft/promote.py).
"""
from __future__ import annotations

import gc
import re
from pathlib import Path

from domainft.evaluation.general_set import RetentionDataError, general_messages, load_general  # noqa: F401


def declines(answer: str, patterns: list[str]) -> bool:
    """True when ``answer`` matches any decline/redirect pattern (case-insensitive regex search)."""
    return any(re.search(p, answer, re.IGNORECASE) for p in patterns)


def eval_dtype():
    """The one precision evaluation loads every model in: :func:`domainft.modeling.base.pick_dtype`
    (``auto``: bf16 on CUDA and on CPUs with native bf16, else fp32), as
    :func:`domainft.evaluation.run.answer_with` does, with the shared thread policy applied."""
    from domainft.hardware import apply_threads
    from domainft.modeling.base import pick_device, pick_dtype

    apply_threads()
    return pick_dtype("auto", pick_device())


def _answer(model_dir, general: list[dict], probes: list[str], params, seed: int, system_prompt: str | None,
            dtype=None):
    from domainft.evaluation.generate import generate_answers
    from domainft.evaluation.metrics import response_nll
    from domainft.modeling.base import load_model

    dtype = dtype or eval_dtype()
    model, tok = load_model(model_dir, dtype=dtype)
    out = {"answers": [], "nll": [], "probes": [], "precision": str(model.dtype).removeprefix("torch.")}
    if general:
        prompts = [r["messages"][:-1] for r in general]
        out["answers"] = generate_answers(model, tok, prompts, params.max_new_tokens, params.batch_size,
                                          False, 1.0, 1.0, seed)
        out["nll"] = response_nll(model, tok, [r["messages"] for r in general], params.batch_size)
    if probes:
        sys_turn = [{"role": "system", "content": system_prompt}] if system_prompt else []
        out["probes"] = generate_answers(model, tok, [sys_turn + [{"role": "user", "content": p}] for p in probes],
                                         params.max_new_tokens, params.batch_size, False, 1.0, 1.0, seed)
    del model
    gc.collect()
    return out


def evaluate_retention(base_dir: str | Path, tuned_dir: str | Path, params, seed: int = 42,
                       system_prompt: str | None = None) -> tuple[dict, list[dict]]:
    """Score base and tuned on the general set and the remit probes (greedy decoding).

    Args:
        params: :class:`domainft.config.EvaluateParams` (``retention``, ``remit``, ``max_new_tokens``,
            ``batch_size``, ``bootstrap_samples``).
        system_prompt: the domain's system prompt, given with each remit probe (as in serving).

    Returns:
        (flat metrics: ``retention.precision`` (the dtype both models were loaded in, the one
        :func:`eval_dtype` picks for the whole evaluation), ``retention.n``, ``retention.response_ppl.<field>``, ``retention.rouge_l.<field>``,
        ``remit.n``, ``remit.rate.base``, ``remit.rate.tuned``; rows: one per general record and probe
        with both answers). Empty when both are off.

    Raises:
        RetentionDataError: see :func:`load_general`.
    """
    from domainft.evaluation.metrics import TextScorer, compare

    ret, rem = params.retention, params.remit
    general = load_general(ret.path, ret.max_samples, seed) if ret.path else []
    probes = list(rem.prompts)
    if not general and not probes:
        return {}, []
    dtype = eval_dtype()  # chosen once: base and tuned in the same precision, as in the domain evaluation
    res = {side: _answer(d, general, probes, params, seed, system_prompt, dtype)
           for side, d in (("base", base_dir), ("tuned", tuned_dir))}
    if res["base"]["precision"] != res["tuned"]["precision"]:
        raise RetentionDataError(f"retention: base loaded in {res['base']['precision']}, tuned in "
                                 f"{res['tuned']['precision']}; both must use one precision")
    metrics: dict = {"retention.precision": res["tuned"]["precision"]}
    rows: list[dict] = []
    if general:
        text = TextScorer("en")
        refs = [r["messages"][-1]["content"] for r in general]
        rouge = {s: [text.score(g.text, ref)["rouge_l"] for g, ref in zip(res[s]["answers"], refs)] for s in res}
        metrics["retention.n"] = len(general)
        metrics.update(compare(rouge["base"], rouge["tuned"], samples=params.bootstrap_samples, seed=seed)
                       .flat("retention.rouge_l"))
        nll = {s: [x[0] for x in res[s]["nll"]] for s in res}
        tok = {s: [x[1] for x in res[s]["nll"]] for s in res}
        metrics.update(compare(nll["base"], nll["tuned"], lower_is_better=True, samples=params.bootstrap_samples,
                               seed=seed, weights=(tok["base"], tok["tuned"])).flat("retention.response_ppl"))
        metrics["retention.response_ppl.ratio"] = metrics["retention.response_ppl.tuned"] / metrics["retention.response_ppl.base"]
        rows += [{"kind": "general", "id": r["id"], "prompt": r["messages"][:-1], "reference": ref,
                  "base_answer": res["base"]["answers"][i].text, "tuned_answer": res["tuned"]["answers"][i].text}
                 for i, (r, ref) in enumerate(zip(general, refs))]
    if probes:
        metrics["remit.n"] = len(probes)
        for side in res:
            dec = [declines(g.text, rem.decline_patterns) for g in res[side]["probes"]]
            metrics[f"remit.rate.{side}"] = sum(dec) / len(dec)
        rows += [{"kind": "remit", "prompt": p, "base_answer": res["base"]["probes"][i].text,
                  "tuned_answer": res["tuned"]["probes"][i].text,
                  "declined": {s: declines(res[s]["probes"][i].text, rem.decline_patterns) for s in res}}
                 for i, p in enumerate(probes)]
    return metrics, rows
