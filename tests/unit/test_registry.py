"""Register against a real MLflow sqlite store: versions, alias, no duplicates, long params."""
import json
import os
from pathlib import Path

import pytest

from domainft.config import parse_params
from domainft.registry import dvc_lock_hashes, flatten, read_stage_metrics, register


@pytest.fixture()
def project(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "eval.json").write_text(json.dumps({"rouge_l": {"base": 0.1, "tuned": 0.3, "delta": 0.2}}))
    (tmp_path / "metrics" / "report.html").write_text("<html>report</html>")
    (tmp_path / "metrics" / "merge.json").write_text(json.dumps({"max_abs_logit_diff": 1e-6, "passed": True}))
    (tmp_path / "models").mkdir()
    os.symlink(tiny_model_dir, tmp_path / "models" / "merged")
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  split:\n    cmd: x\n    outs:\n    - path: data/splits\n      md5: abc.dir\n"
        "    - path: data/splits/train.jsonl\n      md5: feed\n")
    return tmp_path


def test_register_versions_alias_and_idempotence(project):
    import mlflow

    params = parse_params({"domain": {"name": "bank"}})
    first = register(params)
    assert first["created"] and first["version"] == 1 and first["model_name"] == "domainft-bank"
    again = register(params)
    assert again["created"] is False and again["version"] == 1
    changed = register(parse_params({"domain": {"name": "bank"}, "train": {"learning_rate": 1e-4}}))
    assert changed["created"] and changed["version"] == 2
    client = mlflow.MlflowClient(f"sqlite:///{project}/mlflow.db")
    mv = client.get_model_version_by_alias("domainft-bank", "challenger")
    assert int(mv.version) == 2
    assert mv.tags["metric.rouge_l.tuned"] == "0.3"
    run = client.get_run(mv.run_id)
    assert run.data.tags["dvc.splits.md5"] == "abc.dir" and run.data.tags["dvc.train_split.md5"] == "feed"
    assert run.data.metrics["eval.rouge_l.delta"] == pytest.approx(0.2)
    files = {f.path for f in client.list_artifacts(mv.run_id, "model")}
    assert "model/config.json" in files and "model/model.safetensors" in files
    assert "evaluation/report.html" in {f.path for f in client.list_artifacts(mv.run_id, "evaluation")}


def test_relative_store_follows_the_current_directory_in_one_process(project, tmp_path_factory, monkeypatch):
    """MLflow caches an engine per URI string: a relative sqlite:///mlflow.db once kept writing to
    the first folder's database after a chdir (and failed once that folder was deleted)."""
    import shutil

    import mlflow

    params = parse_params({"domain": {"name": "bank"}})
    assert register(params)["version"] == 1
    other = tmp_path_factory.mktemp("second_project")
    shutil.copytree(project, other, symlinks=True, dirs_exist_ok=True, ignore=shutil.ignore_patterns("mlflow*"))
    monkeypatch.chdir(other)
    shutil.rmtree(project)
    again = register(params)
    assert again["created"] and again["version"] == 1  # a new store, not version 2 of the first one
    assert (other / "mlflow.db").exists() and not project.exists()
    assert mlflow.get_tracking_uri() == f"sqlite:///{other}/mlflow.db"


def test_absolute_sqlite_uri():
    from domainft.tracking import absolute_sqlite_uri

    assert absolute_sqlite_uri("sqlite:///mlflow.db") == f"sqlite:///{os.getcwd()}/mlflow.db"
    assert absolute_sqlite_uri("sqlite:///runs/m.db?timeout=5") == f"sqlite:///{os.getcwd()}/runs/m.db?timeout=5"
    for unchanged in ("sqlite:////abs/m.db", "sqlite:///:memory:", "http://127.0.0.1:5000", "postgresql://h/db"):
        assert absolute_sqlite_uri(unchanged) == unchanged


