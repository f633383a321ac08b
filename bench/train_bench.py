#!/usr/bin/env python3
"""Training throughput: the seed design's recipe on plain TRL vs domainft's train stage.

Both run in this one invocation, each in its own subprocess (so peak RSS is per recipe), on the
same model folder and the same training JSONL, for the same number of optimizer steps of 16
samples each (seed: batch 2 x accumulation 8, pad to longest, gradient checkpointing; ours:
batch 4 x accumulation 4 by default (params.yaml's train.batch_size), padding-free, length-grouped,
no checkpointing on CPU).

    python bench/train_bench.py --model models/base --data data/splits/train.jsonl --steps 8

Prints one JSON line per run, the pooled figures per recipe and a summary with the throughput
ratio (ours / seed, pooled tokens over pooled seconds) and the final loss of each (mean loss per
trained token over the run, as each trainer reports it, averaged over runs). ``--rounds 2`` runs
seed, ours, ours, seed twice: on a shared host the speed drifts within minutes, and the ABBA order
keeps a drift from favouring either recipe.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SEED = Path(__file__).resolve().parents[2] / "shared" / "bench" / "seed_trl_baseline.py"

OURS = """
import json, resource, sys
from domainft.config import TrainParams
from domainft.train import train_adapter
model, data, steps, out, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
p = TrainParams(max_steps=steps, batch_size=batch, grad_accum=16 // batch, learning_rate=2e-4, save_steps=10**6,
                out_dir=out + "/adapter", checkpoint_dir=out + "/ckpt")
m = train_adapter(model, data, None, p, plots_csv=out + "/loss.csv")
print(json.dumps({"recipe": "domainft", "seconds": m["runtime_s"], "real_tokens": m["real_tokens"],
                  "pad_tokens": 0, "tokens_per_s": m["real_tokens_per_s"],
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "final_loss": m["train_loss"]}))
"""


def _last_json(stdout: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON result in output:\n{stdout[-2000:]}")


def _pooled(runs: list[dict]) -> dict:
    """Sum seconds and tokens over a recipe's runs; keep the largest peak RSS and the mean loss."""
    secs, toks = sum(r["seconds"] for r in runs), sum(r["real_tokens"] for r in runs)
    return {"recipe": runs[0]["recipe"], "runs": len(runs), "seconds": round(secs, 2), "real_tokens": toks,
            "pad_tokens": sum(r["pad_tokens"] for r in runs), "tokens_per_s": round(toks / secs, 2),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "final_loss": sum(r["final_loss"] for r in runs) / len(runs)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/base")
    ap.add_argument("--data", default="data/splits/train.jsonl")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per run")
    ap.add_argument("--seed-script", default=str(SEED))
    ap.add_argument("--batch-size", type=int, default=4, choices=[1, 2, 4, 8, 16],
                    help="our micro-batch; accumulation makes up 16 samples per step")
    ap.add_argument("--rounds", type=int, default=1,
                    help="ABBA rounds (seed, ours, ours, seed): the order cancels a linear drift in the "
                         "machine's speed, which on a shared host moves by 20-40%% within minutes")
    a = ap.parse_args()
    runs: dict[str, list[dict]] = {"seed": [], "ours": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "messages.jsonl"  # messages only: the seed script's input format
        with open(a.data) as f, open(data, "w") as g:
            for line in f:
                if line.strip():
                    g.write(json.dumps({"messages": json.loads(line)["messages"]}) + "\n")
        order = ["seed", "ours", "ours", "seed"] * a.rounds
        for i, recipe in enumerate(order):
            if recipe == "seed":
                cmd = [sys.executable, a.seed_script, "--model", a.model, "--data", str(data),
                       "--steps", str(a.steps), "--out", f"{tmp}/seed{i}"]
            else:
                cmd = [sys.executable, "-c", OURS, a.model, str(data), str(a.steps), f"{tmp}/ours{i}",
                       str(a.batch_size)]
            r = _last_json(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            print(json.dumps(r), flush=True)
            runs[recipe].append(r)
    s, o = _pooled(runs["seed"]), _pooled(runs["ours"])
    o["batch_size"] = a.batch_size
    print(json.dumps(s))
    print(json.dumps(o))
    print(json.dumps({"ratio_tokens_per_s": round(o["tokens_per_s"] / s["tokens_per_s"], 2),
                      "per_pair_ratios": [round(b["tokens_per_s"] / a_["tokens_per_s"], 2)
                                          for a_, b in zip(runs["seed"], runs["ours"])],
                      "seed_pad_fraction": round(s["pad_tokens"] / (s["pad_tokens"] + s["real_tokens"]), 3),
                      "final_loss_seed": s["final_loss"], "final_loss_ours": o["final_loss"],
                      "peak_rss_mb_seed": s["peak_rss_mb"], "peak_rss_mb_ours": o["peak_rss_mb"]}))


if __name__ == "__main__":
    main()
