"""Promotion gates and the `domainft promote` command against a real MLflow sqlite store.

Also covers the register extensions the gates rely on: ``merge.passed`` as a 1.0/0.0 metric,
``split.leakage.total``, per-file split hashes from DVC's ``.dir`` manifest, safe metric/param names.
"""
import hashlib
import json
import os

import mlflow
import pytest
import yaml
from click.testing import CliRunner

from domainft.cli import cli
from domainft.config import PromoteParams, parse_params
from domainft.promote import evaluate_gates, promote
from domainft.registry import member_md5, metric_key, param_items, read_stage_metrics, register

NAME = "domainft-bank"
SPLITS_DIR_MD5 = "0123456789abcdef0123456789abcdef.dir"


def _metrics(root, rouge=0.3, merge_passed=True, leakage=0, judge=None, ci_low=0.05, baseline=0.1, flags=0,
             overlap=0, eval_metrics=None):
    """metrics/*.json of a finished run; the primary metric here is ROUGE-L (a text task)."""
    m = root / "metrics"
    ev = eval_metrics or {
        "rouge_l.base": 0.1, "rouge_l.tuned": rouge, "rouge_l.delta": rouge - 0.1, "n_samples": 52,
        "primary.name": "rouge_l", "primary.base": 0.1, "primary.tuned": rouge, "primary.delta": rouge - 0.1,
        "primary.delta_ci_low": ci_low, "primary.delta_ci_high": rouge, "primary.baseline": baseline,
        "flags.tuned.any": flags, "flags.tuned.collapse": flags, "overlap.total": overlap}
    if judge is not None:
        ev["judge.pairwise.win_rate"] = judge
    (m / "eval.json").write_text(json.dumps(ev))
    (m / "merge.json").write_text(json.dumps({"max_abs_logit_diff": 1e-6, "passed": merge_passed}))
    (m / "split.json").write_text(json.dumps({"leakage": {"clusters": leakage, "total": leakage},
                                              "sizes": {"train": 254}}))


def _params(lr, **extra):
    """Distinct params -> a distinct fingerprint -> a new model version (as a real rerun would)."""
    return parse_params({"domain": {"name": "bank"}, "train": {"learning_rate": lr}, **extra})


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """Project dir after `dvc repro`: metrics, a (small) merged model folder, dvc.lock, DVC cache."""
    monkeypatch.chdir(tmp_path)
    # absolute URI: MLflow caches one store per URI string, a relative one would outlive the chdir
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    (tmp_path / "params.yaml").write_text("domain:\n  name: bank\n")  # what `domainft promote` reads
    (tmp_path / "metrics").mkdir()
    merged = tmp_path / "models" / "merged"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text('{"model_type": "llama"}')
    splits = tmp_path / "data" / "splits"
    splits.mkdir(parents=True)
    (splits / "train.jsonl").write_text('{"id": "a"}\n')
    (splits / "val.jsonl").write_text('{"id": "b"}\n')
    # dvc.lock lists only the directory; the per-file hashes live in its .dir manifest in the cache
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"split": {
        "cmd": "python stages/split.py", "outs": [{"path": "data/splits", "md5": SPLITS_DIR_MD5}]}}}))
    manifest = tmp_path / ".dvc/cache/files/md5" / SPLITS_DIR_MD5[:2] / SPLITS_DIR_MD5[2:]
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps([{"md5": "11112222333344445555666677778888", "relpath": "train.jsonl"}]))
    _metrics(tmp_path)
    return tmp_path


def _client():
    return mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])  # not the URI a previous test set


def _invoke(*args):
    return CliRunner().invoke(cli, ["promote", *args], catch_exceptions=False)


OK = {"eval.primary.tuned": 0.29, "eval.primary.delta": 0.1, "eval.primary.delta_ci_low": 0.02,
      "eval.primary.baseline": 0.1, "eval.flags.tuned.any": 0.0, "eval.judge.pairwise.win_rate": 0.6,
      "merge.passed": 1.0, "split.leakage.total": 0.0, "eval.overlap.total": 0.0}
ORDER = ["beats_base", "beats_baselines", "no_collapse", "champion", "judge_win_rate", "merge_fidelity", "no_leakage"]


