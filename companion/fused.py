"""The output head and the loss in one step, chunk by chunk, never holding every logit.

Chapter 5, "Measuring how wrong a model is: cross-entropy", computes the loss the
readable way: the output head makes a ``(B, T, V)`` tensor of logits, and
``F.cross_entropy`` soft-maxes it. With GPT-2's vocabulary that tensor is the largest
thing a training step makes: 8 x 256 x 50,257 float32 numbers are 411 MB, written by the
head, read and written again by the softmax, and once more by each backward pass. That
work is memory traffic that no faster matrix library removes.

``linear_cross_entropy`` computes the same loss and the same gradients from the hidden
states ``(N, C)`` and the head's weight ``(V, C)``, a chunk of tokens at a time. For each
chunk of ``n`` tokens it

1. multiplies out the chunk's logits ``(n, V)``;
2. takes their log-sum-exp and adds ``logsumexp - logit[target]`` to the loss;
3. turns the logits into the loss's gradient with respect to them, in place:
   ``softmax - one_hot(target)``, divided by the number of counted tokens;
4. multiplies that gradient back: into the chunk's hidden-state gradient ``(n, C)`` and,
   accumulated over the chunks, the weight's gradient ``(V, C)``;

and forgets the chunk's logits. The gradients are computed in the forward pass and kept
for the backward pass (which only scales them), the idea of Liger-Kernel's fused linear
cross-entropy and Apple's Cut Cross-Entropy, written here in plain PyTorch. The peak
memory of the head falls from several ``(N, V)`` tensors to one ``(n, V)`` chunk, and
each chunk's logits are still in the cache when the softmax reads them.

``GPTModel(..., head_impl="fused")`` (or ``model.set_head_impl("fused")``) uses it when
the model is given targets; ``"manual"``, the default, is chapter 5's readable path.
Both compute the same function (tests/test_fused.py checks the loss and the gradients).

Shape letters used in this module:

* ``N``: tokens (batch and time flattened), ``n`` tokens in a chunk
* ``C``: channels, the hidden state's width
* ``V``: vocabulary size
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DEFAULT_CHUNK", "HeadImpl", "check_head_impl", "linear_cross_entropy"]

HeadImpl = Literal["manual", "fused"]
"""How a ``GPTModel`` given targets computes its loss: the readable head then
``F.cross_entropy`` (``"manual"``), or ``linear_cross_entropy`` (``"fused"``)."""

_HEAD_IMPLS: tuple[str, ...] = get_args(HeadImpl)

DEFAULT_CHUNK = 128
"""Tokens per chunk: two 128 x 50,257 float32 buffers, 51 MB (64 to 256 ran alike on 2 cores)."""

_IGNORE_INDEX = -100  # PyTorch's, and companion.losses.IGNORE_INDEX


def check_head_impl(impl: object) -> HeadImpl:
    """``impl`` if it names a head path; else a ``ValueError`` naming the choices."""
    if impl not in _HEAD_IMPLS:
        raise ValueError(f"head_impl={impl!r} is unknown; choose 'manual' (chapter 5's readable head) or 'fused'")
    return impl  # type: ignore[return-value]


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets``, gradients made in forward."""

    @staticmethod
    def forward(
        ctx: Any, hidden: Tensor, weight: Tensor, targets: Tensor, chunk: int, need_grad: bool
    ) -> Tensor:
        # hidden (N, C), weight (V, C), targets (N,)
        counted = targets != _IGNORE_INDEX  # (N,)
        every = bool(counted.all())  # the usual case in pretraining: slices instead of gathers
        rows = torch.arange(len(targets), device=targets.device) if every else counted.nonzero().squeeze(1)  # (M,)
        count = rows.numel()
        wide = torch.promote_types(weight.dtype, torch.float32)  # float32, or float64 for float64 weights
        loss = torch.zeros((), dtype=wide, device=hidden.device)
        grad_hidden = torch.zeros_like(hidden) if need_grad else None  # (N, C)
        grad_weight = torch.zeros_like(weight, dtype=wide) if need_grad else None  # (V, C)
        # two (n, V) buffers reused by every chunk: the logits, then their log-softmax
        logits_buf = torch.empty(min(chunk, count), weight.shape[0], dtype=wide, device=hidden.device)
        logp_buf = torch.empty_like(logits_buf)
        direct = hidden.dtype == wide and weight.dtype == wide and not torch.is_autocast_enabled(hidden.device.type)
        for start in range(0, count, chunk):
            index = rows[start : start + chunk]  # (n,)
            part = slice(start, start + len(index))
            h = hidden[part] if every else hidden.index_select(0, index)  # (n, C)
            t = targets[part] if every else targets.index_select(0, index)  # (n,)
            logits, logp = logits_buf[: len(index)], logp_buf[: len(index)]  # (n, V) each
            if direct:
                torch.matmul(h, weight.t(), out=logits)
            else:  # autocast's bfloat16 product, widened for the softmax
                logits.copy_(F.linear(h, weight))
            torch.log_softmax(logits, dim=1, out=logp)
            loss -= logp.gather(1, t.unsqueeze(1)).sum()  # the sum of -log p(target)
            if grad_hidden is None or grad_weight is None:
                continue
            # d loss / d logits = (softmax - one_hot(t)) / count: the softmax here, the one-hot
            # and the 1/count applied to the (n, C) and (V, C) products, not to the (n, V) one
            probs = logp.exp_()  # (n, V)
            grad = (probs @ weight.to(wide)).to(wide) - weight.index_select(0, t).to(wide)  # (n, C)
            grad.mul_(1.0 / count)
            if every:
                grad_hidden[part] = grad
            else:
                grad_hidden.index_copy_(0, index, grad.to(hidden.dtype))
            grad_weight.addmm_(probs.t(), h.to(wide), alpha=1.0 / count)  # (V, C) += (V, n) @ (n, C)
            grad_weight.index_add_(0, t, h.to(wide), alpha=-1.0 / count)  # the one-hot's share
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype) if grad_weight is not None else None)
        return loss / count if count else torch.full((), float("nan"), device=hidden.device)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is None:
            raise RuntimeError("linear_cross_entropy was called without gradients and cannot backpropagate")
        if not torch.equal(grad_output, torch.ones_like(grad_output)):  # a scaled loss: scale them too
            grad_hidden, grad_weight = grad_hidden * grad_output, grad_weight * grad_output
        return grad_hidden, grad_weight, None, None, None


