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


def test_train_compile_takes_auto_or_a_bool_and_names_itself_otherwise():
    assert parse_params({}).train.compile == "auto"
    assert parse_params({"train": {"compile": True}}).train.compile is True
    for bad in ("sometimes", "AUTO", 2, None):
        with pytest.raises(ParamsError) as e:
            parse_params({"train": {"compile": bad}})
        assert "train.compile: Input should be 'auto', True or False" in str(e.value)
        assert "train.compile." not in str(e.value)  # one line, not one per branch of a union


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


def test_duplicate_key_is_an_error_naming_key_and_both_lines(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("train:\n  epochs: 1\n  lora:\n    r: 8\n    r: 16\n  epochs: 3\nevaluate: {}\n")
    with pytest.raises(ParamsError) as err:
        load_params(f)
    msg = str(err.value)
    assert "train.lora.r (lines 4 and 5)" in msg and "train.epochs (lines 2 and 6)" in msg
    f.write_text("train: {epochs: 1}\ntrain: {epochs: 2}\n")
    with pytest.raises(ParamsError, match=r"duplicate key train \(lines 1 and 2\)"):
        load_params(f)


SECRET = "sk-proj-4fQ9xZ2LmN8pR7tV1wY3bC6dE0gH5jK"


@pytest.mark.parametrize("value", [SECRET, "ghp_a1B2c3D4e5F6g7H8i9J0", "Abc123def456GHI789jkl0", "my key!", "sk_live_x"])
def test_env_param_holding_a_secret_is_refused_and_never_echoed(tmp_path, value):
    f = tmp_path / "params.yaml"
    f.write_text(f"evaluate:\n  judge:\n    api_key_env: '{value}'\nserve:\n  api_key_env: OK_NAME\n")
    with pytest.raises(ParamsError) as err:
        load_params(f)
    msg = str(err.value)
    assert "evaluate.judge.api_key_env: must name an environment variable" in msg
    assert value not in msg and value[:6] not in msg.replace("api_key_env", "")


def test_env_param_names_are_accepted_and_ill_typed_ones_not_echoed():
    p = parse_params({"evaluate": {"judge": {"api_key_env": "OPENAI_API_KEY"}}, "serve": {"api_key_env": None}})
    assert p.evaluate.judge.api_key_env == "OPENAI_API_KEY" and p.serve.api_key_env is None
    with pytest.raises(ParamsError) as err:
        parse_params({"evaluate": {"judge": {"api_key_env": 12345678901234567}}})
    assert "12345678901234567" not in str(err.value) and "evaluate.judge.api_key_env" in str(err.value)


def test_params_yaml_sets_every_field_of_the_config_models():
    """One visible place for every value a stage uses: dvc.lock records it, so deleting a line or a
    release changing a code default shows up as a params change instead of silently changing a run."""
    import yaml

    from domainft.config import Params, leaf_keys, missing_keys

    unset = missing_keys(yaml.safe_load(open("params.yaml")))
    defaults = Params().model_dump(mode="json")

    def default(key):
        node = defaults
        for part in key.split("."):
            node = node[part]
        return node

    assert not unset, "add to params.yaml: " + ", ".join(f"{k}: {default(k)!r}" for k in unset)
    assert len(leaf_keys()) > 120 and "train.lora.target_modules" in leaf_keys()
    assert "prepare.columns" in leaf_keys() and "prepare.columns.question" not in leaf_keys()


def test_a_params_file_that_leaves_a_field_unset_says_so(tmp_path, caplog):
    f = tmp_path / "params.yaml"
    f.write_text("train:\n  epochs: 2\n")
    with caplog.at_level("WARNING", logger="domainft.config"):
        p = load_params(f)
    assert p.train.epochs == 2
    assert "code defaults used for" in caplog.text and "train.learning_rate" in caplog.text
