"""MLflow lineage and registry: one run per pipeline execution, a model version with alias ``challenger``.

The run carries flattened params (values longer than :data:`MAX_PARAM_CHARS` are logged as an
artifact plus a sha256 param), metrics of every stage (``metrics/*.json``), and lineage tags: git
commit and dirty flag, the dvc.lock hashes of raw data, processed data, splits, adapter and merged
model, base model source and revision, library versions. The model folder (merged, or the adapter
with a reference to its base, registered as ``<name>-base`` by content hash: :func:`adapter_base`)
is logged as plain artifacts under ``model/`` and registered as a new version of ``domainft-<domain>``; a rerun on identical inputs finds the existing version by its
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
from domainft.errors import DomainftError
from domainft.tracking import MAX_PARAM_CHARS, git_facts, log_params, param_items, setup_mlflow, store_lock  # noqa: F401

log = logging.getLogger(__name__)

ALIAS_CHALLENGER, ALIAS_CHAMPION = "challenger", "champion"
ALIAS_CHALLENGER_DPO = "challenger-dpo"  # the SFT+DPO version of the same pipeline run (preference stage)
PREFERENCE_METRICS = Path("metrics/preference.json")
BASE_REF_FILE = "domainft_base_ref.json"  # in a registered adapter: its base by content hash and registry URI
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


class RegistryError(DomainftError, RuntimeError):
    """A registered model cannot be resolved (missing base reference, base content changed)."""


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
    """Identity of a candidate model: params + hashes of the data and model outputs it came from.

    Params ``preference`` are left out: they shape the DPO version (its own fingerprint,
    :func:`_register_dpo`), not the SFT model, so switching the preference stage on registers no
    second copy of the SFT model.
    """
    payload = {"params": params.model_dump(exclude={"preference"}), "lock": {k: lock.get(v) for k, v in LINEAGE_PATHS.items()}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def register(params: Params) -> dict:
    """Log the pipeline run and register the model version with alias ``challenger``; with the
    preference stage on, also the SFT+DPO model as its own version (:func:`register_dpo`).

    One fingerprint gives one version, also when two registers run at once: on a SQLite store the
    check and the creation happen under :func:`~domainft.tracking.store_lock`; on any store, a
    register that finds an older version of its fingerprint next to the one it just created
    deletes its own version and run and returns the older one.

    Returns:
        ``{"model_name", "version", "run_id", "created", "fingerprint"}``; ``created`` is False when
        a version with the same fingerprint already existed (it is re-aliased, not duplicated). With
        a DPO version, also ``"dpo": {"version", "run_id", "created", "fingerprint", "verdicts_sha256"}``.
    """
    mlflow = setup_mlflow(params)
    with store_lock(mlflow.get_tracking_uri()):
        out = _register(mlflow, params)
        pref = preference_result(params)
        if pref is not None:
            out["dpo"] = _register_dpo(mlflow, params, out, pref)
        else:  # no DPO model in this run: an older @challenger-dpo is no candidate any more
            try:
                mlflow.MlflowClient().delete_registered_model_alias(out["model_name"], ALIAS_CHALLENGER_DPO)
            except mlflow.exceptions.MlflowException:
                pass
        return out


def preference_result(params: Params) -> dict | None:
    """``metrics/preference.json`` when the preference stage ran (``enabled`` 1) and its merged
    model is there (``preference.merged_dir``/config.json); None otherwise (the stage off)."""
    if not PREFERENCE_METRICS.is_file():
        return None
    try:
        pref = json.loads(PREFERENCE_METRICS.read_text())
    except json.JSONDecodeError:
        raise RegistryError(f"{PREFERENCE_METRICS} is not JSON; rerun the preference stage") from None
    if not pref.get("enabled"):
        return None
    if not (Path(params.preference.merged_dir) / "config.json").is_file():
        raise RegistryError(f"{PREFERENCE_METRICS} says the preference stage ran, but "
                            f"{params.preference.merged_dir} holds no model; rerun the preference stage")
    return pref


def dpo_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The run metrics of the SFT+DPO version, under the keys the promotion gates read.

    From the pipeline's metrics (:func:`read_stage_metrics`): ``eval.*`` become the DPO model's own
    evaluation against the base (``preference.vs_base.*``), ``merge.*`` its merge fidelity
    (``preference.merge.*``); the SFT model's ``eval.*`` and ``merge.*`` are kept as ``sft.eval.*``
    and ``sft.merge.*``; the rest (``split.*``, ``train.*``, ``preference.*`` with ``vs_sft.*``) as is.
    """
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if k.startswith(("eval.", "merge.")):
            out["sft." + k] = v
        else:
            out[k] = v
    for prefix, to in (("preference.vs_base.", "eval."), ("preference.merge.", "merge.")):
        out.update({to + k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)})
    return out


