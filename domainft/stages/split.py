"""``split`` stage: data/processed/records.jsonl -> data/splits/{train,val,test}.jsonl + metrics/split.json.

Reads params ``split`` and ``prepare.out_dir`` / ``prepare.dedup`` (threshold, ngram and
prompt_clusters for the leakage check) and ``prepare.workers`` (not 1: the leakage check uses a
second process); see :mod:`domainft.data.split`. The split files hold the lines of records.jsonl
unchanged, in its order within each split.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from domainft.atomic import atomic_dir, check_complete, write_manifest
from domainft.data.prepare import read_records_and_lines
from domainft.data.pool import process_pool
from domainft.data.split import assign, conversation_leaks_of_file, leakage
from domainft.errors import DomainftError
from domainft.stages import write_metrics

log = logging.getLogger(__name__)


class SplitError(DomainftError, RuntimeError):
    """No records to split, or a split that training or evaluation needs came out empty."""


def run(params) -> dict:
    """Split, check leakage, write the three files and metrics/split.json.

    With ``prepare.workers`` other than 1 and records.jsonl of at least
    :data:`PARALLEL_MIN_BYTES`, a second process computes the conversation leakage counts (exact
    and near duplicates, :func:`~domainft.data.split.conversation_leaks_of_file`) from the start,
    while this one reads, assigns, writes and checks the rest.

    The three files are written in a temporary folder renamed onto ``split.out_dir``, with
    ``MANIFEST.json`` (their sizes) last.

    Raises:
        SplitError: records.jsonl missing, or train or test empty (val may be empty: logged).
        IncompleteOutputError: records.jsonl differs in size from what prepare recorded (truncated).
    """
    t0 = time.perf_counter()
    src = Path(params.prepare.out_dir) / "records.jsonl"
    if not src.exists():
        raise SplitError(f"{src} not found; run the prepare stage first")
    check_complete(src)
    d = params.prepare.dedup
    parallel = (params.prepare.workers or os.cpu_count() or 1) > 1 and src.stat().st_size >= PARALLEL_MIN_BYTES
    with process_pool(1) if parallel else contextlib.nullcontext() as pool:
        conv = pool.submit(conversation_leaks_of_file, src, params.split, d.threshold, d.ngram) if pool else None
        records, lines = read_records_and_lines(src)
        splits, metrics = assign(records, params.split)
        empty = [name for name in ("train", "test") if not splits[name]]
        if empty:
            if conv is not None:
                conv.cancel()
            raise SplitError(f"{' and '.join(empty)} split empty with {len(records)} records from {src} "
                             f"(sizes {metrics['sizes']}); add data or change split.test_fraction / val_fraction")
        if not splits["val"] and params.split.val_fraction > 0:
            log.warning("split: val is empty with %d records (val_fraction %s); training runs without a val loss",
                        len(records), params.split.val_fraction)
        line_of = {id(r): line for r, line in zip(records, lines)}
        with atomic_dir(params.split.out_dir) as out:
            for name, rows in splits.items():
                (out / f"{name}.jsonl").write_bytes(b"".join(line_of[id(r)] for r in rows))
            write_manifest(out, [f"{name}.jsonl" for name in splits])
        metrics["leakage"] = leakage(splits, d.threshold, d.ngram, params.split.group_by, d.prompt_clusters,
                                     conversations=conv)
    metrics["seconds"] = round(time.perf_counter() - t0, 3)
    write_metrics("split", metrics)
    log.info("split: %s, leakage %s", metrics["sizes"], metrics["leakage"]["total"])
    return metrics


# Below this size of records.jsonl, a second process costs more than the share of the check it takes.
PARALLEL_MIN_BYTES = 8 * 2**20