def test_gates_numbers():
    g = PromoteParams(champion_tolerance=0.01, min_judge_win_rate=0.55)
    champ = {"eval.primary.tuned": 0.30}
    gates = evaluate_gates(OK, champ, g)
    assert [x.name for x in gates] == ORDER and [x.status for x in gates] == ["pass"] * 7
    assert "champion 0.3000 - 0.01" in gates[3].threshold
    bad = {**OK, "eval.primary.tuned": 0.289, "eval.primary.delta_ci_low": -0.01, "eval.primary.baseline": 0.295,
           "eval.flags.tuned.any": 1.0, "eval.judge.pairwise.win_rate": 0.5, "merge.passed": 0.0,
           "split.leakage.total": 0.0, "eval.overlap.total": 4.0}
    assert [x.name for x in evaluate_gates(bad, champ, g) if not x.ok] == ORDER
    leak = evaluate_gates({**OK, "eval.overlap.total": 4.0}, None, g)[6]
    assert leak.status == "fail" and "evaluated rows in train/val 4" in leak.detail
    assert evaluate_gates(bad, None, g)[3].status == "pass"  # no champion: nothing to compare with
    # a configured judge gate without judge metrics FAILS (it used to be skipped, and promote)
    no_judge = {k: v for k, v in OK.items() if k != "eval.judge.pairwise.win_rate"}
    j = evaluate_gates(no_judge, champ, g)[4]
    assert j.status == "fail" and "lacks eval.judge.pairwise.win_rate" in j.detail
    # a run without the primary metric (e.g. only ROUGE-L, or the judge never answered) fails every primary gate
    only_rouge = {"eval.rouge_l.tuned": 0.9, "merge.passed": 1.0, "split.leakage.total": 0.0, "eval.overlap.total": 0.0,
                  "eval.flags.tuned.any": 0.0}
    failing = [x.name for x in evaluate_gates(only_rouge, None, PromoteParams()) if not x.ok]
    assert failing == ["beats_base", "beats_baselines", "champion"]
    missing = evaluate_gates({"eval.primary.tuned": 0.5}, None, g)
    assert [(x.name, x.status) for x in missing[5:]] == [("merge_fidelity", "fail"), ("no_leakage", "fail")]
    assert "lacks merge.passed" in missing[5].detail
    off = PromoteParams(require_merge_fidelity=False, require_no_leakage=False, require_improvement=False,
                        require_no_collapse=False)
    assert [x.status for x in evaluate_gates({"eval.primary.tuned": 0.5}, None, off)] == [
        "off", "off", "off", "pass", "off", "off", "off"]
    assert evaluate_gates({}, champ, g)[3].status == "fail"  # challenger without the primary metric


def _exam(tuned_answers, base_answers, gold):
    """eval.json metrics of a label task, computed by the evaluation code on given answers."""
    from domainft.config import CollapseParams, TaskParams
    from domainft.evaluation.generate import Generation
    from domainft.evaluation.run import score_pair

    recs = [{"id": f"q{i}", "messages": [{"role": "user", "content": f"Question {i}: A, B, C or D?"},
                                         {"role": "assistant", "content": g}]} for i, g in enumerate(gold)]

    def side(texts):
        return {"answers": [Generation(t, [1], True, 5) for t in texts], "nll": [(10.0, 5)] * len(texts)}

    m, _ = score_pair(recs, side(base_answers), side(tuned_answers), "en", 300, 0,
                      TaskParams(type="label", labels=list("ABCD")), CollapseParams(), train_references=gold)
    m.update({"overlap.total": 0})
    return json.loads(json.dumps(m))


