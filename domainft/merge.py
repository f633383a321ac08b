"""Merge a LoRA adapter into its base model and prove the merged folder answers the same.

The merged model is written in the base's precision (fp32 on CPU) with the tokenizer, the
pipeline's chat template and a generation_config whose eos ids include the end-of-turn token.
Fidelity: on N validation conversations, logits of base+adapter (in this process) are compared with
logits of the merged folder reloaded in a fresh Python process (so nothing cached in memory can
hide a bad save); max / mean absolute difference and greedy (argmax) agreement are reported.

QLoRA adapters (``quantization.json`` in the adapter folder, see :mod:`domainft.quantization`) were
trained against the NF4 round trip of the base weights, not the weights themselves. ``qlora_base``
chooses what the merge adds them to: ``dequantized`` (the weights they were trained against, the
default) or ``original`` (the 16/32-bit base); both are measured and the gap between them is reported.

Notation: N prompts, T tokens, V vocabulary size.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from domainft.errors import DomainftError
from domainft.modeling.base import META_FILE, load_model
from domainft.modeling.chat import generation_eos_ids, render
from domainft.quantization import apply_round_trip, read_spec


class MergeFidelityError(DomainftError, RuntimeError):
    """The merged model's logits differ from base+adapter beyond the configured threshold."""


def _prompt_ids(tokenizer, records: list[dict], n: int) -> list[list[int]]:
    out = []
    for rec in records[:n]:
        text = render(tokenizer, rec["messages"])
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"][:256])
    return out


@torch.no_grad()
def _logits(model, prompts: list[list[int]]) -> list[torch.Tensor]:
    """One (T, V) fp32 logits tensor per prompt, unbatched so padding cannot enter the comparison."""
    dev = next(model.parameters()).device
    return [model(torch.tensor([p], device=dev)).logits[0].float().cpu() for p in prompts]


def logits_in_fresh_process(folder: str | Path, prompts: list[list[int]]) -> list[torch.Tensor]:
    """Load ``folder`` in a new Python process and return its logits for ``prompts``."""
    with tempfile.TemporaryDirectory() as tmp:
        pin, pout = Path(tmp) / "prompts.json", Path(tmp) / "logits.pt"
        pin.write_text(json.dumps(prompts))
        code = ("import json,sys,torch;from domainft.merge import _logits;from domainft.modeling.base import load_model;"
                "m,_=load_model(sys.argv[1],device='cpu',dtype=torch.float32);"
                "torch.save(_logits(m,json.load(open(sys.argv[2]))),sys.argv[3])")
        subprocess.run([sys.executable, "-c", code, str(folder), str(pin), str(pout)], check=True)
        return torch.load(pout)


def compare_logits(a: list[torch.Tensor], b: list[torch.Tensor]) -> dict:
    """max/mean |a-b| over all (T, V) entries and the fraction of positions with equal argmax."""
    diffs = [(x - y).abs() for x, y in zip(a, b)]
    agree = sum(int((x.argmax(-1) == y.argmax(-1)).sum()) for x, y in zip(a, b))
    total = sum(x.shape[0] for x in a)
    return {
        "max_abs_logit_diff": max(float(d.max()) for d in diffs),
        "mean_abs_logit_diff": float(sum(float(d.sum()) for d in diffs) / sum(d.numel() for d in diffs)),
        "greedy_agreement": agree / total, "positions": total,
    }


def tied_embeddings(model) -> bool:
    """True when input embeddings and lm_head share storage."""
    out = model.get_output_embeddings()
    return out is not None and out.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def merge_adapter(base_dir: str, adapter_dir: str, out_dir: str, records: list[dict],
                  n_prompts: int = 8, max_abs_logit_diff: float = 1e-3,
                  min_greedy_agreement: float = 1.0, qlora_base: str = "dequantized") -> dict:
    """Merge ``adapter_dir`` into ``base_dir`` (fp32), save to ``out_dir``, check fidelity.

    Args:
        records: conversations (e.g. the val split) used as fidelity prompts; the first
            ``n_prompts`` are used, each cut to 256 tokens.
        max_abs_logit_diff: fail above this max |logit difference| (fp32 merge on CPU measures
            ~1e-5; the default 1e-3 leaves room for summation-order noise).
        min_greedy_agreement: fail below this fraction of positions whose argmax agrees.
        qlora_base: for a QLoRA adapter only: ``"dequantized"`` merges onto dequant(quant(W)) as
            bitsandbytes computed it during training, ``"original"`` onto W. The fidelity
            reference is base+adapter on the chosen weights.

    Returns:
        Metrics: the three fidelity figures, positions compared, tie and eos facts, ``passed``;
        for a QLoRA adapter also ``qlora_base``, ``quantized_modules`` and ``qlora_gap`` (the
        fidelity figures of base+adapter on original vs on dequantized weights).

    Raises:
        MergeFidelityError: after writing the merged folder, when a threshold is crossed.
    """
    from peft import PeftModel

    base, _ = load_model(base_dir, device="cpu", dtype=torch.float32)
    was_tied = tied_embeddings(base)
    tok_src = adapter_dir if (Path(adapter_dir) / "tokenizer_config.json").exists() else base_dir
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_src)
    if qlora_base not in ("dequantized", "original"):
        raise ValueError(f"qlora_base must be 'dequantized' or 'original', not {qlora_base!r}")
    spec = read_spec(adapter_dir)
    peft_model = PeftModel.from_pretrained(base, adapter_dir)
    peft_model.eval()
    prompts = _prompt_ids(tok, records, n_prompts)
    ref = _logits(peft_model, prompts)
    qlora = {}
    if spec is not None:
        ref_original = ref
        qlora = {"qlora_base": qlora_base, "quantized_modules": apply_round_trip(peft_model, spec)}
        ref = _logits(peft_model, prompts)
        qlora["qlora_gap"] = compare_logits(ref, ref_original)
        if qlora_base == "original":  # reload: the round trip overwrote the base weights in place
            del peft_model, base
            base, _ = load_model(base_dir, device="cpu", dtype=torch.float32)
            peft_model = PeftModel.from_pretrained(base, adapter_dir)
            peft_model.eval()
            ref = ref_original
    merged = peft_model.merge_and_unload()
    eos = merged.generation_config.eos_token_id
    merged.generation_config.eos_token_id = generation_eos_ids(tok, eos if isinstance(eos, list) else [eos])
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if (Path(base_dir) / META_FILE).exists():
        shutil.copy(Path(base_dir) / META_FILE, tmp / META_FILE)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)

    got = logits_in_fresh_process(out, prompts)
    reloaded, _ = load_model(out, device="cpu", dtype=torch.float32)
    metrics = compare_logits(ref, got)
    metrics.update({
        "prompts": len(prompts), "tied_embeddings_base": was_tied,
        "tied_embeddings_merged": tied_embeddings(reloaded),
        "eos_token_ids": reloaded.generation_config.eos_token_id,
        "max_abs_logit_diff_threshold": max_abs_logit_diff,
        "min_greedy_agreement_threshold": min_greedy_agreement, **qlora,
    })
    metrics["passed"] = (metrics["max_abs_logit_diff"] <= max_abs_logit_diff
                         and metrics["greedy_agreement"] >= min_greedy_agreement
                         and metrics["tied_embeddings_merged"] == was_tied)
    return metrics
