"""`domainft serve` on the llama.cpp backend: the official openai client against uvicorn on 127.0.0.1.

Same API as the torch engine: chat template (the folder's, through encode_prompt), stop ids, stop
strings, streaming, usage and the OpenAI error format. Skips without llama-cpp-python or llama.cpp's
converter (see test_gguf.py).
"""
from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from loopback import free_port, running
from domainft.config import Params
from domainft.modeling.chat import encode_prompt
from domainft.serving import gguf as g

OK, WHY = g.llama_cpp_status()
try:
    g.find_converter()
    NO_CONVERTER = ""
except g.GgufExportError as err:
    NO_CONVERTER = str(err)
pytestmark = [pytest.mark.skipif(not OK, reason=WHY), pytest.mark.skipif(bool(NO_CONVERTER), reason=NO_CONVERTER)]
MODEL = "domainft-test"
USER = [{"role": "user", "content": "How do I block my card?"}]




def _params() -> Params:
    p = Params()
    p.serve.model_name = MODEL
    p.serve.max_new_tokens_limit = 256
    p.serve.max_model_len = 512
    return p


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("llamacpp-serve")
    model = Path(shutil.copytree(tiny_model_dir, root / "model"))
    records = [{"messages": USER + [{"role": "assistant", "content": "Tap Block card in the app."}]}]
    g.export_gguf(model, root / "gguf", records, quants=("q8_0",), n_prompts=1, max_new_tokens=8)
    return root


@pytest.fixture(scope="module")
def server(export_dir):
    from domainft.serving.app import build_app

    app = build_app(_params(), str(export_dir / "model"), backend="auto")  # finds <model>/../gguf
    with running(app) as url:
        yield url


def _client(url):
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_auto_picks_llama_cpp_when_the_export_matches(export_dir):
    from domainft.serving.app import resolve_backend

    kind, path, manifest, _ = resolve_backend("auto", str(export_dir / "model"), None, None)
    assert kind == "llamacpp" and path == export_dir / "gguf" / "model-q8_0.gguf"
    assert manifest["eos_token_ids"] == [2]


def test_greedy_answer_is_llama_cpp_greedy_with_the_folder_template(server, export_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(export_dir / "model")
    client = _client(server)
    assert [m.id for m in client.models.list().data] == [MODEL]
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["backend"] == "llamacpp"
    r = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=8, temperature=0)
    prompt = encode_prompt(tok, USER)
    llm = g.load_llama(export_dir / "gguf" / "model-q8_0.gguf", 512, 1)
    ref = g.llama_greedy(llm, prompt, 8, {2})
    assert r.choices[0].message.content == tok.decode(ref, skip_special_tokens=True)
    assert r.choices[0].finish_reason == ("stop" if ref[-1] == 2 else "length")
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(prompt), len(ref))


def test_stream_equals_non_stream_and_seeded_sampling_repeats(server):
    client = _client(server)
    full = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=10, temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=USER, max_tokens=10, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == full.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    a, b = (client.chat.completions.create(model=MODEL, messages=USER, max_tokens=10, temperature=1.0, seed=7)
            for _ in range(2))
    assert a.choices[0].message.content == b.choices[0].message.content


def test_errors_keep_the_openai_format_and_concurrent_requests_all_answer(server):
    import openai

    client = _client(server)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=USER, max_tokens=4, seed=2**70)
    assert err.value.body["param"] == "seed"
    r = httpx.post(f"{server}/v1/chat/completions", content=json.dumps({"model": "nope", "messages": USER}))
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(f"{server}/v1/chat/completions", json={"model": MODEL, "messages": USER, "max_tokens": 600})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda i: client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Question {i}?"}], max_tokens=6, temperature=0), range(8)))
    assert all(o.choices[0].finish_reason in ("stop", "length") for o in outs)
    again = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Question 3?"}],
                                           max_tokens=6, temperature=0)
    assert again.choices[0].message.content == outs[3].choices[0].message.content  # prefix reuse changes nothing


def test_stop_string_is_not_returned(server):
    client = _client(server)
    full = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=12, temperature=0).choices[0].message.content
    if len(full) < 4:
        pytest.skip(f"greedy answer too short to cut: {full!r}")
    stop = full[2:4]
    cut = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=12, temperature=0, stop=[stop])
    assert cut.choices[0].message.content == full[:full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
