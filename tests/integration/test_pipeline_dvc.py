"""Walking skeleton: `dvc repro` runs every stage for real on the tiny model, then reruns nothing.

The repository is copied to a temporary folder (tracked + untracked, non-ignored files), params
point `base.source` at the tiny model folder and shrink training/evaluation, and DVC runs in a
subprocess exactly as a user would.
"""
import json

import pytest
import yaml

from pipeline_utils import git, run, tiny_project, venv_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir):
    proj = tmp_path_factory.mktemp("pipeline") / "proj"
    tiny_project(proj, tiny_model_dir)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "init"]):
        git(proj, *args)
    out = run(["dvc", "repro"], proj)
    return proj, out


def test_every_stage_ran_and_wrote_its_outputs(project):
    proj, out = project
    for stage in ("prepare", "split", "base", "train", "merge", "evaluate", "register"):
        assert f"Running stage '{stage}'" in out
    for f in ("data/processed/records.jsonl", "data/processed/rejects.jsonl", "data/splits/train.jsonl",
              "data/splits/val.jsonl", "data/splits/test.jsonl", "models/base/model.safetensors",
              "models/adapter/adapter_model.safetensors", "models/merged/model.safetensors",
              "models/merged/chat_template.jinja", "metrics/plots/train_loss.csv", "mlflow.db", "dvc.lock"):
        assert (proj / f).exists(), f
    train = json.loads((proj / "metrics/train.json").read_text())
    assert train["steps"] == 3 and train["train_samples"] > 100
    merge = json.loads((proj / "metrics/merge.json").read_text())
    assert merge["passed"] is True
    reg = json.loads((proj / "metrics/register.json").read_text())
    assert reg["version"] == 1


def test_registered_version_has_challenger_alias_and_lineage(project):
    import mlflow

    proj, _ = project
    client = mlflow.MlflowClient(f"sqlite:///{proj / 'mlflow.db'}")
    mv = client.get_model_version_by_alias("domainft-finance", "challenger")
    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    train_md5 = next(o["md5"] for o in lock["stages"]["split"]["outs"] if o["path"] == "data/splits")
    assert client.get_run(mv.run_id).data.tags["dvc.splits.md5"] == train_md5


def test_second_repro_reruns_nothing(project):
    proj, _ = project
    out = run(["dvc", "repro"], proj)
    # fingerprint (hashes of the code per stage and of the base source) always runs, changing nothing
    assert [line for line in out.splitlines() if "Running stage" in line] == ["Running stage 'fingerprint':"]
    assert "Stage 'train' didn't change, skipping" in out


def _changed(proj) -> dict:
    status = run(["dvc", "status", "--json"], proj)
    return json.loads(status[status.index("{"):status.rindex("}") + 1])


def test_a_host_where_auto_means_another_precision_reruns_the_stages_that_load_models(project):
    """precision: auto is bf16 on a CPU with bf16 units and fp32 elsewhere: same params, other weights."""
    proj, _ = project
    compute = proj / "fingerprints" / "compute.json"
    if json.loads(compute.read_text())["device"] == "cuda":
        pytest.skip("auto is bf16 on CUDA whatever the CPU")
    assert json.loads(compute.read_text()) == {"device": "cpu", "auto": "fp32"}  # tests force detection off
    run(["dvc", "repro", "fingerprint"], proj, env=venv_env(DOMAINFT_NATIVE_BF16="1"))
    assert json.loads(compute.read_text()) == {"device": "cpu", "auto": "bf16"}
    changed = _changed(proj)
    assert changed.pop("fingerprint") == ["always changed"]
    assert set(changed) == {"train", "evaluate", "preference"}
    assert all({"changed deps": {"fingerprints/compute.json": "modified"}} in changed[s] for s in changed)
    run(["dvc", "repro", "fingerprint"], proj)  # back on the tests' fp32 host: nothing to rerun
    assert set(_changed(proj)) == {"fingerprint"}


def test_editing_evaluation_code_or_params_does_not_retrain(project):
    proj, _ = project
    metrics_py = proj / "domainft" / "evaluation" / "metrics.py"
    metrics_py.write_text(metrics_py.read_text() + "\n# edited\n")
    changed = _changed(proj)
    assert changed.pop("fingerprint") == ["always changed"]
    assert set(changed) == {"evaluate", "preference"}  # the preference stage evaluates SFT vs SFT+DPO
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["evaluate"]["max_new_tokens"] = 4
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro"], proj)
    assert "Running stage 'evaluate'" in out
    for stage in ("prepare", "split", "base", "train", "merge"):
        assert f"Running stage '{stage}'" not in out
