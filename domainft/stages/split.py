"""``split`` stage: data/processed/records.jsonl -> data/splits/{train,val,test}.jsonl + metrics/split.json.

Reads params ``split`` and ``prepare.out_dir`` / ``prepare.dedup`` (threshold, ngram and
prompt_clusters for the leakage check); see :mod:`domainft.data.split`.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from domainft.data.prepare import read_records, write_jsonl
from domainft.data.split import assign, leakage
from domainft.stages import write_metrics

log = logging.getLogger(__name__)


def run(params) -> dict:
    t0 = time.perf_counter()
    records = read_records(Path(params.prepare.out_dir) / "records.jsonl")
    splits, metrics = assign(records, params.split)
    d = params.prepare.dedup
    metrics["leakage"] = leakage(splits, d.threshold, d.ngram, params.split.group_by, d.prompt_clusters)
    for name, rows in splits.items():
        write_jsonl(Path(params.split.out_dir) / f"{name}.jsonl", rows)
    metrics["seconds"] = round(time.perf_counter() - t0, 3)
    write_metrics("split", metrics)
    log.info("split: %s, leakage %s", metrics["sizes"], metrics["leakage"]["total"])
    return metrics