def _register_dpo(mlflow, params: Params, sft: dict, pref: dict) -> dict:
    """Register ``preference.merged_dir`` as its own version of the model, alias ``challenger-dpo``.

    Lineage tags: ``domainft.model_kind`` ``dpo_merged``, ``domainft.verdicts_sha256`` (hash of the
    preference pairs), ``domainft.review_sha256``, ``domainft.sft_version`` / ``domainft.sft_run_id``
    (the SFT version it was tuned from and its reference policy), ``dvc.dpo_merged.md5``, the pairs by
    source. Its fingerprint is the SFT fingerprint + verdicts hash + params ``preference``: the same
    inputs give the same version (re-aliased, not duplicated).
    """
    client = mlflow.MlflowClient()
    name = sft["model_name"]
    lock = dvc_lock_hashes()
    fp = hashlib.sha256(json.dumps({"sft": sft["fingerprint"], "verdicts": pref["verdicts_sha256"],
                                    "dpo": lock.get(params.preference.merged_dir),
                                    "preference": params.preference.model_dump()},
                                   sort_keys=True, default=str).encode()).hexdigest()[:32]
    result = {"version": None, "run_id": None, "created": False, "fingerprint": fp,
              "verdicts_sha256": pref["verdicts_sha256"]}
    existing = _versions_of(client, name, "domainft.fingerprint", fp)
    if existing:
        mv = existing[0]
        client.set_registered_model_alias(name, ALIAS_CHALLENGER_DPO, mv.version)
        return {**result, "version": int(mv.version), "run_id": mv.run_id}
    metrics = dpo_metrics(read_stage_metrics(include_bools=True))
    tags = {**lineage_tags(params, lock), "domainft.model_kind": "dpo_merged",
            "domainft.verdicts_sha256": pref["verdicts_sha256"],
            "domainft.review_sha256": str(pref.get("review_sha256")),
            "domainft.sft_version": str(sft["version"]), "domainft.sft_run_id": sft["run_id"],
            **{f"domainft.pairs.{s}": str(n) for s, n in (pref.get("sources") or {}).items()}}
    if params.preference.merged_dir in lock:
        tags["dvc.dpo_merged.md5"] = lock[params.preference.merged_dir]
    with mlflow.start_run(run_name=f"dpo-{params.domain.name}", tags={"domainft.stage": "register-dpo", **tags}) as run:
        _log_params(mlflow, params)
        mlflow.log_metrics(metrics)
        for f in sorted(Path("metrics").glob("*.json")):
            mlflow.log_artifact(str(f), "metrics")
        for sub in ("", "vs_base/"):
            for artifact in ("report.html", "predictions.jsonl", "retention.jsonl"):
                f = Path("metrics/preference") / sub / artifact
                if f.exists():
                    mlflow.log_artifact(str(f), "evaluation/" + ("vs_base" if sub else "vs_sft"))
        mlflow.log_artifacts(params.preference.merged_dir, "model")
        source = f"{run.info.artifact_uri}/model"
    version_tags = {"domainft.fingerprint": fp, **tags}
    version_tags.update(metric_tags(metrics))
    mv = client.create_model_version(name, source=source, run_id=run.info.run_id, tags=version_tags)
    client.set_registered_model_alias(name, ALIAS_CHALLENGER_DPO, mv.version)
    return {**result, "version": int(mv.version), "run_id": run.info.run_id, "created": True}


def metric_tags(metrics: dict[str, float]) -> dict[str, str]:
    """Version tags ``metric.<key>.<base|tuned|delta>`` (KEY_METRICS) and ``metric.<key>`` (GATE_METRICS),
    6 significant digits, for the metrics present in ``metrics`` (flat, ``eval.``-prefixed keys)."""
    tags = {}
    for key in KEY_METRICS:
        for side in ("base", "tuned", "delta"):
            v = metrics.get(f"eval.{key}.{side}")
            if v is not None:
                tags[f"metric.{key}.{side}"] = f"{v:.6g}"
    for key in GATE_METRICS:
        if key in metrics:
            tags[f"metric.{key}"] = f"{metrics[key]:.6g}"
    return tags


def _ensure_registered_model(client, mlflow, name: str, description: str) -> None:
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        try:
            client.create_registered_model(name, description=description)
        except mlflow.exceptions.MlflowException:  # created by a concurrent register meanwhile
            client.get_registered_model(name)


def _versions_of(client, name: str, tag: str, value: str) -> list:
    return sorted(client.search_model_versions(f"name = '{name}' and tag.`{tag}` = '{value}'"),
                  key=lambda v: int(v.version))


