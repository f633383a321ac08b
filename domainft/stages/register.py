"""register stage: metrics + models/merged -> MLflow run and registry version (alias challenger);
with the preference stage on, also models/dpo_merged as its own version (alias challenger-dpo)."""
from __future__ import annotations

from domainft.config import Params
from domainft.registry import register
from domainft.stages import write_metrics


def run(params: Params) -> dict:
    result = register(params)
    out = {"version": result["version"], "created": result["created"]}
    if "dpo" in result:  # the SFT+DPO model of the preference stage, its own version
        out.update({"dpo_version": result["dpo"]["version"], "dpo_created": result["dpo"]["created"],
                    "dpo_verdicts_sha256": result["dpo"]["verdicts_sha256"]})
    write_metrics("register", out)
    return result
