"""Training guardrails: periodic validation, early stopping with the best checkpoint restored, memory check."""
import csv
import json

import pytest

from domainft.config import TrainParams
from domainft.memory import TrainMemoryError, check_fits, estimate_train_memory
from domainft.train import check_memory, train_adapter


def _write(path, n, fee):
    recs = [{"messages": [{"role": "user", "content": f"Fee for plan {i}?"},
                          {"role": "assistant", "content": f"The fee for plan {i} is ${fee(i)}."}]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return str(path)


def test_early_stopping_stops_the_step_after_the_best_and_restores_it(tiny_model_dir, tmp_path):
    # val answers contradict train answers: val loss falls while the format is learnt, then rises
    train = _write(tmp_path / "train.jsonl", 8, lambda i: 3 * i)
    val = _write(tmp_path / "val.jsonl", 6, lambda i: 70 + 11 * i)
    plots = tmp_path / "loss.csv"
    params = TrainParams(max_steps=40, batch_size=4, learning_rate=3e-2, lr_scheduler="constant", warmup_ratio=0,
                         eval_steps=1, early_stopping_patience=1, out_dir=str(tmp_path / "adapter"),
                         checkpoint_dir=str(tmp_path / "ckpt"), group_by_length=False)
    m = train_adapter(str(tiny_model_dir), train, val, params, plots_csv=str(plots))
    rows = list(csv.DictReader(plots.open()))
    curve = {int(r["step"]): float(r["val_loss"]) for r in rows if r["val_loss"]}
    assert len(curve) == m["steps"] == m["val_evaluations"] < 40 and m["stopped_early"]
    best = min(curve, key=curve.get)
    # patience 1: the first validation that does not improve on the best stops training
    assert m["steps"] == best + 1 and m["best_step"] == m["restored_best_step"] == best
    assert all(curve[s] < curve[s - 1] for s in range(2, best + 1)) and curve[best + 1] >= curve[best]
    # the saved adapter is the best step's: the final validation equals the best, not the last step's
    assert m["val_loss"] == pytest.approx(curve[best], abs=1e-5) and m["val_loss"] < curve[m["steps"]]
    assert m["best_val_loss"] == pytest.approx(curve[best])


def test_early_stopping_without_eval_steps_is_refused(tiny_model_dir, tmp_path):
    train = _write(tmp_path / "train.jsonl", 4, lambda i: i)
    params = TrainParams(max_steps=2, early_stopping_patience=2, out_dir=str(tmp_path / "a"),
                         checkpoint_dir=str(tmp_path / "c"))
    with pytest.raises(Exception, match=r"train.early_stopping_patience needs train.eval_steps"):
        train_adapter(str(tiny_model_dir), train, train, params)


def test_memory_estimate_matches_the_formula_and_names_the_setting():
    est = estimate_train_memory(num_params=1000, trainable_params=10, bytes_per_param=4, batch_size=2, seq_len=8,
                                hidden=4, layers=3, vocab=50, gradient_checkpointing=False)
    assert (est.weights, est.trainable_state, est.activations, est.logits) == (4000, 160, 34 * 16 * 4 * 2 * 3, 8 * 16 * 50)
    ckpt = estimate_train_memory(1000, 10, 4, 2, 8, 4, 3, 50, gradient_checkpointing=True)
    assert ckpt.activations == 2 * 16 * 4 * 4 * 3 + 34 * 16 * 4 * 2 < est.activations
    check_fits(est, available=10 * est.total, what="CPU RAM", fraction=0.9, batch_size=2, seq_len=8)
    with pytest.raises(TrainMemoryError, match=r"lower train.batch_size \(2\) or train.max_seq_length"):
        check_fits(est, available=est.total, what="CPU RAM", fraction=0.9, batch_size=2, seq_len=8)
    heavy = estimate_train_memory(10**9, 10, 2, 1, 8, 4, 3, 50, gradient_checkpointing=False)
    with pytest.raises(TrainMemoryError, match=r"train.load_in_4bit"):
        check_fits(heavy, available=2**30, what="GPU memory", fraction=0.9, batch_size=1, seq_len=8)


def test_a_config_that_does_not_fit_is_refused_before_training(tiny_model_dir, tmp_path):
    from domainft.modeling.base import load_model
    import torch

    model, _ = load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32)
    params = TrainParams(batch_size=64, max_seq_length=4096)
    check_memory(model, params, "cpu", torch.float32, False, 100, available=(8 * 2**30, "CPU RAM"))
    # 64 x 4096 tokens x 49152 vocab x 8 bytes of logits alone is 96 GiB
    with pytest.raises(TrainMemoryError, match=r"exceeds train.memory_fraction 0.9 of the 8.00 GiB CPU RAM.*train.batch_size \(64\)"):
        check_memory(model, params, "cpu", torch.float32, False, 4096, available=(8 * 2**30, "CPU RAM"))
