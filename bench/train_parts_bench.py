#!/usr/bin/env python3
"""Training's parts on CPU, each against the reference it replaced, in one process (ABBA order).

- attention of one packed row (SmolLM2-135M's heads: 9 query, 3 key/value, 64 dims; bf16),
  forward + backward of one layer: transformers' sdpa path (a dense block-diagonal mask over the
  row) vs ``domainft.modeling.attention.packed_sdpa_forward`` (each sample on its own);
- the loss's LM head (hidden 576, vocabulary 49,152, bf16 autocast), forward + backward over N
  label tokens: ``trl.kernels.ChunkedLogProbFunction`` vs ``domainft.modeling.lm_head.LabelLogProbs``.

    python bench/train_parts_bench.py --threads 1

Prints one JSON line per measurement and a summary line with the speedups.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _time(fn, reps: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def attention_case(lengths: list[int], reps: int) -> dict:
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from domainft.modeling.attention import packed_sdpa_forward

    class Layer(torch.nn.Module):  # what the attention functions read of a transformers attention module
        num_key_value_groups, is_causal = 3, True

    layer = Layer().train()
    total = sum(lengths)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, h, total, 64, generator=g).bfloat16().requires_grad_(True) for h in (9, 3, 3))
    pos = torch.cat([torch.arange(n) for n in lengths])[None]
    seg = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    mask = ((seg[:, None] == seg[None, :]) & torch.ones(total, total, dtype=torch.bool).tril())[None, None]

    def dense():
        sdpa_attention_forward(layer, q, k, v, mask)[0].float().sum().backward()

    def packed():
        packed_sdpa_forward(layer, q, k, v, None, position_ids=pos)[0].float().sum().backward()

    order = [("dense", dense), ("packed", packed), ("packed", packed), ("dense", dense)]
    out = {"case": "attention", "lengths": lengths}
    for name, fn in order:
        out.setdefault(name + "_ms", []).append(round(_time(fn, reps) * 1e3, 2))
    return out


def lm_head_case(tokens: int, reps: int) -> dict:
    import torch
    from trl.kernels import ChunkedLogProbFunction

    from domainft.modeling.lm_head import LabelLogProbs

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(tokens, 576, generator=g).bfloat16()
    weight = (torch.randn(49152, 576, generator=g) * 0.05).bfloat16()
    targets = torch.randint(0, 49152, (tokens,), generator=g)

    def run(fn):
        def step():
            h = hidden.clone().requires_grad_(True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                lp, ent, *_ = fn.apply(h, weight, None, targets, 1.0, 32768, None, 1.0,
                                       ("log_probs", "entropy", "is_top1"))
            (-lp.sum()).backward()
        return step

    out = {"case": "lm_head", "tokens": tokens}
    for name, fn in [("trl", ChunkedLogProbFunction), ("ours", LabelLogProbs), ("ours", LabelLogProbs),
                     ("trl", ChunkedLogProbFunction)]:
        out.setdefault(name + "_ms", []).append(round(_time(run(fn), reps) * 1e3, 2))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    results = []
    for lengths in ([80, 75, 90, 70], [300, 120, 500, 80], [700, 650, 720, 690]):
        results.append(attention_case(lengths, args.reps))
    for tokens in (170, 1024):
        results.append(lm_head_case(tokens, args.reps))
    for r in results:
        print(json.dumps(r))
    summary = {}
    for r in results:
        if r["case"] == "attention":
            summary[f"attention {'+'.join(map(str, r['lengths']))}"] = round(sum(r["dense_ms"]) / sum(r["packed_ms"]), 2)
        else:
            summary[f"lm_head {r['tokens']} tokens"] = round(sum(r["trl_ms"]) / sum(r["ours_ms"]), 2)
    print(json.dumps({"speedup": summary, "threads": args.threads, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
