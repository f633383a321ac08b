"""`domainft export gguf` on the tiny model: llama.cpp's converter and quantizer, fidelity in llama.cpp, Modelfile.

The export tests need llama-cpp-python (built by `make install`) and llama.cpp's converter
(unpacked by `make install` into <venv>/share/llama.cpp); without them they skip, saying why.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from domainft.cli import cli
from domainft.modeling.chat import encode_prompt, render
from domainft.serving import gguf as g

OK, WHY = g.llama_cpp_status()
try:
    g.find_converter()
    CONVERTER, NO_CONVERTER = True, ""
except g.GgufExportError as err:
    CONVERTER, NO_CONVERTER = False, str(err)
needs_llama = pytest.mark.skipif(not OK, reason=WHY)
needs_converter = pytest.mark.skipif(not CONVERTER, reason=NO_CONVERTER)

CONVERSATIONS = [
    [{"role": "system", "content": "You are the bank's assistant."}, {"role": "user", "content": q},
     {"role": "assistant", "content": a}]
    for q, a in [("How do I block my card?", "Open the app and tap Block card."),
                 ("What is the daily transfer limit?", "It is 5,000 EUR per day."),
                 ("Can I change my PIN at an ATM?", "Yes, at any of our ATMs."),
                 ("How long does a dispute take?", "We answer within 10 working days.")]]


# --------------------------------------------------------------------------- without llama.cpp
def test_template_pieces_rebuild_the_jinja_template(smollm2_tokenizer):
    pieces = g.template_pieces(smollm2_tokenizer)
    assert pieces is not None
    assert pieces["user"] == ("<|im_start|>user\n", "<|im_end|>\n")
    assert pieces["generation"] == "<|im_start|>assistant\n"
    assert "You are a helpful AI assistant named SmolLM" in pieces["default"]  # the template's default system turn
    for convo in (CONVERSATIONS[0], CONVERSATIONS[0][1:], CONVERSATIONS[1][1:] + CONVERSATIONS[2][1:]):
        assert g.render_pieces(pieces, convo) == render(smollm2_tokenizer, convo, add_generation_prompt=True)
    tmpl = g.ollama_template(pieces)
    assert tmpl.startswith('{{- if ne (index .Messages 0).Role "system" }}')
    assert '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n{{ .Content }}<|im_end|>\n' in tmpl
    assert tmpl.endswith("{{ end }}{{ end }}<|im_start|>assistant\n")


def test_template_pieces_refuse_what_they_cannot_express(smollm2_tokenizer):
    tok = smollm2_tokenizer.__class__.from_pretrained(smollm2_tokenizer.name_or_path)
    # content rendered twice: not "prefix + content + suffix" per message
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}|{{ m['content'] }}"
                         "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    assert g.template_pieces(tok) is None


def test_find_gguf_explains_why_not(tmp_path, tiny_model_dir):
    path, manifest, why = g.find_gguf(tiny_model_dir, tmp_path / "gguf")
    assert path is None and "no GGUF export" in why
    (tmp_path / "gguf").mkdir()
    (tmp_path / "gguf" / "model-q8_0.gguf").write_bytes(b"GGUF")
    (tmp_path / "gguf" / g.MANIFEST).write_text(json.dumps(
        {"serve_file": "model-q8_0.gguf", "passed": True, "source": {"weights_sha256": "0" * 64}}))
    path, _, why = g.find_gguf(tiny_model_dir, tmp_path / "gguf")
    assert path is None and "exported from other weights" in why
    assert g.find_gguf(tiny_model_dir, tmp_path / "gguf", check_source=False)[0] == tmp_path / "gguf" / "model-q8_0.gguf"


def test_backend_auto_falls_back_to_torch_with_a_reason(tiny_model_dir):
    from domainft.serving.app import resolve_backend
    from domainft.serving.loader import ModelLoadError

    kind, path, _, why = resolve_backend("auto", str(tiny_model_dir), None, None)
    assert (kind, path) == ("torch", None) and why
    assert resolve_backend("auto", str(tiny_model_dir), None, {"bank": "x"})[3] == "adapters are served by the torch engine"
    with pytest.raises(ModelLoadError, match="cannot serve with llama.cpp"):
        resolve_backend("llamacpp", str(tiny_model_dir), None, None)


def test_serve_backend_llamacpp_without_a_gguf_is_one_error_line(tiny_model_dir):
    r = CliRunner().invoke(cli, ["serve", "--model", str(tiny_model_dir), "--backend", "llamacpp", "--port", "0"])
    assert r.exit_code == 1
    assert r.output.count("\n") == 1 and r.output.startswith("error: cannot serve with llama.cpp: ")


def test_export_refuses_a_folder_that_is_not_a_model(tmp_path):
    r = CliRunner().invoke(cli, ["export", "gguf", "--model", str(tmp_path), "--out", str(tmp_path / "o"),
                                 "--prompts", str(tmp_path / "none.jsonl")])
    assert r.exit_code == 1
    assert r.output.count("\n") == 1 and r.output.startswith("error: no fidelity conversations in ")


# --------------------------------------------------------------------------- with llama.cpp
@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir):
    """The tiny model exported by the CLI into <tmp>/model + <tmp>/gguf (the layout serve's auto looks for)."""
    if not OK:
        pytest.skip(WHY)
    if not CONVERTER:
        pytest.skip(NO_CONVERTER)
    root = tmp_path_factory.mktemp("gguf-export")
    model = Path(shutil.copytree(tiny_model_dir, root / "model"))
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"messages": c}) + "\n" for c in CONVERSATIONS))
    metrics = root / "metrics" / "gguf.json"
    r = CliRunner().invoke(cli, ["export", "gguf", "--model", str(model), "--out", str(root / "gguf"),
                                 "--prompts", str(prompts), "--n-prompts", "4", "--max-new-tokens", "16",
                                 "--metrics", str(metrics)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return root, json.loads(metrics.read_text())


@needs_llama
@needs_converter
def test_export_writes_files_that_answer_like_the_model(exported):
    root, m = exported
    assert m["passed"] is True
    assert set(m["files"]) == {"f16", "q8_0", "q4_k_m"}
    assert m["serve_file"] == "model-q8_0.gguf"
    assert m["eos_token_ids"] == [2] and m["eot_token"] == "<|im_end|>" and m["eot_token_id"] == 2
    assert json.loads((root / "gguf" / g.MANIFEST).read_text()) == m
    f16, q8, q4 = (m["files"][k] for k in ("f16", "q8_0", "q4_k_m"))
    for f in (f16, q8, q4):
        assert Path(f["path"]).is_file() and f["eot_token_id"] == 2 and f["chat_template_embedded"]
        assert f["positions"] == sum(len(p) for p in g.fidelity_prompts(_tok(root), [{"messages": c} for c in CONVERSATIONS], 4)[0])
    # teacher-forced argmax agreement with transformers fp32, and the per-token logit gap
    assert f16["greedy_agreement"] >= 0.95 and f16["max_abs_logit_diff"] < 0.1
    # measured on this tiny random model: f16 1.0 / gap 0.037, Q8_0 0.906 / mean gap 0.060, Q4_K_M 0.60 (reported only)
    assert q8["greedy_agreement"] >= 0.85 and q8["mean_abs_logit_diff"] < 0.1
    assert q4["bytes"] < q8["bytes"] < f16["bytes"]
    # greedy generation, token by token, from each conversation's prompt
    assert f16["generations"] == 4 and f16["generation_prefix_agreement"] >= 0.9


def _tok(root):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(root / "model")


@needs_llama
@needs_converter
def test_llama_cpp_greedy_answer_equals_the_torch_model(exported):
    import torch
    from transformers import AutoModelForCausalLM

    root, m = exported
    tok = _tok(root)
    prompt = encode_prompt(tok, CONVERSATIONS[0][:2])
    model = AutoModelForCausalLM.from_pretrained(root / "model").eval()
    with torch.no_grad():
        ref = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=12, eos_token_id=[2],
                             pad_token_id=2)[0, len(prompt):].tolist()
    llm = g.load_llama(root / "gguf" / "model-f16.gguf", 256, 1)
    got = g.llama_greedy(llm, prompt, 12, {2})
    agree = next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b), min(len(ref), len(got)))
    print(f"greedy tokens agreeing with torch: {agree}/{len(ref)}")
    assert agree >= len(ref) - 2, (ref, got)


