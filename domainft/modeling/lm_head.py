"""The training loss's LM head on CPU: per-token log-probabilities of the labelled positions.

TRL 1.16's SFTTrainer computes the loss through a fused LM head
(``trl.trainer.utils.add_fused_lm_head``) that calls ``trl.kernels.ChunkedLogProbFunction``:
logits in tiles of 32,768 vocabulary columns folded into online log-sum-exp statistics, recomputed
in the backward pass. On devices without Triton it has two costs that matter on a CPU:

- it scores every position, prompt tokens included (the label gathering is Triton-only);
- its backward accumulates the logits gradient GEMMs in fp32 by casting both bf16 operands to
  fp32 (``_addmm_fp32``), about a third of the bf16 matmul rate here, and folds each tile in
  several full-size fp32 passes.

:func:`install` (called by the train stage) keeps TRL's design and numerics where they matter and
changes only that, on CPU tensors: label positions only, and :class:`LabelLogProbs`, which computes
each chunk of tokens against the whole vocabulary with one matmul in the compute dtype (oneDNN
accumulates bf16 products in fp32, so no partial sum is rounded: the bias TRL's comment on
``_addmm_fp32`` guards against comes from summing per-chunk bf16 results) and the softmax
statistics in fp32. The forward's fp32 log-probabilities over the vocabulary are kept for the
backward when they take at most :data:`KEEP_BYTES` (and the logits are not soft-capped); above
that the backward recomputes them chunk by chunk, as TRL does. Both give the same gradients
bit for bit. Other devices keep TRL's kernel. Both hooks are private TRL names, so they are
installed only for :data:`TRL_VERSION` (requirements.txt pins it) and otherwise left alone with a
warning: training then runs TRL's own path, slower on CPU, same loss.
"""
from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

TRL_VERSION = "1.16.0"  # the version whose private hooks install() replaces
CHUNK_BYTES = 64 * 2**20  # fp32 logits per token chunk: tokens = CHUNK_BYTES / (4 x vocabulary)
# fp32 log-probabilities (tokens x vocabulary x 4 bytes) kept from the forward for the backward at
# most; a larger batch recomputes them (one more LM-head matmul per chunk). 256 MiB is 1,365
# labelled tokens of a 49,152-token vocabulary, 256 of a 262,144-token one.
KEEP_BYTES = 256 * 2**20


