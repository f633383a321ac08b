"""Peak-memory estimate of a LoRA training step, checked before training starts.

The estimate (bytes) is the sum of
- weights: every parameter at its load precision (``bytes_per_param``; NF4 ~0.5 + fp16 overheads
  are counted as 0.55 byte);
- trainable state: each trainable (LoRA) parameter in fp32 with its gradient and two AdamW moments
  (16 bytes);
- activations: per transformer layer ``34 * B * T * hidden`` bytes at 16-bit (Korthikanti et al.
  2022, "Reducing Activation Recomputation in Large Transformer Models", eq. 2 without the
  attention-score term, which SDPA does not materialise), doubled at fp32; with gradient
  checkpointing only each layer's input (``2 * B * T * hidden`` x precision factor) plus one layer;
- logits: ``B * T * vocab`` fp32 values, twice (the logits and their gradient).

B is ``train.batch_size``, T the longest sample after tokenization (at most
``train.max_seq_length``). It is an upper bound for a padding-free batch, close for a padded one.
"""
from __future__ import annotations

from dataclasses import dataclass

from domainft.errors import DomainftError

GIB = 1024 ** 3


class TrainMemoryError(DomainftError, RuntimeError):
    """The training configuration will not fit in the memory of this machine."""


@dataclass
class MemoryEstimate:
    weights: int
    trainable_state: int
    activations: int
    logits: int

    @property
    def total(self) -> int:
        return self.weights + self.trainable_state + self.activations + self.logits


def estimate_train_memory(num_params: int, trainable_params: int, bytes_per_param: float, batch_size: int,
                          seq_len: int, hidden: int, layers: int, vocab: int,
                          gradient_checkpointing: bool) -> MemoryEstimate:
    """Bytes of one training step's peak (see the module docstring for the formula)."""
    act_bytes = 2.0 if bytes_per_param <= 2 else 4.0  # 16-bit or fp32 activations
    bt = batch_size * seq_len
    per_layer = 34 * bt * hidden * act_bytes / 2
    acts = (2 * bt * hidden * act_bytes * layers + per_layer) if gradient_checkpointing else per_layer * layers
    return MemoryEstimate(weights=int(num_params * bytes_per_param), trainable_state=16 * trainable_params,
                          activations=int(acts), logits=8 * bt * vocab)


def available_memory(device: str) -> tuple[int, str]:
    """(bytes free now, what they are): CUDA free memory of the current device, else CPU MemAvailable."""
    if device == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return int(free), "GPU memory"
    import psutil

    return int(psutil.virtual_memory().available), "CPU RAM"


def check_fits(est: MemoryEstimate, available: int, what: str, fraction: float, batch_size: int,
               seq_len: int) -> None:
    """Refuse a configuration whose estimate exceeds ``fraction`` of ``available`` bytes.

    Raises:
        TrainMemoryError: naming the setting to change: ``train.batch_size`` / ``train.max_seq_length``
            when activations and logits dominate, else ``train.load_in_4bit`` or a smaller base.
    """
    limit = fraction * available
    if est.total <= limit:
        return
    parts = (f"weights {est.weights / GIB:.2f}, LoRA state {est.trainable_state / GIB:.2f}, "
             f"activations {est.activations / GIB:.2f}, logits {est.logits / GIB:.2f} GiB")
    if est.activations + est.logits >= est.weights + est.trainable_state:
        fix = (f"lower train.batch_size ({batch_size}) or train.max_seq_length (longest sample {seq_len} tokens), "
               "or set train.gradient_checkpointing: on")
    else:
        fix = "set train.load_in_4bit: true (CUDA) or use a smaller base.source"
    raise TrainMemoryError(f"train: estimated peak memory {est.total / GIB:.2f} GiB ({parts}) exceeds "
                       f"train.memory_fraction {fraction:g} of the {available / GIB:.2f} GiB {what} available; {fix}")
