"""Model resolution for serving: folders, base + LoRA adapter, and MLflow registry URIs (real sqlite store)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from domainft.serving.loader import ModelLoadError, download_mlflow_model, find_model_folder, load_for_serving


def _logits(model, ids=(1, 2, 3, 4, 5)):
    with torch.no_grad():
        return model(torch.tensor([list(ids)])).logits[0]


def test_folder_eos_ids_limits_and_defaults(tiny_model_dir, tmp_path):
    loaded = load_for_serving(str(tiny_model_dir))
    assert loaded.eos_ids == [2] and loaded.max_model_len == 1024 and loaded.defaults == {}
    copy = tmp_path / "m"
    shutil.copytree(tiny_model_dir, copy)
    gen = json.loads((copy / "generation_config.json").read_text())
    (copy / "generation_config.json").write_text(json.dumps({**gen, "eos_token_id": [0], "temperature": 0.3}))
    loaded = load_for_serving(str(copy))
    assert 2 in loaded.eos_ids and 0 in loaded.eos_ids  # the end-of-turn token is always a stop id
    assert loaded.defaults == {"temperature": 0.3}


def test_missing_folder_and_nested_folder(tiny_model_dir, tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_for_serving(str(tmp_path / "nope"))
    nested = tmp_path / "artifacts" / "merged"
    shutil.copytree(tiny_model_dir, nested)
    (tmp_path / "artifacts" / "deeper").mkdir()
    assert find_model_folder(tmp_path) == nested


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    out = tmp_path_factory.mktemp("adapter")
    get_peft_model(base, cfg).save_pretrained(out)
    return out


def test_base_plus_adapter_equals_peft_model(tiny_model_dir, adapter_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    served = load_for_serving(str(tiny_model_dir), adapter=str(adapter_dir)).model
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    diff_ref = (_logits(served) - _logits(reference)).abs().max().item()
    diff_base = (_logits(served) - _logits(base)).abs().max().item()
    assert diff_ref < 1e-4 < diff_base  # the adapter is applied, and applied exactly
    # an adapter folder alone loads its base from base_model_name_or_path
    alone = load_for_serving(str(adapter_dir)).model
    assert (_logits(alone) - _logits(reference)).abs().max().item() < 1e-4


def test_qlora_adapter_is_served_on_the_nf4_weights_the_merge_uses(tiny_model_dir, adapter_dir, tmp_path):
    """base + QLoRA adapter at serving time == the merge stage's default (dequantized) merge."""
    import shutil

    from domainft.merge import merge_adapter
    from domainft.quantization import write_spec

    qdir = tmp_path / "qlora"
    shutil.copytree(adapter_dir, qdir)
    write_spec(qdir, {"method": "bitsandbytes-4bit", "quant_type": "nf4", "blocksize": 64, "double_quant": True,
                      "dtype": "bfloat16", "quantized_modules": [f"model.layers.{i}.self_attn.{p}"
                                                                 for i in (0, 1) for p in ("q_proj", "v_proj")]})
    recs = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}]
    m = merge_adapter(str(tiny_model_dir), str(qdir), str(tmp_path / "merged"), recs, n_prompts=1)
    assert m["quantized_modules"] == 4 and m["qlora_gap"]["max_abs_logit_diff"] > 1e-4
    served = load_for_serving(str(tiny_model_dir), adapter=str(qdir)).model
    merged = load_for_serving(str(tmp_path / "merged")).model
    plain = load_for_serving(str(tiny_model_dir), adapter=str(adapter_dir)).model
    assert (_logits(served) - _logits(merged)).abs().max().item() < 1e-4
    assert (_logits(served) - _logits(plain)).abs().max().item() > 1e-4


