"""Stage adapters: ``run(params) -> metrics dict`` per pipeline stage, shared by DVC and the CLI.

Each module here reads its params section, calls one library function, writes its outputs and
``metrics/<stage>.json``. DVC runs ``python -m domainft.stages <stage>`` (see
:mod:`domainft.pipeline`, the stage table dvc.yaml is rendered from); ``domainft <stage>`` runs
the same :func:`run_stage`.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any

METRICS_DIR = Path("metrics")


def write_metrics(stage: str, metrics: dict[str, Any], path: str | Path | None = None) -> Path:
    """Write ``metrics/<stage>.json`` atomically (sorted keys, trailing newline) and return its path."""
    from domainft.atomic import write_text_atomic

    path = Path(path) if path else METRICS_DIR / f"{stage}.json"
    return write_text_atomic(path, json.dumps(metrics, indent=2, sort_keys=True, default=str) + "\n")


def run_stage(name: str, params_path: str | Path = "params.yaml") -> dict[str, Any]:
    """Load ``params_path`` and run stage ``name``; returns its metrics.

    A stage module that defines ``run_from_file(params_path)`` (the always-run fingerprint stage)
    reads the file itself, sparing the full validation; every other stage gets the validated params.

    Raises:
        ParamsError: params missing or invalid; DomainftError: the stage's own failures.
    """
    from domainft.errors import DomainftError

    if not name.isidentifier() or name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
        raise DomainftError(f"unknown stage {name!r} (the stages are listed in domainft/pipeline.py)")
    module = importlib.import_module(f"{__name__}.{name}")
    if hasattr(module, "run_from_file"):
        return module.run_from_file(params_path)
    from domainft.config import load_params

    return module.run(load_params(params_path))
