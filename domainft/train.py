"""LoRA / QLoRA supervised fine-tuning with peft + TRL's SFTTrainer, assistant-only loss.

Samples are tokenized here (not by TRL) with :func:`domainft.modeling.chat.tokenize_conversation`
so the label policy is the pipeline's own: assistant content + end-of-turn tokens only, never
right-truncated through an answer, and a sample left with no trainable token is rejected and
counted. TRL receives ``input_ids`` + ``labels`` and uses the labels as they are.

Notation: B batch size, T sequence length (tokens).
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from domainft.atomic import read_jsonl
from domainft.config import TrainParams
from domainft.errors import DomainftError
from domainft.modeling.base import META_FILE, load_model, pick_device, pick_dtype
from domainft.modeling.chat import CHATML_SPECIAL_TOKENS, TokenizedSample, end_of_turn, fit_source, tokenize_conversation
from domainft.quantization import describe_4bit, write_spec

log = logging.getLogger(__name__)


class TrainError(DomainftError, RuntimeError):
    """Training cannot start (no usable samples, 4-bit asked for without CUDA, ...)."""


@dataclass
class Prepared:
    samples: list[TokenizedSample]
    rejected: Counter = field(default_factory=Counter)
    trimmed: int = 0


def _trim_prompt(messages: list[dict]) -> list[dict] | None:
    """Drop the oldest user/assistant exchange after the system prompt; None when nothing is left to drop."""
    head = 1 if messages and messages[0]["role"] == "system" else 0
    body = messages[head:]
    # keep at least the final user+assistant exchange
    if len(body) <= 2:
        return None
    cut = 1
    while cut < len(body) and body[cut]["role"] != "user":
        cut += 1
    if cut >= len(body) - 1:
        return None
    return messages[:head] + body[cut:]


def prepare_samples(records: list[dict], tokenizer, max_seq_length: int, overlong: str = "drop",
                    last_only: bool = False, source_cut: str = "end") -> Prepared:
    """Tokenize records with assistant-only labels; drop or prompt-trim overlong ones.

    Args:
        records: canonical records (``messages`` ending with an assistant turn).
        max_seq_length: maximum tokens T per sample; never exceeded by right truncation.
        overlong: ``drop``, ``trim_prompt`` (drop oldest exchanges, then drop if still too long) or
            ``trim_source`` (cut the longest user turn by tokens, :func:`~domainft.modeling.chat.fit_source`,
            at ``source_cut``; the answer and its end-of-turn are never cut).

    Returns:
        Prepared samples and a Counter of rejection reasons (``overlong``, ``no_trainable_tokens``).
    """
    eot, _ = end_of_turn(tokenizer)
    out = Prepared([])
    for rec in records:
        messages = rec["messages"]
        sample = tokenize_conversation(tokenizer, messages, eot, last_only)
        trimmed = False
        while len(sample.input_ids) > max_seq_length and overlong == "trim_prompt":
            messages = _trim_prompt(messages)
            if messages is None:
                break
            trimmed = True
            sample = tokenize_conversation(tokenizer, messages, eot, last_only)
        if len(sample.input_ids) > max_seq_length and overlong == "trim_source":
            fitted = fit_source(tokenizer, messages, max_seq_length, source_cut)
            if fitted is not None:
                messages, trimmed = fitted[0], True
                sample = tokenize_conversation(tokenizer, messages, eot, last_only)
        if len(sample.input_ids) > max_seq_length:
            out.rejected["overlong"] += 1
        elif sample.num_trainable == 0:
            out.rejected["no_trainable_tokens"] += 1
        else:
            out.trimmed += trimmed
            out.samples.append(sample)
    return out


# Libraries whose version changes what a training step computes.
FINGERPRINT_LIBRARIES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes")
CHECKPOINT_STAMP = "domainft_checkpoint.json"  # written last into a checkpoint: it is complete


def train_fingerprint(base_dir: str | Path, train_path: str | Path, val_path: str | Path | None,
                      params: TrainParams, seed: int, world_size: int = 1, package_dir: Path | None = None) -> str:
    """Identity of a training run, for resuming: checkpoints of another fingerprint are never used.

    Covers the code of the train path (every domainft file ``domainft.stages.train`` runs, see
    :func:`domainft.hashing.modules_fingerprint`), the versions of :data:`FINGERPRINT_LIBRARIES`,
    every file of ``base_dir`` (weights, tokenizer, chat template, configs), the train and val
    files, the ``train`` params except the two output folders, the seed and the number of
    processes. Large files are hashed once per (size, mtime, inode) through the cache in ``.dvc/tmp``.

    Args:
        package_dir: the domainft folder whose code is hashed (default: the imported one).

    Returns:
        32 hex characters.
    """
    from importlib import metadata

    from domainft.hashing import (PACKAGE_DIR, file_sha256, load_hash_cache, modules_fingerprint, save_hash_cache,
                                  tree_sha256)

    def version(lib):
        try:
            return metadata.version(lib)
        except metadata.PackageNotFoundError:
            return None

    cache = load_hash_cache()
    payload = {
        "code": modules_fingerprint(["domainft.stages.train"], package_dir or PACKAGE_DIR),
        "libraries": {lib: version(lib) for lib in FINGERPRINT_LIBRARIES},
        "base": tree_sha256(base_dir, cache),
        "train": file_sha256(train_path, cache),
        "val": file_sha256(val_path, cache) if val_path and Path(val_path).exists() else None,
        "params": params.model_dump(mode="json", exclude={"out_dir", "checkpoint_dir"}),
        "seed": seed, "world_size": world_size,
    }
    save_hash_cache(cache)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def checkpointing_arg(config_cls, on: bool) -> dict[str, bool]:
    """The keyword that switches activation checkpointing on for ``config_cls`` (a
    TrainingArguments dataclass): ``activation_checkpointing`` where it exists (transformers >= 5.2x,
    where ``gradient_checkpointing`` is a deprecated alias that warns), else ``gradient_checkpointing``."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_cls)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": on}


