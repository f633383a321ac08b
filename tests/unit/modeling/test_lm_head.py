"""The CPU LM head (domainft/modeling/lm_head.py) against TRL's ChunkedLogProbFunction and plain log_softmax."""
from __future__ import annotations

import pytest
import torch
from trl.kernels import ChunkedLogProbFunction

from domainft.modeling import lm_head
from domainft.modeling.lm_head import LabelLogProbs

OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def _inputs(n=37, h=24, v=300, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g)
    weight = torch.randn(v, h, generator=g) * 0.5
    b = torch.randn(v, generator=g) if bias else None
    targets = torch.randint(0, v, (n,), generator=g)
    return hidden, weight, b, targets


def _run(fn, hidden, weight, bias, targets, temperature=1.0, softcap=None, scale=1.0, chunk=128):
    h = hidden.clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    b = bias.clone().requires_grad_(True) if bias is not None else None
    lp, ent, sq, mean, top1 = fn.apply(h, w, b, targets, temperature, chunk, softcap, scale, OUTPUTS)
    (lp.sum() * 0.7 + ent.sum() * 0.3).backward()
    return [lp, ent, sq, mean, top1, h.grad, w.grad] + ([b.grad] if b is not None else [])


@pytest.mark.parametrize("temperature,softcap,scale", [(1.0, None, 1.0), (0.7, 30.0, 0.5)])
def test_equals_trl_kernel_in_fp32(temperature, softcap, scale, monkeypatch):
    """Log-probs, entropy, log-sum-sq, mean logits, top-1 and the gradients of hidden, weight and
    bias equal TRL's (vocab chunked by 128) to fp32 rounding; tokens split over several chunks."""
    monkeypatch.setattr(lm_head, "CHUNK_BYTES", 4 * 300 * 16)  # 16 tokens per chunk: 3 chunks of 37
    args = _inputs()
    ours = _run(LabelLogProbs, *args, temperature, softcap, scale)
    ref = _run(ChunkedLogProbFunction, *args, temperature, softcap, scale)
    for name, a, b in zip(OUTPUTS + ("grad_hidden", "grad_weight", "grad_bias"), ours, ref):
        if a.dtype == torch.bool:
            assert torch.equal(a, b), name
        else:
            assert torch.allclose(a, b, atol=2e-5, rtol=1e-4), (name, float((a - b).abs().max()))


@pytest.mark.parametrize("autocast", [False, True])
def test_kept_log_probs_give_the_recomputed_gradients_bit_for_bit(autocast, monkeypatch):
    """Within KEEP_BYTES the backward reuses the forward's log-probabilities instead of projecting
    again: 3 LM-head projections (one per chunk) instead of 6, and every output and gradient equal
    to the recomputing path's to the last bit, in fp32 and under bf16 autocast."""
    monkeypatch.setattr(lm_head, "CHUNK_BYTES", 4 * 300 * 16)  # 3 chunks of 37 tokens
    calls = []
    logits = lm_head._logits
    monkeypatch.setattr(lm_head, "_logits", lambda *a: calls.append(1) or logits(*a))
    hidden, weight, bias, targets = _inputs()
    runs = {}
    for keep in (4 * 37 * 300, 4 * 37 * 300 - 1):  # exactly fits; one byte short: recompute
        monkeypatch.setattr(lm_head, "KEEP_BYTES", keep)
        calls.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            runs[keep] = _run(LabelLogProbs, hidden, weight, bias, targets, 0.7)
        runs[keep, "calls"] = len(calls)
    assert runs[4 * 37 * 300, "calls"] == 3 and runs[4 * 37 * 300 - 1, "calls"] == 6
    for a, b in zip(runs[4 * 37 * 300], runs[4 * 37 * 300 - 1]):
        assert torch.equal(a, b)
    assert runs[4 * 37 * 300][5].abs().sum() > 0  # the hidden gradient is not trivially equal


