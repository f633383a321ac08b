"""train.compile (domainft/modeling/compile.py): which layers are compiled, same numbers as eager, clean exit."""
from __future__ import annotations

import pytest
import torch

from domainft.modeling.attention import use_packed_attention
from domainft.modeling.compile import check_compiler, compiled_layers, decoder_layers
from domainft.train import TrainError


def _model(model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    use_packed_attention(model)
    return model.train()


def _packed(vocab, lengths=(5, 9, 7)):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (1, sum(lengths)), generator=g)
    pos = torch.cat([torch.arange(n) for n in lengths])[None]
    return ids, pos


def _loss_and_grads(model, ids, pos):
    model.zero_grad()
    logits = model(input_ids=ids, position_ids=pos, use_cache=False).logits
    loss = torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[0, 1:])
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_decoder_layers_are_the_models_decoder_layer_modules(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    model = _model(tiny_model_dir)
    layers = decoder_layers(model)
    assert [type(m).__name__ for m in layers] == ["LlamaDecoderLayer"] * model.config.num_hidden_layers
    wrapped = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    assert decoder_layers(wrapped) == layers  # found through peft's wrappers, none twice
    assert decoder_layers(torch.nn.Linear(2, 2)) == []


def test_compiled_layers_give_eager_loss_and_gradients_and_restore_forward(tiny_model_dir):
    """A packed row (3 samples, per-sample attention left eager) through compiled layers: the loss and
    every gradient equal eager's to fp32 rounding; gradient-free calls and the exit run the eager code."""
    model = _model(tiny_model_dir)
    ids, pos = _packed(model.config.vocab_size)
    loss_eager, grads_eager = _loss_and_grads(model, ids, pos)
    with compiled_layers(model, True) as n:
        assert n == model.config.num_hidden_layers
        assert all("forward" in m.__dict__ for m in decoder_layers(model))
        loss_c, grads_c = _loss_and_grads(model, ids, pos)
        ids2, pos2 = _packed(model.config.vocab_size, (4, 11))  # another row length: dynamic, no failure
        _loss_and_grads(model, ids2, pos2)
        with torch.no_grad():
            torch._dynamo.reset()  # a compiled call under no_grad would have to compile again: it must not run
            before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
            model(input_ids=ids, position_ids=pos, use_cache=False)
            assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == before
    assert all("forward" not in m.__dict__ for m in decoder_layers(model))
    assert abs(loss_c - loss_eager) <= 1e-5 * abs(loss_eager)
    assert grads_c.keys() == grads_eager.keys() and len(grads_c) > 10
    for k, g in grads_eager.items():
        assert float((grads_c[k] - g).abs().max()) <= 1e-4 * float(g.abs().max()) + 1e-7, k


def test_disabled_compiles_nothing(tiny_model_dir):
    model = _model(tiny_model_dir)
    with compiled_layers(model, False) as n:
        assert n == 0 and all("forward" not in m.__dict__ for m in decoder_layers(model))


def test_no_decoder_layer_or_no_compiler_is_a_clear_error(monkeypatch):
    with pytest.raises(TrainError, match="no decoder layer found in Linear"):
        with compiled_layers(torch.nn.Linear(2, 2), True):
            pass
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(TrainError, match="needs a C\\+\\+ compiler"):
        check_compiler("cpu")
    check_compiler("cuda")  # triton's concern there, not a C++ compiler's
