"""``fingerprint`` stage (always run, < 1 s): hashes of each stage's code and of the base model source.

Writes ``fingerprints/<stage>.code`` (sha256 of the domainft files the stage runs, see
:func:`domainft.pipeline.code_fingerprint`) and ``fingerprints/base_source.json``
(:func:`domainft.pipeline.base_source_fingerprint`); the other stages depend on them, so a new
library version or new base weights rerun exactly what they touch. Reads params ``base.source``
and ``base.revision``.
"""
from __future__ import annotations

from domainft.pipeline import FINGERPRINT_DIR, write_fingerprints


def run(params) -> dict:
    """Write the fingerprint files (unchanged files are left alone); returns their contents."""
    return write_fingerprints(params, FINGERPRINT_DIR)
