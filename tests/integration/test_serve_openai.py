"""`domainft serve` end to end: the official openai client against real uvicorn servers on 127.0.0.1.

Servers run in a thread (``uvicorn.Server``) on a free port with the tiny model; one test starts the
real ``domainft serve`` command in a subprocess on a model registered in a sqlite MLflow store.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import torch

from loopback import free_port, running
from domainft.config import Params
from domainft.modeling.chat import encode_prompt
from domainft.serving.app import build_app

pytestmark = pytest.mark.integration
MODEL = "domainft-test"
KEY_ENV = "DOMAINFT_TEST_SERVE_KEY"
USER = [{"role": "user", "content": "How do I block my card?"}]




def _params(**serve) -> Params:
    p = Params()
    p.serve.model_name = MODEL
    p.serve.max_new_tokens_limit = 256
    p.serve.max_body_bytes = 20_000
    for k, v in serve.items():
        setattr(p.serve, k, v)
    return p


def _client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def _greedy(folder: Path, prompt: list[int], n: int) -> list[int]:
    """Greedy tokens by full recomputation with plain transformers (the reference)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(prompt):]


def _derived_model(src: Path, dst: Path, edit) -> Path:
    from transformers import AutoModelForCausalLM

    shutil.copytree(src, dst)
    model = AutoModelForCausalLM.from_pretrained(dst)
    with torch.no_grad():
        edit(model)
    model.save_pretrained(dst, safe_serialization=True)
    return dst


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    with running(build_app(_params(max_batch_size=4), str(tiny_model_dir))) as url:
        yield url


@pytest.fixture(scope="module")
def tok(smollm2_tokenizer):
    return smollm2_tokenizer


# --------------------------------------------------------------------------- round trips
def test_models_health_and_greedy_round_trip(server, tiny_model_dir, tok):
    client = _client(server)
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    r = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=8, temperature=0)
    prompt = encode_prompt(tok, USER)
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == tok.decode(_greedy(tiny_model_dir, prompt, 8), skip_special_tokens=True)
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (len(prompt), 8, len(prompt) + 8)


def test_stream_equals_non_stream_with_usage(server, tok):
    client = _client(server)
    kw = dict(model=MODEL, messages=USER, max_tokens=24, temperature=1.0, seed=11)
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == whole.choices[0].message.content and len(set(text.split())) > 3
    assert finishes == ["length"] == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 24 == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == len(encode_prompt(tok, USER))


def test_stop_strings_cut_content_streamed_or_not(server):
    client = _client(server)
    kw = dict(model=MODEL, messages=USER, max_tokens=40, temperature=1.0, seed=5)
    full = client.chat.completions.create(**kw).choices[0].message.content
    stop = full[len(full) // 2: len(full) // 2 + 3]
    assert stop.strip(), full
    r = client.chat.completions.create(**kw, stop=[stop, "\u2603never"])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == full[: full.index(stop)]
    assert r.usage.completion_tokens < 40
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**kw, stop=stop, stream=True))
    assert streamed == full[: full.index(stop)]


@pytest.fixture(scope="module")
def eot_server(tiny_model_dir, tmp_path_factory, tok):
    """The tiny model with an untied output row for <|im_end|> = 1.5 x the row of its greedy token."""
    prompt = encode_prompt(tok, USER)
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    first = _greedy(tiny_model_dir, prompt, 1)[0]

    def edit(model):
        model.config.tie_word_embeddings = False
        head = model.get_input_embeddings().weight.detach().clone()
        head[eot] = 1.5 * head[first]
        model.lm_head.weight = torch.nn.Parameter(head)

    folder = _derived_model(tiny_model_dir, tmp_path_factory.mktemp("eot") / "m", edit)
    assert _greedy(folder, prompt, 1) == [eot]
    with running(build_app(_params(), str(folder))) as url:
        yield url


def test_end_of_turn_token_ends_the_reply_and_never_shows(eot_server):
    client = _client(eot_server)
    r = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=50, temperature=0)
    assert (r.choices[0].finish_reason, r.choices[0].message.content, r.usage.completion_tokens) == ("stop", "", 1)
    for seed in range(6):  # sampled replies: whatever stops them, no template token leaks
        r = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=30, temperature=1.5, seed=seed)
        content = r.choices[0].message.content
        assert "<|im_end|>" not in content and "<|im_start|>" not in content
        assert r.choices[0].finish_reason == ("length" if r.usage.completion_tokens == 30 else "stop")


