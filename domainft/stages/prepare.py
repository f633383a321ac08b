"""``prepare`` stage: data/raw -> data/processed/{records,rejects}.jsonl + metrics/prepare.json.

Reads params ``domain.system_prompt`` and the whole ``prepare`` section; see
:mod:`domainft.data.prepare` for the pipeline and the accounting rules.
"""
from __future__ import annotations

import logging
from pathlib import Path

from domainft.atomic import MANIFEST, atomic_dir, write_manifest
from domainft.data.prepare import PrepareError, prepare, write_jsonl
from domainft.stages import METRICS_DIR, write_metrics

log = logging.getLogger(__name__)


def run(params) -> dict:
    """Write records, rejects and metrics; old outputs are removed first, so a failed run leaves none.

    The folder is written under a temporary name and renamed (:func:`domainft.atomic.atomic_dir`),
    with ``MANIFEST.json`` (file sizes) last, so a reader can tell a complete records.jsonl.

    Raises:
        PrepareError: ``on_error: fail`` and a malformed record, or no record was kept (the
            outputs are written first, so rejects.jsonl says why).
    """
    out = Path(params.prepare.out_dir)
    for old in (out / "records.jsonl", out / "rejects.jsonl", out / MANIFEST, METRICS_DIR / "prepare.json"):
        old.unlink(missing_ok=True)
    result = prepare(params.prepare, params.domain.system_prompt)
    with atomic_dir(out) as tmp:
        write_jsonl(tmp / "records.jsonl", result.records)
        write_jsonl(tmp / "rejects.jsonl", result.rejects)
        write_manifest(tmp, ["records.jsonl", "rejects.jsonl"])
    m = result.metrics
    write_metrics("prepare", m)
    t = m["totals"]
    log.info("prepare: read %d, kept %d, rejected %d %s (%.0f records/s)", t["read"], t["kept"], t["rejected"],
             t["rejected_by_reason"], m["records_per_s"] or 0)
    if not result.records:
        raise PrepareError(f"no record kept of {t['read']} read from {params.prepare.raw_dir} (files: {t['files']}); "
                           f"rejected by reason {t['rejected_by_reason']}; see {out / 'rejects.jsonl'}")
    return m