def test_mlflow_alias_downloads_once_into_cache(tiny_model_dir, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("serve-test", artifact_location=str(tmp_path / "mlartifacts"))
    run = client.create_run(exp)
    client.log_artifacts(run.info.run_id, str(tiny_model_dir), "merged")
    client.create_registered_model("domainft-test")
    mv = client.create_model_version("domainft-test", f"{run.info.artifact_uri}/merged", run_id=run.info.run_id)
    client.set_registered_model_alias("domainft-test", "champion", mv.version)

    cache = tmp_path / "cache"
    loaded = load_for_serving("models:/domainft-test@champion", tracking_uri=uri, cache_dir=cache)
    assert loaded.registered_name == "domainft-test"
    assert loaded.folder.is_relative_to(cache / "domainft-test" / "v1") and (loaded.folder / "config.json").exists()
    assert (cache / "domainft-test" / "v1" / ".domainft-complete").exists()
    ref = load_for_serving(str(tiny_model_dir)).model
    assert torch.equal(_logits(loaded.model), _logits(ref))
    (loaded.folder / "sentinel").write_text("x")  # a second resolve reuses the cached download
    again = load_for_serving("models:/domainft-test/1", tracking_uri=uri, cache_dir=cache)
    assert (again.folder / "sentinel").exists()
    with pytest.raises(ModelLoadError, match="cannot resolve models:/domainft-test@nope"):
        load_for_serving("models:/domainft-test@nope", tracking_uri=uri, cache_dir=cache)


def test_adapter_arguments_named_or_one_unnamed():
    from domainft.serving.loader import parse_adapter_args

    assert parse_adapter_args(["models/adapter"]) == ("models/adapter", {})
    assert parse_adapter_args(["bank=models/a", "legal=models:/legal-adapter@champion"]) == (
        None, {"bank": "models/a", "legal": "models:/legal-adapter@champion"})
    assert parse_adapter_args(["models:/x@champion"]) == ("models:/x@champion", {})
    assert parse_adapter_args(["dir/with=sign"]) == ("dir/with=sign", {})  # a '/' before '=': a path
    for bad, match in ((["a=x", "a=y"], "twice"), (["p", "a=x"], "not both"), (["p", "q"], "not both"),
                       (["-a=x"], "expected name=path"), (["a="], "expected name=path")):
        with pytest.raises(ModelLoadError, match=match):
            parse_adapter_args(bad)


def test_named_adapters_must_fit_the_base_and_each_other(tiny_model_dir, adapter_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from tiny import make_tiny_model
    from transformers import AutoModelForCausalLM

    from domainft.quantization import write_spec

    wider = make_tiny_model(tmp_path / "wider", hidden=96)
    other = tmp_path / "other-adapter"
    get_peft_model(AutoModelForCausalLM.from_pretrained(wider),
                   LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False)).save_pretrained(other)
    with pytest.raises(ModelLoadError, match="adapter legal .* does not fit the base"):
        load_for_serving(str(tiny_model_dir), adapters={"bank": str(adapter_dir), "legal": str(other)})
    qdir = tmp_path / "qlora"
    shutil.copytree(adapter_dir, qdir)
    write_spec(qdir, {"method": "bitsandbytes-4bit", "quant_type": "nf4", "blocksize": 64, "double_quant": True,
                      "dtype": "bfloat16", "quantized_modules": ["model.layers.0.self_attn.q_proj"]})
    with pytest.raises(ModelLoadError, match="different base weights"):
        load_for_serving(str(tiny_model_dir), adapters={"bank": str(adapter_dir), "q": str(qdir)})
    with pytest.raises(ModelLoadError, match="no adapter_config.json"):
        load_for_serving(str(tiny_model_dir), adapters={"bank": str(tmp_path)})
    loaded = load_for_serving(str(tiny_model_dir), adapters={"a": str(adapter_dir), "b": str(adapter_dir)})
    assert sorted(loaded.adapters) == ["a", "b"] and loaded.adapters["a"].eos_ids == [2]
    assert sorted(loaded.model.peft_config) == ["a", "b"]  # one base, two unmerged adapters


def test_registered_adapter_serves_from_any_folder_with_its_base_checked(tiny_model_dir, adapter_dir, tmp_path,
                                                                          monkeypatch):
    """A logged adapter's base_model_name_or_path is relative to the project (``models/base``): served
    from elsewhere by registry URI, its base comes from the registry by content hash."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from domainft.config import parse_params
    from domainft.registry import BASE_REF_FILE, register

    project = tmp_path / "project"
    (project / "metrics").mkdir(parents=True)
    (project / "metrics" / "eval.json").write_text(json.dumps({"rouge_l": {"base": 0.1, "tuned": 0.3}}))
    (project / "metrics" / "merge.json").write_text(json.dumps({"passed": True}))
    (project / "models").mkdir()
    shutil.copytree(tiny_model_dir, project / "models" / "base")
    shutil.copytree(adapter_dir, project / "models" / "adapter")
    cfg_file = project / "models" / "adapter" / "adapter_config.json"
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), "base_model_name_or_path": "models/base"}))
    (project / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(project)
    register(parse_params({"domain": {"name": "bank"}, "register": {"log_model": "adapter"}}))
    store = f"sqlite:///{project}/mlflow.db"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = load_for_serving("models:/domainft-bank/1", tracking_uri=store, cache_dir=str(elsewhere / "cache"))
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter_dir).eval()
    assert (_logits(loaded.model) - _logits(reference)).abs().max().item() < 1e-4
    assert loaded.folder.is_relative_to(elsewhere / "cache")  # the base came from the registry

    # a base whose content differs from the hash recorded at registration is refused
    shutil.rmtree(elsewhere / "cache")
    adapter_cached, _ = download_mlflow_model("models:/domainft-bank/1", store, elsewhere / "cache")
    ref_file = next(adapter_cached.rglob(BASE_REF_FILE))
    ref = json.loads(ref_file.read_text())
    ref_file.write_text(json.dumps({**ref, "base_sha256": "0" * 64}))
    with pytest.raises(ModelLoadError, match="content hash"):
        load_for_serving("models:/domainft-bank/1", tracking_uri=store, cache_dir=str(elsewhere / "cache"))
