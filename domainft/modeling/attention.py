"""Attention for padding-free (packed) training rows: each packed sample attends only to itself,
computed per sample with a causal kernel instead of over the whole row with a dense mask.

Why: with ``padding_free`` the Trainer concatenates a batch into one row of ``L = sum(l_i)``
tokens whose ``position_ids`` restart at 0 for each sample. transformers' ``sdpa`` path then
builds a dense boolean block-diagonal mask of ``L x L`` (``masking_utils.find_packed_sequence_indices``)
and the kernel computes every one of the ``L^2`` scores, masked ones included, with no causal
skipping. Per sample with ``is_causal=True`` it computes about ``sum(l_i^2) / 2`` of them: for
four samples of equal length, an eighth. Numerically each sample's output is what the dense
masked call gives (tests/unit/modeling/test_attention.py compares outputs and gradients).

:data:`NAME` is registered with transformers' public ``AttentionInterface`` and
``AttentionMaskInterface`` (documented "custom attention" API, transformers >= 4.48):

- mask: ``None`` when the whole input is valid (no 2D padding mask) and queries and keys
  coincide (``q_length == kv_length``, offset 0): the attention function then derives the samples
  from ``position_ids``; anything else (padding, a KV cache) gets transformers' own sdpa mask;
- attention: with no mask, a row is split where ``position_ids`` do not increase by 1 and each
  piece runs causally on its own (grouped-query heads expanded as transformers' sdpa path does):
  ``torch.nn.functional.scaled_dot_product_attention(..., is_causal=True)``, or on CPU for pieces
  of at most :data:`MATH_MAX_TOKENS` tokens explicit matmuls with fp32 scores and softmax; with a mask, or without ``position_ids``,
  transformers' ``sdpa_attention_forward`` runs unchanged.


:func:`use_packed_attention` sets a loaded model to it; the train stage does so on every device
when ``train.padding_free`` is on. Shapes follow transformers' attention functions: query
``(B, H, L, D)``, key/value ``(B, H_kv, L, D)``, output ``(B, L, H, D)``.
"""
from __future__ import annotations

import torch

NAME = "domainft_packed_sdpa"


def segment_lengths(position_ids: torch.Tensor) -> list[list[int]]:
    """Lengths of the packed samples of each row: a new sample starts wherever the position does
    not follow the previous one by 1 (as transformers' ``find_packed_sequence_indices``).

    Args:
        position_ids: ``(B, L)`` or ``(L,)`` integer positions.

    Returns:
        ``B`` lists of lengths, each summing to ``L``.
    """
    pos = position_ids.reshape(-1, position_ids.shape[-1]) if position_ids.dim() > 1 else position_ids[None]
    out = []
    for row in pos.tolist():
        starts = [0] + [i for i in range(1, len(row)) if row[i] != row[i - 1] + 1]
        out.append([b - a for a, b in zip(starts, starts[1:] + [len(row)])])
    return out


@torch.compiler.disable  # host-side splitting by position_ids: runs eagerly inside a compiled layer (modeling/compile.py)
def packed_sdpa_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                        scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    """transformers attention function (see the module docstring); returns ``(output, None)``."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    position_ids = kwargs.get("position_ids")
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    q_len, kv_len = query.shape[2], key.shape[2]
    if attention_mask is not None or position_ids is None or not causal or q_len != kv_len \
            or kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    drop = dropout if module.training else 0.0
    if position_ids.shape[0] != query.shape[0]:
        position_ids = position_ids.expand(query.shape[0], -1)
    rows = []
    for b, lengths in enumerate(segment_lengths(position_ids)):
        pieces, start = [], 0
        for n in lengths:
            q, k, v = (t[b:b + 1, :, start:start + n] for t in (query, key, value))
            pieces.append(_causal_attention(q, k, v, drop, scaling))
            start += n
        rows.append(pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2))
    out = rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)
    return out.transpose(1, 2).contiguous(), None


# Up to this many tokens, a sample's attention on CPU runs as explicit matmuls + fp32 softmax, faster
# than the CPU flash kernel for short samples (bench/RESULTS.md, issue 17); its saved probabilities
# cost n^2 x heads x 6 bytes per layer (1.4 MiB at 160 tokens x 9 heads).
MATH_MAX_TOKENS = 160


def _causal_attention(q, k, v, dropout: float, scaling: float | None):
    """Causal attention of one sample, ``(1, H, n, D)`` each -> ``(1, H, n, D)``."""
    n = q.shape[2]
    if n > MATH_MAX_TOKENS or q.device.type != "cpu":
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling,
                                                                is_causal=True)
    scale = scaling if scaling is not None else q.shape[-1] ** -0.5
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale  # fp32 scores, as the flash kernel accumulates
    future = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)
    probs = scores.masked_fill(future, float("-inf")).softmax(-1).to(q.dtype)
    if dropout:
        probs = torch.nn.functional.dropout(probs, p=dropout, training=True)
    return probs @ v


def packed_sdpa_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
                     attention_mask: torch.Tensor | None = None, **kwargs):
    """transformers mask function: ``None`` for a fully valid input with queries = keys (the
    attention function splits by ``position_ids``), else transformers' sdpa mask."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None and q_length == kv_length and q_offset == 0 and kv_offset == 0:
        return None
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, attention_mask=attention_mask, **kwargs)


def register() -> str:
    """Register :data:`NAME` with transformers (idempotent); returns it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, packed_sdpa_forward)
    AttentionMaskInterface.register(NAME, packed_sdpa_mask)
    return NAME


def use_packed_attention(model) -> bool:
    """Switch ``model`` (a transformers model, possibly peft-wrapped later) to :data:`NAME` when it
    runs sdpa or eager attention now; returns whether it did. Other implementations (flash
    attention on CUDA, flex) are left alone: they handle packed rows themselves; so are models
    with sliding-window layers, whose window this causal-only path would not apply."""
    current = getattr(model.config, "_attn_implementation", None)
    if current not in ("sdpa", "eager", None):
        return current == NAME
    text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if getattr(text, "sliding_window", None) or "sliding_attention" in (getattr(text, "layer_types", None) or ()):
        return False  # the mask function would drop the window (Gemma 3, Mistral): sdpa's dense mask keeps it
    model.set_attn_implementation(register())
    return True