def test_soft_capped_logits_are_recomputed(monkeypatch):
    """The soft-cap's derivative needs tanh of the logits, which is not kept: the backward projects again."""
    calls = []
    logits = lm_head._logits
    monkeypatch.setattr(lm_head, "_logits", lambda *a: calls.append(1) or logits(*a))
    _run(LabelLogProbs, *_inputs(), 1.0, 30.0)
    assert len(calls) == 2


def test_log_probs_are_log_softmax_of_the_targets():
    hidden, weight, bias, targets = _inputs(bias=False)
    lp, ent, *_ = LabelLogProbs.apply(hidden, weight, None, targets, 1.0, 0, None, 1.0, ("log_probs", "entropy"))
    logp = torch.log_softmax(hidden @ weight.t(), -1)
    assert torch.allclose(lp, logp.gather(-1, targets[:, None]).squeeze(-1), atol=1e-5)
    assert torch.allclose(ent, -(logp.exp() * logp).sum(-1), atol=1e-4)


def test_bf16_autocast_is_as_close_to_fp32_as_trl():
    """Under CPU bf16 autocast (the train stage's precision) ours is within TRL's error of the
    fp32 results, for the log-probs and the hidden gradient."""
    hidden, weight, bias, targets = _inputs(n=64, h=64, v=2000, bias=False, seed=1)
    truth = _run(LabelLogProbs, hidden, weight, None, targets)
    errs = {}
    for fn in (LabelLogProbs, ChunkedLogProbFunction):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = _run(fn, hidden.bfloat16(), weight.bfloat16(), None, targets)
        errs[fn] = [float((out[i].float() - truth[i]).abs().mean()) for i in (0, 5)]
    ours, trl = errs[LabelLogProbs], errs[ChunkedLogProbFunction]
    assert ours[0] <= 1.2 * trl[0] + 1e-6 and ours[1] <= 1.2 * trl[1] + 1e-7, errs
    assert ours[0] < 0.05


def test_install_routes_cpu_only_and_only_for_the_pinned_trl(monkeypatch):
    import trl
    import trl.trainer.utils as trl_utils

    assert lm_head.install()
    assert trl_utils._use_triton(torch.device("cpu")) is True
    hidden, weight, bias, targets = _inputs()
    calls = []
    monkeypatch.setattr(LabelLogProbs, "apply", lambda *a: calls.append(a[0].shape) or ("ours",))
    assert trl_utils._ChunkedLogProbFunction.apply(hidden, weight, bias, targets, 1.0, 128) == ("ours",)
    assert calls == [hidden.shape]
    monkeypatch.setattr(trl, "__version__", "9.9.9")
    monkeypatch.setattr(trl_utils, "_use_triton", lambda device: False)
    assert lm_head.install() is False and trl_utils._use_triton(torch.device("cpu")) is False


def test_top1_is_argmax_including_ties():
    """is_top1 equals ``argmax == target`` where the target is the maximum, a later tie of the
    first maximum (False, as argmax takes the first), the first of a tie (True) or below it."""
    z = torch.tensor([[0.0, 3.0, 1.0, 3.0],   # tie at 1 and 3
                      [0.0, 3.0, 1.0, 3.0],
                      [5.0, 1.0, 2.0, 0.0],
                      [5.0, 1.0, 2.0, 0.0],
                      [0.5, 0.1, 0.2, 0.9]])
    targets = torch.tensor([1, 3, 0, 2, 3])
    m = z.amax(-1)
    got = lm_head._target_is_argmax(z, z.gather(-1, targets[:, None]).squeeze(-1), m, targets)
    assert got.tolist() == [True, False, True, False, True]
    assert torch.equal(got, z.argmax(-1) == targets)
    hidden, weight, bias, _ = _inputs(n=40, v=50)
    targets = (hidden @ weight.t() + bias).argmax(-1)  # every target the top-1 ...
    targets[::2] = (targets[::2] + 1) % 50  # ... except every other one
    top1 = LabelLogProbs.apply(hidden, weight, bias, targets, 1.0, 0, None, 1.0, OUTPUTS)[4]
    assert top1.tolist() == [i % 2 == 1 for i in range(40)]
