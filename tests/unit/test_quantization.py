"""The NF4 round trip that a QLoRA adapter was trained against, rebuilt with bitsandbytes on CPU."""
import json

import pytest
import torch

from domainft.quantization import QuantizationError, apply_round_trip, nf4_round_trip, read_spec, write_spec

SPEC = {"method": "bitsandbytes-4bit", "quant_type": "nf4", "blocksize": 64, "double_quant": True,
        "dtype": "bfloat16", "quantized_modules": ["0"]}


def test_round_trip_has_at_most_16_levels_per_block_and_bounded_error():
    torch.manual_seed(0)
    w = torch.randn(32, 128)
    rt = nf4_round_trip(w, SPEC)
    assert rt.shape == w.shape and rt.dtype == torch.float32
    blocks_w, blocks_rt = w.reshape(-1, 64), rt.reshape(-1, 64)
    assert max(len(torch.unique(b)) for b in blocks_rt) <= 16  # 4 bits per weight
    # NF4's widest gap is between its codes -1 and -0.696: half of it, relative to the block absmax,
    # plus the absmax's own 8-bit double quantization and bf16 rounding
    rel = (blocks_rt - blocks_w).abs().max(dim=1).values / blocks_w.abs().max(dim=1).values
    assert float(rel.max()) < 0.17
    assert float((rt - w).abs().mean()) > 1e-3  # it is lossy: a merge onto it differs from one onto w


def test_describe_4bit_and_round_trip_match_a_model_transformers_loaded_in_4bit(tiny_model_dir):
    """Load the tiny model as QLoRA training does (NF4, double quant, bf16), on CPU: the record
    names every linear layer but lm_head, and the round trip equals the weights bitsandbytes stored."""
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from domainft.quantization import describe_4bit

    cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.bfloat16)
    q = AutoModelForCausalLM.from_pretrained(tiny_model_dir, quantization_config=cfg, dtype=torch.bfloat16,
                                             device_map="cpu")
    spec = describe_4bit(q)
    assert {k: spec[k] for k in ("quant_type", "blocksize", "double_quant", "dtype")} == \
        {"quant_type": "nf4", "blocksize": 64, "double_quant": True, "dtype": "bfloat16"}
    assert len(spec["quantized_modules"]) == 14 and "lm_head" not in spec["quantized_modules"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    for name in ("model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"):
        lin = q.get_submodule(name)
        stored = bnb.functional.dequantize_4bit(lin.weight.data, lin.weight.quant_state).float()
        assert torch.equal(stored, nf4_round_trip(base.get_submodule(name).weight, spec))
    with pytest.raises(QuantizationError, match="none"):
        describe_4bit(base)


def test_apply_round_trip_changes_only_named_modules():
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(128, 64), torch.nn.Linear(64, 64))
    before = [m.weight.detach().clone() for m in model]
    assert apply_round_trip(model, SPEC) == 1
    assert torch.equal(model[0].weight, nf4_round_trip(before[0], SPEC))
    assert torch.equal(model[1].weight, before[1])
    with pytest.raises(QuantizationError, match="'7'"):
        apply_round_trip(model, {**SPEC, "quantized_modules": ["7"]})


def test_spec_file_round_trip_and_validation(tmp_path):
    assert read_spec(tmp_path) is None  # no file: an adapter trained on unquantized weights
    write_spec(tmp_path, SPEC)
    assert read_spec(tmp_path) == SPEC
    (tmp_path / "quantization.json").write_text(json.dumps({"method": "gptq"}))
    with pytest.raises(QuantizationError, match="unusable quantization record"):
        read_spec(tmp_path)
