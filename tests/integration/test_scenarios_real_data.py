"""The three scenarios with real public data, scaffolded by `domainft init` and run by `dvc repro`.

Each test scaffolds a project in a temporary folder exactly as a user would (the CLI in a
subprocess, the real file from ../shared/real-data), shrinks train/eval to a few steps on the tiny
model, runs `dvc repro evaluate` (customer service: the whole `dvc repro`, register included) and
asserts the accounting, the split, and the scenario's own facts. Skipped without the data folder.

The finance and legal projects' base is the tiny model with its chat template removed: like Gemma-3
(the legal preset's base) it has none, so the `base` stage must install ChatML and every later model
folder (merged, the serving loader) must keep the same template and end-of-turn eos.

Time on the shared 2-core machine: customer service 95-115 s, finance 70-185 s (depending on the
other jobs), legal ~115 s (its ~850-token samples); legal is marked slow to keep the default run
near 3-4 minutes. Most of it is the seven `domainft <stage>` processes starting up.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pipeline_utils import VENV_BIN, run, venv_env
from tiny import strip_chat_template

pytestmark = pytest.mark.integration
STAGES = ("prepare", "split", "base", "train", "merge", "evaluate", "register")


def _run(cmd, cwd) -> str:
    return run(cmd, cwd, env=venv_env(DVC_NO_ANALYTICS="1"), timeout=600)


def scaffold(tmp: Path, scenario: str, data: Path, base: Path, *extra: str, batch_size: int = 4,
             val_fraction: float | None = None) -> Path:
    """`domainft init` + the reduced sizes (2 steps, 4 eval samples of 8 tokens)."""
    proj = tmp / scenario
    _run([str(VENV_BIN / "domainft"), "init", str(proj), "--scenario", scenario, "--data", str(data),
          "--base", str(base), *extra], tmp)
    params = yaml.safe_load((proj / "params.yaml").read_text(encoding="utf-8"))
    params["train"].update(max_steps=2, batch_size=batch_size, save_steps=2)
    if val_fraction is not None:
        params["split"]["val_fraction"] = val_fraction
    params["merge"]["fidelity_prompts"] = 2
    params["evaluate"].update(max_samples=4, max_new_tokens=8, bootstrap_samples=200)
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return proj


def metrics(proj: Path, stage: str) -> dict:
    return json.loads((proj / "metrics" / f"{stage}.json").read_text())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def check_common(proj: Path, out: str, file: str, last: str = "evaluate") -> tuple[dict, dict, dict]:
    """Every stage up to ``last`` ran; accounting identity, zero leakage, 2 steps, 4 evaluated samples."""
    for stage in STAGES[:STAGES.index(last) + 1]:
        assert f"Running stage '{stage}'" in out, stage
    pm, sm, tm, em = (metrics(proj, s) for s in ("prepare", "split", "train", "eval"))
    fm = pm["files"][f"data/raw/{file}"]
    assert fm["accounted"] and fm["read"] == fm["kept"] + fm["rejected"] == pm["totals"]["read"]
    assert len(read_jsonl(proj / "data/processed/rejects.jsonl")) == fm["rejected"]
    assert sum(sm["sizes"].values()) == fm["kept"] and sm["leakage"]["total"] == 0
    assert tm["steps"] == 2 and tm["train_samples"] > 0
    assert em["n_samples"] == 4 and {"rouge_l.base", "rouge_l.tuned", "chrf.base", "response_ppl.tuned"} <= set(em)
    return pm, sm, em


def test_customer_service_bank_faq_whole_pipeline(real_data_dir, tmp_path, tiny_model_dir):
    proj = scaffold(tmp_path, "customer-service", real_data_dir / "bank_faq.csv", tiny_model_dir)
    out = _run(["dvc", "repro"], proj)
    pm, sm, em = check_common(proj, out, "bank_faq.csv", last="register")
    fm = pm["files"]["data/raw/bank_faq.csv"]
    assert fm["read"] == 1499 and fm["schema"] == "qa"
    dups = fm["rejected_by_reason"].get("exact_duplicate", 0) + fm["rejected_by_reason"].get("near_duplicate", 0)
    assert dups >= 300  # the ~350 repeated FAQ questions
    assert pm["pii"].get("phone", 0) >= 1  # public phone numbers in answers -> [PHONE]
    assert em["language"] == "en"
    reg = metrics(proj, "register")
    assert reg["version"] == 1 and reg["created"] is True
    again = _run(["dvc", "repro"], proj)  # a second run is a no-op (fingerprint always runs, changing nothing)
    assert [line for line in again.splitlines() if "Running stage" in line] == ["Running stage 'fingerprint':"]


@pytest.fixture(scope="module")
def bare_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model without a chat template (a pretrained base, as Gemma-3-270M is)."""
    return strip_chat_template(tiny_model_dir, tmp_path_factory.mktemp("bare") / "model")


