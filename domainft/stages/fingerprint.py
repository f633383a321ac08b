"""``fingerprint`` stage (always run, about 0.1 s): hashes of each stage's code and of the base model source.

Writes ``fingerprints/<stage>.code`` (sha256 of the domainft files the stage runs, see
:func:`domainft.pipeline.code_fingerprint`) and ``fingerprints/base_source.json``
(:func:`domainft.pipeline.base_source_fingerprint`); the other stages depend on them, so a new
library version or new base weights rerun exactly what they touch. ``fingerprints/review.json``
hashes ``preference.review_path`` (new human verdicts rerun the preference stage) and
``fingerprints/general_mix.json`` ``split.general_mix.path`` (a new general file reruns split);
``fingerprints/compute.json`` records what ``precision: auto`` means on this host
(:func:`domainft.hardware.auto_precision`: moving to a host with or without bf16 units reruns
train, evaluate and preference). Reads
params ``base.source``, ``base.revision``, ``preference.review_path`` and ``split.general_mix.path``.

Because DVC runs this stage on every ``dvc repro``, it is kept cheap: :func:`run_from_file` reads the
four keys with yaml's C loader instead of validating the whole params file (the stages that use
params validate it), and parsed imports and file hashes are cached in ``.dvc/tmp``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from domainft.pipeline import FINGERPRINT_DIR, write_fingerprints


def run(params) -> dict:
    """Write the fingerprint files (unchanged files are left alone); returns their contents."""
    return write_fingerprints(params.base.source, params.base.revision, FINGERPRINT_DIR,
                              params.preference.review_path, params.split.general_mix.path)


def run_from_file(params_path: str | Path) -> dict[str, Any]:
    """:func:`run` reading only ``base.source``, ``base.revision``, ``preference.review_path`` and
    ``split.general_mix.path``.

    Falls back to the full validated load (:func:`domainft.config.load_params`, which names a bad
    key) when the file does not parse or a key is absent, so the values used are the ones every
    other stage would see.
    """
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with open(params_path, encoding="utf-8") as f:
            raw = yaml.load(f, Loader=loader) or {}
        source, revision = raw["base"]["source"], raw["base"]["revision"]
        review, general = raw["preference"]["review_path"], raw["split"]["general_mix"]["path"]
        if not isinstance(source, str) or not isinstance(review, str) or not isinstance(general, str) or \
                not (revision is None or isinstance(revision, str)):
            raise TypeError
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError):
        from domainft.config import load_params

        return run(load_params(params_path))
    return write_fingerprints(source, revision, FINGERPRINT_DIR, review, general.strip())
