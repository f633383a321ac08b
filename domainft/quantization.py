"""What a QLoRA adapter was trained against, and how to rebuild those weights for the merge.

A QLoRA adapter (Dettmers et al. 2023, "QLoRA", arXiv:2305.14314) learns its update on top of
the base weights *after* bitsandbytes NF4 quantization: W_q = dequant(quant(W)). Merging it onto
the original 16/32-bit W adds it to weights it never saw; the gap is measured, not assumed away
(issue 5). The train stage records the quantization it used in ``quantization.json`` inside the
adapter folder; the merge stage reads it and, when asked, rebuilds W_q with the same
bitsandbytes functions (``quantize_4bit`` / ``dequantize_4bit``; their CPU implementation since
bitsandbytes 0.46) before merging.

Notation: O output features, I input features of a linear layer.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from domainft.errors import DomainftError

QUANT_FILE = "quantization.json"


class QuantizationError(DomainftError, RuntimeError):
    """The adapter's quantization record is unusable, or bitsandbytes is missing."""


def describe_4bit(model) -> dict:
    """Record how a bitsandbytes 4-bit model was quantized (call before wrapping it with peft).

    Args:
        model: a transformers model loaded with ``BitsAndBytesConfig(load_in_4bit=True, ...)``.

    Returns:
        ``{"method": "bitsandbytes-4bit", "quant_type", "blocksize", "double_quant", "dtype",
        "quantized_modules": [module names, sorted]}``, read from the modules' quant states,
        so the record is what bitsandbytes did, not what was requested.

    Raises:
        QuantizationError: no ``Linear4bit`` module, or modules quantized differently.
    """
    import bitsandbytes as bnb

    names, kinds = [], set()
    for name, mod in model.named_modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            qs = mod.weight.quant_state
            names.append(name)
            kinds.add((qs.quant_type, int(qs.blocksize), bool(qs.nested), str(qs.dtype).removeprefix("torch.")))
    if len(kinds) != 1:
        raise QuantizationError(f"expected one 4-bit quantization scheme, found {sorted(kinds) or 'none'}")
    quant_type, blocksize, nested, dtype = kinds.pop()
    return {"method": "bitsandbytes-4bit", "quant_type": quant_type, "blocksize": blocksize,
            "double_quant": nested, "dtype": dtype, "quantized_modules": sorted(names)}


def write_spec(adapter_dir: str | Path, spec: dict) -> None:
    """Write ``spec`` (from :func:`describe_4bit`) as ``<adapter_dir>/quantization.json``."""
    (Path(adapter_dir) / QUANT_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")


def read_spec(adapter_dir: str | Path) -> dict | None:
    """The adapter's quantization record, or None for an adapter trained on unquantized weights.

    Raises:
        QuantizationError: the file exists but lacks a required key or names another method.
    """
    path = Path(adapter_dir) / QUANT_FILE
    if not path.exists():
        return None
    spec = json.loads(path.read_text())
    missing = {"method", "quant_type", "blocksize", "double_quant", "dtype", "quantized_modules"} - set(spec)
    if missing or spec["method"] != "bitsandbytes-4bit":
        raise QuantizationError(f"{path}: unusable quantization record (missing {sorted(missing)}, "
                                f"method {spec.get('method')!r})")
    return spec


def nf4_round_trip(weight: torch.Tensor, spec: dict) -> torch.Tensor:
    """dequant(quant(weight)) with bitsandbytes, as a 4-bit ``Linear4bit`` sees its weight.

    Args:
        weight: (O, I) float tensor on CPU (the base model's original weight).
        spec: a quantization record: ``quant_type`` ("nf4" or "fp4"), ``blocksize`` (64 in
            bitsandbytes' defaults), ``double_quant`` (quantized absmax statistics), ``dtype``
            (the dtype the weight had when it was quantized, bfloat16 for our QLoRA loads).

    Returns:
        (O, I) tensor in ``weight``'s dtype.

    Raises:
        QuantizationError: bitsandbytes is not installed.
    """
    try:
        import bitsandbytes.functional as F
    except ImportError as e:  # pragma: no cover - bitsandbytes is in requirements.txt
        raise QuantizationError("merging a QLoRA adapter onto its NF4 weights needs bitsandbytes") from e
    w = weight.detach().to(getattr(torch, spec["dtype"])).contiguous()
    q, state = F.quantize_4bit(w, blocksize=spec["blocksize"], compress_statistics=spec["double_quant"],
                               quant_type=spec["quant_type"])
    return F.dequantize_4bit(q, state).to(weight.dtype).reshape(weight.shape)


@torch.no_grad()
def apply_round_trip(model, spec: dict) -> int:
    """Replace, in place, each quantized module's weight with :func:`nf4_round_trip` of it.

    ``model`` is the plain base model or a peft model around it: a LoRA-wrapped module's
    ``base_layer`` is the one changed, so the adapter's own weights stay as trained.

    Returns:
        The number of modules changed.

    Raises:
        QuantizationError: a module named in the record does not exist in ``model``.
    """
    root = model.get_base_model() if hasattr(model, "get_base_model") else model
    changed = 0
    for name in spec["quantized_modules"]:
        try:
            mod = root.get_submodule(name)
        except AttributeError as e:
            raise QuantizationError(f"quantized module {name!r} is not in the base model") from e
        mod = getattr(mod, "base_layer", mod)
        mod.weight.copy_(nf4_round_trip(mod.weight, spec))
        changed += 1
    return changed
