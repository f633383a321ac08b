"""The server cuts an overlong source with the same function and budget as evaluation."""
import json

from domainft.modeling.chat import SOURCE_CUT_MARKER, SourcePolicy, encode_prompt, fit_prompt
from domainft.serving.app import ServerConfig, _prepare
from domainft.serving.schemas import parse_request

SOURCE = " ".join(f"Revenue in quarter {i} was {i * 7} million dollars." for i in range(60)) + "\n\nSummarise the call."


def _req(**extra):
    return parse_request(json.dumps({"model": "m", "messages": [{"role": "user", "content": SOURCE}], **extra}).encode())


def test_server_prompt_is_evaluations_fitted_prompt(smollm2_tokenizer):
    tok = smollm2_tokenizer
    msgs = [{"role": "user", "content": SOURCE}]
    whole = encode_prompt(tok, msgs)
    assert len(whole) > 300
    policy = SourcePolicy(256, "start", trim=True, reserve=64)
    cfg = ServerConfig(model_id="m", max_model_len=4096, source_policy=policy)
    ids, new = _prepare(_req(max_tokens=32), tok, cfg)
    assert ids == fit_prompt(tok, msgs, policy, 32).ids and len(ids) <= 256 - 32 and new == 32
    assert SOURCE_CUT_MARKER.strip() in tok.decode(ids) and tok.decode(ids).rstrip().endswith("assistant")
    ids_default, _ = _prepare(_req(), tok, cfg)  # no max_tokens: the reserve (evaluate.max_new_tokens)
    assert ids_default == fit_prompt(tok, msgs, policy, 64).ids and len(ids_default) <= 192
    # no trimming policy (train.overlong drop) or none at all: the prompt is served whole, as before
    for p in (SourcePolicy(256, "end", trim=False), None):
        assert _prepare(_req(max_tokens=32), tok, ServerConfig(model_id="m", max_model_len=4096, source_policy=p))[0] == whole
