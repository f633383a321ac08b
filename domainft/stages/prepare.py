"""``prepare`` stage: data/raw -> data/processed/{records,rejects}.jsonl + metrics/prepare.json.

Reads params ``domain.system_prompt`` and the whole ``prepare`` section; see
:mod:`domainft.data.prepare` for the pipeline and the accounting rules.
"""
from __future__ import annotations

import logging
from pathlib import Path

from domainft.data.prepare import prepare, write_jsonl
from domainft.stages import write_metrics

log = logging.getLogger(__name__)


def run(params) -> dict:
    result = prepare(params.prepare, params.domain.system_prompt)
    out = Path(params.prepare.out_dir)
    write_jsonl(out / "records.jsonl", result.records)
    write_jsonl(out / "rejects.jsonl", result.rejects)
    m = result.metrics
    write_metrics("prepare", m)
    t = m["totals"]
    log.info("prepare: read %d, kept %d, rejected %d %s (%.0f records/s)", t["read"], t["kept"], t["rejected"],
             t["rejected_by_reason"], m["records_per_s"] or 0)
    return m
