"""Engine: continuous batching gives exactly the tokens of unbatched greedy decoding, and stops right."""
from __future__ import annotations

import time

import pytest
import torch

from domainft.modeling.base import load_model
from domainft.modeling.chat import encode_prompt
from domainft.serving.engine import Engine, EngineOverloaded, GenRequest


@pytest.fixture(scope="module")
def diverse(tiny_model_dir):
    """The tiny model with larger random weights, so greedy outputs are varied (not an echo)."""
    model, tok = load_model(tiny_model_dir, device="cpu")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model, tok


def _greedy_reference(model, prompt, n):
    """Greedy decoding by full recomputation (no cache, no batching): the ground truth."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(prompt):]


def _run(engine, reqs, stagger=0.0):
    events = {i: [] for i in range(len(reqs))}
    for i, (prompt, kw) in enumerate(reqs):
        engine.submit(GenRequest(prompt, on_event=events[i].append, **kw))
        time.sleep(stagger)
    assert engine.wait_idle(60)
    return events


def test_continuous_batching_matches_unbatched_greedy(diverse):
    model, tok = diverse
    prompts = [encode_prompt(tok, [{"role": "user", "content": "How do I reset my PIN? " * k}]) for k in (1, 6, 2, 9, 3)]
    lengths = [24, 21, 18, 15, 12]
    engine = Engine(model, tok, eos_ids=[], max_batch_size=3, max_queue=8, max_model_len=1024).start()
    try:
        # staggered arrivals: later requests join a running batch with a different cache length
        events = _run(engine, [(p, {"max_tokens": n}) for p, n in zip(prompts, lengths)], stagger=0.02)
    finally:
        engine.stop()
    for i, (p, n) in enumerate(zip(prompts, lengths)):
        ref = _greedy_reference(model, p, n)
        assert len(set(ref)) > n // 2  # a varied sequence, so a mix-up between rows would show
        text = "".join(e.delta for e in events[i])
        assert text == tok.decode(ref, skip_special_tokens=True)
        last = events[i][-1]
        assert (last.finish_reason, last.completion_tokens, last.prompt_tokens) == ("length", n, len(p))
    assert engine.steps < sum(lengths)  # rows shared forward passes


def test_stops_at_eos_id_mid_sequence_and_counts_it(diverse):
    model, tok = diverse
    prompt = encode_prompt(tok, [{"role": "user", "content": "What is the card fee?"}])
    ref = _greedy_reference(model, prompt, 12)
    k = next(i for i in range(3, 12) if ref[i] not in ref[:i])
    engine = Engine(model, tok, eos_ids=[ref[k]], max_batch_size=2, max_queue=4, max_model_len=1024).start()
    try:
        events = _run(engine, [(prompt, {"max_tokens": 12})])[0]
    finally:
        engine.stop()
    assert "".join(e.delta for e in events) == tok.decode(ref[:k], skip_special_tokens=True)
    assert events[-1].finish_reason == "stop" and events[-1].completion_tokens == k + 1


def test_max_model_len_caps_generation(diverse):
    model, tok = diverse
    prompt = encode_prompt(tok, [{"role": "user", "content": "hi"}])
    engine = Engine(model, tok, eos_ids=[], max_batch_size=1, max_queue=1, max_model_len=len(prompt) + 5).start()
    try:
        last = _run(engine, [(prompt, {"max_tokens": 50})])[0][-1]
    finally:
        engine.stop()
    assert (last.finish_reason, last.completion_tokens) == ("length", 5)


def test_full_queue_raises_and_cancelled_rows_leave(diverse):
    model, tok = diverse
    prompt = encode_prompt(tok, [{"role": "user", "content": "hi"}])
    engine = Engine(model, tok, eos_ids=[], max_batch_size=1, max_queue=1, max_model_len=4096).start()
    try:
        running, waiting = GenRequest(prompt, 3000, lambda e: None), GenRequest(prompt, 3000, lambda e: None)
        engine.submit(running)
        deadline = time.monotonic() + 10
        while engine.stats()["running"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        engine.submit(waiting)
        stats = engine.stats()
        assert (stats["queued"], stats["running"], stats["max_queue"], stats["max_batch_size"]) == (1, 1, 1, 1)
        with pytest.raises(EngineOverloaded):
            engine.submit(GenRequest(prompt, 5, lambda e: None))
        running.cancelled.set()
        waiting.cancelled.set()
        assert engine.wait_idle(30)
        assert engine.steps < 1000  # cancelled rows left the batch long before their 3000 tokens
    finally:
        engine.stop()


def test_a_failing_request_never_touches_the_others(diverse):
    """A seed torch refuses (admission) and non-finite sampling (mid-batch) fail their own request only.

    Before, both raised inside the shared batch step and every running row got the error.
    """
    model, tok = diverse
    prompts = [encode_prompt(tok, [{"role": "user", "content": f"Question {k}: how do fees work?"}]) for k in range(3)]
    engine = Engine(model, tok, eos_ids=[], max_batch_size=8, max_queue=8, max_model_len=1024).start()
    try:
        reqs = [(prompts[0], {"max_tokens": 20}),
                (prompts[1], {"max_tokens": 20, "seed": 2**70, "temperature": 1.0}),  # OverflowError
                (prompts[2], {"max_tokens": 20}),
                (prompts[0], {"max_tokens": 20, "temperature": float("nan")}),  # multinomial on NaN
                (prompts[1], {"max_tokens": 20})]
        events = _run(engine, reqs, stagger=0.05)  # later ones join the running batch
        assert engine.alive and engine.stats()["running"] == 0
    finally:
        engine.stop()
    for i in (1, 3):
        assert len(events[i]) == 1 and events[i][0].error.startswith("generation failed"), events[i]
    for i, p in ((0, prompts[0]), (2, prompts[2]), (4, prompts[1])):
        assert not any(e.error for e in events[i])
        assert "".join(e.delta for e in events[i]) == tok.decode(_greedy_reference(model, p, 20), skip_special_tokens=True)
        assert events[i][-1].completion_tokens == 20


def test_a_prefill_that_fails_for_one_request_is_retried_alone(diverse):
    """A prompt id outside the vocabulary breaks the shared prefill; the others are prefilled again alone."""
    model, tok = diverse
    good = encode_prompt(tok, [{"role": "user", "content": "hi"}])
    engine = Engine(model, tok, eos_ids=[], max_batch_size=4, max_queue=8, max_model_len=1024)
    events = {i: [] for i in range(3)}
    # queued before the worker starts (submit() needs a running engine), so all three share one prefill
    for i, prompt in enumerate((good, good[:-1] + [10**7], good)):
        engine._queue.put_nowait(GenRequest(prompt, 6, events[i].append))
        engine._unfinished += 1
    engine.start()
    try:
        assert engine.wait_idle(60)
    finally:
        engine.stop()
    assert len(events[1]) == 1 and "IndexError" in events[1][0].error
    ref = tok.decode(_greedy_reference(model, good, 6), skip_special_tokens=True)
    assert "".join(e.delta for e in events[0]) == ref == "".join(e.delta for e in events[2])