def check_chatml_everywhere(proj: Path) -> None:
    """base installed ChatML; base, merged and the serving loader share it and stop on <|im_end|>."""
    from transformers import AutoTokenizer, GenerationConfig

    from domainft.modeling.base import load_model
    from domainft.modeling.chat import CHATML_TEMPLATE
    from domainft.serving.loader import _eos_ids

    base_info = metrics(proj, "base")
    assert base_info["chat_template_added"] is True and base_info["end_of_turn"] == "<|im_end|>"
    im_end = base_info["end_of_turn_id"]
    for folder in ("models/base", "models/merged"):
        tok = AutoTokenizer.from_pretrained(proj / folder)
        assert tok.chat_template == CHATML_TEMPLATE, folder
        assert im_end in GenerationConfig.from_pretrained(proj / folder).eos_token_id, folder
    model, tok = load_model(proj / "models/merged", device="cpu")
    assert im_end in _eos_ids(model, tok)  # what the server stops on


def test_finance_financebench_groups_by_company(real_data_dir, tmp_path, bare_model_dir):
    proj = scaffold(tmp_path, "finance", real_data_dir / "financebench.jsonl", bare_model_dir)
    out = _run(["dvc", "repro", "evaluate"], proj)
    pm, sm, em = check_common(proj, out, "financebench.jsonl")
    assert pm["files"]["data/raw/financebench.jsonl"]["read"] == 150
    companies = {s: {r["group"] for r in read_jsonl(proj / f"data/splits/{s}.jsonl")} for s in ("train", "val", "test")}
    assert all(companies.values()) and not (companies["train"] & companies["test"])
    assert not (companies["train"] & companies["val"]) and not (companies["val"] & companies["test"])
    assert len(set().union(*companies.values())) == 32
    assert em["language"] == "en"
    check_chatml_everywhere(proj)


@pytest.mark.slow
def test_legal_lawbench_zh_with_names(real_data_dir, tmp_path, bare_model_dir):
    names = tmp_path / "names.txt"
    names.write_text("上海\n", encoding="utf-8")  # a term in 4 LawBench records, redacted like a name
    # ~850 SmolLM2 tokens per sample: smaller batches and validation split keep the test short
    proj = scaffold(tmp_path, "legal", real_data_dir / "lawbench_consult_zh.json", bare_model_dir,
                    "--names-file", str(names), batch_size=2, val_fraction=0.015)
    out = _run(["dvc", "repro", "evaluate"], proj)
    pm, sm, em = check_common(proj, out, "lawbench_consult_zh.json")
    assert pm["files"]["data/raw/lawbench_consult_zh.json"]["read"] == 500 and pm["pii"]["name"] >= 4
    records = read_jsonl(proj / "data/processed/records.jsonl")
    text = "".join(m["content"] for r in records for m in r["messages"])
    assert "上海" not in text and "[NAME]" in text and "法律依据" in text  # full-width Chinese kept
    assert em["language"] == "zh"  # character-level ROUGE-L / chrF
    check_chatml_everywhere(proj)


