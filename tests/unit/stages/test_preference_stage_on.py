"""The preference stage switched on, on a tiny SFT model: DPO, merge + fidelity, SFT vs SFT+DPO evaluated."""
import json
import math
import shutil

from domainft.config import Params


def test_preference_stage_trains_merges_and_evaluates(tiny_model_dir, tmp_path, monkeypatch):
    from domainft.stages import preference

    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model_dir, tmp_path / "models/merged")
    shutil.copytree(tiny_model_dir, tmp_path / "models/base")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "data/splits").mkdir(parents=True)
    rows, test = [], []
    for i in range(6):
        prompt = [{"role": "user", "content": f"What is the fee for plan {i}?"}]
        rows.append({"id": f"t{i}", "prompt": prompt, "reference": f"The fee is ${3 * i}.",
                     "base_answer": "I do not know.", "tuned_answer": f"The fee is ${3 * i}.",
                     "judge": {"pair": {"base_first": "B", "tuned_first": "A"}} if i < 4 else None})
        test.append({"id": f"t{i}", "messages": prompt + [{"role": "assistant", "content": f"The fee is ${3 * i}."}]})
    (tmp_path / "metrics/predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "data/splits/test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    (tmp_path / "metrics/review.json").write_text(json.dumps({"human.verdicts": {"t4": "tuned", "t5": "tie"}}))
    params = Params.model_validate({
        "preference": {"enabled": True, "max_steps": 4, "learning_rate": 5e-3, "batch_size": 4,
                       "lora": {"r": 4, "alpha": 8}},
        "evaluate": {"max_new_tokens": 8, "bootstrap_samples": 100}})
    m = preference.run(params)
    assert m["enabled"] == 1 and m["pairs"] == 5 and m["sources"] == {"human": 1, "judge": 4, "reference": 0}
    assert abs(m["loss_first"] - math.log(2)) < 1e-4 and m["loss_last"] < m["loss_first"]
    assert m["merge.passed"] and len(m["verdicts_sha256"]) == 64
    assert m["vs_sft.n_samples"] == 6 and "vs_sft.response_ppl.delta_ci_low" in m
    # the DPO model's own evaluation against the base (its gate metrics in the registry)
    assert m["vs_base.n_samples"] == 6 and "vs_base.primary.delta_ci_low" in m
    assert m["vs_base.primary.tuned"] == m["vs_sft.primary.tuned"]  # the same SFT+DPO answers on both
    assert m["vs_base.precision"] == m["vs_sft.precision"]
    assert m["human_verdicts"] == 2 and len(m["review_sha256"]) == 64
    assert (tmp_path / "metrics/preference/vs_base/predictions.jsonl").is_file()
    assert (tmp_path / "models/dpo_merged/config.json").is_file()
    assert json.loads((tmp_path / "metrics/preference.json").read_text())["pairs"] == 5
