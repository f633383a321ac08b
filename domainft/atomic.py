"""Atomic outputs: every file or folder a stage writes appears complete or not at all.

One policy for the whole pipeline: write to a temporary sibling (same folder, so the same file
system), flush and fsync, then ``os.replace`` onto the final name. A process killed mid-write
leaves the previous output (or none) and at most a ``.tmp-*`` sibling, never a truncated file.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from domainft.errors import DomainftError


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", encoding: str | None = "utf-8", newline: str | None = None
                ) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success fsync and rename it onto ``path``.

    Args:
        mode: ``"w"`` (text, ``encoding``) or ``"wb"``.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding,
                       newline=None if "b" in mode else newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_file(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_file(path, "wb") as f:
        f.write(data)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary sibling folder; on success it replaces ``path`` (old content removed).

    The swap is two renames (old -> ``.old-*``, new -> ``path``) because a non-empty folder cannot be
    replaced in one; a crash between them leaves ``path`` absent, never mixed. On an exception the
    temporary folder is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ----------------------------------------------------------------------------- manifests
MANIFEST = "MANIFEST.json"


class IncompleteOutputError(DomainftError, OSError):
    """A stage input differs in size from what the stage that wrote it recorded (truncated or replaced)."""


def write_manifest(folder: str | Path, names: list[str]) -> Path:
    """Record the byte size of ``folder/<name>`` for each name in ``folder/MANIFEST.json`` (atomically).

    Written last by a stage, after its files; :func:`check_complete` compares against it.
    """
    import json

    folder = Path(folder)
    entries = {n: {"bytes": (folder / n).stat().st_size} for n in sorted(names)}
    return write_text_atomic(folder / MANIFEST, json.dumps(entries, indent=2, sort_keys=True) + "\n")


def check_complete(path: str | Path) -> None:
    """Refuse ``path`` when the manifest of its folder records another size for it.

    A file without a manifest (hand-made, or written by an older version) passes unchecked.

    Raises:
        IncompleteOutputError: naming the file, both sizes and how to recover.
    """
    import json

    path = Path(path)
    manifest = path.parent / MANIFEST
    if not manifest.is_file():
        return
    try:
        expected = json.loads(manifest.read_text())[path.name]["bytes"]
    except (ValueError, KeyError, TypeError):
        return
    size = path.stat().st_size
    if size != expected:
        what = "truncated" if size < expected else "changed"
        raise IncompleteOutputError(
            f"{path} is {what}: {size} bytes, but {expected} were written ({manifest}); rerun the stage that "
            f"writes it (dvc repro), or, after editing it on purpose, delete {manifest}")


def read_jsonl(path: str | Path) -> list[dict]:
    """Objects of a JSONL file a stage wrote (splits, predictions), one per non-blank line.

    The one reader of pipeline outputs: a file whose size differs from its folder's manifest is
    refused (:func:`check_complete`) rather than read half.

    Raises:
        IncompleteOutputError: the file differs in size from what its stage recorded.
    """
    import json

    check_complete(path)
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