@pytest.fixture(scope="module")
def eos_server(tiny_model_dir, tmp_path_factory, tok):
    """A varied-output model whose generation_config lists a mid-reply token as an extra eos id."""
    gen = torch.Generator().manual_seed(3)

    def edit(model):
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)

    folder = _derived_model(tiny_model_dir, tmp_path_factory.mktemp("eos") / "m", edit)
    ref = _greedy(folder, encode_prompt(tok, USER), 12)
    k = next(i for i in range(3, 12) if ref[i] not in ref[:i])
    cfg = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**cfg, "eos_token_id": [2, ref[k]]}))
    with running(build_app(_params(), str(folder))) as url:
        yield url, ref, k


def test_generation_config_eos_ids_stop_generation(eos_server, tok):
    url, ref, k = eos_server
    r = _client(url).chat.completions.create(model=MODEL, messages=USER, max_tokens=12, temperature=0)
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens == k + 1
    assert r.choices[0].message.content == tok.decode(ref[:k], skip_special_tokens=True)


# --------------------------------------------------------------------------- bad requests
BAD = [
    ({"model": MODEL, "messages": []}, 400, "messages"),
    ({"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages[0].role"),
    ({"model": MODEL, "messages": USER, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": MODEL, "messages": USER, "max_tokens": 257}, 400, "max_tokens"),
    ({"model": MODEL, "messages": [{"role": "user", "content": " hello" * 900}], "max_tokens": 256}, 400, "messages"),
    ({"model": MODEL, "messages": USER, "max_tokens": "8"}, 400, "max_tokens"),
    ({"model": MODEL, "messages": USER, "temperature": "warm"}, 400, "temperature"),
    ({"model": MODEL, "messages": "hello"}, 400, "messages"),
    ({"model": MODEL, "messages": USER, "functions": []}, 400, "functions"),
    ({"model": "gpt-4o", "messages": USER}, 404, "model"),
]


@pytest.mark.parametrize("body, status, param", BAD)
def test_bad_requests_get_4xx_openai_errors(server, body, status, param):
    r = httpx.post(f"{server}/v1/chat/completions", json=body)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]


def test_openai_client_raises_typed_errors_and_limits(server):
    client = _client(server)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": " hello" * 900}], max_tokens=256)
    assert info.value.status_code == 400 and info.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=USER)


def test_malformed_and_oversized_bodies(server):
    r = httpx.post(f"{server}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    big = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * 30_000}]}).encode()
    r = httpx.post(f"{server}/v1/chat/completions", content=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = httpx.post(f"{server}/v1/chat/completions", content=iter([big[:15_000], big[15_000:]]))  # chunked
    assert r.status_code == 413
    assert httpx.get(f"{server}/v1/nothing").status_code == 404
    assert httpx.get(f"{server}/v1/chat/completions").json()["error"]["code"] == "method_not_allowed"


# --------------------------------------------------------------------------- hardening
def test_bad_seed_and_deep_json_get_400_and_leave_concurrent_requests_untouched(server, tiny_model_dir, tok):
    """Three greedy requests in flight, then a 2**70 seed, 9000-deep JSON and NaN: before, the seed failed all four
    with 500 and the deep body was a 500 RecursionError."""
    prompts = [[{"role": "user", "content": f"Request {k}: how do I block my card?"}] for k in range(3)]
    deep = b'{"model": "' + MODEL.encode() + b'", "messages": ' + b"[" * 9_000 + b"]" * 9_000 + b"}"  # under the 20 kB body limit
    with ThreadPoolExecutor(3) as pool:
        good = [pool.submit(_client(server).chat.completions.create, model=MODEL, messages=m, max_tokens=40,
                            temperature=0) for m in prompts]
        deadline = time.monotonic() + 30
        while httpx.get(f"{server}/health").json()["running"] < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        with httpx.Client(base_url=server, timeout=30) as http:  # one keep-alive connection for all of them
            r_seed = http.post("/v1/chat/completions", json={"model": MODEL, "messages": USER, "seed": 2**70,
                                                             "temperature": 1.0, "max_tokens": 5})
            r_deep = http.post("/v1/chat/completions", content=deep)
            r_nan = http.post("/v1/chat/completions", content=json.dumps(
                {"model": MODEL, "messages": USER, "temperature": float("nan")}).encode())
            r_after = http.post("/v1/chat/completions", json={"model": MODEL, "messages": USER, "max_tokens": 2})
        answers = [f.result() for f in good]
    assert (r_seed.status_code, r_seed.json()["error"]["param"]) == (400, "seed")
    assert r_deep.status_code == 400 and "not valid JSON" in r_deep.json()["error"]["message"]
    assert r_nan.status_code == 400
    assert r_after.status_code == 200 and r_after.json()["usage"]["completion_tokens"] == 2  # same connection
    for m, a in zip(prompts, answers):
        ref = tok.decode(_greedy(tiny_model_dir, encode_prompt(tok, m), 40), skip_special_tokens=True)
        assert (a.choices[0].message.content, a.usage.completion_tokens) == (ref, 40)


@pytest.fixture(scope="module")
def strict_server(tiny_model_dir):
    p = _params(header_timeout_s=1.0, body_timeout_s=1.5)
    with running(build_app(p, str(tiny_model_dir)), p.serve) as url:
        yield url


def _raw(url: str, chunks: list[bytes], pause: float, read_for: float) -> tuple[bytes, float]:
    """Send ``chunks`` ``pause`` s apart on one socket; return what came back and when it closed (s)."""
    host, port = url.removeprefix("http://").split(":")
    start = time.monotonic()
    with socket.create_connection((host, int(port))) as sock:
        sock.settimeout(read_for)
        try:
            for c in chunks:
                sock.sendall(c)
                time.sleep(pause)
        except OSError:  # closed by the server mid-trickle
            pass
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except (socket.timeout, ConnectionResetError):
            pass
    return data, time.monotonic() - start


def test_slow_headers_and_bodies_are_timed_out(strict_server):
    """Slow-loris: a head or body trickled a byte at a time is cut at its deadline with a 408."""
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: 200\r\n\r\n").encode()
    data, took = _raw(strict_server, [head[i:i + 1] for i in range(len(head))], 0.1, 10)  # 10 bytes/s head
    assert data.startswith(b"HTTP/1.1 408") and b"request_timeout" in data and 0.9 < took < 4, (data, took)
    data, took = _raw(strict_server, [head, b'{"model": "'] + [b"x"] * 40, 0.1, 10)  # head fine, body trickles
    assert data.startswith(b"HTTP/1.1 408") and b"request body not received within 1.5 s" in data
    assert 1.4 < took < 5, took
    data, took = _raw(strict_server, [], 0, 10)  # connect and say nothing
    assert data.startswith(b"HTTP/1.1 408") and took < 4
    # a request that arrives in time is unaffected, before and after the others
    body = json.dumps({"model": MODEL, "messages": USER, "max_tokens": 3}).encode()
    data, _ = _raw(strict_server, [head.replace(b"200", str(len(body)).encode()) + body], 0, 30)
    assert data.startswith(b"HTTP/1.1 200") and b'"completion_tokens":3' in data


# --------------------------------------------------------------------------- several adapters on one base
LEGAL_SYSTEM = "You are a careful legal assistant."


def _adapter(base: Path, out: Path, seed: int, targets: list[str], system: str | None = None) -> tuple[Path, Path]:
    """A random LoRA adapter on ``base`` and its merged model folder (the reference it must answer like).

    With ``system``, the adapter carries its own tokenizer whose chat template has that default
    system prompt, so its prompts differ from the base's.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                          LoraConfig(r=8, lora_alpha=32, target_modules=targets, init_lora_weights=False))
    peft.save_pretrained(out / "adapter")
    merged = out / "merged"
    shutil.copytree(base, merged)
    peft.merge_and_unload().save_pretrained(merged, safe_serialization=True)
    if system:
        tok = AutoTokenizer.from_pretrained(base)
        tok.chat_template = tok.chat_template.replace(
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face", system)
        assert system in tok.chat_template
        tok.save_pretrained(out / "adapter")
        tok.save_pretrained(merged)
    return out / "adapter", merged


@pytest.fixture(scope="module")
def two_adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    bank = _adapter(tiny_model_dir, root / "bank", 1, ["q_proj", "v_proj", "o_proj"])
    legal = _adapter(tiny_model_dir, root / "legal", 2, ["gate_proj", "up_proj", "down_proj"], LEGAL_SYSTEM)
    p = _params(max_batch_size=8)
    app = build_app(p, str(tiny_model_dir), adapters={"bank": str(bank[0]), "legal": str(legal[0])})
    with running(app) as url:
        yield url, {"bank": bank[1], "legal": legal[1], f"{MODEL}-base": tiny_model_dir}


def test_two_adapters_answer_like_their_own_merged_models(two_adapters):
    """10 prompts x (bank, legal, base) in flight at once, so batches mix adapters: greedy answers
    equal greedy decoding of each adapter's own merged model (full recomputation)."""
    from transformers import AutoTokenizer

    url, merged = two_adapters
    listed = {m.id: getattr(m, "parent", None) for m in _client(url).models.list().data}
    assert listed == {f"{MODEL}-base": None, "bank": f"{MODEL}-base", "legal": f"{MODEL}-base"}
    prompts = [[{"role": "user", "content": f"Question {k}: what does clause {k * 7} say about fees?"}]
               for k in range(10)]
    jobs = [(name, m) for name in merged for m in prompts]

    def ask(job):
        name, m = job
        return _client(url).chat.completions.create(model=name, messages=m, max_tokens=12, temperature=0)

    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(ask, jobs))
    from transformers import AutoModelForCausalLM

    replies, lengths = {}, {}
    for name, folder in merged.items():
        tok, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder).eval()
        for (n, m), a in zip(jobs, answers):
            if n != name:
                continue
            seq = prompt = encode_prompt(tok, m)
            with torch.no_grad():
                for _ in range(12):
                    seq = seq + [int(model(torch.tensor([seq])).logits[0, -1].argmax())]
            ref = tok.decode(seq[len(prompt):], skip_special_tokens=True)
            assert (a.model, a.usage.prompt_tokens) == (name, len(prompt))
            assert a.choices[0].message.content == ref, (name, m)
            replies.setdefault(name, []).append(ref)
            lengths.setdefault(name, []).append(len(prompt))
    assert replies["bank"] != replies["legal"] != replies[f"{MODEL}-base"] != replies["bank"]  # adapters matter
    assert lengths["bank"] == lengths[f"{MODEL}-base"] != lengths["legal"]  # legal's own chat template
    with pytest.raises(openai.NotFoundError) as info:
        ask(("medical", prompts[0]))
    assert "'bank'" in info.value.body["message"] and "'legal'" in info.value.body["message"]


# --------------------------------------------------------------------------- auth, load, disconnects
def test_api_key_auth(tiny_model_dir):
    os.environ[KEY_ENV] = "s3cret-key"
    try:
        app = build_app(_params(api_key_env=KEY_ENV), str(tiny_model_dir))
    finally:
        del os.environ[KEY_ENV]
    with running(app) as url:
        with pytest.raises(openai.AuthenticationError) as info:
            _client(url, "wrong").chat.completions.create(model=MODEL, messages=USER, max_tokens=2)
        assert info.value.status_code == 401 and info.value.body["code"] == "invalid_api_key"
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert httpx.get(f"{url}/health").status_code == 200  # liveness stays open
        r = _client(url, "s3cret-key").chat.completions.create(model=MODEL, messages=USER, max_tokens=2)
        assert r.usage.completion_tokens == 2
    with pytest.raises(ValueError, match=KEY_ENV):
        build_app(_params(api_key_env=KEY_ENV), str(tiny_model_dir))  # unset key: refuse to start open


def test_full_queue_answers_503_with_retry_after(tiny_model_dir):
    app = build_app(_params(max_queue=1, max_batch_size=1, max_new_tokens_limit=900, retry_after_s=2), str(tiny_model_dir))
    with running(app) as url:
        body = {"model": MODEL, "messages": USER, "max_tokens": 400, "temperature": 0}
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120), range(6)))
        codes = sorted(a.status_code for a in answers)
        assert set(codes) == {200, 503} and codes.count(200) >= 2, codes
        busy = next(a for a in answers if a.status_code == 503)
        assert busy.headers["retry-after"] == "2" and busy.json()["error"]["code"] == "overloaded"
        assert all(a.json()["usage"]["completion_tokens"] == 400 for a in answers if a.status_code == 200)
        r = httpx.post(f"{url}/v1/chat/completions", json={**body, "max_tokens": 3}, timeout=60)
        assert r.status_code == 200  # still serving after the burst

        # a streaming client that leaves frees its batch row long before max_tokens
        steps = httpx.get(f"{url}/health").json()["steps"]
        with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "max_tokens": 900, "stream": True}) as s:
            lines = s.iter_lines()
            assert next(lines).startswith("data: ")
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/health").json()["running"] and time.monotonic() < deadline:
            time.sleep(0.05)
        health = httpx.get(f"{url}/health").json()
        assert health["running"] == 0 and health["queued"] == 0
        assert health["steps"] - steps < 600, health  # 900 tokens would take 900 forward passes


