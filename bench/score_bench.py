#!/usr/bin/env python3
"""Teacher-forced scoring: ``response_nll`` against the full-logits loop it replaced, ABBA in one process.

``response_nll`` (evaluate's reference perplexity, retention, through
:func:`domainft.evaluation.metrics.labelled_logprob_sums`) projects the LM head only from each
batch's first response prediction on and batches samples of similar length. The reference is the
previous code: file-order batches, right padded, ``(B, T, V)`` fp32 logits over every position.
Both score the same conversations with the same model in the same dtype.

    python bench/score_bench.py --model models/base --data data/splits/test.jsonl --batch-size 32

Prints the token counts, one JSON line per run (order new, reference, reference, new), the pooled
seconds of each, the ratio reference / new and the largest relative difference of the per-sample
summed NLL (the label counts must be equal).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from domainft.atomic import read_jsonl
from domainft.evaluation.metrics import response_nll
from domainft.hardware import apply_threads
from domainft.modeling.base import load_model, pick_dtype
from domainft.modeling.chat import IGNORE_INDEX, end_of_turn, tokenize_conversation


@torch.inference_mode()
def full_logits_nll(model, tok, conversations, batch_size: int) -> list[tuple[float, int]]:
    """The previous response_nll: (sum NLL, labelled tokens) per conversation, every position projected."""
    eot = end_of_turn(tok)[0]
    samples = [tokenize_conversation(tok, c, eot, last_only=True) for c in conversations]
    out = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        width = max(len(s.input_ids) for s in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, s in enumerate(chunk):
            n = len(s.input_ids)
            ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(s.input_ids), torch.tensor(s.labels), 1
        logits = model(input_ids=ids, attention_mask=mask).logits.float()  # (B, T, V)
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:],
                                                ignore_index=IGNORE_INDEX, reduction="none")
        out.extend(zip(nll.sum(1).tolist(), (labels[:, 1:] != IGNORE_INDEX).sum(1).tolist()))
    return [(float(a), int(b)) for a, b in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/base")
    ap.add_argument("--data", default="data/splits/test.jsonl", help="canonical-record JSONL (messages)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--limit", type=int, default=0, help="first N records (0: all)")
    ap.add_argument("--precision", default="auto", help="auto, fp32 or bf16 (domainft.modeling.base.pick_dtype)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: domainft.hardware policy)")
    args = ap.parse_args()
    apply_threads(args.threads)
    records = read_jsonl(args.data)
    convs = [r["messages"] for r in (records[:args.limit] if args.limit else records)]
    model, tok = load_model(args.model, device="cpu", dtype=pick_dtype(args.precision, "cpu"))
    eot = end_of_turn(tok)[0]
    lens = [tokenize_conversation(tok, c, eot, last_only=True) for c in convs]
    print(json.dumps({"samples": len(convs), "tokens": sum(len(s.input_ids) for s in lens),
                      "labelled": sum(s.num_trainable for s in lens), "batch_size": args.batch_size,
                      "dtype": str(next(model.parameters()).dtype), "threads": torch.get_num_threads()}))
    runs, outs = {"new": [], "reference": []}, {}
    for name in ("new", "reference", "reference", "new"):
        t0 = time.perf_counter()
        outs[name] = (response_nll(model, tok, convs, args.batch_size) if name == "new"
                      else full_logits_nll(model, tok, convs, args.batch_size))
        runs[name].append(time.perf_counter() - t0)
        print(json.dumps({"run": name, "seconds": round(runs[name][-1], 2)}), flush=True)
    new, ref = outs["new"], outs["reference"]
    print(json.dumps({"new_s": round(sum(runs["new"]), 2), "reference_s": round(sum(runs["reference"]), 2),
                      "ratio": round(sum(runs["reference"]) / sum(runs["new"]), 2),
                      "counts_equal": [n for _, n in new] == [n for _, n in ref],
                      "max_rel_diff": max(abs(a - b) / max(abs(b), 1e-12) for (a, _), (b, _) in zip(new, ref))}))


if __name__ == "__main__":
    main()