def test_always_A_exam_model_is_refused_and_a_real_improvement_is_promoted(project):
    gold = list("ABCD") * 10  # balanced: 40 questions
    base = [["B", "C", "D", "A"][i % 4] for i in range(40)]  # the base is always wrong
    _metrics(project, eval_metrics=_exam(["A"] * 40, base, gold))
    assert register(_params(1e-4))["version"] == 1
    res = _invoke()
    assert res.exit_code == 1
    assert "refused: v1 fails gate(s) beats_baselines, no_collapse; @champion stays none" in res.output
    assert "0.25" in res.output and "flags: collapse" in res.output  # each gate prints its figure
    # tuned right on 34 of 40 (accuracy 0.85 vs base 0 and baseline 0.25): promoted
    good = [g if i % 7 else "B" if g != "B" else "C" for i, g in enumerate(gold)]
    ev = _exam(good, base, gold)
    assert ev["accuracy.tuned"] == pytest.approx(34 / 40) and ev["primary.delta_ci_low"] > 0.5
    _metrics(project, eval_metrics=ev)
    assert register(_params(2e-4))["version"] == 2
    res = _invoke()
    assert res.exit_code == 0 and "promoted v2 to @champion (was none)" in res.output, res.output
    # ROUGE-L alone cannot promote: a run whose text similarity soared but accuracy fell to 0.5 is refused
    worse = _exam([g if i % 8 >= 4 else "ABCD"[("ABCD".index(g) + 1) % 4] for i, g in enumerate(gold)], base, gold)
    assert worse["accuracy.tuned"] == 0.5 and worse["flags.tuned.any"] == 0
    worse["rouge_l.tuned"] = 0.99
    _metrics(project, eval_metrics=worse)
    assert register(_params(3e-4))["version"] == 3
    r = promote(_params(3e-4))
    assert r.decision == "refused" and r.failing == ["champion"]


def test_promotion_flow_on_sqlite(project):
    client = _client()
    # run 1: first version, gates pass -> becomes champion
    assert register(_params(1e-4))["version"] == 1
    res = _invoke()
    assert res.exit_code == 0, res.output
    assert "promoted v1 to @champion (was none)" in res.output and "merge_fidelity" in res.output
    assert int(client.get_model_version_by_alias(NAME, "champion").version) == 1
    run1 = client.get_run(client.get_model_version_by_alias(NAME, "champion").run_id)
    assert run1.data.metrics["merge.passed"] == 1.0 and run1.data.metrics["split.leakage.total"] == 0.0
    assert _invoke().output.strip().endswith("v1 is already @champion; nothing to do")

    # run 2 (different params): ROUGE-L 0.25 < 0.30 - 0.01 -> refused, champion stays v1
    _metrics(project, rouge=0.25)
    assert register(_params(2e-4))["version"] == 2
    res = _invoke()
    assert res.exit_code == 1
    assert "refused: v2 fails gate(s) champion; @champion stays v1" in res.output
    assert "0.25" in res.output and ">= 0.2900" in res.output
    assert int(client.get_model_version_by_alias(NAME, "champion").version) == 1
    assert client.get_model_version(NAME, "2").tags["domainft.promote.decision"] == "refused"

    # run 3: within the tolerance (0.295 >= 0.29) -> promoted
    _metrics(project, rouge=0.295)
    assert register(_params(3e-4))["version"] == 3
    r = promote(_params(3e-4))
    assert (r.decision, r.champion_before, r.champion_after, r.failing) == ("promoted", 1, 3, [])
    v3 = client.get_model_version(NAME, "3")
    assert v3.tags["domainft.promote.previous_champion"] == "1"
    assert v3.tags["domainft.promote.forced"] == "false"
    assert [g["name"] for g in json.loads(v3.tags["domainft.promote.gates"])] == ORDER


