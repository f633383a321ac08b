"""Task metrics: label parsing, numbers, baselines, collapse detectors and the paired verdict.

The answers are given as texts (what a model generated); the functions under test are the ones the
evaluate stage runs on real generations.
"""
from __future__ import annotations

import pytest

from domainft.config import CollapseParams, TaskParams
from domainft.evaluation import collapse
from domainft.evaluation.generate import Generation
from domainft.evaluation.run import score_pair
from domainft.evaluation.task import (
    LabelParser, TaskError, label_set, macro_f1, numbers, numeric_match, primary_metric,
)


def _gens(texts):
    return [Generation(t, list(range(max(1, len(t.split())))), True, 10) for t in texts]


def _label_records(gold: list[str]) -> list[dict]:
    return [{"id": f"q{i}", "messages": [
        {"role": "user", "content": f"Exam question {i}: which option is right? A) one B) two C) three D) four"},
        {"role": "assistant", "content": g}]} for i, g in enumerate(gold)]


def _side(texts, nll=20.0):
    return {"answers": _gens(texts), "nll": [(nll, 10)] * len(texts)}


@pytest.mark.parametrize("answer,label", [
    ("A", "A"), ("b", "B"), ("(C) because the statute says so", "C"), ("答案：D", "D"),
    ("The answer is a contract term; B.", "B"),  # the article "a" is not the label A
    ("None of the options", None), ("", None),
])
def test_letter_labels(answer, label):
    assert LabelParser(["A", "B", "C", "D"]).parse(answer) == label


@pytest.mark.parametrize("answer,label", [
    ("Yes.", "yes"), ("No, it is not allowed.", "no"), ("Maybe; the evidence is weak", "maybe"),
    ("是的", "yes"), ("yesterday it rained", None), ("I cannot tell.", None),
])
def test_word_labels_and_aliases(answer, label):
    assert LabelParser(["yes", "no", "maybe"], {"是": "yes"}).parse(answer) == label


def test_longest_label_at_a_position_and_word_bounds():
    p = LabelParser(["fair", "unfair", "potentially unfair"])
    assert p.parse("This clause is potentially   unfair.") == "potentially unfair"
    assert p.parse("Unfair.") == "unfair" and p.parse("fair enough") == "fair"
    with pytest.raises(TaskError, match="maps to 'other'"):
        LabelParser(["fair"], {"ok": "other"})


def test_label_set_from_references_and_its_limit():
    assert label_set(TaskParams(type="label"), ["Yes.", "No"], ["yes", "Maybe"]) == ["Maybe", "No", "Yes", "yes"]
    with pytest.raises(TaskError, match="60 distinct answers"):
        label_set(TaskParams(type="label"), [f"answer {i}" for i in range(60)], [])


@pytest.mark.parametrize("answer,gold,match", [
    ("1577.00", "$1,577 million", 1.0), ("$1.577 billion", "$1,577 million", 1.0),
    ("In 2019 the margin was 12.5%", "12.5", 1.0), ("(1,234)", "-1234", 1.0),
    ("It grew to 1,600", "1,577", 0.0), ("1580", "1577", 1.0), ("no idea", "42", 0.0), ("2019", "2019", 1.0),
    ("1.2万", "12000", 1.0),
])
def test_numeric_match(answer, gold, match):
    assert numeric_match(answer, gold, 0.01) == match


def test_numbers_read_scale_only_when_it_is_one():
    found = numbers("$3B, 2 m of cable, 5 million")
    assert [(v, s) for v, _, s, _ in found] == [(3e9, True), (2.0, False), (5e6, True)]
    assert numeric_match("anything", "no number") is None


def test_macro_f1():
    assert macro_f1(["a", "b", "a"], ["a", None, "b"]) == pytest.approx((2 / 3 + 0) / 2)
    assert macro_f1(["a", "b"], ["a", "b"]) == 1.0


