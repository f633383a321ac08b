"""Stage adapters: ``run(params) -> metrics dict`` per pipeline stage, shared by DVC and the CLI.

Each module here reads its params section, calls one library function, writes its outputs and
``metrics/<stage>.json``. ``stages/<name>.py`` at the repository root is the DVC entry point.
"""
from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

METRICS_DIR = Path("metrics")


def write_metrics(stage: str, metrics: dict[str, Any], path: str | Path | None = None) -> Path:
    """Write ``metrics/<stage>.json`` (sorted keys, trailing newline) and return its path."""
    path = Path(path) if path else METRICS_DIR / f"{stage}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path


def main_for(stage: str, argv: list[str] | None = None) -> None:
    """Entry point used by ``stages/<stage>.py``: ``python stages/<stage>.py [params.yaml]``."""
    from domainft.config import ParamsError, load_params

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    try:
        params = load_params(argv[0] if argv else "params.yaml")
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    from domainft.errors import DomainftError

    try:
        importlib.import_module(f"domainft.stages.{stage}").run(params)
    except DomainftError as err:  # bad data, params or model: one line, no traceback
        print(f"error: {stage}: {err}", file=sys.stderr)
        raise SystemExit(1) from None