def base_digest(folder: str | Path) -> str:
    """sha256 over the relative paths and sha256 of every file of a model folder (64 hex characters)."""
    from domainft.hashing import tree_sha256

    return hashlib.sha256(json.dumps(tree_sha256(folder), sort_keys=True).encode()).hexdigest()


def register_base(mlflow, params: Params, name: str) -> dict[str, str]:
    """The base model folder as a version of ``<name>-base``, found by content hash or created.

    Returns:
        ``{"base_source", "base_revision", "base_sha256", "base_model_uri"}``: the reference a logged
        adapter carries (``domainft_base_ref.json``), so it loads from any folder or machine with
        access to the registry (:func:`adapter_base`).
    """
    client = mlflow.MlflowClient()
    base_name = f"{name}-base"
    digest = base_digest(params.base.out_dir)
    _ensure_registered_model(client, mlflow, base_name, f"base models of {name}'s adapters")
    existing = _versions_of(client, base_name, "domainft.base_sha256", digest)
    if existing:
        version = existing[0].version
    else:
        with mlflow.start_run(run_name=f"base-{digest[:12]}", tags={"domainft.stage": "register-base"}) as run:
            mlflow.log_artifacts(params.base.out_dir, "model")
        version = client.create_model_version(base_name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                              tags={"domainft.base_sha256": digest,
                                                    "base.source": params.base.source}).version
    return {"base_source": params.base.source, "base_revision": params.base.revision, "base_sha256": digest,
            "base_model_uri": f"models:/{base_name}/{version}"}


def adapter_base(adapter_dir: str | Path, dst: str | Path | None = None) -> Path:
    """Download the base a registered adapter was trained on (``domainft_base_ref.json``) and check it.

    Args:
        adapter_dir: the adapter folder (downloaded from the registry or not).
        dst: download folder (default: a temporary one MLflow picks).

    Returns:
        The local base model folder (``config.json`` inside), with the content hash recorded at
        registration.

    Raises:
        RegistryError: no reference file, or the downloaded base has another content hash.
    """
    import mlflow

    ref_file = Path(adapter_dir) / BASE_REF_FILE
    if not ref_file.is_file():
        raise RegistryError(f"{adapter_dir} has no {BASE_REF_FILE}: not an adapter registered by domainft")
    ref = json.loads(ref_file.read_text())
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref["base_model_uri"],
                                                     dst_path=str(dst) if dst else None))
    if base_digest(local) != ref["base_sha256"]:
        raise RegistryError(f"base {ref['base_model_uri']} downloaded to {local} does not have the content hash "
                            f"{ref['base_sha256'][:12]}... the adapter was trained on")
    return local


def _register(mlflow, params: Params) -> dict:
    client = mlflow.MlflowClient()
    name = model_name(params)
    lock = dvc_lock_hashes()
    fp = fingerprint(params, lock)
    _ensure_registered_model(client, mlflow, name, f"domainft fine-tuned model for {params.domain.name}")
    existing = _versions_of(client, name, "domainft.fingerprint", fp)
    if existing:
        mv = existing[0]
        client.set_registered_model_alias(name, ALIAS_CHALLENGER, mv.version)
        return {"model_name": name, "version": int(mv.version), "run_id": mv.run_id,
                "created": False, "fingerprint": fp}

    metrics = read_stage_metrics(include_bools=True)
    tags = lineage_tags(params, lock)
    which = params.register.log_model
    base_ref = register_base(mlflow, params, name) if which == "adapter" else None
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
            mlflow.log_dict(base_ref, f"model/{BASE_REF_FILE}")
        source = f"{run.info.artifact_uri}/model"
    version_tags = {"domainft.fingerprint": fp, "domainft.model_kind": which, **tags}
    if base_ref:
        version_tags.update({"domainft.base_sha256": base_ref["base_sha256"],
                             "domainft.base_model_uri": base_ref["base_model_uri"]})
    version_tags.update(metric_tags(metrics))
    mv = client.create_model_version(name, source=source, run_id=run.info.run_id, tags=version_tags)
    first = _versions_of(client, name, "domainft.fingerprint", fp)[0]
    if int(first.version) < int(mv.version):  # a concurrent register (another store than SQLite) won
        client.delete_model_version(name, mv.version)
        client.delete_run(run.info.run_id)
        client.set_registered_model_alias(name, ALIAS_CHALLENGER, first.version)
        return {"model_name": name, "version": int(first.version), "run_id": first.run_id,
                "created": False, "fingerprint": fp}
    client.set_registered_model_alias(name, ALIAS_CHALLENGER, mv.version)
    return {"model_name": name, "version": int(mv.version), "run_id": run.info.run_id,
            "created": True, "fingerprint": fp}