def test_primary_metric_rules():
    assert primary_metric(TaskParams(type="label"), False) == "accuracy"
    assert primary_metric(TaskParams(), False) == "rouge_l" and primary_metric(TaskParams(), True) == "judge_correctness"
    with pytest.raises(TaskError, match="does not measure a label task"):
        primary_metric(TaskParams(type="label", primary="rouge_l"), False)
    with pytest.raises(TaskError, match="needs evaluate.judge.enabled"):
        primary_metric(TaskParams(primary="judge_correctness"), False)


def test_always_A_on_a_balanced_exam_is_accuracy_a_quarter_and_flagged():
    gold = ["A", "B", "C", "D"] * 10
    recs = _label_records(gold)
    base = _side([["B", "C", "D", "A"][i % 4] for i in range(40)])  # always wrong, but varied
    tuned = _side(["A. Option A is right."] * 40)
    m, rows = score_pair(recs, base, tuned, "en", 200, 0, TaskParams(type="label", labels=["A", "B", "C", "D"]),
                         CollapseParams(), train_references=gold)
    assert m["accuracy.tuned"] == 0.25 and m["accuracy.base"] == 0.0
    assert m["primary.name"] == "accuracy" and m["primary.tuned"] == 0.25
    # the CI is clear of 0 against a base that is always wrong...
    assert m["primary.beats_base"] == 1
    # ...but always "A" is exactly a constant answer: it does not beat the trivial baselines
    assert m["baseline.constant.accuracy"] == 0.25 and m["baseline.majority.accuracy"] == 0.25
    assert m["primary.baseline"] == 0.25 and m["primary.beats_baselines"] == 0
    assert m["collapse.tuned.top_share"] == 1.0 and m["collapse.gold.top_share"] == 0.25
    assert m["collapse.tuned.distinct_rate"] == 1 / 40
    assert m["flags.tuned.collapse"] == 1 and m["flags.tuned.any"] == 1 and m["flags.base.collapse"] == 0
    assert m["macro_f1.tuned"] == pytest.approx((2 * 10 / (2 * 10 + 30)) / 4)
    assert m["confusion"]["tuned"] == {g: {"A": 10} for g in "ABCD"}
    assert rows[1]["tuned_label"] == "A" and rows[1]["reference_label"] == "B"


def test_a_model_that_learned_the_decision_beats_everything():
    gold = ["yes", "no", "maybe", "yes", "no"] * 8
    recs = _label_records(gold)
    base = _side(["Yes."] * 40)  # the majority class
    tuned = _side([g.capitalize() + "." if i % 10 else "unclear" for i, g in enumerate(gold)])  # 36/40 right
    m, _ = score_pair(recs, base, tuned, "en", 500, 0, TaskParams(type="label", labels=["yes", "no", "maybe"]),
                      CollapseParams(), train_references=gold)
    assert m["accuracy.base"] == pytest.approx(16 / 40) and m["accuracy.tuned"] == pytest.approx(36 / 40)
    assert m["label_unparsed.tuned"] == 4 and m["label_unparsed_rate.tuned"] == 0.1
    assert m["primary.delta_ci_low"] > 0.25 and m["primary.beats_base"] == 1 and m["primary.beats_baselines"] == 1
    assert m["flags.tuned.any"] == 0
    # the base said "Yes." to everything: top share 1.0 against the gold's 0.4 -> flagged
    assert m["flags.base.collapse"] == 1
    assert m["macro_f1.delta_ci_low"] > 0


def test_reference_outside_the_label_set_names_the_record():
    recs = _label_records(["A", "Z"])
    with pytest.raises(TaskError, match="test record q1: reference 'Z' is none of the labels"):
        score_pair(recs, _side(["A", "A"]), _side(["A", "A"]), "en", 100, 0, TaskParams(type="label", labels=["A", "B"]))


def test_numeric_task_and_its_constant_baseline():
    golds = ["$1,577 million", "12.5%", "3,400", "0.75", "42"] * 4
    recs = _label_records(golds)
    tuned = _side(["1577.00", "12.5", "3400", "0.75", "about 40"] * 4)
    base = _side(["I am not sure."] * 20)
    m, rows = score_pair(recs, base, tuned, "en", 200, 0, TaskParams(type="numeric"), train_references=["42"] * 3)
    assert m["numeric_match.tuned"] == 0.8 and m["numeric_match.base"] == 0.0
    assert m["baseline.constant.answer"] == "42" and m["baseline.constant.numeric_match"] == 0.2
    assert m["primary.beats_baselines"] == 1 and rows[0]["scores"]["numeric_match"] == {"base": 0.0, "tuned": 1.0}


