"""Packed-row attention (domainft/modeling/attention.py) against transformers' dense masked sdpa."""
from __future__ import annotations

import pytest
import torch

from domainft.modeling.attention import NAME, segment_lengths, use_packed_attention


def test_segment_lengths_follow_position_restarts():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    assert segment_lengths(pos) == [[3, 2, 4]]
    assert segment_lengths(torch.arange(5)) == [[5]]
    # a row that does not start at 0 is one sample (positions still consecutive)
    assert segment_lengths(torch.tensor([[4, 5, 6], [0, 0, 1]])) == [[3], [1, 2]]


def _packed_batch(lengths, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (1, sum(lengths)), generator=g)
    pos = torch.cat([torch.arange(n) for n in lengths])[None]
    return ids, pos


def _close(a, b, rel):
    """max |a - b| within ``rel`` of max |b| (bf16 rounds at 2^-8 of a value)."""
    return float((a - b).abs().max()) <= rel * float(b.abs().max())


def _cosine(a, b) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def _forward_backward(model_dir, dtype, packed: bool, ids, pos):
    """(logits, gradient of mean(logits^2) w.r.t. the input embeddings), both fp32."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa")
    if packed:
        assert use_packed_attention(model) and model.config._attn_implementation == NAME
    model.train()
    emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=emb, position_ids=pos, use_cache=False).logits
    logits.float().square().mean().backward()
    return model, logits.detach().float(), emb.grad.float()


@pytest.mark.parametrize("dtype,rel", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_packed_attention_equals_dense_masked_sdpa(tiny_model_dir, dtype, rel):
    """Same logits and input gradients as the dense block-diagonal mask for a row of 4 samples
    (lengths 7, 19, 3, 11: the math path; the flash path is tested below), in bf16 as close to
    fp32's as the dense path; every sample's logits equal those of the sample run alone."""
    lengths = [7, 19, 3, 11]
    ids, pos = _packed_batch(lengths, 49152)
    _, l_ref, g_ref = _forward_backward(tiny_model_dir, dtype, False, ids, pos)
    ours, l_ours, g_ours = _forward_backward(tiny_model_dir, dtype, True, ids, pos)
    if dtype == torch.float32:
        assert _close(l_ours, l_ref, rel) and _close(g_ours, g_ref, rel)
    else:  # bf16 rounds differently in each kernel: ours must be as close to the fp32 results as the dense one
        _, l_true, g_true = _forward_backward(tiny_model_dir, torch.float32, False, ids, pos)
        err_ours, err_ref = (float((x - l_true).abs().mean()) for x in (l_ours, l_ref))
        assert err_ours <= 1.1 * err_ref and _close(l_ours, l_true, 0.05)
        assert _cosine(g_ours, g_true) > 0.99
        assert _cosine(g_ours, g_true) >= _cosine(g_ref, g_true) - 0.002
    start = 0
    with torch.no_grad():
        for n in lengths:
            alone = ours(input_ids=ids[:, start:start + n], use_cache=False).logits.float()
            assert _close(alone, l_ours[:, start:start + n], rel)
            start += n


def test_long_samples_take_the_flash_kernel_and_agree(tiny_model_dir, monkeypatch):
    """Samples above MATH_MAX_TOKENS run through sdpa's causal kernel: same fp32 logits and gradients."""
    from domainft.modeling import attention

    monkeypatch.setattr(attention, "MATH_MAX_TOKENS", 8)
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(k.get("is_causal")) or real(*a, **k))
    ids, pos = _packed_batch([5, 30, 12], 49152, seed=3)
    _, l_ours, g_ours = _forward_backward(tiny_model_dir, torch.float32, True, ids, pos)
    n_ours = len(calls)
    _, l_ref, g_ref = _forward_backward(tiny_model_dir, torch.float32, False, ids, pos)
    assert n_ours == 2 * 2 and all(calls[:n_ours])  # 2 layers x the 2 samples over 8 tokens, causal
    assert _close(l_ours, l_ref, 1e-5) and _close(g_ours, g_ref, 1e-5)


def test_packed_attention_leaves_padding_and_generation_to_sdpa(tiny_model_dir):
    """A padded batch (2D mask) and greedy generation with a KV cache give sdpa's results."""
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    ours = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    use_packed_attention(ours)
    ids = torch.randint(0, ref.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding
    with torch.no_grad():
        a = ref(input_ids=ids, attention_mask=mask).logits
        b = ours(input_ids=ids, attention_mask=mask).logits
        assert torch.allclose(a[mask.bool()], b[mask.bool()], atol=1e-5, rtol=0)
        ga = ref.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
        gb = ours.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(ga, gb)


def test_other_implementations_are_left_alone(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    model.config._attn_implementation = "flex_attention"  # as a model loaded with it reports
    assert use_packed_attention(model) is False
    assert model.config._attn_implementation == "flex_attention"


def test_sliding_window_models_keep_sdpa(tiny_model_dir):
    """A window this path would not apply: the model stays on sdpa (its dense mask keeps the window)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    model.config.sliding_window = 4
    assert use_packed_attention(model) is False and model.config._attn_implementation == "sdpa"
    model.config.sliding_window = None
    model.config.layer_types = ["sliding_attention", "full_attention"]
    assert use_packed_attention(model) is False