def linear_cross_entropy(hidden: Tensor, weight: Tensor, targets: Tensor, *, chunk: int | None = None) -> Tensor:
    """``F.cross_entropy(hidden @ weight.T, targets)`` without the whole ``(N, V)`` logits.

    Targets equal to ``-100`` (``companion.losses.IGNORE_INDEX``) do not count, as in
    ``F.cross_entropy``; they get a zero gradient and no compute.

    Args:
        hidden: ``(N, C)`` final hidden states (or ``(B, T, C)``, flattened here).
        weight: ``(V, C)`` the output head's weight (``nn.Linear(C, V, bias=False).weight``).
        targets: ``(N,)`` (or ``(B, T)``) correct next-token ids.
        chunk: Tokens per chunk (``None``: ``DEFAULT_CHUNK``); memory is two ``(chunk, V)``
            float32 tensors.

    Returns:
        The scalar mean loss in nats per token (``NaN`` when every target is ignored).
        When grad is enabled its gradients reach ``hidden`` and ``weight`` as
        ``F.cross_entropy``'s would.

    Raises:
        ValueError: The shapes do not fit together, or ``chunk`` is not a positive integer.
    """
    if hidden.dim() == 3:
        hidden = hidden.flatten(0, 1)  # (B, T, C) -> (N, C)
    targets = targets.flatten()  # (B, T) -> (N,)
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1] or targets.numel() != len(hidden):
        raise ValueError(
            f"hidden must be (N, C), weight (V, C) and targets (N,) with the same N and C; got hidden "
            f"{tuple(hidden.shape)}, weight {tuple(weight.shape)} and targets {tuple(targets.shape)}"
        )
    chunk = DEFAULT_CHUNK if chunk is None else chunk
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk={chunk!r} must be a positive integer (tokens per chunk), e.g. 256")
    need_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    loss: Tensor = _LinearCrossEntropy.apply(hidden, weight, targets, chunk, need_grad)
    return loss