def test_cli_serves_mlflow_alias(tiny_model_dir, tmp_path):
    """`domainft serve --model models:/<name>@champion` in a subprocess, from a sqlite registry."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.create_run(client.create_experiment("serve", artifact_location=str(tmp_path / "mlartifacts")))
    client.log_artifacts(run.info.run_id, str(tiny_model_dir), "merged")
    client.create_registered_model(MODEL)
    mv = client.create_model_version(MODEL, f"{run.info.artifact_uri}/merged", run_id=run.info.run_id)
    client.set_registered_model_alias(MODEL, "champion", mv.version)
    (tmp_path / "params.yaml").write_text(f"serve:\n  cache_dir: {tmp_path / 'cache'}\n  max_batch_size: 2\n"
                                          "  max_new_tokens_limit: 2000\n")
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.Popen([sys.executable, "-m", "domainft.cli", "serve", "--model", f"models:/{MODEL}@champion",
                             "--port", str(port), "--params", str(tmp_path / "params.yaml")],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.3)
        r = _client(url).chat.completions.create(model=MODEL, messages=USER, max_tokens=4, temperature=0)
        assert r.model == MODEL and r.usage.completion_tokens == 4

        # graceful shutdown: SIGTERM while 2 requests run and 1 waits in the queue (batch of 2); all 3 finish
        def ask(n: int, stream: bool):
            if stream:
                chunks = list(_client(url).chat.completions.create(
                    model=MODEL, messages=USER, max_tokens=n, temperature=0, stream=True,
                    stream_options={"include_usage": True}))
                return chunks[-1].usage.completion_tokens
            return _client(url).chat.completions.create(model=MODEL, messages=USER, max_tokens=n,
                                                        temperature=0).usage.completion_tokens

        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(ask, n, st) for n, st in ((300, False), (300, True), (60, False))]
            deadline = time.monotonic() + 30
            while (h := httpx.get(f"{url}/health").json())["running"] + h["queued"] < 3:
                assert time.monotonic() < deadline, h
                time.sleep(0.02)
            assert h["queued"] >= 1, h
            proc.terminate()
            time.sleep(1.0)
            with pytest.raises(httpx.TransportError):  # no new connections while draining
                httpx.get(f"{url}/health", timeout=5)
            assert [f.result(timeout=120) for f in futures] == [300, 300, 60]
    finally:
        proc.terminate()
        out = proc.communicate(timeout=60)[0]
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal (exit status -15)
    assert proc.returncode in (0, -15) and "Application shutdown complete" in out, out[-2000:]
    assert "Cancel" not in out and "server shutting down" not in out, out[-2000:]


def test_domainft_serve_as_the_judge_endpoint_runs_offline(server, tmp_path, monkeypatch):
    """The judge path end to end against `domainft serve`: the tiny model's replies are not valid
    verdicts, so every call is retried once, then counted as an error; nothing is scored."""
    from domainft.config import JudgeParams
    from domainft.evaluation.judge import judge_predictions

    monkeypatch.setenv("DOMAINFT_JUDGE_API_KEY", "unused")
    rows = [{"prompt": USER, "reference": "Freeze it in the app under Cards > Block.",
             "base_answer": "Call us.", "tuned_answer": "Use Cards > Block in the app."}]
    params = JudgeParams(enabled=True, base_url=f"{server}/v1", model=MODEL, max_retries=1, backoff_s=0,
                         max_tokens=16, cache_path=str(tmp_path / "cache.jsonl"))
    out = judge_predictions(rows, params)
    assert out["judge.status"] == "failed" and out["judge.errors"] == 4
    assert out["judge.calls"] == 8  # answered (HTTP 200) but unparseable: retried, not rejected as 4xx
    assert not any(k.startswith(("judge.single.", "judge.pairwise.")) for k in out)
