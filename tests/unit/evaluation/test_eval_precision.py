"""Evaluation precision: base and tuned load in the one precision policy, and eval.json records it."""
from __future__ import annotations

import json
import shutil

import pytest

from domainft import hardware
from domainft.config import parse_params
from domainft.stages.evaluate import run


@pytest.mark.parametrize("native,precision", [("0", "float32"), ("1", "bfloat16")])
def test_eval_json_records_the_precision_of_both_models(tmp_path, monkeypatch, varied_model_dir, make_records,
                                                        native, precision):
    shutil.copytree(varied_model_dir, tmp_path / "models/base")
    shutil.copytree(varied_model_dir, tmp_path / "models/merged")
    (tmp_path / "data/splits").mkdir(parents=True)
    (tmp_path / "data/splits/test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in make_records(3)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(hardware.NATIVE_BF16_ENV, native)
    m = run(parse_params({"evaluate": {"max_new_tokens": 4, "bootstrap_samples": 100}}))
    assert m["precision"] == precision
    assert json.loads((tmp_path / "metrics/eval.json").read_text())["precision"] == precision
    assert m["response_ppl.delta"] == 0.0  # the same model in the same precision on both sides
