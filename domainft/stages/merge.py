"""merge stage: models/base + models/adapter -> models/merged, metrics/merge.json (fidelity check)."""
from __future__ import annotations

from pathlib import Path

from domainft.config import Params
from domainft.merge import MergeFidelityError, merge_adapter
from domainft.stages import write_metrics
from domainft.train import read_jsonl


def run(params: Params) -> dict:
    m = params.merge
    val = Path("data/splits/val.jsonl")
    records = read_jsonl(val) if val.exists() else []
    records = records or read_jsonl("data/splits/train.jsonl")
    metrics = merge_adapter(params.base.out_dir, params.train.out_dir, m.out_dir, records,
                            m.fidelity_prompts, m.max_abs_logit_diff, m.min_greedy_agreement, m.qlora_base)
    write_metrics("merge", metrics)
    if not metrics["passed"]:
        raise MergeFidelityError(f"merged model differs from base+adapter: {metrics}")
    return metrics
