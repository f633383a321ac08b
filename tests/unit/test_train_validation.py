"""The post-training validation pass: capped by ``train.val_max_samples`` and logged with its size."""
import json
import logging

from domainft.config import TrainParams
from domainft.train import train_adapter


def _write(path, n):
    recs = [{"messages": [{"role": "user", "content": f"Fee for plan {i}?"},
                          {"role": "assistant", "content": f"The fee for plan {i} is ${3 * i}."}]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return str(path)


def test_validation_pass_reads_at_most_val_max_samples(tiny_model_dir, tmp_path, caplog):
    train, val = _write(tmp_path / "train.jsonl", 8), _write(tmp_path / "val.jsonl", 30)
    caplog.set_level(logging.INFO)
    params = TrainParams(max_steps=1, batch_size=4, val_max_samples=5, out_dir=str(tmp_path / "adapter"),
                         checkpoint_dir=str(tmp_path / "ckpt"), save_steps=10)
    m = train_adapter(str(tiny_model_dir), train, val, params, plots_csv=str(tmp_path / "loss.csv"))
    assert m["val_samples"] == 5 and m["val_samples_total"] == 30 and m["val_loss"] > 0
    assert "validation pass: 5 of 30 val samples (train.val_max_samples: 5)" in caplog.text
    full_params = params.model_copy(update={"val_max_samples": 0, "out_dir": str(tmp_path / "adapter2"),
                                            "checkpoint_dir": str(tmp_path / "ckpt2")})
    full = train_adapter(str(tiny_model_dir), train, val, full_params, plots_csv=str(tmp_path / "loss2.csv"))
    assert full["val_samples"] == 30 and full["val_loss"] != m["val_loss"]