def choose_gradient_checkpointing(setting: str, device: str, num_params: int) -> bool:
    """``auto``: off on CPU (RAM is ample for LoRA on small models and recompute costs ~30% time);
    on CUDA, on for models over 1B parameters."""
    if setting != "auto":
        return setting == "on"
    return device == "cuda" and num_params > 1_000_000_000


def _load_for_training(base_dir: str, params: TrainParams, device: str):
    if params.load_in_4bit:
        if device != "cuda":
            raise TrainError("train.load_in_4bit needs CUDA (bitsandbytes NF4); set it to false on CPU")
        from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
        from peft import prepare_model_for_kbit_training

        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                 bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(base_dir, quantization_config=bnb,
                                                     dtype=torch.bfloat16, use_safetensors=True)
        quant_spec = describe_4bit(model)  # module names before peft wraps them
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        _set_attention(model, params)
        return model, AutoTokenizer.from_pretrained(base_dir), quant_spec
    model, tok = load_model(base_dir, device=device, dtype=pick_dtype(params.precision, device))
    model.config.use_cache = False  # a KV cache would disable packed-sequence masking
    _set_attention(model, params)
    model.train()
    return model, tok, None


def _set_attention(model, params: TrainParams) -> None:
    """``train.attention: packed`` with ``padding_free``: per-sample attention of packed rows."""
    if params.padding_free and params.attention == "packed":
        from domainft.modeling.attention import use_packed_attention

        if use_packed_attention(model):
            log.info("train: packed rows attend per sample (%s)", model.config._attn_implementation)


LOSS_COLUMNS = ["step", "loss", "learning_rate", "grad_norm", "tokens_per_s"]  # + val_loss with train.eval_steps