def test_long_system_prompt_is_an_artifact_and_hash(project):
    import mlflow

    prompt = "Answer as the bank's assistant. " * 220  # ~7,000 characters
    assert len(prompt) > 7000
    res = register(parse_params({"domain": {"name": "long", "system_prompt": prompt}}))
    client = mlflow.MlflowClient(f"sqlite:///{project}/mlflow.db")
    run = client.get_run(res["run_id"])
    assert "domain.system_prompt" not in run.data.params
    assert len(run.data.params["domain.system_prompt.sha256"]) == 64
    local = mlflow.artifacts.download_artifacts(run_id=res["run_id"], artifact_path="params/domain.system_prompt.txt",
                                                tracking_uri=f"sqlite:///{project}/mlflow.db")
    assert open(local).read() == prompt


def test_helpers(tmp_path):
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": [1]}) == {"a.b": 1, "a.c.d": 2, "e": [1]}
    (tmp_path / "m.json").write_text(json.dumps({"x": {"y": 2}, "s": "str", "ok": True}))
    (tmp_path / "register.json").write_text(json.dumps({"version": 3}))
    assert read_stage_metrics(tmp_path) == {"m.x.y": 2.0}
    assert dvc_lock_hashes(tmp_path / "missing.lock") == {}


def test_concurrent_registers_on_a_fresh_store_give_one_version(project):
    """Two `domainft register` at once on a new SQLite store: neither crashes in the schema set-up,
    and one fingerprint gives one version (the issue saw a crash, and two versions)."""
    import subprocess
    import sys

    import mlflow

    (project / "params.yaml").write_text("domain: {name: bank}\n")
    code = ("import sys, time, mlflow, domainft.registry\n"
            "from pathlib import Path\n"
            "from domainft.stages import run_stage\n"
            "print('ready', flush=True)\n"
            "while not Path('go').exists(): time.sleep(0.01)\n"
            "print(run_stage('register')['version'])\n")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])  # this checkout's domainft
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=project, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    assert [p.stdout.readline().strip() for p in procs] == ["ready"] * 3  # all imported: start together
    (project / "go").write_text("")
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e[-2000:] for _, e in outs]
    assert [o.strip().splitlines()[-1] for o, _ in outs] == ["1", "1", "1"]
    client = mlflow.MlflowClient(f"sqlite:///{project}/mlflow.db")
    assert [str(v.version) for v in client.search_model_versions("name = 'domainft-bank'")] == ["1"]


def test_registered_adapter_records_its_base_by_hash_and_loads_from_any_folder(project, tiny_model_dir, tmp_path_factory,
                                                                              monkeypatch):
    import mlflow
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from domainft.registry import adapter_base, base_digest

    os.symlink(tiny_model_dir, project / "models" / "base")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(project / "models" / "adapter")
    cfg = json.loads((project / "models" / "adapter" / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "models/base"  # relative, as the train stage writes it
    (project / "models" / "adapter" / "adapter_config.json").write_text(json.dumps(cfg))
    params = parse_params({"domain": {"name": "bank"}, "register": {"log_model": "adapter"}})
    first = register(params)
    uri = f"sqlite:///{project}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    mv = client.get_model_version("domainft-bank", first["version"])
    assert mv.tags["domainft.base_sha256"] == base_digest(tiny_model_dir)
    assert mv.tags["domainft.base_model_uri"] == "models:/domainft-bank-base/1"
    # a second adapter on the same base reuses the base version
    again = register(parse_params({"domain": {"name": "bank"}, "register": {"log_model": "adapter"},
                                   "train": {"learning_rate": 1e-4}}))
    assert again["version"] == 2 and len(client.search_model_versions("name = 'domainft-bank-base'")) == 1
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    monkeypatch.chdir(elsewhere)
    mlflow.set_tracking_uri(uri)
    local = mlflow.artifacts.download_artifacts(artifact_uri="models:/domainft-bank/1", dst_path=str(elsewhere / "a"))
    base = adapter_base(local, elsewhere / "b")
    assert base.is_relative_to(elsewhere) and (base / "config.json").exists()
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), local)
    assert sum(p.numel() for n, p in tuned.named_parameters() if "lora_" in n) > 0
