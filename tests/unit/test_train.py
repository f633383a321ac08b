"""Training: counts, every trainable parameter changes, EOS learnt, resume equals uninterrupted."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from domainft.config import TrainParams
from domainft.modeling.chat import end_of_turn, encode_prompt
from domainft.train import TrainError, prepare_samples, select_checkpoint, train_adapter

SYSTEM = {"role": "system", "content": "Be brief."}


def _records(n, answer=lambda i: f"The fee for plan {i} is ${3 * i}."):
    return [{"messages": [SYSTEM, {"role": "user", "content": f"Fee for plan {i}?"},
                          {"role": "assistant", "content": answer(i)}]} for i in range(n)]


def _write(path, recs):
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return str(path)


def test_overlong_dropped_or_prompt_trimmed_never_truncated(smollm2_tokenizer):
    long_conv = [SYSTEM] + [m for i in range(6) for m in (
        {"role": "user", "content": f"question number {i} " * 8},
        {"role": "assistant", "content": f"answer number {i} " * 8})]
    recs = [{"messages": long_conv}, {"messages": [SYSTEM, {"role": "user", "content": "hi " * 400},
                                                   {"role": "assistant", "content": "ok then"}]}]
    dropped = prepare_samples(recs, smollm2_tokenizer, max_seq_length=120, overlong="drop")
    assert dropped.rejected["overlong"] == 2 and not dropped.samples
    trimmed = prepare_samples(recs, smollm2_tokenizer, max_seq_length=120, overlong="trim_prompt")
    assert trimmed.trimmed == 1 and trimmed.rejected["overlong"] == 1
    s = trimmed.samples[0]
    assert len(s.input_ids) <= 120
    eot, eot_id = end_of_turn(smollm2_tokenizer)
    assert s.labels[-2] == eot_id or s.labels[-1] == eot_id  # the final answer keeps its EOS
    assert "answer number 5" in smollm2_tokenizer.decode([t for t, l in zip(s.input_ids, s.labels) if l != -100])


def test_sample_without_assistant_turn_is_rejected(smollm2_tokenizer):
    rec = {"messages": [SYSTEM, {"role": "user", "content": "hello?"}]}
    out = prepare_samples([rec], smollm2_tokenizer, 512)
    assert out.rejected["no_trainable_tokens"] == 1 and not out.samples


def _params(tmp_path, **kw):
    base = dict(max_steps=4, batch_size=4, learning_rate=1e-3, save_steps=2,
                out_dir=str(tmp_path / "adapter"), checkpoint_dir=str(tmp_path / "ckpt"))
    base.update(kw)
    return TrainParams(**base)


def test_every_trainable_parameter_changes_and_files_written(tiny_model_dir, tmp_path):
    train = _write(tmp_path / "train.jsonl", _records(16))
    m = train_adapter(str(tiny_model_dir), train, None, _params(tmp_path), plots_csv=str(tmp_path / "loss.csv"))
    assert m["steps"] == 4 and m["train_samples"] == 16 and m["rejected_total"] == 0
    assert m["compile"].startswith("train.compile: auto -> off (") and m["compiled_layers"] == 0  # 16 samples: too few
    assert m["trainable_label_tokens"] > 16 and m["real_tokens"] > 0
    w = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    lora_b = [k for k in w if "lora_B" in k]
    assert len(lora_b) == 2 * 7  # 2 layers x 7 target modules
    assert all(float(w[k].abs().max()) > 0 for k in lora_b)  # lora_B starts at zero: nonzero means updated
    assert (tmp_path / "adapter" / "chat_template.jinja").exists()
    rows = (tmp_path / "loss.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and len(rows) == 5


def test_gradient_checkpointing_with_lora_updates_lora_b(tiny_model_dir, tmp_path):
    train = _write(tmp_path / "train.jsonl", _records(8))
    m = train_adapter(str(tiny_model_dir), train, None, _params(tmp_path, max_steps=2, gradient_checkpointing="on"),
                      plots_csv=str(tmp_path / "loss.csv"))
    assert m["gradient_checkpointing"] is True
    w = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert all(float(w[k].abs().max()) > 0 for k in w if "lora_B" in k)


def test_compile_trains_the_same_adapter_as_eager(tiny_model_dir, tmp_path):
    """train.compile: both layers compiled, and in fp32 the loss curve and the saved LoRA weights
    equal the eager run's to float rounding (the packed attention stays eager inside)."""
    train = _write(tmp_path / "train.jsonl", _records(8))
    runs = {}
    for on in (False, True):
        d = tmp_path / str(on)
        m = train_adapter(str(tiny_model_dir), train, None, _params(d, max_steps=2, precision="fp32", compile=on),
                          plots_csv=str(d / "loss.csv"))
        runs[on] = (m, load_file(d / "adapter" / "adapter_model.safetensors"))
    (eager, w_eager), (comp, w_comp) = runs[False], runs[True]
    assert eager["compiled_layers"] == 0 and comp["compiled_layers"] == 2
    assert (eager["compile"], comp["compile"]) == ("train.compile: false", "train.compile: true")
    assert abs(comp["train_loss"] - eager["train_loss"]) <= 1e-5 * eager["train_loss"]
    assert w_comp.keys() == w_eager.keys()
    assert max(float((w_comp[k] - w_eager[k]).abs().max()) for k in w_eager) < 1e-5


