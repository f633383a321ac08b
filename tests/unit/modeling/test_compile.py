"""train.compile (domainft/modeling/compile.py): which layers are compiled, same numbers as eager, clean exit."""
from __future__ import annotations

import pytest
import torch

from domainft.modeling.attention import use_packed_attention
from domainft.modeling.compile import AUTO_MIN_SAMPLES, check_compiler, choose_compile, compiled_layers, decoder_layers
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


@pytest.mark.parametrize("args, on, reason", [
    (("auto", "cpu", True, AUTO_MIN_SAMPLES, False, 1), True, "auto -> on (bf16 CPU, 2048 planned samples >= 2048)"),
    (("auto", "cpu", True, AUTO_MIN_SAMPLES - 1, False, 1), False, "2047 planned samples < 2048"),
    (("auto", "cpu", False, 10**6, False, 1), False, "auto -> off (fp32 compute)"),
    (("auto", "cuda", True, 10**6, False, 1), False, "auto -> off (not on CPU)"),
    (("auto", "cpu", True, 10**6, False, 2), False, "auto -> off (2 processes)"),
    (("auto", "cpu", True, 10**6, True, 1), False, "auto -> off (gradient checkpointing on)"),
    ((True, "cuda", False, 1, True, 4), True, "train.compile: true"),
    ((False, "cpu", True, 10**6, False, 1), False, "train.compile: false"),
])
def test_choose_compile_auto_is_on_only_for_long_single_process_bf16_cpu_runs(args, on, reason):
    got, why = choose_compile(*args)
    assert got is on and reason in why


def test_choose_compile_auto_is_off_without_a_compiler(monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CXX", raising=False)
    assert choose_compile("auto", "cpu", True, 10**6, False) == (False, "train.compile: auto -> off (no C++ compiler (g++, clang++ or $CXX))")


def _arch(kind):
    """A 2-layer random model of another decoder family, built from its config (no download)."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, Qwen2Config

    common = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=128)
    cfg = (Gemma3TextConfig(**common, sliding_window=8, layer_types=["sliding_attention", "full_attention"])
           if kind == "gemma3" else Qwen2Config(**common))
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).train()


@pytest.mark.parametrize("kind, layer", [("gemma3", "Gemma3DecoderLayer"), ("qwen2", "Qwen2DecoderLayer")])
def test_compiled_layers_equal_eager_on_other_decoder_families(kind, layer):
    """Gemma 3 (sliding-window and full layers, sandwich norms, scaled embeddings) and Qwen 2
    (q/k/v biases) with LoRA: compiled layers give eager's loss and gradients to fp32 rounding."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_arch(kind), LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                                   task_type="CAUSAL_LM"))
    assert [type(m).__name__ for m in decoder_layers(model)] == [layer] * 2
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 256, (1, 24), generator=g)  # longer than Gemma's sliding window (8)
    pos = torch.arange(24)[None]
    loss_eager, grads_eager = _loss_and_grads(model, ids, pos)
    torch._dynamo.reset()
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    with compiled_layers(model, True) as n:
        assert n == 2
        loss_c, grads_c = _loss_and_grads(model, ids, pos)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > before  # the compiled code ran
    assert abs(loss_c - loss_eager) <= 1e-5 * abs(loss_eager)
    assert grads_c.keys() == grads_eager.keys() and len(grads_c) == 12  # 2 layers x 3 modules x LoRA A, B
    for k, g in grads_eager.items():
        assert float((grads_c[k] - g).abs().max()) <= 1e-4 * float(g.abs().max()) + 1e-7, k
