"""Resolve the base model (GGUF in a package or file, local folder, hub id) into a plain HF folder.

The folder written by :func:`materialize_base` holds safetensors weights, the tokenizer with the
pipeline's chat template, and a generation_config whose eos ids include the end-of-turn token.
Every later stage (train, merge, evaluate, serve) loads models through :func:`load_model`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch

from domainft.modeling.chat import end_of_turn, ensure_chat_template, generation_eos_ids

from domainft.modeling.source import (  # noqa: F401  (re-exported; resolution is torch-free)
    HUB_ID, META_FILE, BaseModelError, BaseSource, _assemble_package, _package_dir, gguf_cache_dir, resolve_source,
)

log = logging.getLogger(__name__)


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
    """The compute dtype for ``precision`` on ``device``.

    ``auto``: bf16 on CUDA, and on a CPU with native bf16 matrix units
    (:func:`domainft.hardware.native_bf16`: AMX-BF16 / AVX512-BF16; ``DOMAINFT_NATIVE_BF16=0``
    turns it off); fp32 on any other CPU, where bf16 is emulated. ``fp32``/``bf16``/``fp16`` force one.
    """
    device = device or pick_device()
    if precision == "fp32":
        return torch.float32
    if precision == "fp16":
        return torch.float16
    if precision == "auto" and device == "cpu":
        from domainft.hardware import native_bf16

        return torch.bfloat16 if native_bf16() else torch.float32
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
