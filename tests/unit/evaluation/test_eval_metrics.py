"""Text metrics (incl. CJK), response perplexity with training labels, paired bootstrap."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from domainft.evaluation.generate import Generation
from domainft.evaluation.metrics import (
    CJKTokenizer, TextScorer, compare, detect_language, labelled_logprob_sums, normalize_answer, response_nll,
)
from domainft.evaluation.run import score_pair
from domainft.modeling.base import load_model
from domainft.modeling.chat import IGNORE_INDEX, end_of_turn, tokenize_conversation


def test_detect_language():
    assert detect_language(["The fee is 3 dollars."]) == "en"
    assert detect_language(["账户的月费是三元。", "The fee"]) == "zh"
    assert detect_language([""]) == "en"


def test_rouge_l_chinese_is_character_level():
    from rouge_score import rouge_scorer

    ref, pred = "账户的月费是三元", "账户月费是三元"
    assert rouge_scorer.RougeScorer(["rougeL"]).score(ref, pred)["rougeL"].fmeasure == 0.0  # the trap
    assert CJKTokenizer().tokenize("ATM取款Fee 3元") == ["atm", "取", "款", "fee", "3", "元"]
    f = TextScorer("zh").score(pred, ref)["rouge_l"]
    assert f == pytest.approx(2 * 1.0 * (7 / 8) / (1.0 + 7 / 8))  # LCS 7: P = 7/7, R = 7/8


def test_bleu_chrf_exact_match():
    en, zh = TextScorer("en"), TextScorer("zh")
    same = en.score("The fee is 3 dollars.", "the fee is 3 dollars")
    assert same["exact_match"] == 1.0 and same["rouge_l"] == pytest.approx(1.0)
    assert en.score("x", "The fee is 3 dollars.") == {"rouge_l": 0.0, "bleu": 0.0, "chrf": pytest.approx(0.0, abs=1e-9), "exact_match": 0.0}
    assert zh.score("账户的月费是三元。", "账户的月费是三元。")["bleu"] == pytest.approx(100.0)
    part = zh.score("账户月费是三元", "账户的月费是三元")
    assert 0 < part["bleu"] < 100 and 0 < part["chrf"] < 100 and part["exact_match"] == 0.0
    assert normalize_answer("  Fee：３元！ ") == "fee3元"


def test_compare_counts_and_ci():
    base = [0.0] * 40
    tuned = [1.0] * 30 + [0.0] * 10
    p = compare(base, tuned, samples=500, seed=1)
    assert (p.base, p.tuned, p.delta) == (0.0, 0.75, 0.75)
    assert (p.wins, p.ties, p.losses) == (30, 10, 0)
    assert 0.5 < p.delta_ci_low < 0.75 < p.delta_ci_high < 0.95
    assert compare(base, tuned, samples=500, seed=1) == p  # seeded
    flat = p.flat("rouge_l")
    assert flat["rouge_l.wins"] == 30 and set(flat) == {f"rouge_l.{k}" for k in p.__dict__}
    with pytest.raises(ValueError):
        compare([1.0], [1.0, 2.0])


def test_compare_perplexity_is_token_weighted_and_lower_is_better():
    nll_b, nll_t, toks = [20.0, 10.0], [10.0, 10.0], [10, 5]
    p = compare(nll_b, nll_t, lower_is_better=True, samples=200, weights=(toks, toks))
    assert p.base == pytest.approx(math.exp(30 / 15)) and p.tuned == pytest.approx(math.exp(20 / 15))
    assert p.delta < 0 and (p.wins, p.ties, p.losses) == (1, 1, 0)


def test_response_nll_matches_training_labels(varied_model_dir, make_records):
    model, tok = load_model(varied_model_dir, device="cpu")
    convs = [r["messages"] for r in make_records(5)]
    batched = response_nll(model, tok, convs, batch_size=4)
    single = [response_nll(model, tok, [c], batch_size=1)[0] for c in convs]
    eot = end_of_turn(tok)[0]
    for (nll, n), (nll1, n1), conv in zip(batched, single, convs):
        s = tokenize_conversation(tok, conv, eot, last_only=True)
        labelled = [x for x in s.labels if x != IGNORE_INDEX]
        assert n == n1 == len(labelled) and labelled[-1] == 2  # <|im_end|> is scored
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([s.input_ids]), labels=torch.tensor([s.labels])).loss
        assert nll / n == pytest.approx(loss.item(), rel=1e-4)  # HF's shifted mean CE over the same labels
        assert nll == pytest.approx(nll1, rel=1e-4)
    assert IGNORE_INDEX == -100


def _full_logits_sums(model, ids, labels, mask):
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()[:, :-1]  # (B, T-1, V)
    lp = torch.log_softmax(logits, -1).gather(-1, labels[:, 1:].clamp(min=0)[..., None])[..., 0]
    return (lp * (labels[:, 1:] != IGNORE_INDEX)).sum(1)


def test_labelled_logprob_sums_projects_only_from_the_first_response_token(tiny_model_dir):
    """Two right-padded rows with prompts of 9 and 14 tokens: the head sees the 20 - 9 = 11 positions
    from the batch's first prediction on, not all 20, and the sums equal full-logits log-softmax's;
    a model whose forward has no ``logits_to_keep`` gets every position projected, same sums."""
    model, _ = load_model(tiny_model_dir, device="cpu", dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 100, (2, 20), generator=g)
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[0, 16:] = 0
    labels = torch.full((2, 20), IGNORE_INDEX)
    labels[0, 10:16], labels[1, 15:20] = ids[0, 10:16], ids[1, 15:20]
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, a, o: seen.append(tuple(a[0].shape)))
    with torch.no_grad():
        sums, counts = labelled_logprob_sums(model, ids, labels, mask)
    assert seen == [(2, 11, model.config.hidden_size)]
    assert counts.tolist() == [6, 5]
    ref = _full_logits_sums(model, ids, labels, mask)
    assert torch.allclose(sums, ref, atol=1e-4) and bool((sums < 0).all())

    class NoKeep(torch.nn.Module):  # a forward without logits_to_keep
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask=None):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask)

    seen.clear()
    with torch.no_grad():
        sums2, _ = labelled_logprob_sums(NoKeep(model), ids, labels, mask)
    hook.remove()
    assert seen == [(2, 20, model.config.hidden_size)]
    assert torch.allclose(sums2, ref, atol=1e-4)


def _gens(texts):
    return [Generation(t, list(range(len(t.split()))), True, 10) for t in texts]


@pytest.mark.parametrize("zh", [False, True])
def test_score_pair_tuned_matching_references_wins(make_records, zh):
    recs = make_records(20, zh=zh)
    refs = [r["messages"][-1]["content"] for r in recs]
    base = {"answers": _gens(["Sorry, I cannot help." if not zh else "对不起。"] * 20), "nll": [(40.0, 10)] * 20}
    tuned = {"answers": _gens(refs), "nll": [(10.0, 10)] * 20}
    metrics, rows = score_pair(recs, base, tuned, "zh" if zh else "en", bootstrap_samples=200)
    assert metrics["n_samples"] == 20 and len(rows) == 20
    for m in ("rouge_l", "exact_match"):
        assert metrics[f"{m}.tuned"] == pytest.approx(1.0) and metrics[f"{m}.wins"] == 20
    assert metrics["bleu.tuned"] == pytest.approx(100.0) and metrics["bleu.delta_ci_low"] > 50
    assert metrics["response_ppl.base"] == pytest.approx(math.exp(4)) and metrics["response_ppl.tuned"] == pytest.approx(math.e)
    assert metrics["response_ppl.wins"] == 20 and metrics["response_ppl.delta_ci_high"] < 0
    assert metrics["answer_chars.tuned"] == pytest.approx(np.mean([len(r) for r in refs]))
    assert rows[3]["scores"]["rouge_l"] == {"base": 0.0, "tuned": 1.0}
    assert rows[3]["tuned_answer"] == refs[3] and rows[3]["prompt"] == recs[3]["messages"][:-1]
