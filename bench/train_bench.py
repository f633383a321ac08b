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
keeps a drift from favouring either recipe. ``--fp32`` adds a third recipe, ours with native bf16
forced off (``DOMAINFT_NATIVE_BF16=0``: fp32 as on a CPU without bf16 units), in the order
seed, ours, ours-fp32, ours-fp32, ours, seed; the summary then gives ours' loss relative to fp32's.
``--threads N`` sets OMP_NUM_THREADS for every run (one process at a time). ``--compile`` adds ours
with ``train.compile: true`` (after ours-fp32 in the order). ``--steady`` runs every slot at ``--steps``
and at twice as many and rates the second half alone, so start-up, oneDNN's first kernels and
compilation drop out of every recipe alike; the final loss and peak RSS are then the long run's. With
both, one untimed 1-step compiled run first fills inductor's on-disk cache, so that each half of a
compiled slot finds it warm (an empty cache would land on the short half alone).

MFU: model FLOPs per real token (:func:`flops_per_token`) x tokens/s over the fp32 and bf16
matmul rates measured in this same run on the model's MLP shape (``--mm-shape``, T x d @ d x f):
the mean of probes before the first run, between ABBA halves and after the last run.

    python bench/train_bench.py --model /tmp/smolbase --steps 4 --rounds 1 --fp32 --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
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
                compile=sys.argv[6] == "compile", out_dir=out + "/adapter", checkpoint_dir=out + "/ckpt")