@needs_llama
@needs_converter
def test_modelfile_has_template_stops_and_system_prompt(exported):
    from domainft.config import load_params

    root, _ = exported
    text = (root / "gguf" / "Modelfile").read_text()
    lines = text.splitlines()
    assert "FROM ./model-q8_0.gguf" in lines
    assert 'PARAMETER stop "<|im_end|>"' in lines
    system = load_params("params.yaml").domain.system_prompt if Path("params.yaml").is_file() else ""
    if system:
        assert f'SYSTEM """{system}"""' in text
    pieces = g.template_pieces(_tok(root))
    assert f'TEMPLATE """{g.ollama_template(pieces)}"""' in text


def test_probe_reports_a_child_killed_by_sigill_and_passes_a_clean_one():
    """A llama.cpp build for instructions this CPU lacks dies of SIGILL at its first call; the probe
    runs it in a child process, so the status names the signal instead of the test run crashing."""
    died = g._probe_cpu.__wrapped__("import os, signal; os.kill(os.getpid(), signal.SIGILL)")
    assert died == "probe exit -4 (SIGILL: illegal instruction)"
    assert g._probe_cpu.__wrapped__("import sys; sys.exit(3)") == "probe exit 3"
    assert g._probe_cpu.__wrapped__("pass") == ""
