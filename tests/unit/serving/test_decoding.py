"""Decoding: sampling, and streamed deltas that never contain a stop string, template tokens or a split character."""
from __future__ import annotations

import torch

from domainft.serving.decoding import StopScanner, sample


def _stream(tok, ids, stop):
    sc = StopScanner(tok, stop)
    deltas, stopped = [], False
    for i in ids:
        d, stopped = sc.add(i)
        deltas.append(d)
        if stopped:
            break
    if not stopped:
        deltas.append(sc.flush())
    return deltas, stopped


def test_stop_string_spanning_tokens_is_cut_and_never_streamed(smollm2_tokenizer):
    tok = smollm2_tokenizer
    ids = tok("Your balance is 42 EUR. ###END### trailing words", add_special_tokens=False)["input_ids"]
    deltas, stopped = _stream(tok, ids, ["###END###"])
    assert stopped
    assert "".join(deltas) == "Your balance is 42 EUR. "
    assert not any("#" in d for d in deltas)  # the partial "###" prefix was held back, not sent


def test_held_back_prefix_is_released_when_it_does_not_complete(smollm2_tokenizer):
    tok = smollm2_tokenizer
    text = "a ## b ## c"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    deltas, stopped = _stream(tok, ids, ["###"])
    assert not stopped and "".join(deltas) == text


def test_special_tokens_never_reach_content(smollm2_tokenizer):
    tok = smollm2_tokenizer
    ids = tok("<|im_start|>assistant\nHello<|im_end|>", add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids("<|im_end|>") in ids
    deltas, _ = _stream(tok, ids, [])
    assert "".join(deltas) == "assistant\nHello"


def test_multibyte_characters_are_not_split(smollm2_tokenizer):
    tok = smollm2_tokenizer
    text = "余额是四十二欧元"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text) // 2  # byte-level BPE splits these characters across tokens
    deltas, _ = _stream(tok, ids, [])
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)


def test_earliest_of_several_stop_strings_wins(smollm2_tokenizer):
    tok = smollm2_tokenizer
    ids = tok("one two three four", add_special_tokens=False)["input_ids"]
    deltas, stopped = _stream(tok, ids, ["four", "two"])
    assert stopped and "".join(deltas) == "one "


def test_sample_greedy_top_p_and_seed():
    logits = torch.tensor([0.0, 3.0, 2.9, -5.0])
    assert sample(logits, 0.0, 1.0, None) == 1
    assert all(sample(logits, 1.0, 1e-6, torch.Generator().manual_seed(s)) == 1 for s in range(20))
    picks = [sample(logits, 1.0, 1.0, torch.Generator().manual_seed(s)) for s in range(200)]
    assert set(picks) <= {0, 1, 2, 3} and picks.count(2) > 40  # token 2 is nearly as likely as 1
    a = [sample(logits, 1.0, 0.9, torch.Generator().manual_seed(7)) for _ in range(5)]
    assert a == [sample(logits, 1.0, 0.9, torch.Generator().manual_seed(7)) for _ in range(5)]
