"""Content hashes: files and folders (with a stat-keyed cache) and the code a module runs.

:func:`code_modules` follows every ``domainft`` import of a module (also imports inside functions)
to the package files it may execute; :func:`modules_fingerprint` hashes those files. The pipeline
derives dvc.yaml's code deps from them (:mod:`domainft.pipeline`) and training folds them into its
resume fingerprint (:func:`domainft.train.train_fingerprint`), so one rule decides what "the code of
a stage" is.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

PACKAGE = "domainft"
PACKAGE_DIR = Path(__file__).resolve().parent
HASH_CACHE = Path(".dvc/tmp/domainft_hashes.json")  # machine-local: resolved path -> stamp, sha256


def _module_file(module: str, package_dir: Path) -> Path | None:
    """``domainft.a.b`` -> ``<package_dir>/a/b.py`` or ``.../a/b/__init__.py``; None when neither exists."""
    parts = module.split(".")[1:]
    base = package_dir.joinpath(*parts)
    for candidate in (base.with_suffix(".py") if parts else None, base / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _imports(file: Path, module: str, cache: dict[str, Any] | None = None) -> frozenset[str]:
    """:func:`_parsed_imports`, reused while the file's size and mtime are unchanged.

    Args:
        cache: the persistent hash cache (:func:`load_hash_cache`); entries ``"imports:<path>"`` ->
            ``{"stamp": [size, mtime_ns], "module", "names"}`` spare the parse in the next process.
    """
    st = file.stat()
    if cache is None:
        return _parsed_imports(file, module, st.st_size, st.st_mtime_ns)
    key = f"imports:{file.resolve()}"
    stamp = [st.st_size, st.st_mtime_ns]
    hit = cache.get(key)
    if isinstance(hit, dict) and hit.get("stamp") == stamp and hit.get("module") == module:
        return frozenset(hit["names"])
    names = _parsed_imports(file, module, st.st_size, st.st_mtime_ns)
    cache[key] = {"stamp": stamp, "module": module, "names": sorted(names)}
    return names


@functools.lru_cache(maxsize=4096)
def _parsed_imports(file: Path, module: str, size: int, mtime_ns: int) -> frozenset[str]:
    """Absolute names of the ``domainft`` modules (or module attributes) ``file`` imports, anywhere in it.

    ``from domainft.x import y`` yields ``domainft.x`` and ``domainft.x.y`` (kept only when a file).
    Relative imports are resolved against ``module``.
    """
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    is_pkg = file.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_pkg else 0)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return frozenset(n for n in names if n == PACKAGE or n.startswith(PACKAGE + "."))


def code_modules(module: str, package_dir: Path = PACKAGE_DIR,
                 cache: dict[str, Any] | None = None) -> dict[str, Path]:
    """Every ``domainft`` module that importing and running ``module`` may execute: module -> file.

    Follows imports transitively, including imports inside functions (lazy imports), and adds each
    module's parent packages (their ``__init__.py`` runs on import). ``cache``: see :func:`_imports`.

    Raises:
        ModuleNotFoundError: ``module`` has no file under ``package_dir``.
    """
    if _module_file(module, package_dir) is None:
        raise ModuleNotFoundError(f"{module} not found under {package_dir}")
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        file = _module_file(name, package_dir)
        if file is None:  # an attribute (`from domainft.x import func`), not a module
            continue
        seen[name] = file
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(_imports(file, name, cache))
    return dict(sorted(seen.items()))


def code_files_of(modules: list[str], package_dir: Path = PACKAGE_DIR,
                  cache: dict[str, Any] | None = None) -> list[str]:
    """Files (``domainft/...py``, POSIX, sorted) that importing and running ``modules`` may execute."""
    files: dict[str, Path] = {}
    for m in modules:
        files.update(code_modules(m, package_dir, cache))
    return sorted(f"{PACKAGE}/{p.relative_to(package_dir).as_posix()}" for p in files.values())


def modules_fingerprint(modules: list[str], package_dir: Path = PACKAGE_DIR,
                        cache: dict[str, Any] | None = None) -> str:
    """sha256 (hex) over the relative path and bytes of every file of :func:`code_files_of`."""
    h = hashlib.sha256()
    for rel in code_files_of(modules, package_dir, cache):
        data = (package_dir.parent / rel).read_bytes()
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


# ----------------------------------------------------------------------------- files
def file_sha256(path: str | Path, cache: dict[str, Any] | None = None) -> str:
    """sha256 (hex) of a file, reused from ``cache`` while its size, mtime and inode are unchanged.

    Args:
        cache: ``{resolved path: {"stamp": [size, mtime_ns, inode], "sha256"}}``, updated in place.
    """
    path = Path(path)
    cache = {} if cache is None else cache
    st = path.stat()
    key = str(path.resolve())
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    hit = cache.get(key)
    if hit and hit["stamp"] == stamp:
        return hit["sha256"]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    cache[key] = {"stamp": stamp, "sha256": h.hexdigest()}
    return cache[key]["sha256"]


def tree_sha256(folder: str | Path, cache: dict[str, Any] | None = None) -> dict[str, str]:
    """``{relative POSIX path: sha256}`` of every file under ``folder`` (sorted; ``.cache/`` skipped)."""
    root = Path(folder)
    return {p.relative_to(root).as_posix(): file_sha256(p, cache)
            for p in sorted(root.rglob("*")) if p.is_file() and ".cache" not in p.relative_to(root).parts}


def folder_digest(folder: str | Path, skip: tuple[str, ...] = ()) -> str:
    """sha256 (hex) of a model folder: over :func:`tree_sha256`'s ``{path: sha256}`` as sorted JSON.

    ``skip``: relative paths left out (a download cache's completion marker). The registry records
    a base by this digest (:func:`domainft.registry.base_digest`).
    """
    files = {k: v for k, v in tree_sha256(folder).items() if k not in skip}
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def load_hash_cache(path: Path = HASH_CACHE) -> dict[str, Any]:
    """The cache of :func:`file_sha256` kept in ``.dvc/tmp`` ({} when absent or unreadable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_hash_cache(cache: dict[str, Any], path: Path = HASH_CACHE) -> None:
    """Keep ``cache`` for the next run, only inside a DVC project (``.dvc/tmp`` exists)."""
    from domainft.atomic import write_text_atomic

    if path.parent.is_dir():
        write_text_atomic(path, json.dumps(cache, sort_keys=True) + "\n")
