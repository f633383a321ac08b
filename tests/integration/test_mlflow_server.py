"""Remote tracking: register + promote against a real `mlflow server` process on 127.0.0.1.

The server has its own sqlite backend store and proxied artifact store (``--artifacts-destination``)
in a temporary folder; the client only knows ``MLFLOW_TRACKING_URI=http://127.0.0.1:<port>``, so
every call (runs, artifact upload, registry, aliases, download) goes over HTTP.
"""
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.integration
VENV_BIN = Path(sys.executable).parent
NAME = "domainft-remote"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def server(tmp_path):
    """Start `mlflow server`, wait for /health, yield (url, artifact folder); kill its process group."""
    port, store = _free_port(), tmp_path / "server"
    store.mkdir()
    log = open(store / "server.log", "w")
    cmd = [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
           "--artifacts-destination", str(store / "artifacts")]
    # no job executor: it adds 8 huey processes, ~15 s of start-up and /dev/shm folders we don't need
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(cmd, cwd=store, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    try:
        while True:
            assert proc.poll() is None, (store / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not answer /health within 120 s"
            time.sleep(0.5)
        yield url, store / "artifacts"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn worker (own session)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def _eval(rouge: float) -> dict:
    """eval.json of a text task whose primary metric (ROUGE-L) beat the base and the baselines."""
    return {"rouge_l.base": 0.1, "rouge_l.tuned": rouge, "rouge_l.delta": rouge - 0.1, "primary.name": "rouge_l",
            "primary.base": 0.1, "primary.tuned": rouge, "primary.delta": rouge - 0.1, "primary.delta_ci_low": 0.05,
            "primary.baseline": 0.05, "flags.tuned.any": 0, "overlap.total": 0}


@pytest.fixture()
def project(tmp_path, tiny_model_dir, monkeypatch, server):
    url, _ = server
    proj = tmp_path / "proj"
    (proj / "metrics").mkdir(parents=True)
    (proj / "models").mkdir()
    os.symlink(tiny_model_dir, proj / "models" / "merged")
    (proj / "metrics" / "eval.json").write_text(json.dumps(_eval(0.3)))
    (proj / "metrics" / "merge.json").write_text(json.dumps({"max_abs_logit_diff": 1e-6, "passed": True}))
    (proj / "metrics" / "split.json").write_text(json.dumps({"leakage": {"total": 0}}))
    (proj / "params.yaml").write_text("domain:\n  name: remote\n")
    monkeypatch.chdir(proj)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    return proj


def test_register_promote_and_download_through_server(project, server, tiny_model_dir, tmp_path):
    import mlflow

    from domainft.cli import cli
    from domainft.config import load_params
    from domainft.registry import register

    url, artifacts = server
    res = register(load_params("params.yaml"))
    assert (res["model_name"], res["version"], res["created"]) == (NAME, 1, True)
    out = CliRunner().invoke(cli, ["promote"], catch_exceptions=False)
    assert out.exit_code == 0 and "promoted v1 to @champion (was none)" in out.output, out.output

    client = mlflow.MlflowClient(url)
    champ = client.get_model_version_by_alias(NAME, "champion")
    assert int(champ.version) == 1 and set(champ.aliases) == {"challenger", "champion"}
    assert champ.tags["domainft.promote.decision"] == "promoted" and champ.tags["metric.merge.passed"] == "1"
    assert client.get_run(champ.run_id).data.metrics["eval.rouge_l.tuned"] == pytest.approx(0.3)
    # the weights went through the server's artifact proxy into --artifacts-destination
    stored = list(artifacts.rglob("model/model.safetensors"))
    assert len(stored) == 1 and _sha256(stored[0]) == _sha256(tiny_model_dir / "model.safetensors")

    # what `domainft serve --model models:/<name>@champion` downloads: a loadable HF folder
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}@champion", dst_path=str(tmp_path / "dl")))
    assert (local / "config.json").is_file() and (local / "model.safetensors").is_file()
    assert _sha256(local / "model.safetensors") == _sha256(tiny_model_dir / "model.safetensors")
    from domainft.serving.loader import load_for_serving

    loaded = load_for_serving(f"models:/{NAME}@champion", tracking_uri=url, cache_dir=tmp_path / "cache")
    assert loaded.registered_name == NAME and (loaded.folder / "model.safetensors").is_file()
    ids = loaded.tokenizer("Hello", return_tensors="pt").input_ids
    assert loaded.model.generate(ids, max_new_tokens=2, do_sample=False).shape[1] == ids.shape[1] + 2

    # an unchanged rerun reuses the version; a worse one is refused through the server too
    assert register(load_params("params.yaml"))["created"] is False
    (project / "metrics" / "eval.json").write_text(json.dumps(_eval(0.2)))
    (project / "params.yaml").write_text("domain:\n  name: remote\ntrain:\n  learning_rate: 1.0e-4\n")
    assert register(load_params("params.yaml"))["version"] == 2
    out = CliRunner().invoke(cli, ["promote"])
    assert out.exit_code == 1 and "fails gate(s) champion" in out.output, out.output
    assert int(client.get_model_version_by_alias(NAME, "champion").version) == 1
    assert int(client.get_model_version_by_alias(NAME, "challenger").version) == 2
