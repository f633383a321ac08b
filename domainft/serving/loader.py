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
* with named adapters (``--adapter bank=<folder> --adapter legal=<folder or MLflow URI>``), every
  adapter is loaded unmerged on the one base (peft, one ``adapter_name`` each); a request picks
  its adapter by name and rows of different adapters share a batch (peft's mixed-batch forward,
  ``adapter_names=``), as vLLM's and LoRAX's multi-LoRA serving do. QLoRA adapters share a base
  only when their quantization records match (the base is the NF4 round trip they were trained on).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
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
    adapters: dict[str, "ServedAdapter"] = field(default_factory=dict)


@dataclass
class ServedAdapter:
    """One named adapter loaded (unmerged) on the shared base.

    Attributes:
        name: the peft ``adapter_name``, which requests name as ``model``.
        folder: its local folder (adapter_config.json).
        tokenizer: its own tokenizer when the folder has one (same vocabulary as the base; its chat
            template may differ), else the base's.
        eos_ids: the base generation_config eos ids plus this tokenizer's end-of-turn token.
    """

    name: str
    folder: Path
    tokenizer: object
    eos_ids: list[int]


ADAPTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def parse_adapter_args(values: list[str] | tuple[str, ...]) -> tuple[str | None, dict[str, str]]:
    """Split ``--adapter`` values into one unnamed adapter or named ones (``name=path``).

    Returns:
        (unnamed path or None, {name: path or MLflow URI}).

    Raises:
        ModelLoadError: a malformed or repeated name, or an unnamed adapter together with others.
    """
    unnamed, named = [], {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or "/" in name or is_mlflow_uri(v):
            unnamed.append(v)
            continue
        if not ADAPTER_NAME.fullmatch(name) or not path:
            raise ModelLoadError(f"--adapter {v!r}: expected name=path with a name of letters, digits and ._:-")
        if name in named:
            raise ModelLoadError(f"--adapter name {name!r} is given twice")
        named[name] = path
    if unnamed and (named or len(unnamed) > 1):
        raise ModelLoadError("give one unnamed --adapter (merged into the base) or named ones "
                             "(--adapter name=path, repeatable), not both")
    return (unnamed[0] if unnamed else None), named


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



def _registered_base(adapter_dir: Path, base: str, tracking_uri: str, cache_dir: str | Path) -> Path:
    """The base of a registered adapter whose ``base_model_name_or_path`` is not a local folder.

    ``register`` writes ``domainft_base_ref.json`` (base registry URI and content hash) into a logged
    adapter; the base is downloaded through the model cache like any registry model and its content
    hash checked, so the adapter serves from any folder.

    Raises:
        ModelLoadError: no reference file, or the downloaded base has another content hash.
    """
    from domainft.hashing import folder_digest
    from domainft.registry import BASE_REF_FILE

    ref_file = adapter_dir / BASE_REF_FILE
    if not ref_file.is_file():
        raise ModelLoadError(f"adapter {adapter_dir} refers to base {base!r}, which is not a local model "
                             "folder; serve with --model <base folder> --adapter <adapter folder>")
    ref = json.loads(ref_file.read_text())
    folder, _ = download_mlflow_model(ref["base_model_uri"], tracking_uri, cache_dir)
    folder = find_model_folder(folder) if not (folder / "config.json").exists() else folder
    if folder_digest(folder, skip=(DONE_MARKER,)) != ref["base_sha256"]:
        raise ModelLoadError(f"base {ref['base_model_uri']} ({folder}) does not have the content hash "
                             f"{ref['base_sha256'][:12]}... adapter {adapter_dir} was trained on")
    return folder

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


def _load_named_adapters(model, base_tok, folder: Path, adapters: dict[str, str], tracking_uri: str,
                         cache_dir: str | Path):
    """Wrap ``model`` in a PeftModel holding every adapter of ``adapters`` ({name: folder or URI})."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    folders = {}
    for name, where in adapters.items():
        d = download_mlflow_model(where, tracking_uri, cache_dir)[0] if is_mlflow_uri(where) else Path(where).expanduser()
        if not (d / "adapter_config.json").is_file():
            raise ModelLoadError(f"adapter {name}: {d} has no adapter_config.json; not a PEFT adapter folder")
        folders[name] = d
    specs = {name: read_spec(d) for name, d in folders.items()}
    if len({json.dumps(s, sort_keys=True) for s in specs.values()}) > 1:
        raise ModelLoadError("adapters " + ", ".join(specs) + " were trained against different base weights "
                             "(QLoRA quantization records differ or only some have one); serve them separately")
    served, peft_model = {}, None
    for name, d in folders.items():
        try:
            if peft_model is None:
                peft_model = PeftModel.from_pretrained(model, d, adapter_name=name)
            else:
                peft_model.load_adapter(d, adapter_name=name)
        except (ValueError, RuntimeError, KeyError) as err:  # shape mismatch: trained on another base
            raise ModelLoadError(f"adapter {name} ({d}) does not fit the base {folder}: {err}") from None
        tok = AutoTokenizer.from_pretrained(d) if (d / "tokenizer_config.json").is_file() else base_tok
        if tok is not base_tok and tok.get_vocab() != base_tok.get_vocab():
            raise ModelLoadError(f"adapter {name}: its tokenizer's vocabulary differs from the base's ({folder})")
        served[name] = ServedAdapter(name, d, tok, _eos_ids(model, tok))
    spec = next(iter(specs.values()))
    if spec is not None:
        apply_round_trip(peft_model, spec)
    peft_model.eval()
    return peft_model, served


def load_for_serving(spec: str, adapter: str | None = None, tracking_uri: str = "sqlite:///mlflow.db",
                     cache_dir: str | Path = "~/.cache/domainft/models", device: str | None = None,
                     adapters: dict[str, str] | None = None) -> LoadedModel:
    """Load the model to serve (see the module docstring for ``spec`` forms).

    Args:
        spec: model folder or MLflow URI (the base when adapters are given).
        adapter: one unnamed LoRA adapter folder, merged into the base in memory.
        adapters: named adapters ``{name: folder or MLflow URI}``, loaded unmerged on the base
            (``LoadedModel.adapters``); exclusive with ``adapter``.

    Raises:
        ModelLoadError: missing folder or adapter, unresolvable URI, an adapter whose base
            (``base_model_name_or_path``) is not a local folder, named adapters that do not fit
            the base or each other (shapes, vocabulary, QLoRA records), or both ``adapter`` and
            ``adapters``.
    """
    if adapter and adapters:
        raise ModelLoadError("an unnamed adapter and named adapters cannot be served together")
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
            folder = _registered_base(adapter_dir, base, tracking_uri, cache_dir)
    if adapter_dir is not None:
        if not (adapter_dir / "adapter_config.json").exists():
            raise ModelLoadError(f"{adapter_dir} has no adapter_config.json; not a PEFT adapter folder")
        model, tok = _load_adapter(folder, adapter_dir, device)
    else:
        model, tok = load_model(folder, device=device)
    served = {}
    if adapters:
        if adapter_dir is not None:
            raise ModelLoadError(f"{spec} is an adapter; named adapters need a base model folder as --model")
        model, served = _load_named_adapters(model, tok, folder, adapters, tracking_uri, cache_dir)
    gen_file = folder / "generation_config.json"
    gen = json.loads(gen_file.read_text()) if gen_file.exists() else {}
    defaults = {k: gen[k] for k in ("temperature", "top_p") if k in gen}
    max_len = getattr(model.config.get_text_config(decoder=True), "max_position_embeddings", None) or 2048
    return LoadedModel(model, tok, folder, name, _eos_ids(model, tok), int(max_len), defaults, served)
