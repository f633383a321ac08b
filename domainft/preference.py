"""Preference tuning (DPO, TRL's DPOTrainer) on top of the SFT model, from human and judge verdicts.

Pairs (:func:`preference_pairs`) come from ``metrics/predictions.jsonl`` rows:

* human verdicts (``metrics/review.json`` ``human.verdicts``: prediction id -> base | tuned | tie,
  each item's majority over raters): the preferred answer is ``chosen``;
* the judge's pairwise verdicts where both orders agree (``judge.pair.base_first`` and
  ``tuned_first`` name the same answer); a human verdict on the same item wins;
* optionally (``preference.reference_pairs``) reference vs tuned answer, reference chosen.
Ties and disagreeing orders give no pair.

Training (:func:`train_dpo`): a new LoRA adapter on the merged SFT model (``models/merged``);
the reference policy is that adapter disabled, i.e. exactly the SFT model (TRL uses the peft
model with its adapter disabled as reference when ``ref_model`` is None). LoRA's B matrices start
at 0, so at step 0 policy == reference and the sigmoid DPO loss is -log sigmoid(0) = ln 2
(Rafailov et al. 2023, "Direct Preference Optimization", eq. 7). This avoids the zero-loss trap
of continuing from the SFT adapter with the base as reference.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from pathlib import Path

import torch

from domainft.errors import DomainftError


class PreferenceError(DomainftError, ValueError):
    """No usable preference pair, or the inputs of the preference stage are missing."""


def _pair(row: dict, chosen_side: str, source: str) -> dict:
    other = "base" if chosen_side == "tuned" else "tuned"
    return {"id": row["id"], "source": source, "prompt": row["prompt"],
            "chosen": [{"role": "assistant", "content": row[f"{chosen_side}_answer"]}],
            "rejected": [{"role": "assistant", "content": row[f"{other}_answer"]}]}


def judge_verdict(row: dict) -> str | None:
    """``base`` or ``tuned`` when the judge's two pairwise orders agree on it, else None."""
    pair = (row.get("judge") or {}).get("pair") or {}
    first = {"A": "base", "B": "tuned"}.get(pair.get("base_first"))
    second = {"A": "tuned", "B": "base"}.get(pair.get("tuned_first"))
    return first if first is not None and first == second else None


def preference_pairs(rows: list[dict], human: dict[str, str] | None = None, use_judge: bool = True,
                     reference_pairs: bool = False) -> list[dict]:
    """Preference pairs ``{id, source, prompt, chosen, rejected}`` (conversational, TRL's format).

    Args:
        rows: prediction rows (``id``, ``prompt``, ``reference``, ``base_answer``, ``tuned_answer``, ``judge``).
        human: prediction id -> ``base`` | ``tuned`` | ``tie`` (majority verdicts).
        use_judge: take the judge's verdicts where both orders agree.
        reference_pairs: add reference (chosen) vs tuned answer (rejected) for each row where they differ.
    """
    human = human or {}
    out = []
    for row in rows:
        h = human.get(str(row["id"]))
        if h in ("base", "tuned") and row["base_answer"] != row["tuned_answer"]:
            out.append(_pair(row, h, "human"))
        elif h is None and use_judge and (j := judge_verdict(row)) and row["base_answer"] != row["tuned_answer"]:
            out.append(_pair(row, j, "judge"))
        if reference_pairs and row["reference"].strip() != row["tuned_answer"].strip():
            out.append({"id": row["id"], "source": "reference", "prompt": row["prompt"],
                        "chosen": [{"role": "assistant", "content": row["reference"]}],
                        "rejected": [{"role": "assistant", "content": row["tuned_answer"]}]})
    return out


