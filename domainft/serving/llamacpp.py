"""The llama.cpp backend of ``domainft serve``: a GGUF file (``domainft export gguf``) behind the same API.

:class:`LlamaCppEngine` has the interface of :class:`domainft.serving.engine.Engine` (``submit``,
``start``/``stop``, ``alive``, ``stats``, ``wait_idle``), so :func:`domainft.serving.app.create_app`
serves it unchanged: the prompt ids come from the model folder's tokenizer and chat template
(:func:`domainft.modeling.chat.encode_prompt`, as with the torch engine), generation stops at the
same eos / end-of-turn ids (the export's manifest), text deltas and ``stop`` strings go through the
same :class:`~domainft.serving.decoding.StopScanner`, and errors reach the client in the same
OpenAI format. llama.cpp holds one sequence per context, so requests run one at a time in arrival
order (the queue bound and 503 are the torch engine's); the KV cache of the longest common prefix
with the previous request (the system prompt) is reused.

Sampling: ``temperature == 0`` is greedy (the same argmax as the torch engine, up to the GGUF's
rounding: see ``metrics/gguf.json``); otherwise llama.cpp's sampler chain with top-k, min-p and
repetition penalties off, seeded per request (``seed`` modulo 2**32). That chain applies top-p
before the temperature (the torch engine after it), so sampled answers are reproducible per seed
within one backend, not across backends.
"""
from __future__ import annotations

import logging
import queue
import random
import threading

from domainft.serving.decoding import StopScanner
from domainft.serving.engine import Event, GenRequest, QueuedWorker, _notify

log = logging.getLogger(__name__)


class LlamaCppEngine(QueuedWorker):
    """Generates with llama.cpp from a GGUF file; one request at a time, the rest queued.

    Args:
        llm: a ``llama_cpp.Llama`` whose context holds ``max_model_len`` tokens.
        tokenizer: the HF tokenizer of the exported folder (detokenization only).
        eos_ids: ids that end a turn.
        max_queue: requests allowed to wait; one more raises :class:`EngineOverloaded`.
        max_model_len: prompt + generated tokens never exceed this.
    """

    max_batch_size = 1
    adapters: frozenset[str] = frozenset()
    thread_name = "domainft-llamacpp"

    def __init__(self, llm, tokenizer, eos_ids: list[int], max_queue: int = 64, max_model_len: int = 2048):
        self.llm, self.tokenizer = llm, tokenizer
        self.eos_ids = set(int(i) for i in eos_ids)
        self.max_model_len = max_model_len
        self._queue: queue.Queue[GenRequest] = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._unfinished = 0
        self._running = 0
        self.steps = 0  # llama.cpp decode calls: one per prompt plus one per generated token

    def stats(self) -> dict:
        return {"queued": self._queue.qsize(), "running": self._running, "max_queue": self._queue.maxsize,
                "max_batch_size": 1, "steps": self.steps, "backend": "llamacpp"}

    def submit(self, req: GenRequest) -> None:
        if req.adapter is not None:
            raise ValueError(f"adapter {req.adapter!r} is not loaded (the llama.cpp backend serves one model)")
        self._enqueue(req)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                req = self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
            self._running = 1
            try:
                if not req.cancelled.is_set():
                    self._generate(req)
            except Exception as err:  # this request only; the context is reset for the next one
                log.exception("llama.cpp generation failed")
                _notify(req, Event(error=f"generation failed: {type(err).__name__}: {err}"))
                self.llm.reset()
            finally:
                self._running = 0
                with self._lock:
                    self._unfinished -= 1
        while not self._queue.empty():
            _notify(self._queue.get_nowait(), Event(error="server shutting down"))

    def _generate(self, req: GenRequest) -> None:
        scanner = StopScanner(self.tokenizer, req.stop)
        seed = (req.seed % 2**32) if req.seed is not None else random.getrandbits(32)
        self.llm.set_seed(seed)
        eos = req.eos_ids if req.eos_ids is not None else self.eos_ids
        n = 0
        tokens = self.llm.generate(req.prompt_ids, temp=max(req.temperature, 0.0), top_p=req.top_p, top_k=0,
                                   min_p=0.0, typical_p=1.0, repeat_penalty=1.0, reset=True)
        self.steps += 1
        try:
            for tid in tokens:
                self.steps += 1
                if req.cancelled.is_set():
                    return
                n += 1
                tid = int(tid)
                reason = None
                if tid in eos:
                    delta, reason = scanner.flush(), "stop"
                else:
                    delta, stopped = scanner.add(tid)
                    if stopped:
                        reason = "stop"
                    elif n >= req.max_tokens or len(req.prompt_ids) + n >= self.max_model_len:
                        delta, reason = delta + scanner.flush(), "length"
                if delta or reason:
                    req.on_event(Event(delta=delta, finish_reason=reason, prompt_tokens=len(req.prompt_ids),
                                       completion_tokens=n))
                if reason:
                    return
        finally:
            tokens.close()
        # the generator ended by itself (context full)
        req.on_event(Event(delta=scanner.flush(), finish_reason="length", prompt_tokens=len(req.prompt_ids),
                           completion_tokens=n))


def gguf_eos_ids(metadata: dict) -> list[int]:
    """eos and eot ids recorded in a GGUF's metadata (``llama_cpp.Llama.metadata``, values as strings)."""
    ids = []
    for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"):
        if key in metadata and int(metadata[key]) not in ids:
            ids.append(int(metadata[key]))
    return ids


def load_llamacpp_engine(gguf_path, tokenizer_dir, manifest: dict | None, max_queue: int, max_model_len: int,
                         threads: int):
    """(engine, tokenizer, eos ids, max_model_len) for a GGUF file.

    The tokenizer is the HF folder's (``tokenizer_dir``), else the one stored in the GGUF (read
    by transformers); eos ids are the manifest's, else the GGUF's eos + eot.
    """
    from pathlib import Path

    from transformers import AutoTokenizer

    from domainft.serving.gguf import load_llama

    gguf_path = Path(gguf_path)
    if tokenizer_dir is not None and (Path(tokenizer_dir) / "tokenizer_config.json").is_file():
        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    else:
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    arch = reader.fields["general.architecture"].contents()
    train_ctx = int(reader.fields[f"{arch}.context_length"].contents())
    del reader
    max_len = min(train_ctx, max_model_len or train_ctx)
    llm = load_llama(gguf_path, max_len, threads)
    eos = list((manifest or {}).get("eos_token_ids") or gguf_eos_ids(llm.metadata))
    return LlamaCppEngine(llm, tok, eos, max_queue, max_len), tok, eos, max_len
