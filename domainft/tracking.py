"""MLflow set-up shared by the stages: tracking URI, experiment, git facts.

The tracking URI is ``MLFLOW_TRACKING_URI`` when set, else ``register.tracking_uri`` from
params.yaml (default ``sqlite:///mlflow.db`` in the project root; a database store is needed for
the model registry).
"""
from __future__ import annotations

import os
import subprocess

from domainft.config import Params


def tracking_uri(params: Params) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or params.register.tracking_uri


def setup_mlflow(params: Params):
    """Point MLflow at the tracking URI and experiment; returns the ``mlflow`` module."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(params))
    mlflow.set_experiment(params.register.experiment)
    return mlflow


def git_facts() -> dict[str, str]:
    """``git_commit`` and ``git_dirty`` (``true``/``false``) of the current directory, or ``unknown``."""
    def run(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=30)

    try:
        head = run("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"git_commit": "unknown", "git_dirty": "unknown"}
        # metrics/ and dvc.lock are rewritten by the pipeline itself while it runs
        dirty = run("status", "--porcelain", "--untracked-files=no", "--", ".",
                    ":(exclude)metrics", ":(exclude)dvc.lock").stdout.strip() != ""
        return {"git_commit": head.stdout.strip(), "git_dirty": str(dirty).lower()}
    except (OSError, subprocess.TimeoutExpired):
        return {"git_commit": "unknown", "git_dirty": "unknown"}
