"""Batched, reproducible answer generation for evaluation (base and tuned answer the same prompts).

Policy (issue 6):

* prompt ids come from :func:`domainft.modeling.chat.fit_prompt` (``encode_prompt``, the one chat
  template shared with training and serving, after the long-source policy when one is given);
* prompts are batched with LEFT padding (a decoder-only model continues from the last position,
  so padding must sit before the prompt), and sorted by length so a batch wastes little padding;
* greedy decoding by default; sampling (temperature, top_p) is seeded per batch;
* generation stops at the generation_config eos ids, which include the end-of-turn token; only the
  new tokens are kept, cut at the first eos id, and decoded with special tokens skipped.

The pad id may equal an eos id (SmolLM2: pad = eos = ``<|im_end|>`` = 2). That is safe here
because padding is marked by the attention mask, never inferred from the id, and the tokens after
the first eos are discarded.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from domainft.modeling.chat import fit_prompt, generation_eos_ids


@dataclass
class Generation:
    """One generated answer.

    text: decoded new tokens, special tokens skipped, stripped.
    token_ids: new token ids up to (excluding) the first eos id.
    stopped: True when an eos id ended the answer, False when ``max_new_tokens`` cut it.
    prompt_tokens: length of the prompt in tokens (after the long-source policy).
    source_cut: source tokens the long-source policy removed from the prompt (0 = whole).
    overlong: the prompt is over the policy's budget and was used whole (see ``FittedPrompt``).
    """

    text: str
    token_ids: list[int]
    stopped: bool
    prompt_tokens: int
    source_cut: int = 0
    overlong: bool = False


def eos_ids_for(model, tokenizer) -> list[int]:
    """Eos ids from the model's generation_config (int or list), else from the tokenizer + template."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        return generation_eos_ids(tokenizer)
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


def left_pad(batch: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id lists.

    Returns:
        input_ids: (B, T) long; attention_mask: (B, T) long, 0 on padding.
    """
    width = max(len(x) for x in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, x in enumerate(batch):
        ids[i, width - len(x):] = torch.tensor(x, dtype=torch.long)
        mask[i, width - len(x):] = 1
    return ids, mask


def _cut(new_ids: list[int], eos: set[int]) -> tuple[list[int], bool]:
    for k, t in enumerate(new_ids):
        if t in eos:
            return new_ids[:k], True
    return new_ids, False


@torch.inference_mode()
def generate_ids(model, prompt_ids: list[list[int]], eos_ids: list[int], pad_id: int,
                 max_new_tokens: int = 96, batch_size: int = 8, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                 progress=None) -> list[tuple[list[int], bool]]:
    """Generate continuations for already tokenized prompts, batched with left padding.

    Args:
        model: causal LM in eval mode.
        prompt_ids: N prompts, each a list of token ids (ending with the assistant header).
        eos_ids: ids that end an answer (first one hit wins).
        pad_id: id written into padding positions (masked out; may equal an eos id).
        max_new_tokens: cap on new tokens per answer.
        batch_size: prompts per ``model.generate`` call.
        do_sample, temperature, top_p: sampling; greedy when ``do_sample`` is False.
        seed: torch seed set before each batch when sampling (batch i uses ``seed + i``).
        progress: optional :class:`domainft.progress.Progress`, advanced by each batch's prompts.

    Returns:
        N tuples ``(new token ids before the first eos, stopped_at_eos)`` in input order.
    """
    device = next(model.parameters()).device
    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
    out: list[tuple[list[int], bool] | None] = [None] * len(prompt_ids)
    eos = set(eos_ids)
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if do_sample else dict(do_sample=False)
    for b, start in enumerate(range(0, len(order), batch_size)):
        idx = order[start:start + batch_size]
        ids, mask = left_pad([prompt_ids[i] for i in idx], pad_id)  # (B, T)
        if do_sample:
            torch.manual_seed(seed + b)
        gen = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
            eos_token_id=list(eos_ids), pad_token_id=pad_id, top_k=None, **sampling,
        )  # (B, T + new)
        new = gen[:, ids.shape[1]:].tolist()  # (B, new)
        for i, row in zip(idx, new):
            out[i] = _cut(row, eos)
        if progress is not None:
            progress.update(len(idx))
    return out  # type: ignore[return-value]


def generate_answers(model, tokenizer, prompts: list[list[dict[str, str]]], max_new_tokens: int = 96,
                     batch_size: int = 8, do_sample: bool = False, temperature: float = 1.0,
                     top_p: float = 1.0, seed: int = 0, progress=None, policy=None) -> list[Generation]:
    """Answer chat prompts (each a message list ending before the assistant turn).

    See :func:`generate_ids` for the arguments. The pad id is the tokenizer's pad token, falling
    back to the first eos id. ``policy``: a :class:`domainft.modeling.chat.SourcePolicy` (None =
    prompts whole); a prompt over ``policy.prompt_budget(max_new_tokens)`` has its source cut as
    training cut it (:func:`~domainft.modeling.chat.fit_prompt`).

    Returns:
        N :class:`Generation` in input order.
    """
    eos_ids = eos_ids_for(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    fitted = [fit_prompt(tokenizer, p, policy, max_new_tokens) for p in prompts]
    raw = generate_ids(model, [f.ids for f in fitted], eos_ids, pad_id, max_new_tokens, batch_size,
                       do_sample, temperature, top_p, seed, progress)
    return [
        Generation(tokenizer.decode(ids, skip_special_tokens=True).strip(), ids, stopped, len(f.ids),
                   f.removed, f.overlong)
        for (ids, stopped), f in zip(raw, fitted)
    ]
