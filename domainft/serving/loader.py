"""Resolve what ``domainft serve --model`` names and load it: a folder, an MLflow URI, or base + adapter.

Accepted ``--model`` values:

* a model folder with ``config.json`` (``models/merged``, ``models/base``);
* an MLflow model URI: ``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``runs:/<id>/<path>``
  or any artifact URI. The artifacts are downloaded once into ``<cache_dir>/<name>/v<version>`` (a
  complete download is marked, so a crash never leaves a half folder that looks valid), and the
  shallowest folder holding ``config.json`` (or, for a logged adapter, ``adapter_config.json``) is
  loaded. The tracking/registry URI is ``MLFLOW_TRACKING_URI`` if set, else ``register.tracking_uri``.
* with ``--adapter <folder>``, ``--model`` is the base; the LoRA adapter is applied with
  ``peft.PeftModel`` and merged in memory (one set of weights at serving time, same outputs); a
  QLoRA adapter is merged onto the NF4 round trip of the base weights, like the merge stage's default.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from domainft.errors import DomainftError
from domainft.modeling.base import load_model
from domainft.modeling.chat import generation_eos_ids
from domainft.quantization import apply_round_trip, read_spec
from domainft.tracking import absolute_sqlite_uri

log = logging.getLogger(__name__)

URI_PREFIXES = ("models:/", "runs:/", "mlflow-artifacts:", "s3://", "gs://", "file:", "dbfs:")
DONE_MARKER = ".domainft-complete"


class ModelLoadError(DomainftError, ValueError):
    """The model to serve cannot be found or loaded."""


@dataclass
class LoadedModel:
    """A model ready to serve.

    Attributes:
        model, tokenizer: the HF model (eval mode) and its tokenizer.
        folder: the local folder the weights came from.
        registered_name: the MLflow registered model name, when served from ``models:/``.
        eos_ids: ids that end a turn (generation_config eos plus the template's end-of-turn).
        max_model_len: ``config.max_position_embeddings`` (or the model's own limit).
        defaults: sampling defaults present in generation_config.json (``temperature``, ``top_p``).
    """

    model: object
    tokenizer: object
    folder: Path
    registered_name: str | None
    eos_ids: list[int]
    max_model_len: int
    defaults: dict


def is_mlflow_uri(spec: str) -> bool:
    return spec.startswith(URI_PREFIXES)


def find_model_folder(root: Path) -> Path:
    """Shallowest folder under ``root`` with ``config.json``, else with ``adapter_config.json``.

    Raises:
        ModelLoadError: neither file exists anywhere under ``root``.
    """
    for marker in ("config.json", "adapter_config.json"):
        hits = sorted(root.rglob(marker), key=lambda p: (len(p.parts), str(p)))
        if hits:
            return hits[0].parent
    raise ModelLoadError(f"no config.json or adapter_config.json under {root}; not a model folder")


def download_mlflow_model(uri: str, tracking_uri: str, cache_dir: str | Path) -> tuple[Path, str | None]:
    """Download an MLflow model URI into the cache (once) and return (folder, registered name).

    Raises:
        ModelLoadError: unknown registered model, alias or version, or a failed download.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    tracking_uri = absolute_sqlite_uri(os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri)
    registry_uri = absolute_sqlite_uri(os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri)
    name, key = None, hashlib.sha256(uri.encode()).hexdigest()[:16]
    try:
        if uri.startswith("models:/"):
            ref = uri.removeprefix("models:/")
            client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
            if "@" in ref:
                name, alias = ref.split("@", 1)
                mv = client.get_model_version_by_alias(name, alias)
            else:
                name, _, version = ref.partition("/")
                mv = client.get_model_version(name, version)
            # the version's storage location, so no global registry URI is consulted
            key, uri = f"{name}/v{mv.version}", client.get_model_version_download_uri(name, mv.version)
            log.info("%s resolves to version %s (source %s)", ref, mv.version, mv.source)
        target = Path(cache_dir).expanduser() / key
        if not (target / DONE_MARKER).exists():
            shutil.rmtree(target, ignore_errors=True)
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(partial),
                                                tracking_uri=tracking_uri, registry_uri=registry_uri)
            (partial / DONE_MARKER).write_text(uri + "\n")
            partial.rename(target)
    except MlflowException as err:
        raise ModelLoadError(f"cannot resolve {uri} at tracking URI {tracking_uri}: {err.message}") from None
    return find_model_folder(target), name


def _eos_ids(model, tokenizer) -> list[int]:
    eos = model.generation_config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    merged = generation_eos_ids(tokenizer, eos)
    if set(merged) != set(eos):
        log.warning("generation_config eos ids %s miss the end-of-turn token; stopping at %s", eos, merged)
    return merged


def _load_adapter(base: Path, adapter: Path, device: str | None):
    from peft import PeftModel
    from transformers import AutoTokenizer

    model, tok = load_model(base, device=device)
    if (adapter / "tokenizer_config.json").exists():
        tok = AutoTokenizer.from_pretrained(adapter)
    model = PeftModel.from_pretrained(model, adapter)
    spec = read_spec(adapter)
    if spec is not None:  # a QLoRA adapter: serve it on the NF4 weights it was trained against, as merge does
        apply_round_trip(model, spec)
    model = model.merge_and_unload()
    model.eval()
    return model, tok


def load_for_serving(spec: str, adapter: str | None = None, tracking_uri: str = "sqlite:///mlflow.db",
                     cache_dir: str | Path = "~/.cache/domainft/models", device: str | None = None) -> LoadedModel:
    """Load the model to serve (see the module docstring for ``spec`` forms).

    Raises:
        ModelLoadError: missing folder or adapter, unresolvable URI, or an adapter whose base
            (``base_model_name_or_path``) is not a local folder.
    """
    name = None
    if is_mlflow_uri(spec):
        folder, name = download_mlflow_model(spec, tracking_uri, cache_dir)
    else:
        folder = Path(spec).expanduser()
        if not folder.is_dir():
            raise ModelLoadError(f"model folder not found: {folder}")
        folder = find_model_folder(folder) if not (folder / "config.json").exists() else folder
    adapter_dir = Path(adapter).expanduser() if adapter else None
    if adapter_dir is None and not (folder / "config.json").exists():  # a logged adapter
        adapter_dir = folder
        base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path") or ""
        folder = Path(base)
        if not (folder / "config.json").exists():
            raise ModelLoadError(f"adapter {adapter_dir} refers to base {base!r}, which is not a local model "
                                 "folder; serve with --model <base folder> --adapter <adapter folder>")
    if adapter_dir is not None:
        if not (adapter_dir / "adapter_config.json").exists():
            raise ModelLoadError(f"{adapter_dir} has no adapter_config.json; not a PEFT adapter folder")
        model, tok = _load_adapter(folder, adapter_dir, device)
    else:
        model, tok = load_model(folder, device=device)
    gen_file = folder / "generation_config.json"
    gen = json.loads(gen_file.read_text()) if gen_file.exists() else {}
    defaults = {k: gen[k] for k in ("temperature", "top_p") if k in gen}
    max_len = getattr(model.config.get_text_config(decoder=True), "max_position_embeddings", None) or 2048
    return LoadedModel(model, tok, folder, name, _eos_ids(model, tok), int(max_len), defaults)
