"""OpenAI-compatible HTTP API (FastAPI) over the batching :class:`~domainft.serving.engine.Engine`.

Routes: ``POST /v1/chat/completions`` (JSON or SSE stream), ``GET /v1/models``, ``GET /health``.
Prompts are built with :func:`domainft.modeling.chat.fit_prompt` (the model folder's stored chat
template, the same ids training and evaluation use; with ``train.overlong: trim_source`` a prompt
over ``train.max_seq_length`` minus the asked tokens has its longest user turn cut at
``train.source_cut``, exactly as evaluation does; the ``usage`` of such a reply counts the
prompt after the cut). Defaults for ``temperature`` / ``top_p`` come
from keys present in the folder's generation_config.json, else the OpenAI defaults (1.0), which is
what vLLM does with ``--generation-config``.

Status codes: 400 invalid request, 401 missing/wrong API key, 404 unknown model or route,
408 request head or body not received within ``serve.header_timeout_s`` / ``body_timeout_s``
(:mod:`domainft.serving.http`), 413 body over ``serve.max_body_bytes``, 503 queue full (with
``Retry-After``), 500 generation error (that request only; see the engine's failure containment).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from domainft.modeling.chat import SourcePolicy, fit_prompt
from domainft.serving.engine import Engine, EngineOverloaded, EngineUnavailable, Event, GenRequest
from domainft.serving.schemas import ApiError, ChatCompletionRequest, parse_request

log = logging.getLogger(__name__)


@dataclass
class ServerConfig:
    """What the app needs besides the engine.

    Args:
        model_id: the served model name (``GET /v1/models``; requests must name it, or a route).
        max_model_len: prompt + completion tokens limit.
        max_new_tokens_limit: largest accepted ``max_tokens``.
        max_body_bytes: larger request bodies get 413.
        api_key: when set, ``/v1/*`` requires ``Authorization: Bearer <api_key>``.
        retry_after_s: ``Retry-After`` seconds sent with 503.
        defaults: default sampling values (``temperature``, ``top_p``).
        routes: served ids -> :class:`Route`; empty = ``{model_id: the model with create_app's tokenizer}``.
        source_policy: training's long-source policy (None = prompts whole), see the module docstring.
    """

    model_id: str
    max_model_len: int
    max_new_tokens_limit: int = 1024
    max_body_bytes: int = 1_000_000
    api_key: str | None = None
    retry_after_s: int = 1
    defaults: dict = field(default_factory=dict)
    routes: dict[str, "Route"] = field(default_factory=dict)
    source_policy: SourcePolicy | None = None


@dataclass
class Route:
    """What a request's ``model`` selects.

    Args:
        adapter: the engine adapter name; None = the loaded model itself.
        tokenizer: renders the prompt with its chat template.
        eos_ids: ids ending this model's turn; None = the engine's.
        parent: the base model id, listed by ``GET /v1/models`` for adapters (as vLLM does).
    """

    adapter: str | None
    tokenizer: object
    eos_ids: frozenset[int] | None = None
    parent: str | None = None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {declared} bytes exceeds the {limit}-byte limit", code="request_too_large")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"request body exceeds the {limit}-byte limit", code="request_too_large")
            chunks.append(chunk)
    except ClientDisconnect:  # the client left, or the body deadline closed the connection; nobody reads this
        raise ApiError(408, "request body incomplete: the connection closed", code="request_timeout") from None
    return b"".join(chunks)


def _prepare(req: ChatCompletionRequest, tokenizer, cfg: ServerConfig) -> tuple[list[int], int]:
    """Prompt ids and the effective max_tokens; raises ApiError for limits and template errors."""
    from jinja2 import TemplateError

    asked = req.max_completion_tokens or req.max_tokens
    name = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
    try:
        prompt = fit_prompt(tokenizer, req.chat_messages(), cfg.source_policy, asked).ids
    except (TemplateError, ValueError) as err:  # templates may raise_exception() on unsupported role orders
        raise ApiError(400, f"messages cannot be rendered with the chat template: {err}", param="messages") from None
    if asked is not None and asked > cfg.max_new_tokens_limit:
        raise ApiError(400, f"{name}={asked} exceeds this server's limit of {cfg.max_new_tokens_limit}", param=name)
    room = cfg.max_model_len - len(prompt)
    if room < 1 or (asked is not None and asked > room):
        raise ApiError(400, f"this model's maximum context length is {cfg.max_model_len} tokens; the messages take "
                            f"{len(prompt)} and {asked or 1} more were requested", param="messages",
                       code="context_length_exceeded")
    return prompt, asked or min(room, cfg.max_new_tokens_limit)


def create_app(engine: Engine, tokenizer, cfg: ServerConfig) -> FastAPI:
    """Build the FastAPI app; its lifespan starts the engine (if needed) and stops it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not engine.alive:
            engine.start()
        yield
        engine.stop()

    app = FastAPI(title="domainft", lifespan=lifespan)
    created = int(time.time())
    routes = cfg.routes or {cfg.model_id: Route(None, tokenizer)}

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        code = str(err.detail).lower().replace(" ", "_")  # not_found, method_not_allowed
        return JSONResponse(ApiError(err.status_code, str(err.detail), code=code).body(), status_code=err.status_code,
                            headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, err: Exception):
        log.exception("unhandled error")
        return JSONResponse(ApiError(500, f"internal error: {type(err).__name__}", type="server_error").body(), status_code=500)

    def check_auth(request: Request) -> None:
        if cfg.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), cfg.api_key.encode()):
            raise ApiError(401, "missing or incorrect API key (send Authorization: Bearer <key>)",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    @app.get("/health")
    async def health():
        body = {"status": "ok" if engine.alive else "down", "model": cfg.model_id, **engine.stats()}
        return JSONResponse(body, status_code=200 if engine.alive else 503)

    @app.get("/v1/models")
    async def models(request: Request):
        check_auth(request)
        return {"object": "list", "data": [
            {"id": mid, "object": "model", "created": created, "owned_by": "domainft",
             "max_model_len": cfg.max_model_len, **({"parent": r.parent} if r.parent else {})}
            for mid, r in routes.items()]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        check_auth(request)
        req = parse_request(await _read_body(request, cfg.max_body_bytes))
        route = routes.get(req.model)
        if route is None:
            raise ApiError(404, f"model {req.model!r} is not served here; available: {', '.join(map(repr, routes))}",
                           param="model", code="model_not_found")
        prompt, max_tokens = await run_in_threadpool(_prepare, req, route.tokenizer, cfg)
        loop, events = asyncio.get_running_loop(), asyncio.Queue()

        def on_event(ev: Event) -> None:  # called from the engine thread
            try:
                loop.call_soon_threadsafe(events.put_nowait, ev)
            except RuntimeError:  # event loop closed (shutdown)
                pass

        gen = GenRequest(prompt, max_tokens, on_event, stop=req.stop_list(), seed=req.seed,
                         adapter=route.adapter, eos_ids=route.eos_ids,
                         temperature=req.temperature if req.temperature is not None else cfg.defaults.get("temperature", 1.0),
                         top_p=req.top_p if req.top_p is not None else cfg.defaults.get("top_p", 1.0))
        try:
            engine.submit(gen)
        except EngineOverloaded as err:
            raise ApiError(503, f"server overloaded ({err}); retry later", type="server_error",
                           code="overloaded", headers={"Retry-After": str(cfg.retry_after_s)}) from None
        except EngineUnavailable as err:
            raise ApiError(503, str(err), type="server_error", code="unavailable") from None
        rid, now = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(_sse(gen, events, rid, now, req.model, include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        parts: list[str] = []
        try:
            while True:
                ev: Event = await events.get()
                if ev.error:
                    raise ApiError(500, ev.error, type="server_error")
                parts.append(ev.delta)
                if ev.finish_reason:
                    break
        finally:
            gen.cancelled.set()  # no-op when finished; frees the batch row if the client left
        return {"id": rid, "object": "chat.completion", "created": now, "model": req.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(parts)},
                             "finish_reason": ev.finish_reason, "logprobs": None}],
                "usage": _usage(ev)}

    return app


def _usage(ev: Event) -> dict:
    return {"prompt_tokens": ev.prompt_tokens, "completion_tokens": ev.completion_tokens,
            "total_tokens": ev.prompt_tokens + ev.completion_tokens}


async def _sse(gen: GenRequest, events: asyncio.Queue, rid: str, created: int, model: str, include_usage: bool):
    """Server-sent events in the OpenAI chunk format, ending with ``data: [DONE]``."""

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    usage = {"usage": None} if include_usage else {}
    try:
        yield chunk({"role": "assistant", "content": ""}, **usage)
        while True:
            ev: Event = await events.get()
            if ev.error:
                yield f"data: {json.dumps(ApiError(500, ev.error, type='server_error').body())}\n\n"
                break
            if ev.delta:
                yield chunk({"content": ev.delta}, **usage)
            if ev.finish_reason:
                yield chunk({}, ev.finish_reason, **usage)
                if include_usage:
                    body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                            "choices": [], "usage": _usage(ev)}
                    yield f"data: {json.dumps(body)}\n\n"
                break
        yield "data: [DONE]\n\n"
    finally:
        gen.cancelled.set()  # client gone or stream done: the engine drops the row


BACKENDS = ("auto", "torch", "llamacpp")


def resolve_backend(backend: str, model: str, adapter: str | None, adapters: dict | None,
                    gguf: str | None = None) -> tuple[str, object, dict | None, str]:
    """Which engine serves: (``"torch"`` | ``"llamacpp"``, GGUF path or None, manifest or None, reason).

    ``auto`` picks llama.cpp when no CUDA device is present, no adapter is requested, llama-cpp-python
    imports, and a GGUF exported from ``model`` (``<model>/../gguf/gguf.json``, its weights digest
    equal to the folder's) or ``gguf`` exists; else torch. ``llamacpp`` requires that GGUF.

    Raises:
        ModelLoadError: ``llamacpp`` asked for and not possible (the reason says why).
    """
    from pathlib import Path

    from domainft.serving.gguf import find_gguf, llama_cpp_status
    from domainft.serving.loader import ModelLoadError, is_mlflow_uri

    if backend not in BACKENDS:
        raise ModelLoadError(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend == "torch":
        return "torch", None, None, "asked for"
    why = ""
    if adapter or adapters:
        why = "adapters are served by the torch engine"
    elif gguf is None and is_mlflow_uri(model):
        why = "an MLflow model is served by the torch engine (give --gguf to serve its export)"
    if not why and backend == "auto":
        import torch

        if torch.cuda.is_available():
            why = "a CUDA device is present"
    if not why:
        ok, why = llama_cpp_status()
        why = "" if ok else why
    path, manifest = None, None
    if not why:
        if gguf is not None:
            path = Path(gguf)
            if path.is_dir():
                path, manifest, why = find_gguf(model, path, check_source=backend == "auto")
            elif not path.is_file():
                why = f"GGUF file {path} not found"
        else:
            path, manifest, why = find_gguf(model)
    if why:
        if backend == "llamacpp":
            raise ModelLoadError(f"cannot serve with llama.cpp: {why}")
        return "torch", None, None, why
    return "llamacpp", path, manifest, f"GGUF {path}"


def build_app(params, model: str | None = None, adapter: str | None = None,
              adapters: dict[str, str] | None = None, backend: str = "torch",
              gguf: str | None = None, threads: int = 1) -> FastAPI:
    """Load the model named by ``model`` (default ``serve.model``) and build the app from params.

    Args:
        params: :class:`domainft.config.Params` (sections ``serve``, ``register``, ``domain``).
        model, adapter: see :func:`domainft.serving.loader.load_for_serving`.
        adapters: named adapters ``{name: folder or MLflow URI}`` on the base ``model`` (default
            ``serve.adapters``). Each answers requests for its name; the base answers as
            ``<served id>-base``.

    Raises:
        ModelLoadError: the model or an adapter cannot be found or loaded, or an adapter name
            collides with the base's id.
        ValueError: ``serve.api_key_env`` names an unset or empty environment variable.
    """
    import os

    import torch

    from domainft.serving.loader import ModelLoadError, load_for_serving

    sp = params.serve
    api_key = None
    if sp.api_key_env:
        api_key = os.environ.get(sp.api_key_env)
        if not api_key:
            raise ValueError(f"serve.api_key_env names {sp.api_key_env}, which is unset or empty; "
                             "export it or remove serve.api_key_env to serve without authentication")
    adapters = dict(sp.adapters if adapters is None and not adapter else adapters or {})
    kind, gguf_path, manifest, why = resolve_backend(backend, model or sp.model, adapter, adapters, gguf)
    if kind == "llamacpp":
        return _build_llamacpp_app(params, model or sp.model, gguf_path, manifest, api_key, threads)
    if backend != "torch":
        log.info("backend %s: torch engine (%s)", backend, why)
    loaded = load_for_serving(model or sp.model, adapter, params.register.tracking_uri, sp.cache_dir,
                              adapters=adapters)
    max_len = min(loaded.max_model_len, sp.max_model_len or loaded.max_model_len)
    engine = Engine(loaded.model, loaded.tokenizer, loaded.eos_ids, sp.max_batch_size, sp.max_queue, max_len)
    model_id = sp.model_name or loaded.registered_name or f"domainft-{params.domain.name}"
    routes = {}
    if loaded.adapters:
        model_id = f"{model_id}-base"
        if model_id in loaded.adapters:
            raise ModelLoadError(f"adapter name {model_id!r} is the base model's id; rename the adapter")
        routes = {model_id: Route(None, loaded.tokenizer)} | {
            name: Route(name, a.tokenizer, frozenset(a.eos_ids), parent=model_id) for name, a in loaded.adapters.items()}
    cfg = ServerConfig(model_id=model_id, max_model_len=max_len, max_new_tokens_limit=sp.max_new_tokens_limit,
                       max_body_bytes=sp.max_body_bytes, api_key=api_key, retry_after_s=sp.retry_after_s,
                       defaults=loaded.defaults, routes=routes,
                       source_policy=SourcePolicy.from_params(params.train, params.evaluate.max_new_tokens))
    log.info("serving %s from %s (eos ids %s, max_model_len %d, batch %d, queue %d, torch threads %d)",
             ", ".join(routes or [model_id]), loaded.folder, loaded.eos_ids, max_len, sp.max_batch_size,
             sp.max_queue, torch.get_num_threads())
    return create_app(engine, loaded.tokenizer, cfg)


def _build_llamacpp_app(params, model: str, gguf_path, manifest: dict | None, api_key: str | None,
                        threads: int) -> FastAPI:
    """The app on :class:`domainft.serving.llamacpp.LlamaCppEngine` (same routes, limits and errors)."""
    import json
    from pathlib import Path

    from domainft.serving.llamacpp import load_llamacpp_engine

    sp = params.serve
    folder = Path(model) if Path(model).is_dir() else None
    engine, tok, eos, max_len = load_llamacpp_engine(gguf_path, folder, manifest, sp.max_queue, sp.max_model_len,
                                                     threads)
    gen_file = folder / "generation_config.json" if folder else None
    gen = json.loads(gen_file.read_text()) if gen_file and gen_file.is_file() else {}
    model_id = sp.model_name or f"domainft-{params.domain.name}"
    cfg = ServerConfig(model_id=model_id, max_model_len=max_len, max_new_tokens_limit=sp.max_new_tokens_limit,
                       max_body_bytes=sp.max_body_bytes, api_key=api_key, retry_after_s=sp.retry_after_s,
                       defaults={k: gen[k] for k in ("temperature", "top_p") if k in gen},
                       source_policy=SourcePolicy.from_params(params.train, params.evaluate.max_new_tokens))
    log.info("serving %s on llama.cpp from %s (eos ids %s, max_model_len %d, queue %d, threads %d)",
             model_id, gguf_path, eos, max_len, sp.max_queue, threads)
    return create_app(engine, tok, cfg)
