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


# ----------------------------------------------------------------------------- QLoRA adapters
def _qlora_copy(adapter, tiny_model_dir, tmp_path):
    """The trained adapter, marked as trained on the NF4 weights of every linear layer but lm_head."""
    import shutil

    import torch

    from domainft.modeling.base import load_model
    from domainft.quantization import write_spec

    base, _ = load_model(tiny_model_dir, device="cpu")
    names = sorted(n for n, m in base.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head")
    dst = tmp_path / "qlora_adapter"
    shutil.copytree(adapter, dst)
    write_spec(dst, {"method": "bitsandbytes-4bit", "quant_type": "nf4", "blocksize": 64, "double_quant": True,
                     "dtype": "bfloat16", "quantized_modules": names})
    return dst, names


def test_qlora_adapter_is_merged_onto_the_nf4_weights_it_was_trained_against(tiny_model_dir, adapter, tmp_path):
    from domainft.modeling.base import load_model
    from domainft.quantization import read_spec, nf4_round_trip

    qdir, names = _qlora_copy(adapter, tiny_model_dir, tmp_path)
    assert len(names) == 14  # 2 layers x (q, k, v, o, gate, up, down)
    on_nf4 = merge_adapter(str(tiny_model_dir), str(qdir), str(tmp_path / "m_nf4"), RECS, n_prompts=3)
    on_orig = merge_adapter(str(tiny_model_dir), str(qdir), str(tmp_path / "m_orig"), RECS, n_prompts=3,
                            qlora_base="original")
    for m in (on_nf4, on_orig):  # each merge reproduces base+adapter on the weights it chose
        assert m["passed"] and m["max_abs_logit_diff"] < 1e-4 and m["quantized_modules"] == 14
    assert on_nf4["qlora_base"] == "dequantized" and on_orig["qlora_base"] == "original"
    # the NF4 round trip moves the logits: the gap is measured, not zero
    assert on_nf4["qlora_gap"]["max_abs_logit_diff"] > 1e-3
    assert on_nf4["qlora_gap"] == on_orig["qlora_gap"]

    base, _ = load_model(tiny_model_dir, device="cpu")
    m_nf4, _ = load_model(tmp_path / "m_nf4", device="cpu")
    m_orig, _ = load_model(tmp_path / "m_orig", device="cpu")
    spec = read_spec(qdir)
    name = "model.layers.1.self_attn.q_proj"
    w = base.get_submodule(name).weight
    delta = m_orig.get_submodule(name).weight - w  # the LoRA update B @ A * alpha / r
    assert float(delta.abs().max()) > 1e-4
    got = m_nf4.get_submodule(name).weight - nf4_round_trip(w, spec)
    assert float((got - delta).abs().max()) < 1e-5
    # modules outside the record (embeddings, tied lm_head, norms) are the base's, untouched
    assert float((m_nf4.get_input_embeddings().weight - base.get_input_embeddings().weight).abs().max()) == 0.0
    assert float((m_nf4.model.norm.weight - base.model.norm.weight).abs().max()) == 0.0


def test_merge_rejects_an_unknown_qlora_base(tiny_model_dir, adapter, tmp_path):
    with pytest.raises(ValueError, match="qlora_base"):
        merge_adapter(str(tiny_model_dir), str(adapter), str(tmp_path / "m"), RECS, qlora_base="nf4")


def test_template_tokens_of_a_base_without_template_are_trained_and_merged(tiny_model_dir, tmp_path):
    """A base whose ChatML template the base stage installed: the rows of <|im_start|> (1) and
    <|im_end|> (2) are trained with the adapter, merged into the tied embedding, nothing else moves."""
    import shutil

    import torch

    from domainft.modeling.base import META_FILE, load_model

    base_dir = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base_dir)
    (base_dir / META_FILE).write_text(json.dumps({"chat_template_added": True}))
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in RECS))
    p = TrainParams(max_steps=5, batch_size=4, learning_rate=5e-3, out_dir=str(tmp_path / "adapter"),
                    checkpoint_dir=str(tmp_path / "ckpt"))
    t = train_adapter(str(base_dir), str(tmp_path / "train.jsonl"), None, p, plots_csv=str(tmp_path / "l.csv"))
    assert t["trained_token_ids"] == [1, 2]
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["trainable_token_indices"] == [1, 2]
    m = merge_adapter(str(base_dir), str(tmp_path / "adapter"), str(tmp_path / "merged"), RECS, n_prompts=3)
    assert m["passed"] and m["tied_embeddings_merged"]
    base, _ = load_model(base_dir, device="cpu")
    merged, _ = load_model(tmp_path / "merged", device="cpu")
    delta = (merged.get_input_embeddings().weight - base.get_input_embeddings().weight).abs().amax(dim=1)
    assert float(delta[1]) > 1e-3 and float(delta[2]) > 1e-3
    assert float(torch.cat([delta[:1], delta[3:]]).max()) == 0.0
    assert torch.equal(merged.lm_head.weight, merged.get_input_embeddings().weight)

    (base_dir / META_FILE).write_text(json.dumps({"chat_template_added": False}))  # a base with its own template
    p2 = p.model_copy(update={"out_dir": str(tmp_path / "adapter2"), "checkpoint_dir": str(tmp_path / "ck2")})
    t2 = train_adapter(str(base_dir), str(tmp_path / "train.jsonl"), None, p2, plots_csv=str(tmp_path / "l2.csv"))
    assert t2["trained_token_ids"] == []
    assert json.loads((tmp_path / "adapter2" / "adapter_config.json").read_text())["trainable_token_indices"] is None
