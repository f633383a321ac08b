"""DPO on the SFT model: the loss starts at ln 2 and falls, chosen-vs-rejected log-ratio margins grow."""
import math

import pytest

from domainft.config import LoraParams, PreferenceParams
from domainft.preference import judge_verdict, logratio_margins, pairs_sha256, preference_pairs, train_dpo


def _row(i, base, tuned, pair=None):
    return {"id": f"r{i}", "prompt": [{"role": "user", "content": f"What is the fee for plan {i}?"}],
            "reference": f"The fee for plan {i} is ${3 * i}.", "base_answer": base, "tuned_answer": tuned,
            "judge": {"pair": pair} if pair else None}


def test_pairs_from_human_and_agreeing_judge_verdicts():
    rows = [_row(0, "no idea", "It is $0.", {"base_first": "B", "tuned_first": "A"}),  # both orders: tuned
            _row(1, "It is $3.", "bananas", {"base_first": "A", "tuned_first": "B"}),  # both orders: base
            _row(2, "x", "y", {"base_first": "A", "tuned_first": "A"}),  # orders disagree: no pair
            _row(3, "p", "q", {"base_first": "B", "tuned_first": "A"})]  # judge says tuned, human says base
    assert [judge_verdict(r) for r in rows] == ["tuned", "base", None, "tuned"]
    pairs = preference_pairs(rows, human={"r3": "base"})
    assert [(p["id"], p["source"], p["chosen"][0]["content"]) for p in pairs] == [
        ("r0", "judge", "It is $0."), ("r1", "judge", "It is $3."), ("r3", "human", "p")]
    assert len(preference_pairs(rows, human={"r3": "tie"}, use_judge=False)) == 0
    assert len(preference_pairs(rows, use_judge=False, reference_pairs=True)) == 4
    assert pairs_sha256(pairs) != pairs_sha256(pairs[:2])


def test_dpo_loss_starts_at_ln2_and_falls_and_margins_grow(tiny_model_dir, tmp_path):
    rows = [_row(i, f"I do not know about plan {i}.", f"The fee for plan {i} is ${3 * i}.",
                 {"base_first": "B", "tuned_first": "A"}) for i in range(8)]
    pairs = preference_pairs(rows)
    assert len(pairs) == 8
    params = PreferenceParams(beta=0.1, learning_rate=5e-3, max_steps=12, batch_size=4,
                              lora=LoraParams(r=8, alpha=16))
    m = train_dpo(tiny_model_dir, pairs, params, tmp_path / "dpo", seed=0)
    assert m["loss_first"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference (SFT) at step 0
    assert m["margin_first"] == pytest.approx(0.0, abs=1e-4)
    assert m["loss_last"] < m["loss_first"] - 0.2 and m["margin_last"] > m["margin_first"] + 1.0
    assert m["accuracy_last"] == 1.0
    margins = logratio_margins(tiny_model_dir, tmp_path / "dpo", pairs)  # on the training pairs, after training
    assert min(margins) > 0 and sum(margins) / len(margins) > 10
