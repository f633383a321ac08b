"""Training precision: detection off gives fp32 as before; bf16 compute keeps LoRA weights and optimizer state fp32."""
import json

import pytest
import torch
from transformers import TrainerCallback

from domainft import hardware
from domainft.config import TrainParams
from domainft.train import train_adapter

SYSTEM = {"role": "system", "content": "Be brief."}


class _Dtypes(TrainerCallback):
    """Records the dtypes of the base weights, trainable weights and optimizer state at step end."""

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kw):
        named = list(model.named_parameters())
        self.frozen = {p.dtype for n, p in named if not p.requires_grad and "layers" in n}
        self.trainable = {p.dtype for _, p in named if p.requires_grad}
        self.optim = {v.dtype for s in optimizer.state.values() for v in s.values()
                      if torch.is_tensor(v) and v.numel() > 1}


def _train(tiny_model_dir, tmp_path, name):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": [SYSTEM, {"role": "user", "content": f"Fee for plan {i}?"},
                                                     {"role": "assistant", "content": f"The fee is ${3 * i}."}]}) + "\n"
                            for i in range(16)))
    p = TrainParams(max_steps=3, batch_size=4, learning_rate=1e-3, save_steps=100,
                    out_dir=str(tmp_path / name / "adapter"), checkpoint_dir=str(tmp_path / name / "ckpt"))
    cb = _Dtypes()
    m = train_adapter(str(tiny_model_dir), str(data), None, p, plots_csv=str(tmp_path / name / "loss.csv"),
                      callbacks=[cb])
    return m, cb


def test_detection_off_trains_in_fp32_and_bf16_keeps_adapters_fp32(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(hardware.NATIVE_BF16_ENV, "0")
    m32, c32 = _train(tiny_model_dir, tmp_path, "fp32")
    assert m32["precision"] == "float32"
    assert c32.frozen == c32.trainable == c32.optim == {torch.float32}

    monkeypatch.setenv(hardware.NATIVE_BF16_ENV, "1")
    m16, c16 = _train(tiny_model_dir, tmp_path, "bf16")
    assert m16["precision"] == "bfloat16"
    assert c16.frozen == {torch.bfloat16}  # base weights: bf16 matmuls
    assert c16.trainable == {torch.float32}  # LoRA A/B (peft autocast_adapter_dtype)
    assert c16.optim == {torch.float32}  # AdamW moments
    assert m16["train_loss"] == pytest.approx(m32["train_loss"], rel=0.02)
    assert m16["train_loss"] != m32["train_loss"]  # it really computed in bf16
