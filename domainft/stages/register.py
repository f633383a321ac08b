"""register stage: metrics + models/merged -> MLflow run and registry version (alias challenger)."""
from __future__ import annotations

from domainft.config import Params
from domainft.registry import register
from domainft.stages import write_metrics


def run(params: Params) -> dict:
    result = register(params)
    write_metrics("register", {"version": result["version"], "created": result["created"]})
    return result
