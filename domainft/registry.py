"""MLflow lineage and registry: one run per pipeline execution, a model version with alias ``challenger``.

The run carries flattened params (values longer than :data:`MAX_PARAM_CHARS` are logged as an
artifact plus a sha256 param), metrics of every stage (``metrics/*.json``), and lineage tags: git
commit and dirty flag, the dvc.lock hashes of raw data, processed data, splits, adapter and merged
model, base model source and revision, library versions. The model folder (merged, or the adapter
with a reference to its base) is logged as plain artifacts under ``model/`` and registered as a
new version of ``domainft-<domain>``; a rerun on identical inputs finds the existing version by its
fingerprint tag instead of creating a duplicate.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from domainft.config import Params
from domainft.tracking import MAX_PARAM_CHARS, git_facts, log_params, param_items, setup_mlflow  # noqa: F401

log = logging.getLogger(__name__)

ALIAS_CHALLENGER, ALIAS_CHAMPION = "challenger", "champion"
LINEAGE_PATHS = {  # tag suffix -> dvc.lock path
    "raw": "data/raw", "processed": "data/processed", "splits": "data/splits",
    "train_split": "data/splits/train.jsonl", "base": "models/base",
    "adapter": "models/adapter", "merged": "models/merged",
}
SPLIT_FILES = {  # per-file lineage beyond the fingerprinted paths: tag suffix -> path
    "val_split": "data/splits/val.jsonl", "test_split": "data/splits/test.jsonl",
}
DVC_CACHE_DIR = Path(".dvc/cache/files/md5")  # DVC 3 layout: <md5[:2]>/<md5[2:]>(.dir)
LIBRARIES = ["torch", "transformers", "peft", "trl", "datasets", "dvc", "mlflow"]
KEY_METRICS = ["rouge_l", "response_ppl"]
# Facts the promotion gates read (domainft/promote.py), copied to version tags as ``metric.<key>``.
GATE_METRICS = ["merge.passed", "split.leakage.total", "eval.judge.pairwise.win_rate"]
_BAD_NAME_CHARS = re.compile(r"[^/\w.\- ]")  # MLflow accepts alphanumerics, _ - . space / (and :)


def metric_key(key: str) -> str:
    """``key`` made acceptable as an MLflow metric/param name: other characters become ``_``.

    MLflow rejects names outside ``[/\\w.\\- :]`` or that normalise to another path (``a//b``,
    ``./a``); file names from ``metrics/prepare.json`` (``files.data/raw/faq (2).csv.kept``) and
    glob keys in params (``prepare.schema_overrides.*.csv``) would otherwise fail the run.
    """
    out = _BAD_NAME_CHARS.sub("_", key)
    out = re.sub(r"/+", "/", out).strip("/")
    return "/".join(p if p not in (".", "..") else "_" for p in out.split("/"))[:250]


def model_name(params: Params) -> str:
    return params.register.model_name or f"domainft-{params.domain.name}"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are kept as values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def dvc_lock_hashes(lock_path: str | Path = "dvc.lock") -> dict[str, str]:
    """md5 of every dep/out path in dvc.lock, keyed by path (first occurrence wins)."""
    p = Path(lock_path)
    if not p.exists():
        return {}
    lock = yaml.safe_load(p.read_text()) or {}
    hashes: dict[str, str] = {}
    for stage in (lock.get("stages") or {}).values():
        for entry in (stage.get("deps") or []) + (stage.get("outs") or []):
            if "md5" in entry:
                hashes.setdefault(entry["path"], entry["md5"])
    return hashes


def read_stage_metrics(metrics_dir: str | Path = "metrics", include_bools: bool = False) -> dict[str, float]:
    """Numeric leaves of every ``metrics/*.json`` as ``<file stem>.<dotted key>``.

    Args:
        include_bools: also keep boolean leaves as 1.0 / 0.0 (e.g. ``merge.passed``, read by the
            promotion gates); off by default.

    Keys pass through :func:`metric_key` (``@`` and other characters MLflow rejects become ``_``).
    """
    out: dict[str, float] = {}
    for f in sorted(Path(metrics_dir).glob("*.json")):
        if f.stem == "register":  # our own output
            continue
        try:
            data = json.loads(f.read_text())
        except json.JSONDecodeError:
            log.warning("skipping unreadable metrics file %s", f)
            continue
        for k, v in flatten(data, f.stem + ".").items():
            if isinstance(v, bool):
                if include_bools:
                    out[metric_key(k)] = 1.0 if v else 0.0
            elif isinstance(v, (int, float)):
                out[metric_key(k)] = float(v)
    return out


def file_md5(path: str | Path, chunk: int = 1 << 20) -> str:
    """Plain md5 of a file's bytes: what DVC 3 records as ``md5`` (``hash: md5``) for a file."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def member_md5(path: str, lock: dict[str, str], cache_dir: str | Path = DVC_CACHE_DIR) -> str | None:
    """DVC hash of ``path`` even when dvc.lock only lists the directory holding it.

    Order: the path's own dvc.lock entry; else the entry for ``path`` in the ``.dir`` manifest (a
    JSON list of ``{"md5", "relpath"}`` in the DVC cache) of a locked parent directory; else the md5
    of the file in the workspace (what DVC would record for it); else None.
    """
    if path in lock:
        return lock[path]
    for parent, md5 in lock.items():
        if md5.endswith(".dir") and path.startswith(parent.rstrip("/") + "/"):
            manifest = Path(cache_dir) / md5[:2] / md5[2:]
            if manifest.is_file():
                rel = path[len(parent.rstrip("/")) + 1:]
                try:
                    entries = json.loads(manifest.read_text())
                except json.JSONDecodeError:
                    break
                for e in entries:
                    if e.get("relpath") == rel and "md5" in e:
                        return e["md5"]
    return file_md5(path) if Path(path).is_file() else None


def lineage_tags(params: Params, lock: dict[str, str]) -> dict[str, str]:
    """Tags linking a run to its code, data and models.

    ``domainft.git_commit`` / ``domainft.git_dirty``; ``dvc.<name>.md5`` for every path of
    :data:`LINEAGE_PATHS` and :data:`SPLIT_FILES` (directories: DVC's ``.dir`` hash; single split
    files: their own hash, see :func:`member_md5`); ``base.source`` / ``base.revision``;
    ``lib.<package>`` versions.
    """
    tags = {f"domainft.{k}": v for k, v in git_facts().items()}
    for name, path in LINEAGE_PATHS.items():
        if path in lock:
            tags[f"dvc.{name}.md5"] = lock[path]
    if lock:  # split files listed only inside the data/splits directory out
        for name, path in {"train_split": LINEAGE_PATHS["train_split"], **SPLIT_FILES}.items():
            md5 = member_md5(path, lock)
            if md5:
                tags[f"dvc.{name}.md5"] = md5
    tags["base.source"] = params.base.source
    tags["base.revision"] = params.base.revision or "none"
    for lib in LIBRARIES:
        try:
            tags[f"lib.{lib}"] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    return tags


def _log_params(mlflow, params: Params) -> None:
    log_params(mlflow, param_items(params.model_dump()))


def fingerprint(params: Params, lock: dict[str, str]) -> str:
    """Identity of a candidate model: params + hashes of the data and model outputs it came from."""
    payload = {"params": params.model_dump(), "lock": {k: lock.get(v) for k, v in LINEAGE_PATHS.items()}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def register(params: Params) -> dict:
    """Log the pipeline run and register the model version with alias ``challenger``.

    Returns:
        ``{"model_name", "version", "run_id", "created", "fingerprint"}``; ``created`` is False when
        a version with the same fingerprint already existed (it is re-aliased, not duplicated).
    """
    mlflow = setup_mlflow(params)
    client = mlflow.MlflowClient()
    name = model_name(params)
    lock = dvc_lock_hashes()
    fp = fingerprint(params, lock)
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name, description=f"domainft fine-tuned model for {params.domain.name}")
    existing = client.search_model_versions(f"name = '{name}' and tag.`domainft.fingerprint` = '{fp}'")
    if existing:
        mv = max(existing, key=lambda v: int(v.version))
        client.set_registered_model_alias(name, ALIAS_CHALLENGER, mv.version)
        return {"model_name": name, "version": int(mv.version), "run_id": mv.run_id,
                "created": False, "fingerprint": fp}

    metrics = read_stage_metrics(include_bools=True)
    tags = lineage_tags(params, lock)
    which = params.register.log_model
    with mlflow.start_run(run_name=f"pipeline-{params.domain.name}",
                          tags={"domainft.stage": "register", **tags}) as run:
        _log_params(mlflow, params)
        mlflow.log_metrics(metrics)
        for f in sorted(Path("metrics").glob("*.json")):
            mlflow.log_artifact(str(f), "metrics")
        for artifact in ("report.html", "predictions.jsonl"):  # the evaluation report travels with the run
            if (Path("metrics") / artifact).exists():
                mlflow.log_artifact(str(Path("metrics") / artifact), "evaluation")
        if which == "merged":
            mlflow.log_artifacts(params.merge.out_dir, "model")
        elif which == "adapter":
            mlflow.log_artifacts(params.train.out_dir, "model")
            mlflow.log_dict({"base_source": params.base.source, "base_revision": params.base.revision},
                            "model/domainft_base_ref.json")
        source = f"{run.info.artifact_uri}/model"
    version_tags = {"domainft.fingerprint": fp, "domainft.model_kind": which, **tags}
    for key in KEY_METRICS:
        for side in ("base", "tuned", "delta"):
            v = metrics.get(f"eval.{key}.{side}")
            if v is not None:
                version_tags[f"metric.{key}.{side}"] = f"{v:.6g}"
    for key in GATE_METRICS:
        if key in metrics:
            version_tags[f"metric.{key}"] = f"{metrics[key]:.6g}"
    mv = client.create_model_version(name, source=source, run_id=run.info.run_id, tags=version_tags)
    client.set_registered_model_alias(name, ALIAS_CHALLENGER, mv.version)
    return {"model_name": name, "version": int(mv.version), "run_id": run.info.run_id,
            "created": True, "fingerprint": fp}
