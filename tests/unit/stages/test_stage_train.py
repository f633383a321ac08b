"""The train stage adapter against a real MLflow sqlite store: params none truncated, metrics logged."""
import json

import pytest

from domainft.config import parse_params


def _records(n):
    return [{"messages": [{"role": "user", "content": f"Fee for plan {i}?"},
                          {"role": "assistant", "content": f"The fee for plan {i} is ${3 * i}."}]} for i in range(n)]


def test_long_target_modules_are_logged_with_their_hash_and_full_text(tmp_path, tiny_model_dir, monkeypatch):
    import hashlib

    import mlflow

    from domainft.stages.train import run

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "data" / "splits").mkdir(parents=True)
    (tmp_path / "data" / "splits" / "train.jsonl").write_text("\n".join(json.dumps(r) for r in _records(8)) + "\n")
    modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] + \
        [f"model.layers.{i}.self_attn.extra_proj_{j}" for i in range(2) for j in range(120)]
    text = json.dumps(modules)
    assert len(text) > 7000  # the 7,160 characters, MLflow keeps at most 6,000
    params = parse_params({"base": {"out_dir": str(tiny_model_dir)},
                           "train": {"max_steps": 2, "batch_size": 4, "save_steps": 1,
                                     "lora": {"target_modules": modules}}})
    metrics = run(params)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    r = client.get_run(metrics["mlflow_run_id"])
    assert "train.lora.target_modules" not in r.data.params
    assert r.data.params["train.lora.target_modules.sha256"] == hashlib.sha256(text.encode()).hexdigest()
    path = client.download_artifacts(r.info.run_id, "params/train.lora.target_modules.txt", str(tmp_path))
    assert open(path).read() == text
    assert r.data.params["train.lora.r"] == "16" and r.data.params["domain.seed"] == "42"
    assert [m.step for m in client.get_metric_history(r.info.run_id, "loss")] == [1, 2]
    assert json.loads((tmp_path / "metrics" / "train.json").read_text())["steps"] == 2
    assert pytest.approx(r.data.metrics["train_loss"]) == metrics["train_loss"]
