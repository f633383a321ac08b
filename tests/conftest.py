"""Shared fixtures: a tiny randomly initialised Llama with the real SmolLM2 tokenizer.

``tiny_model_dir`` is a plain HF folder exactly like the one the ``base`` stage writes
(safetensors, tokenizer, chat template, generation config), so every stage can run on it in
seconds on CPU.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from tiny import make_tiny_model  # noqa: E402

REAL_DATA = ROOT.parent / "shared" / "real-data"
# The suite's numeric tolerances are fp32's: run it as on a CPU without native bf16 (precision auto
# -> fp32) unless a test asks otherwise (tests/unit/test_hardware.py, test_train_precision.py).
os.environ.setdefault("DOMAINFT_NATIVE_BF16", "0")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Folder with a 2-layer, hidden-64 Llama (about 3.2M params, tied embeddings)."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def smollm2_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip("../shared/real-data is absent")
    return REAL_DATA