m = train_adapter(model, data, None, p, plots_csv=out + "/loss.csv")
print(json.dumps({"recipe": "domainft", "seconds": m["runtime_s"], "real_tokens": m["real_tokens"],
                  "pad_tokens": 0, "tokens_per_s": m["real_tokens_per_s"],
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "final_loss": m["train_loss"], "precision": m["precision"]}))
"""


def matmul_rate(dtype: str, shape: tuple[int, int, int] = (2048, 576, 1536), seconds: float = 3.0) -> float:
    """Measured (T, d) @ (d, f) matmul rate of ``dtype`` on this CPU, FLOP/s (2 T d f per product)."""
    import time

    import torch

    t, d, f = shape
    dt = getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[dtype])
    a, b = torch.randn(t, d, dtype=dt), torch.randn(d, f, dtype=dt)
    for _ in range(3):
        a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2 * t * d * f * n / (time.perf_counter() - t0)


def flops_per_token(model_dir: str, lora_r: int = 16) -> float:
    """Model FLOPs per trained token of a LoRA step: 4 N (forward 2 N + backward through the frozen
    weights to the activations 2 N; no weight gradients), N = parameters outside the embedding plus
    the tied LM head once; attention scores and LoRA's own products are left out (they add < 10% at
    T <= 512 and r 16)."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_dir)
    d, f, L, v = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size
    kv = d * c.num_key_value_heads // c.num_attention_heads
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * f
    return 4.0 * (L * per_layer + v * d)


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
    ap.add_argument("--fp32", action="store_true", help="also run ours with native bf16 forced off")
    ap.add_argument("--compile", action="store_true", help="also run ours with train.compile: true")
    ap.add_argument("--steady", action="store_true",
                    help="each run twice, at --steps and 2 x --steps; its rate is the second half's: "
                         "(tokens(2N) - tokens(N)) / (seconds(2N) - seconds(N)), without start-up and compilation")
    ap.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS of every run (0: inherit)")
    ap.add_argument("--mm-shape", default="2048,576,1536", help="T,d,f of the measured matmul")
    a = ap.parse_args()
    env = dict(os.environ)
    if a.threads:
        env["OMP_NUM_THREADS"] = str(a.threads)
        import torch

        torch.set_num_threads(a.threads)
    shape = tuple(int(x) for x in a.mm_shape.split(","))
    rates = {dt: matmul_rate(dt, shape) for dt in ("fp32", "bf16")}
    probes = {dt: [v] for dt, v in rates.items()}
    recipes = ["seed", "ours"] + (["ours32"] if a.fp32 else []) + (["oursc"] if a.compile else [])
    runs: dict[str, list[dict]] = {r: [] for r in recipes}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "messages.jsonl"  # messages only: the seed script's input format
        with open(a.data) as f, open(data, "w") as g:
            for line in f:
                if line.strip():
                    g.write(json.dumps({"messages": json.loads(line)["messages"]}) + "\n")
        if a.compile and a.steady:  # both halves must find inductor's cache warm, or the short one pays it alone
            warm = _last_json(subprocess.run([sys.executable, "-c", OURS, a.model, str(data), "1", f"{tmp}/warm",
                                              str(a.batch_size), "compile"], capture_output=True, text=True,
                                             check=True, env=env).stdout)
            print(json.dumps({"warm_up": "compile, 1 step, untimed", "seconds": warm["seconds"]}), flush=True)
        order = (recipes + recipes[::-1]) * a.rounds
        for i, recipe in enumerate(order):
            if i and i % len(recipes) == 0:  # matmul rates again between halves: the mean follows the drift
                for dt, v in rates.items():
                    probes[dt].append(matmul_rate(dt, shape))
            run_env = dict(env, DOMAINFT_NATIVE_BF16="0") if recipe == "ours32" else env
            halves = []
            for steps in ([a.steps, 2 * a.steps] if a.steady else [a.steps]):
                if recipe == "seed":
                    cmd = [sys.executable, a.seed_script, "--model", a.model, "--data", str(data),
                           "--steps", str(steps), "--out", f"{tmp}/seed{i}-{steps}"]
                else:
                    cmd = [sys.executable, "-c", OURS, a.model, str(data), str(steps), f"{tmp}/ours{i}-{steps}",
                           str(a.batch_size), "compile" if recipe == "oursc" else "eager"]
                halves.append(_last_json(subprocess.run(cmd, capture_output=True, text=True, check=True,
                                                        env=run_env).stdout))
            r = halves[-1]
            if a.steady:  # the second N steps alone
                short, r = halves
                r = dict(r, seconds=round(r["seconds"] - short["seconds"], 2),
                         real_tokens=r["real_tokens"] - short["real_tokens"],
                         pad_tokens=r["pad_tokens"] - short["pad_tokens"], whole_run_seconds=r["seconds"])
                r["tokens_per_s"] = round(r["real_tokens"] / r["seconds"], 2)
            r["recipe"] = recipe
            print(json.dumps(r), flush=True)
            runs[recipe].append(r)
    for dt in probes:
        probes[dt].append(matmul_rate(dt, shape))
    rates = {dt: sum(v) / len(v) for dt, v in probes.items()}
    print(json.dumps({"matmul_gflop_s": {k: [round(x / 1e9, 1) for x in v] for k, v in probes.items()},
                      "shape": shape}), flush=True)
    pooled = {k: _pooled(v) for k, v in runs.items()}
    s, o = pooled["seed"], pooled["ours"]
    o["batch_size"] = a.batch_size
    fpt = flops_per_token(a.model)
    for p in pooled.values():
        p["mfu_of_bf16_matmul"] = round(fpt * p["tokens_per_s"] / rates["bf16"], 4)
        p["mfu_of_fp32_matmul"] = round(fpt * p["tokens_per_s"] / rates["fp32"], 4)
        print(json.dumps(p))
    summary = {"ratio_tokens_per_s": round(o["tokens_per_s"] / s["tokens_per_s"], 2),
               "per_pair_ratios": [round(b["tokens_per_s"] / a_["tokens_per_s"], 2)
                                   for a_, b in zip(runs["seed"], runs["ours"])],
               "seed_pad_fraction": round(s["pad_tokens"] / (s["pad_tokens"] + s["real_tokens"]), 3),
               "final_loss_seed": s["final_loss"], "final_loss_ours": o["final_loss"],
               "peak_rss_mb_seed": s["peak_rss_mb"], "peak_rss_mb_ours": o["peak_rss_mb"],
               "gflop_per_token": round(fpt / 1e9, 3)}
    if a.fp32:
        f32 = pooled["ours32"]
        summary |= {"ratio_ours_to_ours_fp32": round(o["tokens_per_s"] / f32["tokens_per_s"], 2),
                    "ratio_ours_fp32_to_seed": round(f32["tokens_per_s"] / s["tokens_per_s"], 2),
                    "loss_ours_vs_fp32_rel": round(o["final_loss"] / f32["final_loss"] - 1, 4)}
    if a.compile:
        c = pooled["oursc"]
        summary |= {"ratio_ours_compile_to_seed": round(c["tokens_per_s"] / s["tokens_per_s"], 2),
                    "ratio_ours_compile_to_ours": round(c["tokens_per_s"] / o["tokens_per_s"], 2),
                    "final_loss_ours_compile": c["final_loss"], "peak_rss_mb_ours_compile": c["peak_rss_mb"]}
    summary["steady"] = a.steady
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