def _tokens_per_chunk(vocab: int) -> int:
    return max(16, CHUNK_BYTES // (4 * vocab))


def _logits(hidden: torch.Tensor, weight: torch.Tensor, bias, logit_scale: float, softcap, inv_t: float):
    """fp32 ``(n, V)`` logits of ``hidden (n, H)`` through ``weight (V, H)`` (both in the compute dtype),
    plus ``tanh(y / softcap)`` when soft-capped (needed by the backward), as TRL transforms them."""
    z = torch.mm(hidden, weight.t()).float()
    if bias is not None:
        z += bias.float()
    if logit_scale != 1.0:
        z *= logit_scale
    t = None
    if softcap is not None:
        t = torch.tanh(z / softcap)
        z = softcap * t
    if inv_t != 1.0:
        z *= inv_t
    return z, t


def _target_is_argmax(z: torch.Tensor, target: torch.Tensor, m: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``z.argmax(-1) == targets`` (the first maximum, as TRL counts a tie) for ``z (n, V)`` with
    ``target = z[i, targets[i]]`` and ``m = z.amax(-1)``, both ``(n,)``: only rows whose target
    reaches the maximum can match, and only those run the argmax (torch's CPU argmax over a row
    costs about six times its amax)."""
    hit = target == m
    rows = hit.nonzero().squeeze(-1)
    if rows.numel():
        hit[rows] = z[rows].argmax(-1) == targets[rows]
    return hit


class LabelLogProbs(torch.autograd.Function):
    """``trl.kernels.ChunkedLogProbFunction``'s interface and outputs, for CPU tensors.

    Forward args: ``hidden (N, H)``, ``weight (V, H)``, ``bias (V,)`` or None, ``targets (N,)``
    (every position scored; the caller gathers the labelled ones), ``temperature``,
    ``chunk_size`` (ignored: a chunk of tokens spans the whole vocabulary), soft-cap or None,
    ``logit_scale``, ``outputs`` (names among log_probs, entropy, log_sum_sq_probs, mean_logits,
    is_top1). Returns fp32 ``(N,)`` log-probabilities of the targets and the requested extras
    (None for the others); gradients flow to ``hidden``, ``weight`` and ``bias`` from the
    log-probabilities and the entropy.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, chunk_size, softcap=None, logit_scale=1.0,
                outputs=("log_probs",)):
        ctx.set_materialize_grads(False)
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else hidden.dtype
        inv_t = 1.0 / temperature
        n_tok, vocab = hidden.shape[0], weight.shape[0]
        w = weight.to(dtype)
        f32 = dict(dtype=torch.float32, device=hidden.device)
        logprobs = torch.empty(n_tok, **f32)
        entropy = torch.empty(n_tok, **f32) if "entropy" in outputs else None
        sq = torch.empty(n_tok, **f32) if "log_sum_sq_probs" in outputs else None
        mean = torch.empty(n_tok, **f32) if "mean_logits" in outputs else None
        top1 = torch.empty(n_tok, dtype=torch.bool, device=hidden.device) if "is_top1" in outputs else None
        log_max, log_sum = torch.empty(n_tok, **f32), torch.empty(n_tok, **f32)
        keep = softcap is None and 4 * n_tok * vocab <= KEEP_BYTES
        kept = []  # (chunk tokens, V) fp32 log-probabilities, when keep
        step = _tokens_per_chunk(vocab)
        for s in range(0, n_tok, step):
            e = min(s + step, n_tok)
            z, _ = _logits(hidden[s:e].to(dtype), w, bias, logit_scale, softcap, inv_t)
            target = z.gather(-1, targets[s:e, None]).squeeze(-1)
            if mean is not None:
                mean[s:e] = z.mean(-1)
            m = z.amax(-1)
            if top1 is not None:
                top1[s:e] = _target_is_argmax(z, target, m, targets[s:e])
            z -= m[:, None]  # z - max: every exp <= 1
            ez = z.exp()
            total = ez.sum(-1)
            log_total = total.log()
            log_max[s:e], log_sum[s:e] = m, log_total
            logprobs[s:e] = target - (m + log_total)
            if entropy is not None:  # -sum p log p = log(total) - sum(ez (z - max)) / total
                entropy[s:e] = log_total - torch.linalg.vecdot(ez, z) / total
            if sq is not None:  # log sum p^2
                sq[s:e] = torch.linalg.vecdot(ez, ez).log() - 2 * log_total
            if keep:  # log p = z - max - log(total), as the backward's recomputation forms it
                kept.append(z.sub_(log_total[:, None]))
        ctx.save_for_backward(hidden, weight, bias, targets, log_max, log_sum, entropy, *kept)
        ctx.args = (dtype, logit_scale, softcap, inv_t)
        ctx.mark_non_differentiable(*(x for x in (sq, mean, top1) if x is not None))
        return logprobs, entropy, sq, mean, top1

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropy, *_):
        hidden, weight, bias, targets, log_max, log_sum, entropy, *kept = ctx.saved_tensors
        dtype, logit_scale, softcap, inv_t = ctx.args
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        n_tok, vocab = hidden.shape[0], weight.shape[0]
        w = weight.to(dtype)
        grad_h = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(vocab, dtype=torch.float32, device=weight.device) if need_b and bias is not None else None
        step = _tokens_per_chunk(vocab)
        for i, s in enumerate(range(0, n_tok, step)):
            e = min(s + step, n_tok)
            h = hidden[s:e].to(dtype)
            if kept:
                log_p, t = kept[i], None
            else:
                z, t = _logits(h, w, bias, logit_scale, softcap, inv_t)
                log_p = z.sub_(log_max[s:e, None]).sub_(log_sum[s:e, None])
            p = log_p.exp()
            if grad_entropy is not None:  # d entropy / dz_j = -p_j (log p_j + entropy)
                grad = log_p.add_(entropy[s:e, None]).mul_(p).mul_(-grad_entropy[s:e].float()[:, None])
            else:
                grad = log_p.zero_()
            if grad_logprobs is not None:  # d log p_target / dz_j = 1[j = target] - p_j
                g = grad_logprobs[s:e].float()
                grad.addcmul_(p, g[:, None], value=-1.0)
                grad.scatter_add_(1, targets[s:e, None], g[:, None])
            if inv_t != 1.0:
                grad *= inv_t
            if t is not None:
                grad *= 1 - t * t
            if logit_scale != 1.0:
                grad *= logit_scale
            if grad_b is not None:
                grad_b += grad.sum(0)
            grad = grad.to(dtype)
            if grad_h is not None:
                grad_h[s:e] = torch.mm(grad, w)
            if grad_w is not None:
                grad_w += torch.mm(grad.t(), h).float()
        return (grad_h, grad_w.to(weight.dtype) if grad_w is not None else None,
                grad_b.to(bias.dtype) if grad_b is not None else None, None, None, None, None, None, None)


def install() -> bool:
    """Route TRL's fused LM head to label positions and :class:`LabelLogProbs` for CPU tensors
    (idempotent); returns whether the hooks are in place (False with another TRL version)."""
    import trl
    import trl.trainer.utils as trl_utils

    if trl.__version__ != TRL_VERSION:
        log.warning("trl %s is not %s: the CPU LM head is not installed (TRL's own, slower on CPU, is used)",
                    trl.__version__, TRL_VERSION)
        return False
    if getattr(trl_utils._use_triton, "domainft_cpu", False):
        return True
    triton_device, trl_function = trl_utils._use_triton, trl_utils._ChunkedLogProbFunction

    def compact(device) -> bool:  # gather the labelled positions before the projection
        return device.type == "cpu" or triton_device(device)

    class Dispatch:
        @staticmethod
        def apply(hidden, *args):
            fn = LabelLogProbs if hidden.device.type == "cpu" else trl_function
            return fn.apply(hidden, *args)

    compact.domainft_cpu = True
    trl_utils._use_triton = compact
    trl_utils._ChunkedLogProbFunction = Dispatch
    return True
