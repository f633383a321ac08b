import pytest

from domainft.config import ParamsError, load_params, parse_params


def test_repo_params_yaml_is_valid():
    p = load_params("params.yaml")
    assert p.train.lora.r == 16 and p.train.lora.alpha == 32
    assert p.train.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert p.prepare.clean.min_output_chars == 20 and p.prepare.clean.max_output_chars == 1500


def test_misspelled_key_is_named(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("train:\n  learning_rte: 0.1\n")
    with pytest.raises(ParamsError, match=r"train\.learning_rte"):
        load_params(f)


def test_nested_wrong_type_is_named():
    with pytest.raises(ParamsError, match=r"train\.lora\.r"):
        parse_params({"train": {"lora": {"r": "sixteen"}}})


def test_unknown_section_is_named():
    with pytest.raises(ParamsError, match=r"trian"):
        parse_params({"trian": {}})


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    f = tmp_path / "p.yaml"
    f.write_text("- a\n- b\n")
    with pytest.raises(ParamsError, match="mapping"):
        load_params(f)