def test_failing_fidelity_and_leakage_are_named_and_force_needs_reason(project):
    client = _client()
    register(_params(1e-4))
    assert promote(_params(1e-4)).decision == "promoted"
    _metrics(project, rouge=0.4, merge_passed=False, leakage=2)
    assert register(_params(2e-4))["version"] == 2
    res = _invoke()
    assert res.exit_code == 1 and "fails gate(s) merge_fidelity, no_leakage" in res.output
    res = _invoke("--force")
    assert res.exit_code == 2 and "--force requires --reason" in res.output
    with pytest.raises(ValueError, match="needs --reason"):
        promote(_params(2e-4), force=True, reason="  ")
    res = _invoke("--force", "--reason", "hotfix approved by risk team", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["decision"] == "forced" and out["failing"] == ["merge_fidelity", "no_leakage"]
    assert int(client.get_model_version_by_alias(NAME, "champion").version) == 2
    tags = client.get_model_version(NAME, "2").tags
    assert tags["domainft.promote.reason"] == "hotfix approved by risk team"
    assert tags["domainft.promote.forced"] == "true" and tags["metric.merge.passed"] == "0"


def test_first_version_failing_gates_gets_no_champion(project):
    _metrics(project, leakage=1)
    register(_params(1e-4))
    r = promote(_params(1e-4))
    assert r.decision == "refused" and r.failing == ["no_leakage"] and r.champion_after is None
    with pytest.raises(mlflow.exceptions.MlflowException):
        _client().get_model_version_by_alias(NAME, "champion")
    judged = promote(_params(1e-4, promote={"min_judge_win_rate": 0.5, "require_no_leakage": False}))
    assert judged.decision == "refused" and judged.failing == ["judge_win_rate"]  # configured, but no judge ran
    assert promote(_params(1e-4, promote={"require_no_leakage": False})).decision == "promoted"


def test_no_registered_model_is_a_clear_error(project):
    res = CliRunner().invoke(cli, ["promote"])
    assert res.exit_code == 1 and "registered model 'domainft-bank' not found" in res.output


def test_lineage_from_champion_finds_train_split_hash(project):
    register(_params(1e-4))
    promote(_params(1e-4))
    client = _client()
    run = client.get_run(client.get_model_version_by_alias(NAME, "champion").run_id)
    assert run.data.tags["dvc.splits.md5"] == SPLITS_DIR_MD5
    assert run.data.tags["dvc.train_split.md5"] == "11112222333344445555666677778888"  # from the manifest
    # val.jsonl is not in the manifest: its plain md5 (what DVC 3 records for a file)
    assert run.data.tags["dvc.val_split.md5"] == hashlib.md5(b'{"id": "b"}\n').hexdigest()
    assert "dvc.test_split.md5" not in run.data.tags  # no such file anywhere


def test_register_helpers():
    assert member_md5("data/x.jsonl", {"data/x.jsonl": "feed"}) == "feed"
    assert member_md5("nope/x.jsonl", {"nope": "ab.dir"}) is None
    assert metric_key("prepare.files.data/raw/faq (2).csv.kept") == "prepare.files.data/raw/faq _2_.csv.kept"
    assert metric_key("eval.recall@5") == "eval.recall_5" and metric_key("a//b/./c") == "a/b/_/c"
    flat = param_items({"prepare": {"schema_overrides": {"*.csv": "qa"}, "clean": {"min": 1}}})
    assert flat == {"prepare.schema_overrides": {"*.csv": "qa"}, "prepare.clean.min": 1}


def test_bools_become_metrics_only_when_asked(tmp_path):
    (tmp_path / "merge.json").write_text(json.dumps({"passed": False, "n": 2}))
    assert read_stage_metrics(tmp_path) == {"merge.n": 2.0}
    assert read_stage_metrics(tmp_path, include_bools=True) == {"merge.n": 2.0, "merge.passed": 0.0}


def test_glob_keys_in_params_do_not_break_register(project):
    p = _params(1e-4, prepare={"schema_overrides": {"exports/*.csv": "qa"}, "encodings": {"old?.csv": "gbk"}})
    res = register(p)
    run = _client().get_run(res["run_id"])
    assert json.loads(run.data.params["prepare.schema_overrides"]) == {"exports/*.csv": "qa"}


def _preference(root, dpo_primary=0.34, vs_sft_delta=0.04, dpo_merge_passed=True, sha="ab" * 32):
    """metrics/preference.json of a preference stage that ran, and its merged SFT+DPO model folder."""
    dpo = root / "models" / "dpo_merged"
    dpo.mkdir(parents=True, exist_ok=True)
    (dpo / "config.json").write_text('{"model_type": "llama", "dpo": true}')
    vs_base = {"primary.name": "rouge_l", "primary.base": 0.1, "primary.tuned": dpo_primary,
               "primary.delta": dpo_primary - 0.1, "primary.delta_ci_low": 0.05, "primary.delta_ci_high": 0.3,
               "primary.baseline": 0.1, "flags.tuned.any": 0, "overlap.total": 0,
               "retention.response_ppl.ratio": 1.1, "retention.response_ppl.base": 10.0,
               "retention.response_ppl.tuned": 11.0}
    pref = {"enabled": 1, "verdicts_sha256": sha, "review_sha256": "cd" * 32, "pairs": 20,
            "sources": {"human": 20, "judge": 0, "reference": 0}, "merge.passed": dpo_merge_passed,
            **{f"vs_base.{k}": v for k, v in vs_base.items()},
            "vs_sft.primary.delta": vs_sft_delta, "vs_sft.primary.delta_ci_low": vs_sft_delta - 0.03,
            "vs_sft.primary.delta_ci_high": vs_sft_delta + 0.03}
    (root / "metrics/preference.json").write_text(json.dumps(pref))


def test_dpo_model_is_its_own_version_with_verdicts_lineage_and_promotion_prints_both(project):
    from domainft.registry import ALIAS_CHALLENGER_DPO

    client = _client()
    _preference(project)
    out = register(_params(1e-4))
    assert out["version"] == 1 and out["dpo"]["version"] == 2 and out["dpo"]["created"]
    v2 = client.get_model_version_by_alias(NAME, ALIAS_CHALLENGER_DPO)
    assert int(v2.version) == 2 and v2.tags["domainft.model_kind"] == "dpo_merged"
    assert v2.tags["domainft.verdicts_sha256"] == "ab" * 32 and v2.tags["domainft.sft_version"] == "1"
    assert v2.tags["domainft.pairs.human"] == "20" and v2.tags["metric.merge.passed"] == "1"
    run = client.get_run(v2.run_id).data.metrics
    # the DPO version's gate metrics are its own evaluation vs base; the SFT figures kept under sft.
    assert run["eval.primary.tuned"] == pytest.approx(0.34) and run["sft.eval.primary.tuned"] == pytest.approx(0.3)
    assert run["merge.passed"] == 1.0 and run["preference.vs_sft.primary.delta"] == pytest.approx(0.04)
    sft_run = client.get_run(client.get_model_version(NAME, "1").run_id).data.metrics
    assert sft_run["eval.primary.tuned"] == pytest.approx(0.3)
    # the same inputs again: neither version duplicated
    again = register(_params(1e-4))
    assert (again["version"], again["dpo"]["version"], again["dpo"]["created"]) == (1, 2, False)
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 2

    res = _invoke()
    assert res.exit_code == 0, res.output
    assert "challenger v2 (SFT+DPO)" in res.output and "challenger v1 (SFT)" in res.output
    assert res.output.count("merge_fidelity") == 2 and "vs_sft" in res.output
    assert "promoted v2 to @champion (was none) (SFT+DPO)" in res.output
    gates = json.loads(client.get_model_version(NAME, "2").tags["domainft.promote.gates"])
    assert [g["name"] for g in gates] == ORDER + ["general_ppl", "vs_sft"]
    assert gates[-1]["detail"] == "primary DPO - SFT +0.04, 95% CI [+0.01, +0.07]" and gates[-1]["status"] == "pass"
    assert client.get_model_version(NAME, "1").tags["domainft.promote.decision"] == "not_chosen"
    assert int(client.get_model_version_by_alias(NAME, "champion").version) == 2


def test_dpo_worse_than_sft_or_unfaithful_is_refused_and_sft_promoted(project):
    client = _client()
    _preference(project, dpo_primary=0.26, vs_sft_delta=-0.04, dpo_merge_passed=False)
    register(_params(1e-4))
    r = promote(_params(1e-4))
    assert [(c.kind, c.version) for c in r.candidates] == [("dpo", 2), ("sft", 1)]
    assert r.candidates[0].failing == ["merge_fidelity", "vs_sft"]
    assert (r.decision, r.kind, r.challenger, r.champion_after) == ("promoted", "sft", 1, 1)
    assert client.get_model_version(NAME, "2").tags["domainft.promote.decision"] == "refused"
    # only the DPO candidate, and it fails: refused, each failing gate named
    _metrics(project, rouge=0.31)
    _preference(project, dpo_primary=0.26, vs_sft_delta=-0.04, sha="ef" * 32)
    out = register(_params(2e-4))
    res = _invoke("--candidate", "dpo")
    assert res.exit_code == 1
    assert f"refused: v{out['dpo']['version']} fails gate(s) champion, vs_sft; @champion stays v1" in res.output
    # the preference stage switched off again: the stale DPO version is no candidate
    (project / "metrics/preference.json").write_text('{"enabled": 0}')
    register(_params(3e-4))
    with pytest.raises(Exception, match="no @challenger-dpo version"):
        promote(_params(3e-4), candidate="dpo")
