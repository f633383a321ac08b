"""preference stage: verdicts -> DPO on the SFT model -> models/dpo_merged, metrics/preference.json.

Off by default (``preference.enabled: false``): writes ``metrics/preference.json`` with
``enabled: 0`` and an empty ``models/dpo_merged`` in well under a second, loading no model.
On: pairs from ``preference.review_path`` (``human.verdicts`` of ``domainft review import``) and
the judge's agreeing pairwise verdicts in ``metrics/predictions.jsonl``; DPO
(:func:`domainft.preference.train_dpo`) on ``merge.out_dir``; merged onto it and fidelity-checked
like SFT; evaluated twice on the test split with the ``evaluate`` params: SFT vs SFT+DPO
(outputs under ``metrics/preference/``, figures as ``vs_sft.*``) and base vs SFT+DPO (outputs under
``metrics/preference/vs_base/``, figures as ``vs_base.*``: the DPO model's own evaluation, with
retention and remit when configured, which the register stage logs as its ``eval.*`` metrics so
that ``domainft promote`` applies every gate to it). ``verdicts_sha256`` is the hash of the pairs
(the register stage tags the DPO version with it); ``review_sha256`` the hash of the review file.

Run: ``python -m domainft.stages preference`` (DVC) or ``domainft preference``.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from domainft.config import Params
from domainft.stages import write_metrics

OUT = Path("metrics/preference")


def run(params: Params) -> dict:
    from domainft.merge import MergeFidelityError, merge_adapter
    from domainft.preference import PreferenceError, pairs_sha256, preference_pairs, train_dpo

    p = params.preference
    merged = Path(p.merged_dir)
    if not p.enabled:
        shutil.rmtree(merged, ignore_errors=True)
        merged.mkdir(parents=True)
        (merged / "DISABLED").write_text("preference.enabled is false\n")
        return _write({"enabled": 0})
    from domainft.atomic import read_jsonl

    rows = read_jsonl(Path(params.evaluate.out_dir, "predictions.jsonl"))
    review = Path(p.review_path)
    human = json.loads(review.read_text()).get("human.verdicts", {}) if review.is_file() else {}
    pairs = preference_pairs(rows, human, p.use_judge, p.reference_pairs)
    if len(pairs) < p.min_pairs:
        raise PreferenceError(f"{len(pairs)} preference pairs (human verdicts {len(human)}), "
                              f"fewer than preference.min_pairs {p.min_pairs}")
    m = train_dpo(params.merge.out_dir, pairs, p, p.out_dir, seed=params.domain.seed)
    m.pop("curve")
    prompts = [{"messages": x["prompt"] + x["chosen"]} for x in pairs]
    fid = merge_adapter(params.merge.out_dir, p.out_dir, str(merged), prompts, params.merge.fidelity_prompts,
                        params.merge.max_abs_logit_diff, params.merge.min_greedy_agreement)
    if not fid["passed"]:
        raise MergeFidelityError(f"DPO-merged model differs from SFT+DPO adapter: {fid}")
    from domainft.stages.evaluate import evaluate_models

    def _eval(reference_dir: str, out: Path) -> dict:
        out.mkdir(parents=True, exist_ok=True)
        ev = params.evaluate.model_copy(update={"judge": params.evaluate.judge.model_copy(update={
            "replies_path": str(out / "judge_replies.jsonl")})})
        e = evaluate_models(params, reference_dir, str(merged), str(out), ev)
        return {k: v for k, v in e.items() if isinstance(v, (int, float, str))}

    vs_sft = _eval(params.merge.out_dir, OUT)
    vs_base = _eval(params.base.out_dir, OUT / "vs_base")
    metrics = {"enabled": 1, "verdicts_sha256": pairs_sha256(pairs),
               "review_sha256": hashlib.sha256(review.read_bytes()).hexdigest() if review.is_file() else None,
               "human_verdicts": len(human), **m,
               **{f"merge.{k}": v for k, v in fid.items() if isinstance(v, (int, float, bool))},
               **{f"vs_sft.{k}": v for k, v in vs_sft.items()},
               **{f"vs_base.{k}": v for k, v in vs_base.items()}}
    return _write(metrics)


def _write(metrics: dict) -> dict:
    write_metrics("preference", metrics)
    return metrics
