"""MLflow set-up: an unreachable tracking server is one error naming the URI, not a traceback."""
from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from domainft.cli import cli
from domainft.config import Params
from domainft.tracking import TrackingError, setup_mlflow


def _closed_port() -> int:
    with socket.socket() as s:  # bound then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_server_is_a_tracking_error_and_promote_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(TrackingError, match=f"MLflow at {uri}: .*Max retries exceeded"):
        setup_mlflow(Params())
    (tmp_path / "params.yaml").write_text("{}")
    res = CliRunner().invoke(cli, ["promote"])
    assert res.exit_code == 1 and res.output.startswith(f"error: MLflow at {uri}: ") and "Traceback" not in res.output
    assert not (tmp_path / "mlflow.db").exists()
