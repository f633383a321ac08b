#!/usr/bin/env python3
"""Training throughput: the seed design's recipe on plain TRL vs domainft's train stage.

Both run in this one invocation, each in its own subprocess (so peak RSS is per recipe), on the
same model folder and the same training JSONL, for the same number of optimizer steps of 16
samples each (seed: batch 2 x accumulation 8, pad to longest, gradient checkpointing; ours:
batch 8 x accumulation 2, padding-free, length-grouped, no checkpointing on CPU).

    python bench/train_bench.py --model models/base --data data/splits/train.jsonl --steps 4

Prints one JSON line per recipe and a summary with the throughput ratio (ours / seed) and the
final loss of each (mean loss per trained token over the run, as each trainer reports it).
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
model, data, steps, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
p = TrainParams(max_steps=steps, batch_size=8, grad_accum=2, learning_rate=2e-4, save_steps=10**6,
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/base")
    ap.add_argument("--data", default="data/splits/train.jsonl")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--seed-script", default=str(SEED))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "messages.jsonl"  # messages only: the seed script's input format
        with open(a.data) as f, open(data, "w") as g:
            for line in f:
                if line.strip():
                    g.write(json.dumps({"messages": json.loads(line)["messages"]}) + "\n")
        seed = subprocess.run([sys.executable, a.seed_script, "--model", a.model, "--data", str(data),
                               "--steps", str(a.steps), "--out", tmp + "/seed"],
                              capture_output=True, text=True, check=True)
        ours = subprocess.run([sys.executable, "-c", OURS, a.model, str(data), str(a.steps), tmp + "/ours"],
                              capture_output=True, text=True, check=True)
    s, o = _last_json(seed.stdout), _last_json(ours.stdout)
    print(json.dumps(s))
    print(json.dumps(o))
    print(json.dumps({"ratio_tokens_per_s": round(o["tokens_per_s"] / s["tokens_per_s"], 2),
                      "seed_pad_fraction": round(s["pad_tokens"] / (s["pad_tokens"] + s["real_tokens"]), 3),
                      "final_loss_seed": s["final_loss"], "final_loss_ours": o["final_loss"],
                      "peak_rss_mb_seed": s["peak_rss_mb"], "peak_rss_mb_ours": o["peak_rss_mb"]}))


if __name__ == "__main__":
    main()