def test_text_task_rouge_primary_with_constant_baseline(make_records):
    recs = make_records(10)
    refs = [r["messages"][-1]["content"] for r in recs]
    m, _ = score_pair(recs, _side(["Sorry."] * 10), _side(refs), "en", 200, 0, TaskParams(),
                      train_references=[refs[0]] * 5)
    assert m["primary.name"] == "rouge_l" and m["primary.tuned"] == pytest.approx(1.0)
    assert 0.3 < m["baseline.constant.rouge_l"] < 1.0  # the fixture's answers share a frame
    assert m["primary.beats_baselines"] == 1 and m["flags.tuned.any"] == 0


def test_constant_baseline_ignores_the_general_mix_records_of_train(make_records):
    """split.general_mix adds general records (meta.general) to train.jsonl; a repeated general answer
    must not become the domain task's constant baseline (the demo's went 0.079 -> 0.0)."""
    from domainft.evaluation.run import task_references

    recs = make_records(10)
    refs = [r["messages"][-1]["content"] for r in recs]
    domain = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": refs[0]}], "meta": {}}]
    general = [{"messages": [{"role": "user", "content": f"g{i}"}, {"role": "assistant", "content": "Paris."}],
                "meta": {"general": True}} for i in range(3)]
    assert task_references(domain + general) == [refs[0]]
    m, _ = score_pair(recs, _side(["Sorry."] * 10), _side(refs), "en", 200, 0, TaskParams(),
                      train_references=task_references(general + domain))
    assert m["baseline.constant.answer"] == refs[0] and 0.3 < m["baseline.constant.rouge_l"] < 1.0


def test_loops_and_prompt_copies_are_detected_and_flagged():
    loop = "The fee is waived. " * 8
    assert collapse.loops(loop) and not collapse.loops("The monthly fee is five dollars, waived for students.")
    assert collapse.loops("费用是五元。" * 10) and not collapse.loops("账户的月费是五元，学生免收。")
    case = "Patient is a 54 year old man with chest pain radiating to the left arm since this morning at rest"
    assert collapse.copies(case, "Summarise: " + case) and not collapse.copies("Likely angina; order an ECG now please soon", case)
    answers = [loop] * 6 + ["ok"] * 4
    prof = collapse.profile(answers, ["q"] * 10)
    gold = collapse.profile([f"answer {i}" for i in range(10)], ["q"] * 10)
    assert prof["loop_rate"] == 0.6 and gold["loop_rate"] == 0.0
    assert collapse.flags(prof, gold, 10, CollapseParams()) == {"collapse": 1, "loop": 1, "copy": 0, "any": 1}
    assert collapse.flags(prof, gold, 4, CollapseParams())["any"] == 0  # too few samples to flag


def test_compare_and_report_flag_the_always_A_model(tmp_path):
    import json

    from click.testing import CliRunner

    from domainft.cli import cli
    from domainft.evaluation.report import render_report

    gold = ["A", "B", "C", "D"] * 5
    m, rows = score_pair(_label_records(gold), _side(["B"] * 20), _side(["A"] * 20), "en", 100, 0,
                         TaskParams(type="label", labels=list("ABCD")), train_references=gold)
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(m))
    out = CliRunner().invoke(cli, ["compare", "--metrics", str(path)]).output
    assert "primary metric accuracy: base 0.25 -> tuned 0.25, delta +0" in out
    assert "tuned beats base: NO" in out and "tuned beats the trivial baselines: NO (best: majority 0.25)" in out
    assert "FLAG tuned: collapse (top share 1.00 vs gold 0.25" in out and "FLAG base: collapse" in out
    html = render_report(m, rows)
    assert "FLAG tuned: collapse" in html and "Confusion (tuned)" in html