class _LossLog:
    """TrainerCallback: per-step loss / lr / grad norm / tokens-per-second to CSV (dvc plots) and MLflow.

    Each row is also stored in ``trainer.state.log_history`` (``tokens_per_s`` added to the entry the
    Trainer just appended), which checkpoints save and a resumed run restores: the CSV and the
    MLflow history of a resumed run are written from it and equal an uninterrupted run's. The
    callback also stamps each checkpoint complete (:data:`CHECKPOINT_STAMP`, written last, atomically).
    """

    def __init__(self, csv_path: Path, mlflow_run: bool, fingerprint: str):
        from transformers import TrainerCallback

        outer = self

        class CB(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                outer.t0, outer.tokens0 = time.time(), state.num_input_tokens_seen

            def on_log(self, args, state, control, logs=None, **kw):
                if logs and "eval_loss" in logs and outer.mlflow_run and state.is_world_process_zero:
                    import mlflow

                    mlflow.log_metric("val_loss", float(logs["eval_loss"]), step=state.global_step)
                if not logs or "loss" not in logs:
                    return
                secs = max(time.time() - outer.t0, 1e-9)
                entry = state.log_history[-1] if state.log_history else {}
                if entry.get("loss") == logs["loss"] and entry.get("step") == state.global_step:
                    entry["tokens_per_s"] = (state.num_input_tokens_seen - outer.tokens0) / secs
                    row = _row(entry)
                    if outer.mlflow_run and state.is_world_process_zero:
                        import mlflow

                        mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "step" and v is not None},
                                           step=state.global_step)

            def on_save(self, args, state, control, **kw):
                if state.is_world_process_zero:
                    from domainft.atomic import write_text_atomic

                    ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                    write_text_atomic(ckpt / CHECKPOINT_STAMP, json.dumps(
                        {"fingerprint": outer.fingerprint, "step": state.global_step, "max_steps": state.max_steps}))

        self.csv_path, self.mlflow_run, self.fingerprint, self.callback = csv_path, mlflow_run, fingerprint, CB()

    @staticmethod
    def rows(state) -> list[dict]:
        """One row per logged training step, from the Trainer's (restored) log history; ``val_loss``
        is the periodic validation loss at that step (a column only with ``train.eval_steps``)."""
        val = val_curve(state)
        return [_row(e) | ({"val_loss": val.get(e["step"])} if val else {})
                for e in state.log_history if "loss" in e and "step" in e]

    def write(self, state) -> None:
        from domainft.atomic import atomic_file

        with atomic_file(self.csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LOSS_COLUMNS + (["val_loss"] if val_curve(state) else []))
            w.writeheader()
            w.writerows(self.rows(state))


def _row(entry: dict) -> dict:
    return {k: entry.get(k) for k in LOSS_COLUMNS}


def val_curve(state) -> dict[int, float]:
    """{optimizer step: validation loss} of the periodic validations in the Trainer's log history."""
    return {int(e["step"]): float(e["eval_loss"]) for e in state.log_history if "eval_loss" in e and "step" in e}


def mean_train_loss(rows: list[dict]) -> float | None:
    """Mean loss per optimizer step over the logged steps: each logged loss (the mean of the steps
    since the previous log) weighted by that number of steps. With ``logging_steps: 1`` this is
    the Trainer's ``training_loss`` of an uninterrupted run; unlike it, also after a resume."""
    total, prev = 0.0, 0
    for r in rows:
        total += r["loss"] * (r["step"] - prev)
        prev = r["step"]
    return total / prev if prev else None


