"""One chat template for training, evaluation and serving, and assistant-only loss labels.

The label policy (the pipeline's core invariant):

* only assistant content tokens and each assistant turn's end-of-turn token carry labels;
* every other position (system/user turns, template markup, padding) is -100;
* this holds for any chat template, with or without ``{% generation %}`` markers, because the
  assistant spans are found by rendering the conversation prefix by prefix and mapping character
  offsets to tokens, not by trusting the template or the pad id (pad may equal eos).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domainft.errors import DomainftError

# ChatML, as used by Qwen2.5 and SmolLM2, without a default system prompt.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHATML_SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>"]

IGNORE_INDEX = -100


class ChatTemplateError(DomainftError, ValueError):
    """The tokenizer's chat template cannot be used for assistant-only loss."""


def render(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """Render messages with the tokenizer's own chat template (the pipeline's single template),
    after :func:`fit_system_role` (the system-role policy of training, evaluation and serving).

    Raises:
        ChatTemplateError: no template, or the template refuses the conversation (its own
            ``raise_exception`` message, e.g. "Conversation roles must alternate", is quoted).
    """
    if not tokenizer.chat_template:
        raise ChatTemplateError("tokenizer has no chat_template; run the base stage first")
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(
            fit_system_role(tokenizer, messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except TemplateError as err:
        roles = "/".join(m["role"] for m in messages)
        raise ChatTemplateError(f"the chat template refuses a conversation with roles {roles}: {err}") from None


SYSTEM_FOLD_SEPARATOR = "\n\n"  # between the system text and the first user turn when folded


def supports_system_role(tokenizer) -> bool:
    """Whether the chat template renders a leading system turn (cached per template).

    Probed once: ``[system, user]`` must render without the template raising (Mistral-v0.1 style
    templates raise "Conversation roles must alternate") and must contain the system text (some
    templates silently drop it).
    """
    template = tokenizer.chat_template
    cache = getattr(tokenizer, "_domainft_system_role", None)
    if cache is not None and cache[0] == template:
        return cache[1]
    probe = [{"role": "system", "content": "SYSPROBE"}, {"role": "user", "content": "USERPROBE"}]
    try:
        ok = "SYSPROBE" in tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    except Exception:  # jinja2 TemplateError from raise_exception, or a template bug on this shape
        ok = False
    try:
        tokenizer._domainft_system_role = (template, ok)
    except AttributeError:
        pass
    return ok


def fit_system_role(tokenizer, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The system-role policy (one place): unchanged when the template supports a system turn;
    otherwise the system text is folded into the first user turn (``system + "\\n\\n" + user``)
    and the system turn removed. Training, evaluation and serving all render through
    :func:`render`, so they see the same prompt. A conversation with only a system turn left is
    returned as ``[user: system text]``.

    Args:
        messages: ``[{"role", "content"}]``; only a first-position system turn is folded (the
            record validator allows no other).
    """
    if not messages or messages[0]["role"] != "system" or supports_system_role(tokenizer):
        return messages
    system, rest = messages[0]["content"], list(messages[1:])
    if rest and rest[0]["role"] == "user":
        text = f"{system}{SYSTEM_FOLD_SEPARATOR}{rest[0]['content']}" if system.strip() else rest[0]["content"]
        rest[0] = {**rest[0], "content": text}
        return rest
    return ([{"role": "user", "content": system}] if system.strip() else []) + rest


SOURCE_CUT_MARKER = "\n[...]\n"  # where text of a trimmed source was removed


def fit_source(tokenizer, messages: list[dict[str, str]], max_tokens: int, cut: str = "end"
               ) -> tuple[list[dict[str, str]], int] | None:
    """The long-source policy (one place): trim the source, never the answer, to fit ``max_tokens``.

    The source is the longest user turn (a transcript, filing excerpts, a dialogue). Its text is
    cut at token boundaries (offsets of the tokenizer, so no character is split) and
    :data:`SOURCE_CUT_MARKER` marks the cut; assistant turns, their end-of-turn tokens and the
    template markup are untouched. A conversation ending with a user turn is a prompt (evaluation,
    serving) and is measured with the generation header.

    Args:
        messages: ``[{"role", "content"}]``.
        max_tokens: budget T for the rendered conversation (training: ``train.max_seq_length``;
            a prompt: the context length minus the tokens to generate).
        cut: ``end`` keeps the source's beginning, ``start`` its end, ``middle`` both ends.

    Returns:
        ``(messages, tokens removed from the source)``, the same messages and 0 when they fit, or
        None when they cannot fit even with the source cut to nothing.
    """
    gen = messages[-1]["role"] != "assistant"

    def length(msgs):
        return len(tokenizer(render(tokenizer, msgs, add_generation_prompt=gen), add_special_tokens=False)["input_ids"])

    n = length(messages)
    if n <= max_tokens:
        return messages, 0
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        return None
    src = max(users, key=lambda i: len(messages[i]["content"]))
    text = messages[src]["content"]
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    excess = n - max_tokens
    for _ in range(8):  # re-tokenising at the cut can shift the count by a few tokens: measure again
        keep = len(offsets) - excess
        if keep <= 0:
            return None
        if cut == "end":
            new = text[:offsets[keep - 1][1]] + SOURCE_CUT_MARKER
        elif cut == "start":
            new = SOURCE_CUT_MARKER + text[offsets[len(offsets) - keep][0]:]
        else:
            head = keep // 2
            new = (text[:offsets[head - 1][1]] if head else "") + SOURCE_CUT_MARKER + text[offsets[len(offsets) - (keep - head)][0]:]
        out = [*messages[:src], {**messages[src], "content": new}, *messages[src + 1:]]
        m = length(out)
        if m <= max_tokens:
            return out, len(offsets) - keep
        excess += m - max_tokens
    return None


@dataclass(frozen=True)
class SourcePolicy:
    """How overlong sources are cut, the same for training, evaluation and serving.

    Built from the train section by :meth:`from_params` so that evaluation and the server cut a
    prompt's source exactly where training cut it.

    Attributes:
        max_tokens: T, the training sequence budget in tokens (``train.max_seq_length``): a
            conversation (prompt + answer) is fitted to T; a prompt to T minus the tokens to generate.
        cut: ``end`` | ``start`` | ``middle`` (``train.source_cut``), see :func:`fit_source`.
        trim: True when ``train.overlong`` is ``trim_source``; otherwise nothing is cut (training
            dropped or prompt-trimmed such samples) and overlong prompts are only counted.
        reserve: tokens kept free for the answer when the caller gives no ``max_new_tokens``
            (``evaluate.max_new_tokens``, default 128).
    """

    max_tokens: int
    cut: str = "end"
    trim: bool = True
    reserve: int = 128

    @classmethod
    def from_params(cls, train, max_new_tokens: int = 128) -> "SourcePolicy":
        """From :class:`domainft.config.TrainParams` (``max_seq_length``, ``overlong``, ``source_cut``)."""
        return cls(train.max_seq_length, train.source_cut, train.overlong == "trim_source", max_new_tokens)

    def prompt_budget(self, max_new_tokens: int | None = None) -> int:
        """Tokens a prompt may take: T minus the tokens to generate, at least T // 2 (a long answer
        never squeezes the source to nothing)."""
        new = self.reserve if max_new_tokens is None else max_new_tokens
        return max(self.max_tokens - new, self.max_tokens // 2)


@dataclass(frozen=True)
class FittedPrompt:
    """A prompt after :func:`fit_prompt`: ``ids`` (token ids ending with the generation header),
    ``messages`` (as rendered, the source possibly cut), ``removed`` (source tokens cut, 0 = whole)
    and ``overlong`` (still over the budget: no trimming policy, or the source could not be cut
    enough; the prompt is then used whole)."""

    ids: list[int]
    messages: list[dict[str, str]]
    removed: int = 0
    overlong: bool = False


def fit_prompt(tokenizer, messages: list[dict[str, str]], policy: SourcePolicy | None,
               max_new_tokens: int | None = None) -> FittedPrompt:
    """Prompt ids under the long-source policy (evaluation and serving call this one function).

    Args:
        messages: a prompt ``[{"role", "content"}]`` ending before the assistant turn.
        policy: None = no policy (the prompt is encoded whole, never counted overlong).
        max_new_tokens: tokens to be generated (default ``policy.reserve``).

    Returns:
        :class:`FittedPrompt`; with ``policy.trim`` and a prompt over
        ``policy.prompt_budget(max_new_tokens)``, the longest user turn is cut by :func:`fit_source`
        at ``policy.cut``, as training cut it.
    """
    ids = encode_prompt(tokenizer, messages)
    if policy is None:
        return FittedPrompt(ids, messages)
    budget = policy.prompt_budget(max_new_tokens)
    if len(ids) <= budget:
        return FittedPrompt(ids, messages)
    fitted = fit_source(tokenizer, messages, budget, policy.cut) if policy.trim else None
    if fitted is None:
        return FittedPrompt(ids, messages, overlong=True)
    return FittedPrompt(encode_prompt(tokenizer, fitted[0]), fitted[0], fitted[1])


def fit_conversation(tokenizer, messages: list[dict[str, str]], policy: SourcePolicy | None
                     ) -> tuple[list[dict[str, str]], int]:
    """A whole conversation (ending with the answer) fitted to ``policy.max_tokens`` as training
    fits it: ``(messages, source tokens removed)``; unchanged when it fits, there is no trimming
    policy, or the source cannot be cut enough (training would drop it)."""
    if policy is None or not policy.trim:
        return messages, 0
    fitted = fit_source(tokenizer, messages, policy.max_tokens, policy.cut)
    return fitted if fitted is not None else (messages, 0)


def encode_prompt(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of a prompt ending with the assistant generation header.

    The same call is used by evaluation and serving, and training's prompt tokens are a prefix of
    it, so the three paths see identical ids. Special tokens are taken from the rendered text only
    (``add_special_tokens=False``), never added twice.
    """
    text = render(tokenizer, messages, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def end_of_turn(tokenizer) -> tuple[str, int]:
    """The special token that closes an assistant turn in the chat template.

    Found by rendering a probe conversation and taking the first special token after the
    assistant's content (``<|im_end|>`` for ChatML, ``<|eot_id|>`` for Llama 3,
    ``<end_of_turn>`` for Gemma). Falls back to ``eos_token``.

    Returns:
        (token string, token id)

    Raises:
        ChatTemplateError: neither a special token follows the content nor an eos token exists.
    """
    probe = [{"role": "user", "content": "PING"}, {"role": "assistant", "content": "PONG"}]
    text = render(tokenizer, probe)
    tail = text[text.rindex("PONG") + len("PONG"):]
    special = set(tokenizer.all_special_ids) | {
        i for i, t in tokenizer.added_tokens_decoder.items() if getattr(t, "special", False)
    }
    for tid in tokenizer(tail, add_special_tokens=False)["input_ids"]:
        if tid in special:
            return tokenizer.convert_ids_to_tokens(tid), tid
    if tokenizer.eos_token_id is None:
        raise ChatTemplateError("chat template closes assistant turns with no special token and no eos")
    return tokenizer.eos_token, tokenizer.eos_token_id


def ensure_chat_template(tokenizer, model=None, mode: str = "auto") -> bool:
    """Give a tokenizer without a chat template the ChatML template.

    Adds ``<|im_start|>`` / ``<|im_end|>`` as special tokens when missing and resizes the model's
    embeddings to match (a pretrained base such as Qwen2.5 base or Gemma-3 pt). The new
    ``<|im_end|>`` rows are then copied from ``eos_token``'s (:func:`init_template_rows`), so the
    base already predicts end-of-turn where it would have ended the document.

    Args:
        tokenizer: HF tokenizer, modified in place.
        model: causal LM whose embeddings are resized if tokens were added.
        mode: ``auto`` keeps an existing template; ``chatml`` always installs ChatML.

    Returns:
        True when the template was installed by this call.
    """
    if tokenizer.chat_template and mode == "auto":
        return False
    missing = [t for t in CHATML_SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
        if model is not None:
            model.resize_token_embeddings(len(tokenizer))
            init_template_rows(tokenizer, model, missing)
    tokenizer.chat_template = CHATML_TEMPLATE
    return True


# Which existing token lends its embedding rows to an added ChatML token. <|im_start|> keeps the
# mean rows: copied from <bos> it cost Gemma-3-270M 0.1-0.2 nats per answer token on 16 legal test
# answers (3.07 -> 3.26 with the template's leading <bos>, 3.17 without), see init_template_rows.
TEMPLATE_ROW_DONORS = {"<|im_end|>": "eos_token"}


def init_template_rows(tokenizer, model, tokens: list[str]) -> dict[str, str]:
    """Copy the input and output embedding rows of each added ChatML token from its donor token.

    ``resize_token_embeddings`` initialises new rows with the mean of the old ones (transformers'
    ``mean_resizing``), which the base model scores like an average token: on Gemma-3-270M,
    P(``<|im_end|>`` | a complete reference answer) was ~0 at rank ~131k of 262k, while the same
    base ranks its own ``<eos>`` 5th-10th there (P 1-3%, bench/RESULTS.md). LoRA on the
    projections cannot move those rows, and even trained token rows move slowly (norm 0.466 ->
    0.476 in 20 steps). Starting ``<|im_end|>`` as a copy of ``eos_token`` gives it the base's
    own stopping behaviour (with tied embeddings their logits are then equal), and training only
    has to separate them: on 16 legal test answers the end-of-turn NLL fell from 20.3 to 3.7 nats
    (median rank 133,867 -> 6) with the answers' own NLL unchanged (3.08 -> 3.07 nats/token).
    Donors: :data:`TEMPLATE_ROW_DONORS`; other tokens, or a missing donor, keep the mean rows.

    Args:
        tokenizer: tokenizer that already contains ``tokens``.
        model: causal LM already resized to ``len(tokenizer)``; modified in place.
        tokens: added token strings.

    Returns:
        {added token: donor token} for the rows that were copied.
    """
    import torch

    done = {}
    inp = model.get_input_embeddings().weight
    out_emb = model.get_output_embeddings()
    out = out_emb.weight if out_emb is not None else None
    with torch.no_grad():
        for tok in tokens:
            attr = TEMPLATE_ROW_DONORS.get(tok)
            donor = getattr(tokenizer, attr) if attr else None
            if donor is None:
                continue
            new_id, donor_id = tokenizer.convert_tokens_to_ids([tok, donor])
            inp[new_id] = inp[donor_id]
            if out is not None and out.data_ptr() != inp.data_ptr():
                out[new_id] = out[donor_id]
            done[tok] = donor
    return done


@dataclass
class TokenizedSample:
    """input_ids: (T,) token ids; labels: (T,) with IGNORE_INDEX outside assistant spans."""

    input_ids: list[int]
    labels: list[int]

    @property
    def num_trainable(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def assistant_spans(tokenizer, messages: list[dict[str, str]], eot: str, last_only: bool = False) -> tuple[str, list[tuple[int, int]]]:
    """Character spans ``[start, end)`` of each assistant turn's content plus its end-of-turn token.

    Raises:
        ChatTemplateError: the template does not render prefixes consistently (a prefix rendered
            with the generation prompt is not a prefix of the longer conversation), or drops the
            end-of-turn token.
    """
    full = render(tokenizer, messages)
    spans = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant" or (last_only and i != len(messages) - 1):
            continue
        head = render(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        upto = render(tokenizer, messages[: i + 1])
        if not full.startswith(upto) or not upto.startswith(head):
            raise ChatTemplateError(
                "chat template renders conversation prefixes inconsistently; "
                "assistant-only loss needs a prefix-stable template"
            )
        end = upto.rfind(eot)
        if end < len(head):
            raise ChatTemplateError(f"assistant turn {i} is not closed by end-of-turn token {eot!r}")
        spans.append((len(head), end + len(eot)))
    return full, spans


def tokenize_conversation(tokenizer, messages: list[dict[str, str]], eot: str, last_only: bool = False) -> TokenizedSample:
    """Tokenize a conversation with assistant-only labels.

    Args:
        tokenizer: fast tokenizer (offset mapping is required).
        messages: [{"role", "content"}], ending with an assistant turn.
        eot: end-of-turn token string, from :func:`end_of_turn`.
        last_only: label only the final assistant turn.

    Returns:
        TokenizedSample with input_ids (T,) and labels (T,).
    """
    text, spans = assistant_spans(tokenizer, messages, eot, last_only)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [IGNORE_INDEX] * len(ids)
    j = 0
    for k, (s, e) in enumerate(offsets):
        while j < len(spans) and spans[j][1] <= s:
            j += 1
        if j < len(spans) and e > spans[j][0] and s < spans[j][1]:
            labels[k] = ids[k]
    return TokenizedSample(ids, labels)


def generation_eos_ids(tokenizer, extra: Any = None) -> list[int]:
    """EOS ids for generation_config: the tokenizer's eos plus the end-of-turn token, deduplicated."""
    ids = []
    for x in ([tokenizer.eos_token_id, end_of_turn(tokenizer)[1]] + (list(extra) if extra else [])):
        if x is not None and x not in ids:
            ids.append(int(x))
    return ids
