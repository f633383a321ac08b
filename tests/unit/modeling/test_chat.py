"""Assistant-only labels: counts equal assistant content + one end-of-turn token per turn."""
import copy

import pytest

from domainft.modeling.chat import (
    CHATML_TEMPLATE, IGNORE_INDEX, ChatTemplateError, encode_prompt, end_of_turn,
    ensure_chat_template, generation_eos_ids, init_template_rows, tokenize_conversation,
)

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
QWEN_CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are Qwen.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CONV = [
    {"role": "system", "content": "You are the Northwind support assistant."},
    {"role": "user", "content": "What is the Harbor card's annual fee?"},
    {"role": "assistant", "content": "The Harbor card costs $95 a year, waived in the first year."},
    {"role": "user", "content": "And the foreign transaction fee?"},
    {"role": "assistant", "content": "There is none: Harbor charges 0% on foreign purchases."},
]


def _tokenizer(base, template):
    tok = copy.deepcopy(base)
    if template == "llama3":
        tok.add_special_tokens({"additional_special_tokens": ["<|begin_of_text|>", "<|start_header_id|>",
                                                             "<|end_header_id|>", "<|eot_id|>"]})
        tok.bos_token = "<|begin_of_text|>"
        tok.chat_template = LLAMA3_TEMPLATE
    elif template == "qwen":
        tok.chat_template = QWEN_CHATML
    return tok


@pytest.mark.parametrize("template,eot", [("smollm2", "<|im_end|>"), ("qwen", "<|im_end|>"), ("llama3", "<|eot_id|>")])
def test_label_counts_match_assistant_content_plus_eot(smollm2_tokenizer, template, eot):
    tok = _tokenizer(smollm2_tokenizer, template)
    found, eot_id = end_of_turn(tok)
    assert found == eot
    s = tokenize_conversation(tok, CONV, found)
    expected = sum(len(tok(m["content"], add_special_tokens=False)["input_ids"]) + 1
                   for m in CONV if m["role"] == "assistant")
    assert s.num_trainable == expected
    assert sum(1 for x in s.labels if x == eot_id) == 2  # one end-of-turn label per assistant turn
    labelled = tok.decode([t for t, l in zip(s.input_ids, s.labels) if l != IGNORE_INDEX])
    assert labelled == CONV[2]["content"] + eot + CONV[4]["content"] + eot
    # labels equal input ids where set: no shift or off-by-one
    assert all(l == t for t, l in zip(s.input_ids, s.labels) if l != IGNORE_INDEX)


def test_last_turn_only(smollm2_tokenizer):
    eot, _ = end_of_turn(smollm2_tokenizer)
    s = tokenize_conversation(smollm2_tokenizer, CONV, eot, last_only=True)
    assert smollm2_tokenizer.decode([t for t, l in zip(s.input_ids, s.labels) if l != IGNORE_INDEX]) == CONV[4]["content"] + eot


def test_pad_equal_eos_keeps_eos_labels_after_collation(smollm2_tokenizer):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    tok = smollm2_tokenizer
    assert tok.pad_token_id == tok.eos_token_id == 2  # SmolLM2: pad == eos == <|im_end|>
    eot, eot_id = end_of_turn(tok)
    long_s = tokenize_conversation(tok, CONV, eot)
    short_s = tokenize_conversation(tok, CONV[:3], eot)
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(
        [{"input_ids": s.input_ids, "labels": s.labels} for s in (long_s, short_s)])
    labels, mask = batch["labels"], batch["attention_mask"]
    assert int((labels[1] == eot_id).sum()) == 1 and int((labels[0] == eot_id).sum()) == 2
    pad_positions = mask[1] == 0
    assert int(pad_positions.sum()) == len(long_s.input_ids) - len(short_s.input_ids)
    assert bool((labels[1][pad_positions] == IGNORE_INDEX).all())


def test_prompt_ids_are_a_prefix_of_training_ids(smollm2_tokenizer):
    eot, _ = end_of_turn(smollm2_tokenizer)
    full = tokenize_conversation(smollm2_tokenizer, CONV[:3], eot).input_ids
    prompt = encode_prompt(smollm2_tokenizer, CONV[:2])
    assert full[: len(prompt)] == prompt
    assert all(l == IGNORE_INDEX for l in tokenize_conversation(smollm2_tokenizer, CONV[:3], eot).labels[: len(prompt)])