# ----------------------------------------------------------------------------- presets x their shared files
PRESET_FILES = {  # scenario -> (files, {file: (read, schema)}): every file of the original design's four tasks
    "customer-service": (["bank_faq.csv", "stc3_train_zh.json", "stc3_train_en.json", "twcs_head.csv"],
                         {"stc3_train_zh.json": (2575, "mapped"), "twcs_head.csv": (2581, "mapped"), "bank_faq.csv": (1499, "qa")}),
    "finance": (["financebench.jsonl", "ectsum_val.jsonl", "tatqa_dev.json"],
                {"financebench.jsonl": (150, "mapped"), "ectsum_val.jsonl": (200, "mapped"), "tatqa_dev.json": (1668, "mapped")}),
    "medical": (["acibench_train.csv", "acibench_valid.csv", "mtsdialog_train.csv", "mtsdialog_valid.csv"],
                {"acibench_train.csv": (67, "mapped"), "mtsdialog_train.csv": (1201, "mapped")}),
    "legal-review": (["cuad_clauses_dev.csv", "cuad_category_descriptions.csv", "claudette_tos_dev.jsonl"],
                     {"cuad_clauses_dev.csv": (16400, "mapped"), "claudette_tos_dev.jsonl": (14412, "mapped")}),
}


@pytest.mark.parametrize("scenario", sorted(PRESET_FILES))
def test_preset_maps_its_shared_files_with_no_edits(scenario, real_data_dir, tmp_path, monkeypatch):
    """prepare + split with the preset as `domainft init` writes it: read = kept + rejected per file,
    no group (thread, company, encounter, contract) in two splits, fractions within tolerance."""
    from domainft.scenarios import scenario_params
    from domainft.stages import prepare as prepare_stage
    from domainft.stages import split as split_stage

    files, facts = PRESET_FILES[scenario]
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    for f in files:
        (raw / f).symlink_to(real_data_dir / f)  # never copied
    params = scenario_params(scenario)
    monkeypatch.chdir(tmp_path)
    pm, sm = prepare_stage.run(params), split_stage.run(params)
    lookups = {"cuad_category_descriptions.csv"}
    assert sorted(pm["files"]) == sorted(f"data/raw/{f}" for f in files if f not in lookups)
    for name, fm in pm["files"].items():
        assert fm["read"] == fm["kept"] + fm["rejected"] and fm["kept"] > 0, name
    for f, (read, schema) in facts.items():
        fm = pm["files"][f"data/raw/{f}"]
        assert (fm["read"], fm["schema"]) == (read, schema), f
    assert pm["totals"]["accounted"]
    # every kind of leakage 0, near pairs included (legal-review had 43 before the split's near links)
    assert sm["leakage"]["total"] == 0, sm["leakage"]
    assert sm["within_tolerance"], sm["fractions"]
    splits = {s: read_jsonl(tmp_path / f"data/splits/{s}.jsonl") for s in ("train", "val", "test")}
    groups = {s: {r["group"] for r in rows if r["group"] is not None} for s, rows in splits.items()}
    assert not (groups["train"] & groups["test"]) and not (groups["train"] & groups["val"])
    assert not (groups["val"] & groups["test"])
    assert all(len(rows) > 0 for rows in splits.values())
    if scenario == "finance":  # FinanceBench's "CVS Health" and ECTSum's "CVS": one company key, one split
        where = {(r["source"]["file"].split("/")[-1], r["group"]): s for s, rows in splits.items() for r in rows}
        for key in ("CVS", "AES"):
            assert where[("financebench.jsonl", key)] == where[("ectsum_val.jsonl", key)], key
    if scenario == "legal-review":
        assert sm["linked"]["pairs"] > 0 and sm["linked"]["units"] > 0
