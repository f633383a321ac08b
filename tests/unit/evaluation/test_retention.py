"""Retention and remit: a model tuned until it forgets its general answers fails the general_ppl gate."""
import json

import pytest

from domainft.config import EvaluateParams, PromoteParams, RemitParams, RetentionParams, TrainParams
from domainft.evaluation.retention import declines, evaluate_retention, load_general
from domainft.merge import merge_adapter
from domainft.promote import evaluate_gates
from domainft.train import train_adapter

COLOURS = ["red", "blue", "green", "black", "white", "amber", "grey", "pink"]


def _general(path):
    rows = [{"instruction": f"What colour is flag {i}?", "input": "", "output": f"Flag {i} is {c}."}
            for i, c in enumerate(COLOURS)]
    path.write_text(json.dumps(rows))
    return path


def _domain(path):
    recs = [{"messages": [{"role": "user", "content": f"Fee for plan {i}?"},
                          {"role": "assistant", "content": f"The fee for plan {i} is ${3 * i} per month."}]}
            for i in range(8)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def _tune(base, train_path, out, lr, steps):
    params = TrainParams(max_steps=steps, batch_size=4, learning_rate=lr, lr_scheduler="constant", warmup_ratio=0,
                         out_dir=str(out / "adapter"), checkpoint_dir=str(out / "ckpt"), memory_fraction=0)
    train_adapter(str(base), str(train_path), None, params, plots_csv=str(out / "loss.csv"))
    recs = [json.loads(x) for x in train_path.read_text().splitlines()] if train_path.suffix == ".jsonl" else \
        [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    merge_adapter(str(base), str(out / "adapter"), str(out / "merged"), recs, n_prompts=2)
    return out / "merged"


def test_load_general_reads_alpaca_and_samples_by_seed(tmp_path):
    path = _general(tmp_path / "g.json")
    recs = load_general(path, 0)
    assert len(recs) == 8 and recs[0]["messages"][1]["content"] == "Flag 0 is red."
    a, b = load_general(path, 3, seed=1), load_general(path, 3, seed=1)
    assert len(a) == 3 and a == b and load_general(path, 3, seed=2) != a


def test_decline_rule():
    pats = RemitParams().decline_patterns
    assert declines("Sorry, I can only help with questions about your account.", pats)
    assert declines("That is outside my scope; please contact a travel agent.", pats)
    assert declines("I can't help with that.", pats)
    assert not declines("The capital of France is Paris.", pats)


def test_a_model_tuned_to_forget_fails_the_retention_gate(tiny_model_dir, tmp_path):
    gpath = _general(tmp_path / "general.json")
    gtrain = tmp_path / "general.jsonl"
    gtrain.write_text("".join(json.dumps({"messages": r["messages"]}) + "\n" for r in load_general(gpath, 0)))
    base = _tune(tiny_model_dir, gtrain, tmp_path / "g", lr=1e-2, steps=30)  # a base that knows the flags
    forgot = _tune(base, _domain(tmp_path / "domain.jsonl"), tmp_path / "f", lr=3e-2, steps=40)
    kept = _tune(base, tmp_path / "domain.jsonl", tmp_path / "k", lr=1e-4, steps=2)
    params = EvaluateParams(max_new_tokens=12, bootstrap_samples=200,
                            retention=RetentionParams(path=str(gpath), max_samples=0),
                            remit=RemitParams(prompts=["Write a poem about the sea.", "Who won the 1998 World Cup?"]))
    gates = PromoteParams(max_general_ppl_increase=0.2, max_general_metric_drop=0.1, min_remit_rate=0.5)
    m_forgot, rows = evaluate_retention(base, forgot, params, seed=0)
    m_kept, _ = evaluate_retention(base, kept, params, seed=0)
    assert m_forgot["retention.n"] == 8 and m_forgot["remit.n"] == 2 and len(rows) == 10
    assert m_forgot["retention.response_ppl.ratio"] > 2.0  # forgot the flag colours
    assert m_kept["retention.response_ppl.ratio"] == pytest.approx(1.0, abs=0.05)
    assert m_forgot["retention.response_ppl.delta_ci_low"] > 0  # ppl rose, CI above 0
    by = {g.name: g for g in evaluate_gates({f"eval.{k}": v for k, v in m_forgot.items()}, None, gates)}
    assert by["general_ppl"].status == "fail" and "response ppl" in by["general_ppl"].detail
    assert by["general_ppl"].value == pytest.approx(m_forgot["retention.response_ppl.ratio"])
    assert by["remit"].status == "fail"  # a tiny random model declines nothing: rate 0
    assert m_forgot["remit.rate.tuned"] == 0.0
    ok = {g.name: g.status for g in evaluate_gates({f"eval.{k}": v for k, v in m_kept.items()}, None, gates)}
    assert ok["general_ppl"] == "pass" and ok["general_metric"] == "pass"
    # without the params the figures are still shown, as off gates
    shown = [g for g in evaluate_gates({f"eval.{k}": v for k, v in m_kept.items()}, None, PromoteParams())
             if g.name in ("general_ppl", "general_metric", "remit")]
    assert [g.status for g in shown] == ["off"] * 3


@pytest.mark.parametrize("native,precision", [("0", "float32"), ("1", "bfloat16")])
def test_retention_loads_base_and_tuned_in_the_evaluation_precision(tiny_model_dir, tmp_path, monkeypatch,
                                                                     native, precision):
    """retention uses pick_dtype's choice (the one evaluate uses), the same for both models, recorded."""
    from domainft import hardware
    from domainft.modeling import base as base_mod

    monkeypatch.setenv(hardware.NATIVE_BF16_ENV, native)
    seen = []
    real = base_mod.load_model

    def spy(folder, device=None, dtype=None):
        model, tok = real(folder, device=device, dtype=dtype)
        seen.append(str(model.dtype))
        return model, tok

    monkeypatch.setattr(base_mod, "load_model", spy)
    params = EvaluateParams(max_new_tokens=3, bootstrap_samples=100,
                            retention=RetentionParams(path=str(_general(tmp_path / "g.json")), max_samples=2),
                            remit=RemitParams(prompts=["Write a poem about the sea."]))
    m, _ = evaluate_retention(tiny_model_dir, tiny_model_dir, params, seed=0)
    assert seen == [f"torch.{precision}"] * 2
    assert m["retention.precision"] == precision
    assert m["retention.response_ppl.ratio"] == pytest.approx(1.0)  # same model, same precision on both sides
