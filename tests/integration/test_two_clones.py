"""The GPU-box loop with two clones on one machine: DVC remote push/pull and a shared MLflow registry.

Clone A runs the whole pipeline on the tiny model, promotes the first version and pushes data,
models and the run cache to a local-directory DVC remote. Clone B (``git clone`` of A) pulls them:
``dvc repro`` reruns nothing. New raw data in B reruns only the stages downstream of the data (not
``base``), and the new model version lands in the registry A used (same ``MLFLOW_TRACKING_URI``).
From ``@champion`` the lineage tags lead back to A's dvc.lock hash of the training split.

Two tiny-model pipeline runs: about 2-4 minutes on 2 loaded CPU cores.
"""
import hashlib
import subprocess
import json
from pathlib import Path

import pytest
import yaml

from pipeline_utils import git, run, tiny_project, venv_env

pytestmark = pytest.mark.integration
NAME = "domainft-finance"
DATA_STAGES = ["prepare", "split", "train", "merge", "evaluate", "register"]
NEW_RAW = [  # facts absent from the demo data (a fictional product launched after the first run)
    ("What is the monthly fee of the Northwind Harbor savings pot?",
     "The Harbor savings pot has no monthly fee and pays 3.4% AER on balances up to £40,000."),
    ("How many Harbor savings pots can one customer open?",
     "Each customer can open up to five Harbor savings pots, each with its own nickname and goal."),
    ("Can I withdraw from a Harbor pot at any time?",
     "Yes, Harbor pot withdrawals are instant and unlimited, with no loss of interest."),
    ("Is there a minimum deposit for the Harbor savings pot?",
     "No minimum applies; a Harbor pot can be opened with £1 and topped up from the app at any time."),
    ("How is interest on a Harbor pot paid?",
     "Interest on Harbor pots is calculated daily and paid into the pot on the first business day of each month."),
    ("Who can open a Northwind Harbor savings pot?",
     "Any Northwind current account holder aged 16 or over who lives in the UK can open a Harbor pot."),
]


def _ran(out: str) -> set[str]:
    return {s for s in ("prepare", "split", "base", *DATA_STAGES) if f"Running stage '{s}'" in out}


def _lock_md5(proj: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((proj / "dvc.lock").read_text())["stages"][stage]
    return next(e["md5"] for e in lock.get("deps", []) + lock.get("outs", []) if e["path"] == path)


def test_push_pull_repro_and_shared_registry(tmp_path, tiny_model_dir):
    import mlflow

    remote, a, b = tmp_path / "dvc-remote", tmp_path / "a", tmp_path / "b"
    uri = f"sqlite:///{tmp_path / 'registry' / 'mlflow.db'}"
    (tmp_path / "registry").mkdir()
    env = venv_env(MLFLOW_TRACKING_URI=uri)

    # clone A: tiny params, full pipeline, promote, commit dvc.lock + metrics, push to the remote
    tiny_project(a, tiny_model_dir)
    assert "remote = local" in (a / ".dvc" / "config").read_text()  # the committed default remote
    git(a, "init", "-q")
    git(a, "add", "-A")
    git(a, "commit", "-qm", "init")
    run(["dvc", "remote", "modify", "--local", "local", "url", str(remote)], a, env)  # as docs/remote.md
    assert _ran(run(["dvc", "repro"], a, env)) == {"base", *DATA_STAGES}
    # a random tiny model cannot beat its base: promotion is refused, and forced with a reason
    refused = subprocess.run(["domainft", "promote"], cwd=a, env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and "refused: v1 fails gate(s) beats_base" in refused.stdout, refused.stdout
    run(["domainft", "promote", "--force", "--reason", "two-clone lineage test on a random tiny model"], a, env)
    git(a, "add", "-A")
    git(a, "commit", "-qm", "pipeline run 1")
    run(["dvc", "push", "--run-cache"], a, env)
    assert any(remote.rglob("*")), "nothing pushed"

    # lineage: from @champion to A's dvc.lock hash of the training split (and the bytes behind it)
    client = mlflow.MlflowClient(uri)
    champ = client.get_model_version_by_alias(NAME, "champion")
    tags = client.get_run(champ.run_id).data.tags
    train_md5 = _lock_md5(a, "train", "data/splits/train.jsonl")
    assert tags["dvc.train_split.md5"] == train_md5
    assert train_md5 == hashlib.md5((a / "data/splits/train.jsonl").read_bytes()).hexdigest()
    assert tags["dvc.splits.md5"] == _lock_md5(a, "split", "data/splits")
    assert tags["dvc.test_split.md5"] == _lock_md5(a, "evaluate", "data/splits/test.jsonl")
    assert tags["domainft.git_commit"] == subprocess.run(["git", "rev-parse", "HEAD~1"], cwd=a, text=True,
                                                         capture_output=True).stdout.strip()  # `init`

    # clone B: git clone + dvc pull -> nothing to rerun
    git(tmp_path, "clone", "-q", str(a), str(b))
    run(["dvc", "remote", "modify", "--local", "local", "url", str(remote)], b, env)
    run(["dvc", "pull", "--run-cache"], b, env)
    for f in ("data/splits/train.jsonl", "models/base/model.safetensors", "models/adapter/adapter_model.safetensors",
              "models/merged/model.safetensors", "metrics/predictions.jsonl"):
        assert (b / f).is_file(), f
    assert (b / "models/merged/model.safetensors").read_bytes() == (a / "models/merged/model.safetensors").read_bytes()
    out = run(["dvc", "repro"], b, env)
    assert _ran(out) == set() and "Stage 'train' didn't change, skipping" in out, out  # fingerprint alone ran

    # new raw data in B: every stage downstream of data/raw reruns, base does not
    with open(b / "data/raw/harbor_pots.jsonl", "w") as f:
        for q, ans in NEW_RAW:
            f.write(json.dumps({"instruction": q, "input": "", "output": ans}) + "\n")
    out = run(["dvc", "repro"], b, env)
    assert _ran(out) == set(DATA_STAGES), out
    prep = json.loads((b / "metrics/prepare.json").read_text())
    assert prep["files"]["data/raw/harbor_pots.jsonl"]["kept"] == len(NEW_RAW)
    assert json.loads((b / "metrics/register.json").read_text()) == {"created": True, "version": 2}

    # ... and its version is in the registry A used, as the new challenger; champion stays v1
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{NAME}'"))
    assert versions == [1, 2]
    assert int(client.get_model_version_by_alias(NAME, "challenger").version) == 2
    assert int(client.get_model_version_by_alias(NAME, "champion").version) == 1
    v2_tags = client.get_run(client.get_model_version(NAME, "2").run_id).data.tags
    assert v2_tags["dvc.raw.md5"] != tags["dvc.raw.md5"]
    assert v2_tags["dvc.base.md5"] == tags["dvc.base.md5"]
    assert v2_tags["dvc.train_split.md5"] == _lock_md5(b, "train", "data/splits/train.jsonl") != train_md5