def test_4bit_on_cpu_is_a_clear_error(tiny_model_dir, tmp_path):
    train = _write(tmp_path / "train.jsonl", _records(4))
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(TrainError, match="load_in_4bit needs CUDA"):
        train_adapter(str(tiny_model_dir), train, None, _params(tmp_path, load_in_4bit=True))


def test_trained_model_stops_at_end_of_turn(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recs = _records(8, answer=lambda i: "Yes.")
    train = _write(tmp_path / "train.jsonl", recs)
    train_adapter(str(tiny_model_dir), train, None,
                  _params(tmp_path, max_steps=60, learning_rate=1e-2, lr_scheduler="constant", warmup_ratio=0.0),
                  plots_csv=str(tmp_path / "loss.csv"))
    tok = AutoTokenizer.from_pretrained(tmp_path / "adapter")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter").eval()
    _, eot_id = end_of_turn(tok)
    ids = torch.tensor([encode_prompt(tok, recs[0]["messages"][:2])])
    out = model.generate(input_ids=ids, max_new_tokens=20, do_sample=False)[0, ids.shape[1]:].tolist()
    assert out[-1] == eot_id and len(out) < 20
    assert tok.decode(out, skip_special_tokens=True) == "Yes."


class _StopAt:
    """Simulates a killed run: stop training (no final save) right after step ``n``."""

    def __init__(self, n):
        from transformers import TrainerCallback

        outer = n

        class CB(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step == outer:
                    raise KeyboardInterrupt

        self.cb = CB()


def _csv_rows(path):
    """Loss CSV rows without tokens_per_s (a timing)."""
    lines = path.read_text().splitlines()
    assert lines[0] == "step,loss,learning_rate,grad_norm,tokens_per_s"
    return [line.rsplit(",", 1)[0] for line in lines[1:]]


def test_resume_equals_uninterrupted(tiny_model_dir, tmp_path):
    train = _write(tmp_path / "train.jsonl", _records(24))
    a = tmp_path / "a"
    ma = train_adapter(str(tiny_model_dir), train, None, _params(a, max_steps=6, save_steps=2),
                       plots_csv=str(a / "loss.csv"))
    assert ma["resumed_from"] is None and ma["resumed_from_step"] == 0
    assert not (a / "ckpt").exists()  # a finished run leaves nothing to "resume"
    b = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        train_adapter(str(tiny_model_dir), train, None, _params(b, max_steps=6, save_steps=2),
                      plots_csv=str(b / "loss.csv"), callbacks=[_StopAt(5).cb])
    assert not (b / "adapter").exists()  # never half-written
    # killed while saving checkpoint-6: model weights written, no completion stamp
    half = b / "ckpt" / "checkpoint-6"
    shutil.copytree(b / "ckpt" / "checkpoint-4", half)
    (half / "domainft_checkpoint.json").unlink()
    (half / "trainer_state.json").unlink()
    mb = train_adapter(str(tiny_model_dir), train, None, _params(b, max_steps=6, save_steps=2),
                       plots_csv=str(b / "loss.csv"))
    assert mb["resumed_from"].endswith("checkpoint-4") and mb["resumed_from_step"] == 4
    wa = load_file(a / "adapter" / "adapter_model.safetensors")
    wb = load_file(b / "adapter" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-5
    # the resumed run reports the whole run: 6 loss rows, the same losses and the same mean loss
    assert len(_csv_rows(b / "loss.csv")) == 6
    assert _csv_rows(b / "loss.csv") == _csv_rows(a / "loss.csv")
    for key in ("steps", "train_loss", "final_step_loss", "real_tokens", "trainable_label_tokens"):
        assert mb[key] == pytest.approx(ma[key], rel=1e-6, abs=1e-9), key


def test_checkpoint_of_another_base_or_a_finished_run_is_never_resumed(tiny_model_dir, tmp_path):
    train = _write(tmp_path / "train.jsonl", _records(24))
    with pytest.raises(KeyboardInterrupt):
        train_adapter(str(tiny_model_dir), train, None, _params(tmp_path, max_steps=6, save_steps=2),
                      callbacks=[_StopAt(5).cb], plots_csv=str(tmp_path / "loss.csv"))
    assert (tmp_path / "ckpt" / "checkpoint-4" / "domainft_checkpoint.json").exists()
    # same config.json and tokenizer, other weights: the second base resumed the first's checkpoint
    other = tmp_path / "other_base"
    shutil.copytree(tiny_model_dir, other)
    w = load_file(other / "model.safetensors")
    save_file({k: v + 0.01 for k, v in w.items()}, str(other / "model.safetensors"))
    m = train_adapter(str(other), train, None, _params(tmp_path, max_steps=6, save_steps=2),
                      plots_csv=str(tmp_path / "loss.csv"))
    assert m["resumed_from"] is None and m["steps"] == 6
    assert not (tmp_path / "ckpt").exists()
    # killed after the final checkpoint, before the adapter was written: that step is not "resumed"
    with pytest.raises(KeyboardInterrupt):
        train_adapter(str(other), train, None, _params(tmp_path, max_steps=6, save_steps=2),
                      callbacks=[_StopAt(5).cb], plots_csv=str(tmp_path / "loss.csv"))
    ckpt = tmp_path / "ckpt"
    final = ckpt / "checkpoint-6"
    shutil.copytree(ckpt / "checkpoint-4", final)
    stamp = json.loads((final / "domainft_checkpoint.json").read_text())
    assert stamp["step"] == 4 and stamp["max_steps"] == 6
    (final / "domainft_checkpoint.json").write_text(json.dumps({**stamp, "step": 6}))
    assert select_checkpoint(ckpt, stamp["fingerprint"], remove=False).endswith("checkpoint-4")
    assert select_checkpoint(ckpt, "another run", remove=False) is None
    m = train_adapter(str(other), train, None, _params(tmp_path, max_steps=6, save_steps=2),
                      plots_csv=str(tmp_path / "loss.csv"))
    assert m["resumed_from_step"] == 4 and m["steps"] == 6


def test_fingerprint_covers_code_base_weights_template_data_and_params(tiny_model_dir, tmp_path):
    from domainft.hashing import PACKAGE_DIR
    from domainft.train import train_fingerprint

    train = _write(tmp_path / "train.jsonl", _records(8))
    val = _write(tmp_path / "val.jsonl", _records(3))
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    pkg = tmp_path / "pkg" / "domainft"
    shutil.copytree(PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    p = _params(tmp_path)

    def fp(**kw):
        args = dict(base_dir=base, train_path=train, val_path=val, params=p, seed=42, package_dir=pkg) | kw
        return train_fingerprint(**args)

    ref = fp()
    assert fp() == ref and len(ref) == 32
    assert fp(seed=1) != ref and fp(params=_params(tmp_path, learning_rate=2e-3)) != ref
    assert fp(params=_params(tmp_path, out_dir="elsewhere", checkpoint_dir="x")) == ref  # where, not what
    assert fp(world_size=2) != ref
    (tmp_path / "val.jsonl").write_text((tmp_path / "val.jsonl").read_text() + "\n")
    assert fp() != ref
    ref = fp()
    for rel in ("chat_template.jinja", "tokenizer.json", "model.safetensors"):
        f = base / rel
        f.write_bytes(f.read_bytes() + b" ")
        assert fp() != ref, rel
        ref = fp()
    for rel in ("train.py", "modeling/base.py", "tracking.py", "stages/train.py"):  # the train path's code
        f = pkg / rel
        f.write_text(f.read_text() + "\n# a comment\n")
        assert fp() != ref, rel
        ref = fp()
    f = pkg / "evaluation" / "metrics.py"
    f.write_text(f.read_text() + "\n# a comment\n")
    assert fp() == ref  # not on the train path


def test_padding_free_batches_do_not_attend_across_samples(tiny_model_dir, smollm2_tokenizer):
    """TRL's padding-free collator + our model settings: packed logits equal per-sample logits."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    samples = prepare_samples(_records(3), smollm2_tokenizer, 512).samples
    batch = DataCollatorForLanguageModeling(pad_token_id=smollm2_tokenizer.pad_token_id, padding_free=True)(
        [{"input_ids": s.input_ids, "labels": s.labels} for s in samples])
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch  # one row, no padding
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        start = 0
        for s in samples:
            alone = model(input_ids=torch.tensor([s.input_ids])).logits[0]
            assert float((packed[start:start + len(s.input_ids)] - alone).abs().max()) < 1e-4
            start += len(s.input_ids)
        # the same packed row with a KV cache enabled is NOT isolated: the guard above matters
        leaky = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=True).logits[0]
        n0 = len(samples[0].input_ids)
        assert float((leaky[n0:] - packed[n0:]).abs().max()) > 1e-2


def test_cpu_fused_lm_head_scores_label_positions_only_with_the_plain_cross_entropy_loss(tiny_model_dir,
                                                                                       smollm2_tokenizer):
    """After domainft.modeling.lm_head.install, TRL's fused head on CPU gathers label positions (so
    the vocabulary projection sees only them) and its loss equals cross-entropy over full logits."""
    import torch.nn.functional as F
    import trl.trainer.utils as trl_utils
    from trl.trainer.utils import add_fused_lm_head

    from domainft.modeling.base import load_model
    from domainft.modeling.chat import tokenize_conversation
    from domainft.modeling.lm_head import install

    model, tok = load_model(tiny_model_dir, device="cpu")
    eot = end_of_turn(tok)[0]
    ids, labels = [], []
    for rec in _records(3):
        s = tokenize_conversation(tok, rec["messages"], eot)
        ids += s.input_ids
        labels += s.labels
    x, y = torch.tensor([ids]), torch.tensor([labels])
    n_labels = int((y[:, 1:] != -100).sum())
    with torch.no_grad():
        logits = model(x).logits[0, :-1]
        expected = F.cross_entropy(logits, y[0, 1:], ignore_index=-100)
    assert install() and install()  # idempotent
    assert trl_utils._use_triton(torch.device("cpu")) is True
    seen = []
    head = model.get_output_embeddings()
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    orig = trl_utils._ChunkedLogProbFunction.apply

    def spy(hidden, *a, **kw):
        seen.append(hidden.shape[0])
        return orig(hidden, *a, **kw)

    trl_utils._ChunkedLogProbFunction.apply = spy
    try:
        with torch.no_grad():
            out = model(x, labels=y, fused_lm_head=True)
    finally:
        trl_utils._ChunkedLogProbFunction.apply = orig
    assert seen == [n_labels] and n_labels < len(ids) - 1  # only the labelled positions were projected
    assert head is model.get_output_embeddings()
    loss = -out.log_probs.sum() / out.label_mask.sum()
    assert int(out.label_mask.sum()) == n_labels
    assert abs(float(loss) - float(expected)) < 1e-4


def test_resumed_run_mlflow_loss_history_equals_an_uninterrupted_runs(tiny_model_dir, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("resume-history")  # not the experiment id an earlier test left active in this process
    train = _write(tmp_path / "train.jsonl", _records(24))
    kw = dict(plots_csv=str(tmp_path / "loss.csv"), mlflow_run=True)
    with mlflow.start_run() as ra:
        train_adapter(str(tiny_model_dir), train, None, _params(tmp_path / "a", max_steps=6, save_steps=2), **kw)
    with pytest.raises(KeyboardInterrupt), mlflow.start_run():
        train_adapter(str(tiny_model_dir), train, None, _params(tmp_path / "b", max_steps=6, save_steps=2),
                      callbacks=[_StopAt(5).cb], **kw)
    with mlflow.start_run() as rb:
        m = train_adapter(str(tiny_model_dir), train, None, _params(tmp_path / "b", max_steps=6, save_steps=2), **kw)
    assert m["resumed_from_step"] == 4
    client = mlflow.MlflowClient(uri)
    for key in ("loss", "learning_rate", "grad_norm"):
        ha = sorted((x.step, x.value) for x in client.get_metric_history(ra.info.run_id, key))
        hb = sorted((x.step, x.value) for x in client.get_metric_history(rb.info.run_id, key))
        assert [s for s, _ in hb] == [1, 2, 3, 4, 5, 6], key
        assert [s for s, _ in ha] == [s for s, _ in hb] and max(abs(x - y) for (_, x), (_, y) in zip(ha, hb)) < 1e-6


def test_checkpointing_is_switched_on_by_the_name_the_installed_transformers_reads():
    import dataclasses
    import warnings

    from trl import SFTConfig

    from domainft.train import checkpointing_arg

    @dataclasses.dataclass
    class Old:  # transformers before the rename
        gradient_checkpointing: bool = False

    assert checkpointing_arg(Old, True) == {"gradient_checkpointing": True}
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the deprecated alias warns
        cfg = SFTConfig(output_dir="unused", use_cpu=True, report_to="none", **checkpointing_arg(SFTConfig, True))
    assert cfg.gradient_checkpointing is True
    assert SFTConfig(output_dir="unused", use_cpu=True, report_to="none",
                     **checkpointing_arg(SFTConfig, False)).gradient_checkpointing is False
