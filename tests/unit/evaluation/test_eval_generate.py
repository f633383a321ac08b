"""Batched generation: left padding, greedy equivalence with one-at-a-time, eos cutting."""
from __future__ import annotations

import torch

from domainft.evaluation.generate import eos_ids_for, generate_answers, generate_ids, left_pad
from domainft.modeling.base import load_model
from domainft.modeling.chat import encode_prompt


def test_left_pad_shapes_and_mask():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=2)
    assert ids.tolist() == [[5, 6, 7], [2, 2, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_batched_greedy_equals_one_at_a_time(varied_model_dir, make_records):
    model, tok = load_model(varied_model_dir, device="cpu")
    prompts = [r["messages"][:-1] for r in make_records(10)]
    lengths = {len(encode_prompt(tok, p)) for p in prompts}
    assert len(lengths) == 10  # every batch really holds padding
    batched = generate_answers(model, tok, prompts, max_new_tokens=12, batch_size=4)
    single = [generate_answers(model, tok, [p], max_new_tokens=12, batch_size=1)[0] for p in prompts]
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]
    assert len({tuple(g.token_ids) for g in batched}) >= 8  # answers depend on the prompt
    assert all(len(g.token_ids) == 12 and not g.stopped for g in batched)
    assert [g.prompt_tokens for g in batched] == [len(encode_prompt(tok, p)) for p in prompts]


def test_eos_cut_when_pad_equals_eos(varied_model_dir, make_records):
    """Rows that stop early in a batch keep only tokens before the first eos; pad id == eos id."""
    model, tok = load_model(varied_model_dir, device="cpu")
    assert tok.pad_token_id == 2 and eos_ids_for(model, tok) == [2]  # SmolLM2: pad = eos = <|im_end|>
    prompt_ids = [encode_prompt(tok, r["messages"][:-1]) for r in make_records(8)]
    free = generate_ids(model, prompt_ids, [2], 2, max_new_tokens=10, batch_size=8)
    # Declare the 3rd token of the first answer an eos id: that row (and any containing it) stops.
    stop_tok = free[0][0][2]
    cut = generate_ids(model, prompt_ids, [2, stop_tok], 2, max_new_tokens=10, batch_size=8)
    single = [generate_ids(model, [p], [2, stop_tok], 2, max_new_tokens=10, batch_size=1)[0] for p in prompt_ids]
    assert cut == single
    assert cut[0][1] is True and stop_tok not in cut[0][0] and len(cut[0][0]) <= 2
    for (ids, stopped), (full, _) in zip(cut, free):
        assert ids == full[:len(ids)]  # same greedy path up to the stop
        assert stopped == (stop_tok in full)


def test_decodes_only_new_tokens_without_specials(varied_model_dir, make_records):
    model, tok = load_model(varied_model_dir, device="cpu")
    prompts = [r["messages"][:-1] for r in make_records(3)]
    for g in generate_answers(model, tok, prompts, max_new_tokens=6, batch_size=3):
        assert g.text == tok.decode(g.token_ids, skip_special_tokens=True).strip()
        assert "<|im_start|>" not in g.text and "monthly fee" not in g.text


def test_sampling_is_seeded(varied_model_dir, make_records):
    model, tok = load_model(varied_model_dir, device="cpu")
    prompts = [r["messages"][:-1] for r in make_records(4)]
    kw = dict(max_new_tokens=8, batch_size=2, do_sample=True, temperature=1.5, top_p=0.95)
    a = generate_answers(model, tok, prompts, seed=3, **kw)
    b = generate_answers(model, tok, prompts, seed=3, **kw)
    c = generate_answers(model, tok, prompts, seed=4, **kw)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert [g.token_ids for g in a] != [g.token_ids for g in c]
    torch.manual_seed(0)