def pairs_sha256(pairs: list[dict]) -> str:
    """Content hash of the pairs (the lineage of a DPO model to the verdicts behind it)."""
    return hashlib.sha256(json.dumps(pairs, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def train_dpo(sft_dir: str | Path, pairs: list[dict], params, out_dir: str | Path, seed: int = 42) -> dict:
    """Train a LoRA adapter with DPO on the merged SFT model and save it to ``out_dir``.

    Args:
        sft_dir: merged SFT model folder (policy init and reference).
        pairs: from :func:`preference_pairs` (at least one).
        params: :class:`domainft.config.PreferenceParams` (beta, learning_rate, max_steps, batch_size,
            max_length, lora).

    Returns:
        Metrics: ``pairs``, ``steps``, ``loss_first`` (ln 2 at the start), ``loss_last``,
        ``margin_first``/``margin_last`` (mean chosen - rejected log-ratio margin of the logged
        steps, in nats x beta), ``accuracy_last``, ``curve`` (per-step loss, margin), ``runtime_s``.

    Raises:
        PreferenceError: no pair.
    """
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from domainft.modeling.base import load_model, pick_device

    if not pairs:
        raise PreferenceError("preference: no preference pair (no human verdict, no judge verdict agreeing in "
                              "both orders, preference.reference_pairs off)")
    torch.manual_seed(seed)
    device = pick_device()
    model, tok = load_model(str(sft_dir), device=device, dtype=torch.float32 if device == "cpu" else torch.bfloat16)
    ds = Dataset.from_list([{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs])
    out = Path(out_dir)
    ckpt = out.with_name(out.name + ".ckpt")
    cfg = DPOConfig(output_dir=str(ckpt), beta=params.beta, learning_rate=params.learning_rate,
                    max_steps=params.max_steps, per_device_train_batch_size=params.batch_size,
                    lr_scheduler_type="constant", warmup_steps=0, logging_steps=1, save_strategy="no",
                    report_to="none", seed=seed, data_seed=seed, use_cpu=device == "cpu",
                    max_length=params.max_length, dataloader_num_workers=0, disable_tqdm=True,
                    bf16=device != "cpu")
    lora = LoraConfig(r=params.lora.r, lora_alpha=params.lora.alpha, lora_dropout=0.0,
                      target_modules=params.lora.target_modules, task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, ref_model=None, args=cfg, train_dataset=ds, processing_class=tok,
                         peft_config=lora)
    t0 = time.time()
    trainer.train()
    secs = time.time() - t0
    curve = [{"step": e["step"], "loss": e["loss"], "margin": e.get("rewards/margins"),
              "accuracy": e.get("rewards/accuracies")} for e in trainer.state.log_history if "loss" in e]
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    shutil.rmtree(ckpt, ignore_errors=True)
    return {"pairs": len(pairs), "steps": trainer.state.global_step, "ln2": math.log(2),
            "loss_first": curve[0]["loss"], "loss_last": curve[-1]["loss"],
            "margin_first": curve[0]["margin"], "margin_last": curve[-1]["margin"],
            "accuracy_last": curve[-1]["accuracy"], "curve": curve, "runtime_s": round(secs, 2),
            "sources": {s: sum(p["source"] == s for p in pairs) for s in ("human", "judge", "reference")}}


def logratio_margins(policy_dir: str | Path, adapter_dir: str | Path, pairs: list[dict]) -> list[float]:
    """Per pair: [log pi(chosen) - log ref(chosen)] - [log pi(rejected) - log ref(rejected)], in nats,
    with pi = ``policy_dir`` + ``adapter_dir`` and ref = ``policy_dir`` (the adapter disabled).

    Log-probabilities are summed over the response tokens (plus end-of-turn) as labelled by
    :func:`domainft.modeling.chat.tokenize_conversation` (``last_only``).
    """
    from peft import PeftModel

    from domainft.evaluation.metrics import labelled_logprob_sums
    from domainft.modeling.base import load_model
    from domainft.modeling.chat import end_of_turn, tokenize_conversation

    model, tok = load_model(str(policy_dir), device="cpu", dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter_dir)).eval()
    eot = end_of_turn(tok)[0]

    def logp(messages) -> float:
        s = tokenize_conversation(tok, messages, eot, last_only=True)
        sums, _ = labelled_logprob_sums(model, torch.tensor([s.input_ids]), torch.tensor([s.labels]))  # (1,)
        return float(sums[0])

    out = []
    with torch.no_grad():
        for p in pairs:
            c, r = p["prompt"] + p["chosen"], p["prompt"] + p["rejected"]
            pol = logp(c) - logp(r)
            with model.disable_adapter():
                ref = logp(c) - logp(r)
            out.append(pol - ref)
    return out
