"""vLLM export: the compose file parses, mounts existing paths and agrees with the model folder."""
from __future__ import annotations

import json
import shutil

import pytest
import yaml
from click.testing import CliRunner

from domainft.cli import cli
from domainft.config import Params
from domainft.serving.export import parse_command, validate_export, write_vllm_export


def _args(out):
    spec = yaml.safe_load((out / "docker-compose.yml").read_text())
    return spec["services"]["vllm"], parse_command(spec["services"]["vllm"]["command"])


def test_merged_export_is_consistent(tiny_model_dir, tmp_path):
    params = Params()
    params.serve.api_key_env = "DOMAINFT_API_KEY"
    info = write_vllm_export(params, tiny_model_dir, out_dir=tmp_path / "serving")
    out = tmp_path / "serving"
    assert validate_export(out) == []
    service, args = _args(out)
    limit = json.loads((tiny_model_dir / "config.json").read_text())["max_position_embeddings"]
    assert info["max_model_len"] == int(args["max-model-len"]) == limit == 1024
    assert args["served-model-name"] == "domainft-finance" and args["model"] == "/models/model"
    assert args["chat-template"] == "/models/model/chat_template.jinja"
    assert args["generation-config"] == "/models/model"
    assert service["environment"] == {"VLLM_API_KEY": "${DOMAINFT_API_KEY:?set DOMAINFT_API_KEY}"}
    host = (out / service["volumes"][0].split(":")[0]).resolve()
    assert host == tiny_model_dir.resolve()
    readme = (out / "README.md").read_text()
    assert "docker compose -f serving/docker-compose.yml up" in readme and "--max-model-len=1024" in readme


def test_lora_export_sets_rank_and_module(tiny_model_dir, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 12, "base_model_name_or_path": str(tiny_model_dir)}))
    params = Params()
    params.serve.max_model_len = 512
    write_vllm_export(params, tiny_model_dir, adapter, tmp_path / "serving")
    service, args = _args(tmp_path / "serving")
    assert validate_export(tmp_path / "serving") == []
    assert args["enable-lora"] is True and args["max-lora-rank"] == "16"  # next rank vLLM accepts >= 12
    assert args["lora-modules"] == ["domainft-finance=/models/adapter"] and args["max-loras"] == "1"
    assert args["served-model-name"] == "domainft-finance-base" and args["max-model-len"] == "512"
    assert "environment" not in service


def test_inconsistencies_are_reported(tiny_model_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    params = Params()
    params.serve.vllm.max_model_len = 4096
    with pytest.raises(ValueError, match="max_position_embeddings=1024"):
        write_vllm_export(params, model, out_dir=tmp_path / "serving")
    params.serve.vllm.max_model_len = 0
    write_vllm_export(params, model, out_dir=tmp_path / "serving")
    gen = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps({**gen, "eos_token_id": [0]}))
    assert validate_export(tmp_path / "serving") == [
        "generation_config eos_token_id [0] lacks end-of-turn '<|im_end|>' (2)"]
    (model / "chat_template.jinja").unlink()
    assert any("--chat-template" in p for p in validate_export(tmp_path / "serving"))
    shutil.rmtree(model)
    assert any("does not exist" in p for p in validate_export(tmp_path / "serving"))


def test_cli_export_vllm(tiny_model_dir, tmp_path):
    (tmp_path / "params.yaml").write_text("serve:\n  model_name: bank-bot\n")
    base = ["export", "vllm", "--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "s")]
    result = CliRunner().invoke(cli, base + ["--model", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["served_model_name"] == "bank-bot"
    missing = CliRunner().invoke(cli, base + ["--model", str(tmp_path / "nope")])
    assert missing.exit_code != 0 and "config.json" in missing.output


def _fake_adapter(folder, rank, base):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": rank, "base_model_name_or_path": str(base)}))
    return folder


def test_named_adapters_become_lora_modules(tiny_model_dir, tmp_path):
    bank = _fake_adapter(tmp_path / "bank", 8, tiny_model_dir)
    legal = _fake_adapter(tmp_path / "legal", 40, tiny_model_dir)
    out = tmp_path / "serving"
    info = write_vllm_export(Params(), tiny_model_dir, out_dir=out, adapters={"bank": bank, "legal": legal})
    service, args = _args(out)
    assert validate_export(out) == []
    assert args["lora-modules"] == ["bank=/models/adapters/bank", "legal=/models/adapters/legal"]
    assert (args["max-loras"], args["max-lora-rank"], args["served-model-name"]) == ("2", "64", "domainft-finance-base")
    assert info["lora_modules"] == ["bank", "legal"]
    assert "`bank`, `legal`" in (out / "README.md").read_text()
    service["command"][service["command"].index("--max-loras=2")] = "--max-loras=1"
    (out / "docker-compose.yml").write_text(yaml.safe_dump({"services": {"vllm": service}}))
    assert validate_export(out) == ["2 --lora-modules but --max-loras 1"]
    shutil.copy(tiny_model_dir / "tokenizer_config.json", legal / "tokenizer_config.json")
    (legal / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    with pytest.raises(ValueError, match="adapter legal .* has its own chat template"):
        write_vllm_export(Params(), tiny_model_dir, out_dir=out, adapters={"bank": bank, "legal": legal})


def test_cli_export_vllm_named_adapters(tiny_model_dir, tmp_path):
    bank = _fake_adapter(tmp_path / "bank", 8, tiny_model_dir)
    (tmp_path / "params.yaml").write_text("serve: {}\n")
    base = ["export", "vllm", "--out", str(tmp_path / "s"), "--model", str(tiny_model_dir),
            "--params", str(tmp_path / "params.yaml")]
    result = CliRunner().invoke(cli, base + ["--adapter", f"bank={bank}", "--adapter", f"shop={bank}"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["lora_modules"] == ["bank", "shop"]
    both = CliRunner().invoke(cli, base + ["--adapter", str(bank), "--adapter", f"shop={bank}"])
    assert both.exit_code != 0 and "not both" in both.output
