"""``train.compile``: torch.compile each decoder layer for the training steps, with dynamic shapes.

Why per layer and not transformers' ``torch_compile`` (the whole model): padding-free rows change
length every step and the packed attention (domainft.modeling.attention) splits a row by its
``position_ids`` on the host, which breaks the graph; the whole-model compile then recompiles for
new lengths until dynamo's recompile limit. Here the attention function is excluded from
compilation (``torch.compiler.disable``), and one ``torch.compile(cls.forward, dynamic=True)`` per
decoder-layer class serves all its layers, so the graphs (the layer before and after the attention
call, with a variant for the first layer, whose input needs no gradient) are compiled once, whatever
the row length. What it fuses: RMSNorm, rotary embeddings, LoRA's casts, scaling and additions,
SiLU x up, residual additions (forward and backward), computed in fp32 inside each fused kernel and
rounded once.

The first step pays the compilation: tens of seconds on a 2-core CPU with an empty cache, a few
with inductor's on-disk cache warm (``TORCHINDUCTOR_CACHE_DIR``, default ``/tmp/torchinductor_<user>``).
It pays off on long runs only, hence ``auto`` (the default, :func:`choose_compile`): on for bf16 CPU
training of at least :data:`AUTO_MIN_SAMPLES` samples, off otherwise (figures: bench/RESULTS.md, issue 17).

Only steps that need gradients run the compiled code: under ``torch.no_grad()`` (validation,
generation) a layer runs eagerly, so inference never triggers a second compilation. Layers are the
modules whose class is named in the model's ``_no_split_modules`` (transformers' decoder layer
classes); a model without them raises.
"""
from __future__ import annotations

import contextlib
import os
import shutil

import torch


def decoder_layers(model) -> list[torch.nn.Module]:
    """Modules of ``model`` (peft-wrapped or not) whose class name is in some submodule's
    ``_no_split_modules``, outermost first; nested matches inside a match are skipped."""
    names = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or ())
    found, inside = [], set()
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        if type(m).__name__ in names:
            found.append(m)
            inside.add(name)
    return found


# ``auto`` compiles from this many training samples (epochs x rows, or max_steps x batch x accumulation
# x processes). On 2 CPU cores an empty inductor cache costs ~41 s and a compiled step saves ~0.045 s
# per sample (bench/RESULTS.md, issue 17): break-even near 900 samples; 2,048 leaves a margin.
AUTO_MIN_SAMPLES = 2048


def has_compiler() -> bool:
    """Whether a C++ compiler for inductor's CPU code is on PATH: ``$CXX``, g++ or clang++."""
    cxx = os.environ.get("CXX")
    return any(shutil.which(c) for c in ([cxx] if cxx else []) + ["g++", "clang++"])


def choose_compile(setting: bool | str, device: str, bf16: bool, planned_samples: int,
                   gradient_checkpointing: bool, world_size: int = 1) -> tuple[bool, str]:
    """Resolve ``train.compile`` to on/off with the reason (logged by the train stage).

    ``true``/``false`` are taken as given. ``auto`` is on only where the path is measured and
    repays its first step: CPU, bf16 compute (where eager bf16 also drifts from fp32's loss and the
    compiled kernels do not), ``planned_samples >= AUTO_MIN_SAMPLES``, one process, no gradient
    checkpointing, and a C++ compiler present. CUDA, DDP and checkpointing stay eager under ``auto``:
    not measured here (``true`` still compiles them).
    """
    if isinstance(setting, bool):
        return setting, f"train.compile: {str(setting).lower()}"
    off = [(device != "cpu", "not on CPU"), (not bf16, "fp32 compute"),
           (planned_samples < AUTO_MIN_SAMPLES, f"{planned_samples} planned samples < {AUTO_MIN_SAMPLES}"),
           (world_size > 1, f"{world_size} processes"), (gradient_checkpointing, "gradient checkpointing on"),
           (not has_compiler(), "no C++ compiler (g++, clang++ or $CXX)")]
    why = next((reason for hit, reason in off if hit), None)
    if why:
        return False, f"train.compile: auto -> off ({why})"
    return True, f"train.compile: auto -> on (bf16 CPU, {planned_samples} planned samples >= {AUTO_MIN_SAMPLES})"


def check_compiler(device: str) -> None:
    """CPU compilation needs a C++ compiler (inductor generates C++): ``$CXX``, g++ or clang++.

    Raises:
        TrainError: none found.
    """
    from domainft.train import TrainError

    if device != "cpu":
        return
    if not has_compiler():
        raise TrainError("train.compile: true needs a C++ compiler on CPU (g++ or clang++, or $CXX); "
                         "install one or set train.compile: false")


@contextlib.contextmanager
def compiled_layers(model, enabled: bool, device: str = "cpu"):
    """Within the block, each decoder layer of ``model`` runs ``torch.compile(forward, dynamic=True)``
    when gradients are enabled; on exit the layers' own ``forward`` is restored. Yields the number
    of layers compiled (0 when ``enabled`` is false).

    Raises:
        TrainError: no decoder layer found, or no C++ compiler on CPU.
    """
    if not enabled:
        yield 0
        return
    from domainft.train import TrainError

    check_compiler(device)
    layers = decoder_layers(model)
    if not layers:
        raise TrainError(f"train.compile: no decoder layer found in {type(model).__name__} "
                         "(its _no_split_modules names none); set train.compile: false")
    compiled = {}  # one compiled function per layer class, shared by its layers (one graph for all)
    for layer in layers:
        cls = type(layer)
        if cls not in compiled:
            compiled[cls] = torch.compile(cls.forward, dynamic=True)

        def forward(*args, _layer=layer, _fn=compiled[cls], **kwargs):
            if torch.is_grad_enabled():
                return _fn(_layer, *args, **kwargs)
            return type(_layer).forward(_layer, *args, **kwargs)

        layer.forward = forward
    try:
        yield len(layers)
    finally:
        for layer in layers:
            del layer.forward  # the class's forward again
