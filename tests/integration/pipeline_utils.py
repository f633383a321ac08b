"""Helpers for tests that run DVC / the CLI in a temporary copy of the repository."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def venv_env(**extra: str) -> dict[str, str]:
    """The environment with this venv's bin first on PATH and no inherited MLflow URI."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 900) -> str:
    """Run ``cmd``; fail the test with the tail of its output on a non-zero exit. Returns stdout+stderr."""
    p = subprocess.run(cmd, cwd=cwd, env=env or venv_env(), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{cmd} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    return p.stdout + p.stderr


def copy_repo(dst: Path) -> None:
    """Copy the tracked and untracked-but-not-ignored files of this checkout to ``dst``."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, check=True,
                   capture_output=True)


def tiny_project(dst: Path, tiny_model_dir: Path) -> Path:
    """Copy the repository to ``dst`` with params shrunk for the tiny model (seconds per stage)."""
    import yaml

    dst.mkdir(parents=True, exist_ok=True)
    copy_repo(dst)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["base"]["source"] = str(tiny_model_dir)
    params["train"].update(max_steps=3, batch_size=4, save_steps=2)
    params["merge"]["fidelity_prompts"] = 2
    params["evaluate"].update(max_samples=6, max_new_tokens=8, bootstrap_samples=200)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dst
