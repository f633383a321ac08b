"""bench/gpu_smoke.py's code path, run on CPU with the tiny shape (the QLoRA run itself needs CUDA)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _smoke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench/gpu_smoke.py"), "--shape", "tiny", *args],
                          capture_output=True, text=True, timeout=600)


def test_gpu_smoke_trains_the_tiny_shape_on_cpu_and_reports_figures():
    run = _smoke("--no-4bit", "--steps", "1", "--batch-size", "2")
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["device"] == "cpu" and out["steps"] == 1 and out["load_in_4bit"] is False
    assert out["peak_gpu_mib"] == 0 and out["tokens_per_s"] > 0
    # two synthetic answers of 64-256 words: at least 2 x (64 words + end of turn) labelled tokens
    assert out["real_tokens"] >= 2 * 65
    # random weights: the first loss is that of a near-uniform guess over the 49,152-token vocabulary
    assert abs(out["final_loss"] - math.log(49152)) < 0.5


def test_gpu_smoke_refuses_4bit_without_cuda_with_the_train_stage_error():
    run = _smoke("--steps", "1")
    assert run.returncode != 0 and "load_in_4bit needs CUDA" in run.stderr
