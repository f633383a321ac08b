"""The preference stage is off by default: it loads no model and writes enabled 0."""
import json

import pytest

from domainft.config import Params


def test_preference_stage_off_by_default_writes_enabled_0(tmp_path, monkeypatch):
    from domainft.stages import preference

    monkeypatch.chdir(tmp_path)
    m = preference.run(Params())
    assert m == {"enabled": 0} and json.loads((tmp_path / "metrics/preference.json").read_text()) == {"enabled": 0}
    assert (tmp_path / "models/dpo_merged/DISABLED").is_file()


def test_preference_stage_without_pairs_names_the_count(tmp_path, monkeypatch):
    from domainft.preference import PreferenceError
    from domainft.stages import preference

    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics").mkdir()
    row = {"id": "a", "prompt": [{"role": "user", "content": "q"}], "reference": "r", "base_answer": "x",
           "tuned_answer": "y", "judge": None}
    (tmp_path / "metrics/predictions.jsonl").write_text(json.dumps(row) + "\n")
    params = Params.model_validate({"preference": {"enabled": True, "min_pairs": 2}})
    with pytest.raises(PreferenceError, match=r"0 preference pairs \(human verdicts 0\), fewer than preference.min_pairs 2"):
        preference.run(params)
