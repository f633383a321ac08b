"""Fixtures for evaluation tests: a perturbed copy of the tiny model whose greedy answers vary."""
from __future__ import annotations

import shutil

import pytest
import torch


@pytest.fixture(scope="session")
def varied_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with seeded Gaussian noise (std 0.2) on every weight.

    The plain random tiny model answers every prompt with newlines; the noise makes greedy answers
    depend on the prompt, so batched-vs-single comparisons and tuned-vs-base deltas are not trivial.
    """
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("varied") / "model"
    shutil.copytree(tiny_model_dir, out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    model.save_pretrained(out, safe_serialization=True)
    return out


def _make_records(n: int = 10, zh: bool = False) -> list[dict]:
    """n canonical test records of increasing prompt length."""
    recs = []
    for i in range(n):
        q = (f"账户{i}的月费是多少？" + "请说明。" * i) if zh else (f"What is the monthly fee of account {i}? " + "Please explain. " * i)
        a = f"账户{i}的月费是{i * 3}元。" if zh else f"The monthly fee of account {i} is {i * 3} dollars."
        recs.append({"id": f"{i:016x}", "messages": [
            {"role": "system", "content": "You are a bank assistant."},
            {"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    return recs


@pytest.fixture
def make_records():
    """Factory ``make_records(n=10, zh=False)`` of canonical test records."""
    return _make_records
