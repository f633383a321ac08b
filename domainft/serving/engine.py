"""Batched generation behind the server: a bounded queue and one worker thread (continuous batching).

Notation for tensor shapes: B = rows in the running batch, T = cache length (left-padded),
P = longest prompt being admitted, V = vocabulary size.

Each iteration of the worker:

1. **admit**: up to ``max_batch_size - B`` waiting requests are prefilled together (left-padded,
   logits of the last position only), each samples its first token, and their KV-cache rows are
   appended to the running batch, left-padding whichever side is shorter. The attention mask hides
   pad columns and RoPE positions are tracked per row, so padding never shifts a row's positions
   (the same left-padding scheme ``transformers`` ``generate`` uses for a static batch);
2. **decode**: every row is fed its last sampled token, ``(B, 1)``, and samples the next;
3. **retire**: rows that hit an eos id (generation_config, which includes the end-of-turn token),
   a stop string, ``max_tokens`` or whose client went away leave the batch; their cache rows and
   any leading all-pad columns are dropped.

Failures are contained per request: a request whose own setup or sampling fails (a seed torch
refuses, non-finite logits, a decode error) gets an error event and leaves; the others go on. A
prefill that fails for a group of new requests is retried one request at a time, so only the one
that cannot be prefilled fails. Only a failed decode step, a forward pass every running row
shares, fails the running rows together (and resets the batch).

Models whose layers are not all full attention (sliding-window / hybrid caches) are served with
static batches instead: new requests wait until the running batch is empty.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from domainft.serving.decoding import StopScanner, sample

log = logging.getLogger(__name__)


class EngineOverloaded(RuntimeError):
    """The waiting queue is full (the server answers 503 with Retry-After)."""


class EngineUnavailable(RuntimeError):
    """The engine is stopped or its worker thread died."""


@dataclass
class Event:
    """What the worker reports for a request: a text delta, or the end (``finish_reason`` set)."""

    delta: str = ""
    finish_reason: str | None = None  # "stop" | "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0  # generated tokens, including the eos token that ended the turn
    error: str | None = None


@dataclass
class GenRequest:
    """One chat completion to generate.

    Args:
        prompt_ids: prompt token ids from ``encode_prompt`` (ends with the assistant header).
        max_tokens: upper bound on generated tokens (>= 1).
        temperature: 0 = greedy; otherwise softmax temperature.
        top_p: nucleus mass in (0, 1].
        stop: strings that end generation; the matched stop string is not returned.
        seed: makes sampling reproducible for this request.
        on_event: called from the worker thread with each :class:`Event`.
        adapter: the named adapter to generate with (a ``PeftModel`` holding several); None = the
            model itself (the base, when adapters are loaded).
        eos_ids: ids that end this request's turn; None = the engine's.
    """

    prompt_ids: list[int]
    max_tokens: int
    on_event: Callable[[Event], None]
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    adapter: str | None = None
    eos_ids: frozenset[int] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Row:
    req: GenRequest
    scanner: StopScanner
    pos: int  # position id of the next token fed to the model
    last: int = -1  # last sampled token, not yet fed
    n: int = 0  # tokens generated so far
    done: bool = False
    generator: torch.Generator | None = None


class QueuedWorker:
    """The lifecycle both generation backends share: a request queue drained by one worker thread.

    Subclasses set ``_queue`` (a bounded ``queue.Queue``), ``_stop``, ``_thread``, ``_lock``,
    ``_unfinished`` in ``__init__``, and define ``_loop`` (the worker) and ``thread_name``.
    """

    thread_name = "domainft-engine"

    def start(self):
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def _enqueue(self, req: "GenRequest") -> None:
        """Queue ``req`` without blocking; :class:`EngineOverloaded` when ``max_queue`` are waiting."""
        if not self.alive:
            raise EngineUnavailable("generation engine is not running")
        with self._lock:
            try:
                self._queue.put_nowait(req)
            except queue.Full:
                raise EngineOverloaded(f"{self._queue.maxsize} requests already waiting") from None
            self._unfinished += 1

    def _loop(self) -> None:  # pragma: no cover - every subclass defines its worker
        raise NotImplementedError


class Engine(QueuedWorker):
    """Owns the model; requests go through :meth:`submit`, results come back via ``on_event``.

    Args:
        model: causal LM in eval mode.
        tokenizer: its tokenizer (decoding only; prompts arrive as ids).
        eos_ids: token ids that end a turn (``generation_config.eos_token_id``).
        max_batch_size: rows generated together.
        max_queue: requests allowed to wait; one more raises :class:`EngineOverloaded`.
        max_model_len: prompt + generated tokens never exceed this.
    """

    def __init__(self, model, tokenizer, eos_ids: list[int], max_batch_size: int = 8,
                 max_queue: int = 64, max_model_len: int = 2048):
        self.model, self.tokenizer = model, tokenizer
        self.eos_ids = set(int(i) for i in eos_ids)
        self.max_batch_size, self.max_model_len = max_batch_size, max_model_len
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids, default=0)
        self.device = next(model.parameters()).device
        layer_types = getattr(model.config.get_text_config(decoder=True), "layer_types", None) or []
        self.can_join = all(t == "full_attention" for t in layer_types)
        # named adapters of a PeftModel; rows of different adapters share a forward pass (adapter_names=)
        self.adapters = set(getattr(model, "peft_config", {}) or ())
        self._queue: queue.Queue[GenRequest] = queue.Queue(maxsize=max_queue)
        self._rows: list[_Row] = []
        self._cache = None
        self._mask: torch.Tensor | None = None  # (B, T) 1 = real token
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._unfinished = 0  # submitted and not yet retired (queued, being prefilled, or running)
        self.steps = 0

    # ------------------------------------------------------------------ lifecycle / API
    def stats(self) -> dict:
        """Counts: ``queued`` waiting, ``running`` admitted and unfinished, the two bounds, and
        ``steps``, forward passes so far (prefills + decode steps)."""
        queued = self._queue.qsize()
        return {"queued": queued, "running": max(0, self._unfinished - queued),
                "max_queue": self._queue.maxsize, "max_batch_size": self.max_batch_size, "steps": self.steps}

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until every submitted request has finished (tests, benchmarks); True when idle."""
        end = time.monotonic() + timeout
        while self._unfinished and time.monotonic() < end:
            time.sleep(0.01)
        return self._unfinished == 0

    def _finished(self, n: int) -> None:
        with self._lock:
            self._unfinished -= n

    def submit(self, req: GenRequest) -> None:
        """Queue a request without blocking.

        Raises:
            EngineOverloaded: ``max_queue`` requests are already waiting.
            EngineUnavailable: the engine is not running.
            ValueError: ``req.adapter`` names no loaded adapter.
        """
        if req.adapter is not None and req.adapter not in self.adapters:
            raise ValueError(f"adapter {req.adapter!r} is not loaded (loaded: {sorted(self.adapters)})")
        self._enqueue(req)

    # ------------------------------------------------------------------ worker
    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while not self._stop.is_set():
            try:
                new = self._take()
                if new:
                    self._admit(new)  # contains its own failures
                if self._rows:
                    self._decode()
            except Exception as err:  # a shared step failed: fail the running rows, reset the batch
                log.exception("generation step failed")
                self._fail([r.req for r in self._rows], err)
                self._finished(len(self._rows))
                self._rows, self._cache, self._mask = [], None, None
        pending = [r.req for r in self._rows]
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for req in pending:
            _notify(req, Event(error="server shutting down"))

    @staticmethod
    def _fail(reqs: list[GenRequest], err: BaseException) -> None:
        """Tell each request it failed (the caller accounts for them as finished)."""
        for req in reqs:
            _notify(req, Event(error=f"generation failed: {type(err).__name__}: {err}"))

    def _take(self) -> list[GenRequest]:
        room = self.max_batch_size - len(self._rows)
        if room <= 0 or (self._rows and not self.can_join):
            return []
        taken: list[GenRequest] = []
        try:
            if not self._rows:  # idle: block briefly for work
                taken.append(self._queue.get(timeout=0.05))
            while len(taken) < room:
                taken.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        live = [r for r in taken if not r.cancelled.is_set()]
        self._finished(len(taken) - len(live))
        return live

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache,
                 reqs: list[GenRequest]) -> torch.Tensor:
        """Logits of the last position, (B, V), float32; row i uses ``reqs[i].adapter``."""
        extra = {"adapter_names": [r.adapter or "__base__" for r in reqs]} if self.adapters else {}
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=pos.to(self.device), past_key_values=cache, use_cache=True,
                         logits_to_keep=1, **extra)
        self.steps += 1
        return out.logits[:, -1, :].float().cpu()

    def _admit(self, reqs: list[GenRequest]) -> None:
        """Prefill ``reqs`` together and add them to the running batch; failures stay per request."""
        rows = []
        for r in reqs:
            try:
                gen = torch.Generator().manual_seed(r.seed) if r.seed is not None else None
                rows.append(_Row(r, StopScanner(self.tokenizer, r.stop), pos=len(r.prompt_ids), generator=gen))
            except Exception as err:
                log.warning("request rejected at admission: %s: %s", type(err).__name__, err)
                self._fail([r], err)
                self._finished(1)
        if not rows:
            return
        try:
            cache, mask, logits = self._prefill([r.req for r in rows])
        except Exception as err:
            if len(rows) == 1:
                log.exception("prefill failed")
                self._fail([rows[0].req], err)
                self._finished(1)
                return
            log.warning("prefill of %d requests failed (%s); admitting them one at a time", len(rows), err)
            for row in rows:
                self._admit([row.req])
            return
        try:
            self._rows_append(rows, cache, mask)
        except Exception as err:  # the running batch is left as it was
            log.exception("joining the running batch failed")
            self._fail([r.req for r in rows], err)
            self._finished(len(rows))
            return
        self._push(rows, logits)

    def _prefill(self, reqs: list[GenRequest]):
        """Left-padded prefill of ``reqs``: (cache, (b, P) mask, (b, V) last-position logits)."""
        from transformers import DynamicCache

        lens = [len(r.prompt_ids) for r in reqs]
        P = max(lens)
        ids = torch.full((len(reqs), P), self.pad_id, dtype=torch.long)  # (b, P)
        mask = torch.zeros((len(reqs), P), dtype=torch.long)
        for i, r in enumerate(reqs):
            ids[i, P - lens[i]:] = torch.tensor(r.prompt_ids)
            mask[i, P - lens[i]:] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)  # (b, P)
        cache = DynamicCache() if self.can_join else DynamicCache(config=self.model.config)
        return cache, mask, self._forward(ids, mask, pos, cache, reqs)

    def _rows_append(self, rows: list[_Row], cache, mask: torch.Tensor) -> None:
        """Append prefilled rows (their cache and (b, P) mask) to the running batch."""
        if not self._rows:
            self._rows, self._cache, self._mask = rows, cache, mask
            return
        from transformers import DynamicCache

        T, P = self._mask.shape[1], mask.shape[1]
        L = max(T, P)
        layers = []
        for old, new in zip(self._cache.layers, cache.layers):
            k = torch.cat([F.pad(old.keys, (0, 0, L - T, 0)), F.pad(new.keys, (0, 0, L - P, 0))])
            v = torch.cat([F.pad(old.values, (0, 0, L - T, 0)), F.pad(new.values, (0, 0, L - P, 0))])
            layers.append((k, v))  # (B + b, H, L, D)
        joined = torch.cat([F.pad(self._mask, (L - T, 0)), F.pad(mask, (L - P, 0))])
        self._cache, self._mask, self._rows = DynamicCache(ddp_cache_data=layers), joined, self._rows + rows

    def _decode(self) -> None:
        ids = torch.tensor([[r.last] for r in self._rows])  # (B, 1)
        pos = torch.tensor([[r.pos] for r in self._rows])
        self._mask = F.pad(self._mask, (0, 1), value=1)  # (B, T + 1)
        logits = self._forward(ids, self._mask, pos, self._cache, [r.req for r in self._rows])
        for r in self._rows:
            r.pos += 1
        self._push(self._rows, logits)

    def _push(self, rows: list[_Row], logits: torch.Tensor) -> None:
        """Sample one token per row, report it, and retire finished rows (a row that fails leaves alone)."""
        for i, row in enumerate(rows):
            if row.req.cancelled.is_set():
                row.done = True
                continue
            try:
                self._step_row(row, logits[i])
            except Exception as err:
                log.warning("request failed while sampling: %s: %s", type(err).__name__, err)
                row.done = True
                self._fail([row.req], err)
        self._retire()

    def _step_row(self, row: _Row, logits: torch.Tensor) -> None:
        """Sample the next token of one row from its logits (V,) and send what it adds."""
        tid = sample(logits, row.req.temperature, row.req.top_p, row.generator)
        row.n += 1
        row.last = tid
        reason = None
        if tid in (row.req.eos_ids if row.req.eos_ids is not None else self.eos_ids):
            delta, reason = row.scanner.flush(), "stop"
        else:
            delta, stopped = row.scanner.add(tid)
            if stopped:
                reason = "stop"
            elif row.n >= row.req.max_tokens or len(row.req.prompt_ids) + row.n >= self.max_model_len:
                delta, reason = delta + row.scanner.flush(), "length"
        if reason:
            row.done = True
        if delta or reason:
            row.req.on_event(Event(delta=delta, finish_reason=reason,
                                   prompt_tokens=len(row.req.prompt_ids), completion_tokens=row.n))

    def _retire(self) -> None:
        keep = [i for i, r in enumerate(self._rows) if not r.done]
        if len(keep) == len(self._rows):
            return
        self._finished(len(self._rows) - len(keep))
        if not keep:
            self._rows, self._cache, self._mask = [], None, None
            return
        idx = torch.tensor(keep)
        self._rows = [self._rows[i] for i in keep]
        self._mask = self._mask[idx]
        lead = int(self._mask.argmax(dim=1).min())  # leading columns that are pad in every row
        if self.can_join:
            from transformers import DynamicCache

            self._cache = DynamicCache(ddp_cache_data=[
                (layer.keys[idx, :, lead:], layer.values[idx, :, lead:]) for layer in self._cache.layers
            ])
            self._mask = self._mask[:, lead:]
        else:
            self._cache.batch_select_indices(idx.to(self.device))



def _notify(req: GenRequest, ev: Event) -> None:
    """Deliver ``ev``; a callback that raises is logged, never allowed to stop the worker."""
    try:
        req.on_event(ev)
    except Exception:
        log.exception("on_event callback failed")
