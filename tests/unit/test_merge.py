"""Merged model answers like base+adapter; ties and eos ids survive the save."""
import json

import pytest

from domainft.config import TrainParams
from domainft.merge import merge_adapter
from domainft.train import train_adapter

SYSTEM = {"role": "system", "content": "Be brief."}
RECS = [{"messages": [SYSTEM, {"role": "user", "content": f"Limit for tier {i}?"},
                      {"role": "assistant", "content": f"Tier {i} allows {100 * i} per day."}]} for i in range(12)]


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("merge")
    (d / "train.jsonl").write_text("\n".join(json.dumps(r) for r in RECS))
    p = TrainParams(max_steps=5, batch_size=4, learning_rate=5e-3, out_dir=str(d / "adapter"),
                    checkpoint_dir=str(d / "ckpt"))
    train_adapter(str(tiny_model_dir), str(d / "train.jsonl"), None, p, plots_csv=str(d / "loss.csv"))
    return d / "adapter"


def test_merged_matches_base_plus_adapter(tiny_model_dir, adapter, tmp_path):
    m = merge_adapter(str(tiny_model_dir), str(adapter), str(tmp_path / "merged"), RECS, n_prompts=4)
    assert m["passed"] and m["prompts"] == 4 and m["positions"] > 40
    assert m["max_abs_logit_diff"] < 1e-4 and m["greedy_agreement"] == 1.0
    assert m["tied_embeddings_base"] and m["tied_embeddings_merged"]
    assert 2 in m["eos_token_ids"]  # <|im_end|>
    assert (tmp_path / "merged" / "chat_template.jinja").exists()
    assert not (tmp_path / "merged" / "adapter_config.json").exists()


def test_merge_differs_from_base_so_the_check_can_fail(tiny_model_dir, adapter, tmp_path):
    """Comparing against a threshold of 0 must fail: the check measures something real."""
    m = merge_adapter(str(tiny_model_dir), str(adapter), str(tmp_path / "merged"), RECS, n_prompts=2,
                      max_abs_logit_diff=0.0)
    assert m["passed"] is False
    from domainft.merge import _logits, _prompt_ids, compare_logits
    from domainft.modeling.base import load_model

    base, tok = load_model(tiny_model_dir, device="cpu")
    merged, _ = load_model(tmp_path / "merged", device="cpu")
    prompts = _prompt_ids(tok, RECS, 2)
    assert compare_logits(_logits(base, prompts), _logits(merged, prompts))["max_abs_logit_diff"] > 1e-3