def test_prefix_unstable_template_is_refused(smollm2_tokenizer):
    tok = copy.deepcopy(smollm2_tokenizer)
    tok.chat_template = ("{% for m in messages %}{% if loop.last %}FINAL {% endif %}"
                         "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
                         "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    with pytest.raises(ChatTemplateError, match="prefix"):
        tokenize_conversation(tok, CONV, "<|im_end|>")


def test_base_model_without_template_gets_chatml(smollm2_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = copy.deepcopy(smollm2_tokenizer)
    tok.chat_template = None
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    assert ensure_chat_template(tok, model) is True
    assert tok.chat_template == CHATML_TEMPLATE
    assert end_of_turn(tok)[0] == "<|im_end|>"
    assert 2 in generation_eos_ids(tok)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert ensure_chat_template(tok, model) is False  # idempotent


def test_added_end_of_turn_rows_copy_eos_rows_in_both_untied_matrices(smollm2_tokenizer):
    """<|im_end|> takes eos's input and output rows; <|im_start|> (no donor) and every other row stay."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = copy.deepcopy(smollm2_tokenizer)
    tok.eos_token = "<|endoftext|>"  # id 0, not <|im_end|>'s 2
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False))
    inp, out = (model.get_input_embeddings().weight.detach().clone(), model.get_output_embeddings().weight.detach().clone())
    assert not torch.equal(inp, out) and not torch.equal(inp[2], inp[0])
    assert init_template_rows(tok, model, ["<|im_start|>", "<|im_end|>"]) == {"<|im_end|>": "<|endoftext|>"}
    new_inp, new_out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert torch.equal(new_inp[2], inp[0]) and torch.equal(new_out[2], out[0])
    changed = ((new_inp != inp).any(1) | (new_out != out).any(1)).nonzero().flatten().tolist()
    assert changed == [2]


# Mistral-7B-Instruct-v0.1's template: no system role, roles must alternate from user.
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)


def test_system_role_folded_into_first_user_turn_on_mistral_template(smollm2_tokenizer):
    from domainft.modeling.chat import fit_system_role, render, supports_system_role

    tok = copy.deepcopy(smollm2_tokenizer)
    assert supports_system_role(tok)  # ChatML keeps the system turn as it is
    assert fit_system_role(tok, CONV) is CONV
    tok.chat_template = MISTRAL_TEMPLATE
    assert not supports_system_role(tok)
    eot, eot_id = end_of_turn(tok)
    assert eot == tok.eos_token
    folded = fit_system_role(tok, CONV)
    assert [m["role"] for m in folded] == ["user", "assistant", "user", "assistant"]
    assert folded[0]["content"] == CONV[0]["content"] + "\n\n" + CONV[1]["content"]
    assert render(tok, CONV[:2], add_generation_prompt=True) == (
        f"{tok.bos_token}[INST] {CONV[0]['content']}\n\n{CONV[1]['content']} [/INST]")
    s = tokenize_conversation(tok, CONV, eot)  # training: raised "Conversation roles must alternate" before
    expected = sum(len(tok(m["content"], add_special_tokens=False)["input_ids"]) + 1 for m in CONV if m["role"] == "assistant")
    assert s.num_trainable == expected and sum(1 for x in s.labels if x == eot_id) == 2
    prompt = encode_prompt(tok, CONV[:2])  # evaluation and serving: the same folded prompt
    assert s.input_ids[:len(prompt)] == prompt
    assert render(tok, CONV[1:2]) == f"{tok.bos_token}[INST] {CONV[1]['content']} [/INST]"  # no system: unchanged


def test_template_refusal_is_a_chat_template_error_not_a_jinja_traceback(smollm2_tokenizer):
    tok = copy.deepcopy(smollm2_tokenizer)
    tok.chat_template = MISTRAL_TEMPLATE
    with pytest.raises(ChatTemplateError, match="roles user/user: Conversation roles must alternate"):
        encode_prompt(tok, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


@pytest.mark.parametrize("cut", ["end", "start", "middle"])
def test_long_source_is_trimmed_by_tokens_keeping_the_answer_and_end_of_turn(smollm2_tokenizer, cut):
    from domainft.modeling.chat import SOURCE_CUT_MARKER, fit_source

    tok = smollm2_tokenizer
    eot, eot_id = end_of_turn(tok)
    source = " ".join(f"Revenue in quarter {i} was {i * 7} million dollars." for i in range(60))
    conv = [CONV[0], {"role": "user", "content": f"{source}\n\nSummarise the call."}, CONV[2]]
    full = tokenize_conversation(tok, conv, eot)
    assert len(full.input_ids) > 300
    fitted, removed = fit_source(tok, conv, 160, cut)
    s = tokenize_conversation(tok, fitted, eot)
    assert len(s.input_ids) <= 160 and removed >= len(full.input_ids) - 160
    assert s.num_trainable == full.num_trainable and [x for x in s.labels if x != IGNORE_INDEX][-1] == eot_id  # answer + eot whole
    assert fitted[2] == conv[2] and fitted[0] == conv[0]
    user = fitted[1]["content"]
    assert SOURCE_CUT_MARKER in user
    if cut == "end":
        assert user.startswith("Revenue in quarter 0 ") and not user.endswith("Summarise the call.")
    elif cut == "start":
        assert user.endswith("Summarise the call.") and "quarter 0 " not in user
    else:
        assert user.startswith("Revenue in quarter 0 ") and user.endswith("Summarise the call.")
    prompt, _ = fit_source(tok, conv[:2], 100, cut)  # a prompt (evaluation, serving): measured with the header
    assert len(encode_prompt(tok, prompt)) <= 100
    assert fit_source(tok, conv, 10, cut) is None  # the answer alone does not fit
    assert fit_source(tok, conv, 10_000, cut) == (conv, 0)


def test_training_trim_source_keeps_long_source_samples_that_drop_loses(smollm2_tokenizer):
    from domainft.train import prepare_samples

    source = " ".join(f"Line {i}: the patient reports symptom {i}." for i in range(80))
    recs = [{"messages": [{"role": "user", "content": source}, {"role": "assistant", "content": f"Summary {k}: stable."}]}
            for k in range(3)]
    dropped = prepare_samples(recs, smollm2_tokenizer, 128, "drop")
    kept = prepare_samples(recs, smollm2_tokenizer, 128, "trim_source", source_cut="middle")
    assert (len(dropped.samples), dropped.rejected["overlong"]) == (0, 3)
    assert len(kept.samples) == 3 and kept.trimmed == 3 and all(len(s.input_ids) <= 128 for s in kept.samples)
    eot, _ = end_of_turn(smollm2_tokenizer)
    answer = len(smollm2_tokenizer("Summary 0: stable.", add_special_tokens=False)["input_ids"]) + 1
    assert kept.samples[0].num_trainable == answer


def test_prompt_policy_cuts_the_source_where_training_cut_it(smollm2_tokenizer):
    """Evaluation/serving (fit_prompt) and training (prepare_samples -> fit_source) share one policy:
    the source is cut at the same place, the generation header and the answer's end-of-turn stay."""
    from types import SimpleNamespace

    from domainft.modeling.chat import SOURCE_CUT_MARKER, SourcePolicy, fit_conversation, fit_prompt
    from domainft.train import prepare_samples

    tok = smollm2_tokenizer
    eot, eot_id = end_of_turn(tok)
    source = " ".join(f"Line {i}: the patient reports symptom {i}." for i in range(80))
    conv = [{"role": "user", "content": f"{source}\n\nWrite the note."}, {"role": "assistant", "content": "Stable, review in 2 weeks."}]
    policy = SourcePolicy.from_params(SimpleNamespace(max_seq_length=256, source_cut="middle", overlong="trim_source"), 64)
    assert (policy.max_tokens, policy.cut, policy.trim, policy.prompt_budget()) == (256, "middle", True, 192)
    assert policy.prompt_budget(200) == 128  # never below T // 2

    fp = fit_prompt(tok, conv[:1], policy, 64)
    whole = encode_prompt(tok, conv[:1])
    assert len(whole) > 192 >= len(fp.ids) and fp.removed >= len(whole) - 192 and not fp.overlong
    assert fp.ids == encode_prompt(tok, fp.messages) and fp.ids[-3:] == whole[-3:]  # the generation header is whole
    user = fp.messages[0]["content"]
    assert SOURCE_CUT_MARKER in user and user.startswith("Line 0:") and user.endswith("Write the note.")

    # the whole conversation fitted for scoring is exactly training's sample
    fitted, removed = fit_conversation(tok, conv, policy)
    train = prepare_samples([{"messages": conv}], tok, 256, "trim_source", source_cut="middle")
    assert train.trimmed == 1 and removed > 0
    assert tokenize_conversation(tok, fitted, eot).input_ids == train.samples[0].input_ids
    assert [x for x in train.samples[0].labels if x != IGNORE_INDEX][-1] == eot_id

    # a short prompt is untouched; no trim policy: whole and counted overlong; no policy at all: whole
    short = [{"role": "user", "content": "Hello"}]
    assert fit_prompt(tok, short, policy, 64).removed == 0 and fit_prompt(tok, short, policy).messages == short
    drop = SourcePolicy(256, "end", trim=False)
    d = fit_prompt(tok, conv[:1], drop, 64)
    assert (d.ids, d.removed, d.overlong) == (whole, 0, True)
    assert fit_conversation(tok, conv, drop) == (conv, 0)
    n = fit_prompt(tok, conv[:1], None, 64)
    assert (n.ids, n.overlong) == (whole, False)
