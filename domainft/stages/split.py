"""``split`` stage: data/processed/records.jsonl -> data/splits/{train,val,test}.jsonl + metrics/split.json.

Reads params ``split`` and ``prepare.out_dir`` / ``prepare.dedup`` (threshold, ngram and
prompt_clusters for the near links and the leakage check) and ``prepare.workers`` (not 1: the
conversation links come from a second process); see :mod:`domainft.data.split`. The split files hold the lines of records.jsonl
unchanged, in its order within each split.

With ``split.general_mix.weight`` > 0, general instruction records (:mod:`domainft.data.general_mix`,
which also reads ``prepare.clean`` / ``pii`` / ``on_error`` / ``repair_roles``, ``evaluate.retention``
and ``domain.seed``) follow the domain records in ``train.jsonl`` only, their rejects go to
``general_rejects.jsonl`` and their counts to ``general_mix`` in metrics/split.json (``sizes`` and
``fractions`` stay those of the domain records). With weight 0 nothing of it is read or written.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from domainft.atomic import atomic_dir, check_complete, write_manifest
from domainft.data.general_mix import mix_general
from domainft.data.prepare import read_records_and_lines
from domainft.data.pool import process_pool
from domainft.data.split import assign, conversation_links_of_file, find_links, leakage
from domainft.errors import DomainftError
from domainft.stages import write_metrics

log = logging.getLogger(__name__)


class SplitError(DomainftError, RuntimeError):
    """No records to split, or a split that training or evaluation needs came out empty."""


def run(params) -> dict:
    """Link, split, check leakage, write the three files and metrics/split.json.

    Before assigning, the records of pairs the leakage check would count (identical or
    near-duplicate conversations, and prompts with ``prepare.dedup.prompt_clusters``) are joined
    into one unit (:func:`~domainft.data.split.find_links`), so the check's counts are 0 by
    construction; ``linked`` in the metrics says how many pairs and units. With
    ``prepare.workers`` other than 1 and records.jsonl of at least :data:`PARALLEL_MIN_BYTES`, a
    second process finds the conversation pairs
    (:func:`~domainft.data.split.conversation_links_of_file`) from the start, while this one reads
    the records and finds the prompt pairs.

    The three files (and ``general_rejects.jsonl`` with the general mix on; the leakage check then
    runs afresh in this process over every record, the mixed ones included) are written in a
    temporary folder renamed onto ``split.out_dir``, with ``MANIFEST.json`` (their sizes) last.

    Raises:
        SplitError: records.jsonl missing, or train or test empty (val may be empty: logged).
        GeneralMixError: see :func:`~domainft.data.general_mix.mix_general`.
        IncompleteOutputError: records.jsonl differs in size from what prepare recorded (truncated).
    """
    t0 = time.perf_counter()
    src = Path(params.prepare.out_dir) / "records.jsonl"
    if not src.exists():
        raise SplitError(f"{src} not found; run the prepare stage first")
    check_complete(src)
    d = params.prepare.dedup
    mixing = params.split.general_mix.weight > 0
    parallel = (params.prepare.workers or os.cpu_count() or 1) > 1 and src.stat().st_size >= PARALLEL_MIN_BYTES
    with process_pool(1) if parallel else contextlib.nullcontext() as pool:
        conv = pool.submit(conversation_links_of_file, src, params.split, d.threshold, d.ngram) if pool else None
        records, lines = read_records_and_lines(src)
        links = find_links(records, params.split, d.threshold, d.ngram, d.prompt_clusters, conversations=conv)
    splits, metrics = assign(records, params.split, links.all())
    empty = [name for name in ("train", "test") if not splits[name]]
    if empty:
        raise SplitError(f"{' and '.join(empty)} split empty with {len(records)} records from {src} "
                         f"(sizes {metrics['sizes']}); add data or change split.test_fraction / val_fraction")
    if not splits["val"] and params.split.val_fraction > 0:
        log.warning("split: val is empty with %d records (val_fraction %s); training runs without a val loss",
                    len(records), params.split.val_fraction)
    line_of = {id(r): line for r, line in zip(records, lines)}
    domain = dict(splits)
    mix = mix_general(splits["train"], records, params) if mixing else None
    if mix is not None:
        line_of.update((id(r), (r.to_json() + "\n").encode("utf-8")) for r in mix.records)
        splits["train"] = splits["train"] + mix.records  # after the domain records, in the general file's order
        metrics["general_mix"] = mix.metrics
    with atomic_dir(params.split.out_dir) as out:
        for name, rows in splits.items():
            (out / f"{name}.jsonl").write_bytes(b"".join(line_of[id(r)] for r in rows))
        names = [f"{name}.jsonl" for name in splits]
        if mix is not None:
            (out / GENERAL_REJECTS).write_bytes(b"".join((r.to_json() + "\n").encode("utf-8")
                                                        for r in mix.rejects))
            names.append(GENERAL_REJECTS)
        write_manifest(out, names)
    if mix is not None:  # the mixed records were never linked: an independent check over all of them
        metrics["leakage"] = leakage(splits, d.threshold, d.ngram, params.split.group_by, d.prompt_clusters,
                                     aliases=params.split.group_aliases)
    else:
        metrics["leakage"] = leakage(domain, d.threshold, d.ngram, params.split.group_by, d.prompt_clusters,
                                     aliases=params.split.group_aliases, links=links, records=records)
    metrics["seconds"] = round(time.perf_counter() - t0, 3)
    write_metrics("split", metrics)
    log.info("split: %s, leakage %s, %d units linked by %d near/exact pairs%s", metrics["sizes"],
             metrics["leakage"]["total"], metrics["linked"]["units"], metrics["linked"]["pairs"],
             f", general mix {metrics['general_mix']['mixed']} records in train" if "general_mix" in metrics else "")
    return metrics


GENERAL_REJECTS = "general_rejects.jsonl"  # split.general_mix's rejected general records (with the mix on)
# Below this size of records.jsonl, a second process costs more than the share of the work it takes.
PARALLEL_MIN_BYTES = 8 * 2**20