def select_checkpoint(ckpt_dir: Path, fingerprint: str, remove: bool = True) -> str | None:
    """The newest complete checkpoint of this run (``fingerprint``) that is not its final step, or None.

    Skipped, with a warning, and removed when ``remove`` (rank 0): checkpoints without a
    :data:`CHECKPOINT_STAMP` (killed while saving) or with an unreadable one; checkpoints of another
    fingerprint (other code, base, data or params); and the final checkpoint of a finished run
    (resuming it would train nothing and report the metrics of zero steps).
    """
    if not ckpt_dir.is_dir():
        return None
    ckpts = sorted((p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    chosen, drop = None, []
    for p in ckpts:
        try:
            stamp = json.loads((p / CHECKPOINT_STAMP).read_text())
            fp, step, max_steps = stamp["fingerprint"], int(stamp["step"]), int(stamp["max_steps"])
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("train: skipping incomplete checkpoint %s (no valid %s: interrupted while saving)",
                        p, CHECKPOINT_STAMP)
            drop.append(p)
            continue
        if fp != fingerprint:
            log.info("train: not resuming %s: written by another run (fingerprint %s, this run %s)", p, fp, fingerprint)
            drop.append(p)
        elif step >= max_steps > 0:
            log.info("train: not resuming %s: the final step of a finished run", p)
            drop.append(p)
        elif chosen is None:
            chosen = p
    if remove:
        for p in drop:
            shutil.rmtree(p, ignore_errors=True)
        (ckpt_dir / "fingerprint.txt").unlink(missing_ok=True)  # the stamp file of earlier versions
    return str(chosen) if chosen else None


def _sort_target_modules(config_path: Path) -> None:
    """peft stores target_modules from a set (random order per process); sort them so identical
    training yields a byte-identical adapter folder and an unchanged DVC hash."""
    cfg = json.loads(config_path.read_text())
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
        config_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def template_token_ids(base_dir: str | Path, tokenizer) -> list[int]:
    """Ids of the ChatML tokens whose embedding rows must be trained, or [] when none.

    Non-empty only when the base stage installed the ChatML template itself
    (``chat_template_added`` in models/base/domainft_model.json): the base model then never saw
    ``<|im_start|>``/``<|im_end|>`` (their rows are new: ``<|im_end|>`` copied from ``<eos>`` by
    :func:`domainft.modeling.chat.init_template_rows`, ``<|im_start|>`` the mean row), and LoRA on the
    attention/MLP projections cannot move them: on the legal scenario's Gemma-3-270M with mean rows,
    after LoRA alone, P(end of turn | a complete reference answer) stayed ~0, rank ~131k of 262k; with
    the copied row and these rows trained it is 0.15-0.71, rank 0-1 (bench/RESULTS.md).
    """
    meta = Path(base_dir) / META_FILE
    if not meta.exists() or not json.loads(meta.read_text()).get("chat_template_added"):
        return []
    ids = tokenizer.convert_tokens_to_ids(list(CHATML_SPECIAL_TOKENS))
    return sorted({int(i) for i in ids if i is not None and i != tokenizer.unk_token_id})


def _full_logits_trainer(sft_trainer_cls):
    """SFTTrainer whose loss goes through the model's own LM head (full logits).

    TRL's fused LM head reads ``lm_head.weight`` directly; with peft's trainable tokens the head
    is a ``TrainableTokensWrapper`` whose trained rows live in a delta that only its forward
    applies, so the fused head would miss them (and fails on the wrapper's missing ``bias``).
    transformers' ``Trainer.compute_loss`` calls the model with the labels instead: the same
    shifted cross-entropy over label positions, normalised by ``num_items_in_batch``, at the cost
    of materialising (tokens, vocabulary) logits. Used only when template tokens are trained.
    """
    from transformers import Trainer

    class FullLogitsSFTTrainer(sft_trainer_cls):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs["use_cache"] = False
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return FullLogitsSFTTrainer


def _log_rows_to_mlflow(rows: list[dict]) -> None:
    """Log loss-curve rows to the active MLflow run (batches of 1000, MLflow's limit per call)."""
    import mlflow
    from mlflow.entities import Metric

    ms = [Metric(k, float(v), int(time.time() * 1000), int(r["step"]))
          for r in rows for k, v in r.items() if k != "step" and v is not None]
    client, run_id = mlflow.MlflowClient(), mlflow.active_run().info.run_id
    for i in range(0, len(ms), 1000):
        client.log_batch(run_id, metrics=ms[i:i + 1000])


def validation_args(params: TrainParams, has_val: bool) -> dict:
    """Trainer arguments for periodic validation and early stopping.

    ``train.eval_steps`` N > 0 (and a val sample): validation loss every N optimizer steps.
    ``train.early_stopping_patience`` > 0: checkpoints at every validation, and the checkpoint of
    the lowest validation loss is loaded back when training stops (transformers'
    ``load_best_model_at_end``; with ``save_total_limit`` it is never deleted).
    """
    if not (params.eval_steps and has_val):
        return {"eval_strategy": "no", "save_steps": params.save_steps}
    args = {"eval_strategy": "steps", "eval_steps": params.eval_steps, "save_steps": params.save_steps}
    if params.early_stopping_patience:
        args |= {"save_steps": params.eval_steps, "load_best_model_at_end": True,
                 "metric_for_best_model": "eval_loss", "greater_is_better": False}
    return args


def check_memory(model, params: TrainParams, device: str, dtype, grad_ckpt: bool, seq_len: int,
                 available: tuple[int, str] | None = None) -> None:
    """Estimate a training step's peak memory and refuse a configuration that will not fit.

    Args:
        model: the model as loaded for training (before peft wraps it).
        seq_len: longest training sample in tokens (T).
        available: (bytes, description); default: what :func:`domainft.memory.available_memory` reads.

    Raises:
        TrainMemoryError: the estimate exceeds ``train.memory_fraction`` of the available memory,
            naming the setting to change.
    """
    from domainft.memory import available_memory, check_fits, estimate_train_memory

    cfg = model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    n = sum(p.numel() for p in model.parameters())
    per_param = 0.55 if params.load_in_4bit else torch.finfo(dtype).bits / 8
    lora_modules = len(params.lora.target_modules) * cfg.num_hidden_layers
    trainable = lora_modules * params.lora.r * 2 * cfg.hidden_size  # r x (d_in + d_out), d ~ hidden
    est = estimate_train_memory(n, trainable, per_param, params.batch_size, min(seq_len, params.max_seq_length),
                                cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, grad_ckpt)
    free, what = available or available_memory(device)
    log.info("train: estimated peak memory %.2f GiB of %.2f GiB %s free", est.total / 2**30, free / 2**30, what)
    check_fits(est, free, what, params.memory_fraction, params.batch_size, seq_len)


def train_adapter(base_dir: str, train_path: str, val_path: str | None, params: TrainParams,
                  seed: int = 42, plots_csv: str = "metrics/plots/train_loss.csv",
                  mlflow_run: bool = False, callbacks: list | None = None) -> dict:
    """Train a LoRA adapter on the train split and save it (with tokenizer + chat template).

    Resumes from the newest complete checkpoint in ``params.checkpoint_dir`` of the same run
    (:func:`train_fingerprint`: code, libraries, base folder, train/val data, params, seed; see
    :func:`select_checkpoint`); the loss curve, ``train_loss`` and the MLflow history then equal an
    uninterrupted run's. The adapter is written to a temporary folder and renamed, so
    ``params.out_dir`` is never half-written; the checkpoints are removed once it is.

    Args:
        base_dir: plain HF model folder (models/base).
        train_path, val_path: canonical-record JSONL splits; val may be missing or empty.
        params: the ``train`` params section.
        plots_csv: per-step loss curve for ``dvc plots``.
        mlflow_run: log per-step metrics to the active MLflow run.
        callbacks: extra ``transformers.TrainerCallback`` objects.

    Returns:
        Metrics: sample counts and rejections, trainable tokens, steps, final and mean train loss,
        val loss, runtime (s), real tokens/s, trainable parameter count, device, precision,
        ``resumed_from`` (checkpoint path or None), ``resumed_from_step`` (0: not resumed), ``fingerprint``.

    Raises:
        TrainError: no usable sample, or 4-bit requested without CUDA.
    """
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from domainft.hardware import apply_threads
    from domainft.modeling.lm_head import install as install_cpu_lm_head

    torch.manual_seed(seed)
    apply_threads(params.torch_threads)
    device = pick_device()
    install_cpu_lm_head()
    model, tok, quant_spec = _load_for_training(base_dir, params, device)
    last_only = params.loss_on == "last_assistant"
    train = prepare_samples(read_jsonl(train_path), tok, params.max_seq_length, params.overlong, last_only, params.source_cut)
    if not train.samples:
        raise TrainError(f"no usable training sample in {train_path}: rejected {dict(train.rejected)}")
    val = prepare_samples(read_jsonl(val_path), tok, params.max_seq_length, params.overlong, last_only, params.source_cut) \
        if val_path and Path(val_path).exists() else Prepared([])
    val_total = len(val.samples)
    if params.val_max_samples and val_total > params.val_max_samples:  # the file's first N: same every run
        val = Prepared(val.samples[:params.val_max_samples], val.rejected, val.trimmed)

    def to_ds(p: Prepared):
        return Dataset.from_list([{"input_ids": s.input_ids, "labels": s.labels} for s in p.samples])

    grad_ckpt = choose_gradient_checkpointing(params.gradient_checkpointing, device,
                                              sum(p.numel() for p in model.parameters()))
    dtype = pick_dtype(params.precision, device)
    if params.memory_fraction > 0:
        check_memory(model, params, device, dtype, grad_ckpt, max(len(s.input_ids) for s in train.samples))
    if params.early_stopping_patience and not (params.eval_steps and val.samples):
        raise TrainError("train.early_stopping_patience needs train.eval_steps > 0 and a non-empty val split")
    ckpt_dir = Path(params.checkpoint_dir)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    fp = train_fingerprint(base_dir, train_path, val_path, params, seed, world_size)
    resume = select_checkpoint(ckpt_dir, fp, remove=int(os.environ.get("RANK", "0")) == 0)
    if resume:
        log.info("train: resuming from %s (fingerprint %s)", resume, fp)
    cfg = SFTConfig(
        output_dir=str(ckpt_dir), per_device_train_batch_size=params.batch_size,
        per_device_eval_batch_size=params.batch_size, gradient_accumulation_steps=params.grad_accum,
        num_train_epochs=params.epochs, max_steps=params.max_steps, learning_rate=params.learning_rate,
        lr_scheduler_type=params.lr_scheduler, warmup_steps=params.warmup_ratio,
        weight_decay=params.weight_decay, logging_steps=params.logging_steps,
        save_strategy="steps", save_total_limit=2, report_to="none", seed=seed, data_seed=seed,
        **validation_args(params, bool(val.samples)),
        **checkpointing_arg(SFTConfig, grad_ckpt), bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16,
        use_cpu=device == "cpu", dataloader_num_workers=0, max_length=None,
        train_sampling_strategy="group_by_length" if params.group_by_length else "random",
        include_num_input_tokens_seen="non_padding", disable_tqdm=False,
        padding_free=params.padding_free,
    )
    template_ids = template_token_ids(base_dir, tok) if params.train_template_tokens else []
    lora = LoraConfig(r=params.lora.r, lora_alpha=params.lora.alpha, lora_dropout=params.lora.dropout,
                      target_modules=params.lora.target_modules, task_type="CAUSAL_LM",
                      trainable_token_indices=template_ids or None)
    trainer_cls = _full_logits_trainer(SFTTrainer) if template_ids else SFTTrainer
    trainer = trainer_cls(model=model, args=cfg, train_dataset=to_ds(train),
                         eval_dataset=to_ds(val) if val.samples else None,
                         processing_class=tok, peft_config=lora)
    losslog = _LossLog(Path(plots_csv), mlflow_run, fp)
    trainer.add_callback(losslog.callback)
    if params.early_stopping_patience:
        from transformers import EarlyStoppingCallback

        trainer.add_callback(EarlyStoppingCallback(params.early_stopping_patience, params.early_stopping_min_delta))
    for cb in callbacks or []:
        trainer.add_callback(cb)
    # Under autocast (bf16/fp16 compute) peft would cast each adapted layer's input to the fp32 LoRA
    # weights' dtype, a copy of every activation that autocast then casts back for the matmul.
    from peft.helpers import disable_input_dtype_casting

    from domainft.modeling.compile import choose_compile, compiled_layers

    planned = (params.max_steps * params.batch_size * params.grad_accum * world_size if params.max_steps > 0
               else math.ceil(len(train.samples) * params.epochs))
    compile_on, compile_why = choose_compile(params.compile, device, dtype == torch.bfloat16, planned,
                                             grad_ckpt, world_size)
    log.info("%s", compile_why)
    with disable_input_dtype_casting(trainer.model, active=cfg.bf16 or cfg.fp16):
        with compiled_layers(trainer.model, compile_on, device) as n_compiled:
            t0 = time.time()
            result = trainer.train(resume_from_checkpoint=resume)
            secs = time.time() - t0
        rows = losslog.rows(trainer.state)
        resumed_step = int(Path(resume).name.split("-")[-1]) if resume else 0
        if trainer.is_world_process_zero():
            losslog.write(trainer.state)
            if mlflow_run and resume:  # the steps before the resume were logged by the interrupted run
                _log_rows_to_mlflow([r for r in rows if r["step"] <= resumed_step])
        if val.samples:
            log.info("validation pass: %d of %d val samples (train.val_max_samples: %d)", len(val.samples),
                     val_total, params.val_max_samples)
        val_loss = trainer.evaluate()["eval_loss"] if val.samples else None  # the restored best model's, when early stopping
    curve = val_curve(trainer.state)
    best_step = min(curve, key=lambda k: (curve[k], k)) if curve else None

    if trainer.is_world_process_zero():  # one writer under `accelerate launch` (DDP/FSDP)
        out = Path(params.out_dir)
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        trainer.model.save_pretrained(tmp)
        _sort_target_modules(tmp / "adapter_config.json")
        if quant_spec is not None:  # QLoRA: the merge needs the weights this adapter was trained against
            write_spec(tmp, quant_spec)
        tok.save_pretrained(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # finished: nothing left to resume

    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    tokens = trainer.state.num_input_tokens_seen
    return {
        "train_samples": len(train.samples), "val_samples": len(val.samples), "val_samples_total": val_total,
        "rejected": dict(train.rejected), "rejected_total": sum(train.rejected.values()),
        "prompt_trimmed": train.trimmed,
        "trainable_label_tokens": sum(s.num_trainable for s in train.samples),
        "steps": trainer.state.global_step, "epochs": float(trainer.state.epoch or 0),
        "train_loss": mean_train_loss(rows) if rows else float(result.training_loss),
        "final_step_loss": rows[-1]["loss"] if rows else None,
        "val_loss": val_loss, "val_ppl": math.exp(val_loss) if val_loss is not None else None,
        "val_evaluations": len(curve), "best_step": best_step,
        "best_val_loss": curve[best_step] if curve else None,
        "stopped_early": bool(params.early_stopping_patience) and trainer.state.global_step < trainer.state.max_steps,
        "restored_best_step": best_step if params.early_stopping_patience else None,
        "runtime_s": round(secs, 2), "real_tokens": int(tokens),
        "real_tokens_per_s": round(tokens / secs, 2) if secs else None,
        "trainable_params": trainable, "device": device, "precision": str(dtype).removeprefix("torch."),
        "gradient_checkpointing": grad_ckpt, "compiled_layers": n_compiled, "compile": compile_why,
        "resumed_from": resume, "resumed_from_step": resumed_step, "fingerprint": fp,
        "trained_token_ids": template_ids,
        "world_size": trainer.args.world_size,  # processes (DDP/FSDP ranks); global batch = world_size x batch
    }
