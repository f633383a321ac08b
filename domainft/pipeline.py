"""The stage table: the single source of each pipeline stage's name, params keys, data, outputs and code.

This repository's ``dvc.yaml`` and the ``dvc.yaml`` of projects made by ``domainft init``
(``domainft/templates/dvc.yaml``) are both rendered from :data:`STAGES` by :func:`render_dvc_yaml`;
``tests/unit/test_pipeline.py`` fails when a committed file differs from its rendering. Regenerate
both with::

    python -m domainft.pipeline

Code dependencies are derived, not listed: :func:`code_files` follows every ``domainft`` import of a
stage module (also imports inside functions) to the package files it runs. In this repository they
are dvc.yaml deps; in a scaffolded project, where the library is installed, the ``fingerprint`` stage
writes one hash of those files per stage (``fingerprints/<stage>.code``), so upgrading domainft
reruns exactly the stages whose code changed. The same stage hashes the base model source
(``fingerprints/base_source.json``, see :func:`base_source_fingerprint`).
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from domainft.hashing import (HASH_CACHE, PACKAGE, PACKAGE_DIR, code_files_of, code_modules,  # noqa: F401
                              file_sha256, load_hash_cache, modules_fingerprint, save_hash_cache,
                              tree_sha256)

FINGERPRINT_DIR = "fingerprints"
ENTRY_MODULE = "domainft.stages.__main__"  # `python -m domainft.stages <stage>`


@dataclass(frozen=True)
class Stage:
    """One pipeline stage; ``domainft.stages.<name>.run(params)`` is its code.

    Attributes:
        name: stage, params section, CLI command and module name.
        params: params.yaml keys it reads (a section or a dotted key).
        deps: data and model paths it reads.
        outs: paths it writes (cached by DVC).
        metrics: small JSON files it writes (git-tracked, ``cache: false``).
        plots: ``(path, options)`` pairs (git-tracked, ``cache: false``).
        base_source: depends on the content of ``base.source`` (the base stage).
        review: depends on the content of ``preference.review_path`` (the human verdicts; a file
            that may not exist yet, so DVC cannot list it as a dep: the fingerprint stage hashes it).
        general_mix: depends on the content of ``split.general_mix.path`` (a params path that may
            be "" (off): hashed by the fingerprint stage into ``fingerprints/general_mix.json``).
        compute: loads models in the precision ``auto`` resolves to on this host
            (``fingerprints/compute.json``, :func:`domainft.hardware.auto_precision`): the same
            repository on a host with other bf16 support reruns it.
        always_changed: runs on every ``dvc repro`` (the fingerprint stage, about 0.2 s).
    """

    name: str
    params: tuple[str, ...] = ()
    deps: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: tuple[tuple[str, dict[str, Any]], ...] = ()
    base_source: bool = False
    review: bool = False
    general_mix: bool = False
    compute: bool = False
    always_changed: bool = False

    @property
    def module(self) -> str:
        return f"{PACKAGE}.stages.{self.name}"


# training's long-source policy, which evaluation applies to its prompts (domainft.modeling.chat.SourcePolicy)
SOURCE_POLICY_KEYS = ("train.max_seq_length", "train.overlong", "train.source_cut")
# what split.general_mix reads besides its own block: prepare's cleaning policy, the retention sample it excludes
GENERAL_MIX_KEYS = ("prepare.clean", "prepare.pii", "prepare.on_error", "prepare.repair_roles", "evaluate.retention",
                    "domain.seed")
STAGES: tuple[Stage, ...] = (
    Stage("fingerprint", params=("base.source", "base.revision", "preference.review_path", "split.general_mix.path"),
          outs=(FINGERPRINT_DIR,), always_changed=True),
    Stage("prepare", params=("domain.system_prompt", "prepare"), deps=("data/raw",), outs=("data/processed",),
          metrics=("metrics/prepare.json",)),
    Stage("split", params=("split", "prepare.out_dir", "prepare.dedup.threshold", "prepare.dedup.ngram",
                           "prepare.dedup.prompt_clusters", *GENERAL_MIX_KEYS),
          deps=("data/processed/records.jsonl",), outs=("data/splits",), metrics=("metrics/split.json",),
          general_mix=True),
    Stage("base", params=("base",), outs=("models/base",), metrics=("metrics/base.json",), base_source=True),
    Stage("train", params=("domain.seed", "train"),
          deps=("data/splits/train.jsonl", "data/splits/val.jsonl", "models/base"),
          outs=("models/adapter",), metrics=("metrics/train.json",), compute=True,
          plots=(("metrics/plots/train_loss.csv", {"x": "step", "y": "loss"}),)),
    Stage("merge", params=("merge",), deps=("models/base", "models/adapter", "data/splits/val.jsonl"),
          outs=("models/merged",), metrics=("metrics/merge.json",)),
    Stage("evaluate", params=("domain.seed", "domain.system_prompt", "base.out_dir", "merge.out_dir", "evaluate",
                              "prepare.dedup.threshold", "prepare.dedup.ngram", *SOURCE_POLICY_KEYS),
          deps=("models/base", "models/merged", "data/splits/test.jsonl", "data/splits/train.jsonl",
                "data/splits/val.jsonl"),
          outs=("metrics/predictions.jsonl", "metrics/report.html", "metrics/judge_replies.jsonl"),
          metrics=("metrics/eval.json",), compute=True,
          plots=(("metrics/plots/eval_per_metric.json", {"template": "bar_horizontal", "x": "value", "y": "label"}),
                 ("metrics/plots/answer_lengths.csv", {}))),
    Stage("preference", params=("domain.seed", "domain.system_prompt", "preference", "merge", "evaluate",
                                "base.out_dir", "prepare.dedup.threshold", "prepare.dedup.ngram", *SOURCE_POLICY_KEYS),
          deps=("models/base", "models/merged", "metrics/predictions.jsonl", "data/splits/test.jsonl",
                "data/splits/train.jsonl", "data/splits/val.jsonl"),
          outs=("models/dpo_merged",), metrics=("metrics/preference.json",), review=True, compute=True),
    Stage("register", params=("domain.name", "register", "preference"),
          deps=("models/merged", "metrics/eval.json", "metrics/merge.json", "metrics/train.json",
                "metrics/split.json", "metrics/preference.json", "models/dpo_merged"),
          metrics=("metrics/register.json",)),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
# Plot definitions with several y columns live at the top level (stage-level plots take one y).
TOP_LEVEL_PLOTS = [{"metrics/plots/answer_lengths.csv": {"x": "length_chars", "y": ["reference", "base", "tuned"]}}]


def stage(name: str) -> Stage:
    """The :class:`Stage` called ``name``; ``KeyError`` naming the known stages otherwise."""
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")


# ----------------------------------------------------------------------------- code
def code_files(name: str, package_dir: Path = PACKAGE_DIR) -> list[str]:
    """Files (``domainft/...py``, POSIX, sorted) of the code stage ``name`` runs, entry point included."""
    return code_files_of([ENTRY_MODULE, stage(name).module], package_dir)


def code_fingerprint(name: str, package_dir: Path = PACKAGE_DIR, cache: dict[str, Any] | None = None) -> str:
    """sha256 over the path and bytes of every file of :func:`code_files` (64 hex characters).

    ``cache`` (:func:`load_hash_cache`) keeps each file's parsed imports between processes.
    """
    return modules_fingerprint([ENTRY_MODULE, stage(name).module], package_dir, cache)


# ----------------------------------------------------------------------------- base source
def base_source_fingerprint(source: str, revision: str | None, cache: dict[str, Any] | None = None) -> dict[str, Any]:
    """What identifies the base model that ``base.source`` names, without the network.

    A local folder or GGUF file: the sha256 of every file (by relative path); a ``gguf:<package>``:
    the package's version and its GGUF file's sha256; a hub id: the id and ``revision`` (an
    unpinned id is recorded as ``"revision": null``: DVC cannot see the hub move).

    Args:
        cache: ``{resolved path: {"stamp", "sha256"}}``, updated in place, so that an unchanged
            multi-GB file is hashed once.

    Raises:
        BaseModelError: the source names no existing package, file or folder.
    """
    from importlib import metadata

    from domainft.modeling.source import resolve_source

    cache = {} if cache is None else cache
    src = resolve_source(source, revision)
    out: dict[str, Any] = {"source": source, "kind": src.kind}
    if src.kind == "hub":
        out["revision"] = revision
        return out
    root = Path(src.path)
    if src.kind == "gguf":
        out["files"] = {src.gguf_file: file_sha256(root / src.gguf_file, cache)}
        pkg = source.removeprefix("gguf:")
        if not pkg.endswith(".gguf"):
            try:
                out["package_version"] = metadata.version(pkg.replace("_", "-"))
            except metadata.PackageNotFoundError:
                out["package_version"] = None
        return out
    out["files"] = tree_sha256(root, cache)
    return out


# ----------------------------------------------------------------------------- rendering
HEADERS = {
    "repo": (
        "# domainft pipeline: raw -> processed -> splits -> base -> adapter -> merged -> eval -> registry.\n"
        "# GENERATED from the stage table in domainft/pipeline.py: edit the table, then run\n"
        "# `python -m domainft.pipeline` (tests/unit/test_pipeline.py fails when this file differs).\n"
        "# Code deps are every domainft file a stage imports; fingerprint (always run, ~0.2 s) hashes the\n"
        "# base model source, so replacing the weights of a base.source folder reruns base.\n"
    ),
    "project": (
        "# domainft pipeline of a project scaffolded by `domainft init`, rendered from the stage table in\n"
        "# domainft/pipeline.py. The library is installed, so the fingerprint stage (always run, ~0.2 s)\n"
        "# writes a hash of the installed code of each stage and of the base model source: upgrading\n"
        "# domainft reruns exactly the stages whose code changed.\n"
        "# raw -> processed -> splits -> base -> adapter -> merged -> eval -> registry.\n"
    ),
}


def stage_entry(s: Stage, kind: Literal["repo", "project"], package_dir: Path = PACKAGE_DIR) -> dict[str, Any]:
    """The dvc.yaml mapping of one stage (``kind``: this repository, or a scaffolded project)."""
    entry: dict[str, Any] = {"cmd": f"python -m domainft.stages {s.name}" if kind == "repo" else f"domainft {s.name}"}
    deps = list(s.deps)
    if s.base_source:
        deps.append(f"{FINGERPRINT_DIR}/base_source.json")
    if s.review:
        deps.append(f"{FINGERPRINT_DIR}/review.json")
    if s.general_mix:
        deps.append(f"{FINGERPRINT_DIR}/general_mix.json")
    if s.compute:
        deps.append(f"{FINGERPRINT_DIR}/compute.json")
    if s.name != "fingerprint":
        deps += code_files(s.name, package_dir) if kind == "repo" else [f"{FINGERPRINT_DIR}/{s.name}.code"]
    if deps:
        entry["deps"] = deps
    if s.params:
        entry["params"] = list(s.params)
    if s.outs:
        entry["outs"] = list(s.outs)
    if s.metrics:
        entry["metrics"] = [{p: {"cache": False}} for p in s.metrics]
    if s.plots:
        entry["plots"] = [{p: {"cache": False, **opts}} for p, opts in s.plots]
    if s.always_changed:
        entry["always_changed"] = True
    return entry


def render_dvc_yaml(kind: Literal["repo", "project"], package_dir: Path = PACKAGE_DIR) -> str:
    """The text of ``dvc.yaml`` for this repository (``repo``) or a scaffolded project (``project``)."""
    import yaml

    doc = {"stages": {s.name: stage_entry(s, kind, package_dir) for s in STAGES}, "plots": TOP_LEVEL_PLOTS}
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=110)
    body = re.sub(r"(?<!stages:)\n(?=  [a-z]\w*:\n|plots:\n)", "\n\n", body)  # a blank line between stages
    return HEADERS[kind] + body


REPO_DVC_YAML = "dvc.yaml"
TEMPLATE_DVC_YAML = PACKAGE_DIR / "templates" / "dvc.yaml"


def write_dvc_yamls(repo_root: Path) -> list[Path]:
    """Render and write ``<repo_root>/dvc.yaml`` and the scaffold template; returns the paths written."""
    pkg = repo_root / PACKAGE
    out = [(repo_root / REPO_DVC_YAML, render_dvc_yaml("repo", pkg)),
           (pkg / "templates" / "dvc.yaml", render_dvc_yaml("project", pkg))]
    for path, text in out:
        path.write_text(text, encoding="utf-8")
    return [p for p, _ in out]


def write_fingerprints(source: str, revision: str | None, out_dir: str | Path = FINGERPRINT_DIR,
                       review_path: str | None = None, general_mix_path: str | None = None) -> dict[str, Any]:
    """The fingerprint stage's outputs: ``<stage>.code`` per stage, ``base_source.json``,
    ``review.json``, ``general_mix.json``, ``compute.json``.

    ``source`` and ``revision`` are params ``base.source`` and ``base.revision``; ``review_path`` is
    ``preference.review_path`` (``review.json`` holds its sha256, or null while it does not exist);
    ``general_mix_path`` is ``split.general_mix.path`` (``general_mix.json``: ``{"path", "sha256"}``,
    sha256 null for "" (off) or a missing file, which the split stage then reports).
    ``compute.json`` is :func:`domainft.hardware.auto_precision` (``{"device", "auto"}``).
    Files whose content is unchanged are not rewritten (DVC then sees nothing new downstream).
    Returns ``{"code": {stage: sha256}, "base_source": {...}, "review": {...}, "general_mix": {...},
    "compute": {...}}``.
    """
    from domainft.atomic import write_text_atomic
    from domainft.hardware import auto_precision

    out = Path(out_dir)
    cache = load_hash_cache()
    code = {s.name: code_fingerprint(s.name, cache=cache) for s in STAGES if s.name != "fingerprint"}
    base = base_source_fingerprint(source, revision, cache)
    review, general = ({"path": p, "sha256": file_sha256(p, cache) if p and Path(p).is_file() else None}
                       for p in (review_path, general_mix_path or ""))
    files = {f"{n}.code": h + "\n" for n, h in code.items()}
    files["base_source.json"] = json.dumps(base, indent=2, sort_keys=True) + "\n"
    files["review.json"] = json.dumps(review, indent=2, sort_keys=True) + "\n"
    files["general_mix.json"] = json.dumps(general, indent=2, sort_keys=True) + "\n"
    compute = auto_precision()
    files["compute.json"] = json.dumps(compute, indent=2, sort_keys=True) + "\n"
    for rel, text in files.items():
        path = out / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            write_text_atomic(path, text)
    save_hash_cache(cache)
    return {"code": code, "base_source": base, "review": review, "general_mix": general, "compute": compute}


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(os.getcwd())
    for p in write_dvc_yamls(root):
        print(f"wrote {p}")
