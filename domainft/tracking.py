"""MLflow set-up shared by the stages: tracking URI, experiment, git facts.

The tracking URI is ``MLFLOW_TRACKING_URI`` when set, else ``register.tracking_uri`` from
params.yaml (default ``sqlite:///mlflow.db`` in the project root; a database store is needed for
the model registry).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from domainft.config import Params
from domainft.errors import DomainftError


class TrackingError(DomainftError, RuntimeError):
    """The MLflow tracking store does not answer (after MLflow's own retries) or refuses the experiment."""


def tracking_uri(params: Params) -> str:
    """``MLFLOW_TRACKING_URI`` or ``register.tracking_uri``, through :func:`absolute_sqlite_uri`."""
    return absolute_sqlite_uri(os.environ.get("MLFLOW_TRACKING_URI") or params.register.tracking_uri)


def absolute_sqlite_uri(uri: str) -> str:
    """A relative SQLite URI (``sqlite:///mlflow.db``) made absolute against the current directory;
    other URIs unchanged.

    MLflow caches one SQLAlchemy engine per URI string for the life of the process, and SQLite
    opens a relative path against the directory current at connect time. A process that runs in
    two project folders (a notebook, a test session) would otherwise keep writing to the first
    folder's database, or fail with "attempt to write a readonly database" once it is deleted.
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri.startswith(prefix + "/") or uri[len(prefix):].startswith(":memory:"):
        return uri
    path, sep, query = uri[len(prefix):].partition("?")
    return f"{prefix}{os.path.abspath(path)}{sep}{query}"


@contextlib.contextmanager
def store_lock(uri: str, timeout_s: float = 600.0):
    """Hold an exclusive lock on a local SQLite store (``<db>.lock``, fcntl) for the ``with`` body.

    MLflow creates the schema of a new SQLite store on first use, and two processes doing so at
    once crashed one of them; two registers of one fingerprint both saw no version and made two.
    Other stores (a tracking server) are not locked here (see :func:`domainft.registry.register`).

    Raises:
        TimeoutError: the lock was not acquired in ``timeout_s`` seconds.
    """
    prefix = "sqlite:///"
    path = uri[len(prefix):].partition("?")[0] if uri.startswith(prefix) else ""
    if not path or path.startswith(":memory:"):
        yield
        return
    import fcntl

    lock = Path(path + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{lock} held by another process for {timeout_s:.0f} s") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def setup_mlflow(params: Params):
    """Point MLflow at the tracking URI and experiment; returns the ``mlflow`` module.

    A new SQLite store gets its schema under :func:`store_lock`, so concurrent first uses do not crash.

    Raises:
        TrackingError: the store does not answer or refuses the experiment (deleted); a server
            is retried first as MLflow's ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and
            ``MLFLOW_HTTP_REQUEST_TIMEOUT`` say.
    """
    import mlflow

    user_env = os.environ.get("MLFLOW_TRACKING_URI")
    uri = tracking_uri(params)
    with store_lock(uri):
        mlflow.set_tracking_uri(uri)
        _restore_env(user_env)
        try:
            mlflow.set_experiment(params.register.experiment)
        except mlflow.exceptions.MlflowException as err:  # unreachable server, deleted experiment, ...
            first = (str(err.message).strip().splitlines() or [err.error_code])[0][:500]
            raise TrackingError(f"MLflow at {uri}: {first} (register.experiment {params.register.experiment!r}; "
                                "start the server or fix MLFLOW_TRACKING_URI / register.tracking_uri)") from None
    return mlflow


def _restore_env(user_env: str | None) -> None:
    # MLflow also exports the URI as MLFLOW_TRACKING_URI (for subprocesses). Put back the user's
    # value, so that a later call in this process, from another project folder, still tells the
    # user's override from the URI set here.
    if user_env is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = user_env


def param_items(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Like :func:`flatten`, but a dict with user-chosen keys (globs, file or column names such as
    ``prepare.schema_overrides``) stays one JSON value instead of producing invalid MLflow names."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and all(re.fullmatch(r"[A-Za-z0-9_-]+", str(x)) for x in v):
            out.update(param_items(v, key + "."))
        else:
            out[key] = v
    return out


MAX_PARAM_CHARS = 500  # MLflow's hard limit is 6000 (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH)


def log_params(mlflow, flat: dict[str, Any]) -> dict[str, str]:
    """Log ``{dotted key: value}`` as MLflow params, none truncated.

    Lists and dicts are logged as JSON. A value longer than :data:`MAX_PARAM_CHARS` is logged as
    ``<key>.sha256`` (of the full text) plus the full text as the artifact ``params/<key>.txt``.

    Returns:
        The params logged (key -> string).
    """
    short, long = {}, {}
    for k, v in flat.items():
        s = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
        (long if len(s) > MAX_PARAM_CHARS else short)[k] = s
    for k, s in long.items():
        short[k + ".sha256"] = hashlib.sha256(s.encode()).hexdigest()
        mlflow.log_text(s, f"params/{k}.txt")
    mlflow.log_params(short)
    return short


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
