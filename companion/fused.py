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
2. takes their log-softmax, in place, and adds ``-log p(target)`` to the loss;
3. exponentiates that, in place, into the softmax: the loss's gradient with respect to the
   logits is ``softmax - one_hot(target)``, divided by the number of counted tokens;
4. multiplies that gradient back: into the chunk's hidden-state gradient ``(n, C)`` and,
   accumulated over the chunks, the weight's gradient ``(V, C)``;

and reuses the same buffer for the next chunk. The gradients are computed in the forward
pass and kept for the backward pass (which only scales them), the idea of Liger-Kernel's
fused linear cross-entropy and Apple's Cut Cross-Entropy, written here in plain PyTorch.
The head's memory falls from several ``(N, V)`` tensors to one ``(n, V)`` buffer, and the
softmax's passes over the logits, written and read again four times on the readable path
(logits, log-softmax, its gradient, the logits' gradient), happen once each here.

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

__all__ = ["HeadImpl", "check_head_impl", "default_chunk", "linear_cross_entropy"]

HeadImpl = Literal["manual", "fused"]
"""How a ``GPTModel`` given targets computes its loss: the readable head then
``F.cross_entropy`` (``"manual"``), or ``linear_cross_entropy`` (``"fused"``)."""

_HEAD_IMPLS: tuple[str, ...] = get_args(HeadImpl)

_ALIGN = 64  # numbers: each row of the logits' buffer is padded to a multiple of this
_CHUNK_BYTES = 256 * 50304 * 4  # the buffer's size when no chunk is given: 51.5 MB


def _padded(vocab: int) -> int:
    return -(-vocab // _ALIGN) * _ALIGN


def default_chunk(vocab: int) -> int:
    """Tokens per chunk when none is given: as many as fit a 51.5 MB float32 buffer.

    That is 256 tokens at GPT-2's 50,257 (padded to 50,304) and 3,144 at 4,096, so a small
    vocabulary takes a whole batch in one chunk: the matrix products stay large, and chunks
    pay only where the logits are too big to hold (on one thread, 128 to 512 tokens ran
    within 4% of each other at 50,257 in ``bench/bench_head.py``; 128-token chunks had made
    a 4,096 vocabulary's training step slower than the unfused head's).
    """
    return max(1, _CHUNK_BYTES // (_padded(vocab) * 4))

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
        vocab = weight.shape[0]
        wide = torch.promote_types(weight.dtype, torch.float32)  # float32, or float64 for float64 weights
        loss = torch.zeros((), dtype=wide, device=hidden.device)
        # every row of grad_hidden is written when every target counts; else the ignored ones stay 0
        grad_hidden = (torch.empty_like(hidden) if every else torch.zeros_like(hidden)) if need_grad else None
        grad_weight = torch.empty_like(weight, dtype=wide) if need_grad else None  # (V, C), written by chunk 1
        # One (n, V') buffer reused by every chunk, its rows padded to a multiple of 64 numbers:
        # with GPT-2's odd 50,257 the matrix library's stores are unaligned and its product
        # runs ~25% slower. The padding columns hold -inf, so the softmax gives them 0.
        padded = _padded(vocab)
        buf = torch.empty(min(chunk, max(count, 1)), padded, dtype=wide, device=hidden.device)
        direct = hidden.dtype == wide and weight.dtype == wide and not torch.is_autocast_enabled(hidden.device.type)
        for first, start in enumerate(range(0, count, chunk)):
            index = rows[start : start + chunk]  # (n,)
            part = slice(start, start + len(index))
            h = hidden[part] if every else hidden.index_select(0, index)  # (n, C)
            t = targets[part] if every else targets.index_select(0, index)  # (n,)
            block = buf[: len(index)]  # (n, V'): the logits, then their log-softmax, then the softmax
            logits = block[:, :vocab]  # (n, V), a view with the padded row stride
            if direct:
                torch.mm(h, weight.t(), out=logits)
            else:  # autocast's bfloat16 product, widened for the softmax
                logits.copy_(F.linear(h, weight))
            block[:, vocab:] = float("-inf")
            torch.log_softmax(block, dim=1, out=block)  # in place: the row is read before it is written
            loss -= block.gather(1, t.unsqueeze(1)).sum()  # the sum of -log p(target)
            if grad_hidden is None or grad_weight is None:
                continue
            # d loss / d logits = (softmax - one_hot(t)) / count: the softmax here, the one-hot
            # and the 1/count applied to the (n, C) and (V, C) products, not to the (n, V) one
            probs = block.exp_()[:, :vocab]  # (n, V)
            h_wide = h.to(wide)
            grad = (probs @ weight.to(wide)).to(wide) - weight.index_select(0, t).to(wide)  # (n, C)
            grad.mul_(1.0 / count)
            if every:
                grad_hidden[part] = grad
            else:
                grad_hidden.index_copy_(0, index, grad.to(hidden.dtype))
            # (V, C) += (V, n) @ (n, C); the first chunk overwrites the uninitialised buffer
            grad_weight.addmm_(probs.t(), h_wide, beta=0.0 if first == 0 else 1.0, alpha=1.0 / count)
            grad_weight.index_add_(0, t, h_wide, alpha=-1.0 / count)  # the one-hot's share
        if grad_weight is not None and count == 0:
            grad_weight.zero_()
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
        chunk: Tokens per chunk (``None``: ``default_chunk(V)``); the memory the head holds
            is one ``(chunk, V)`` float32 tensor (its rows padded to a multiple of 64).

    Returns:
        The scalar mean loss in nats per token (``NaN`` when every target is ignored).
        When grad is enabled its gradients reach ``hidden`` and ``weight`` as
        ``F.cross_entropy``'s would.

    Raises:
        ValueError: The shapes do not fit together, a target is outside ``0 .. V - 1`` and not
            ``-100``, or ``chunk`` is not a positive integer.
    """
    if hidden.dim() == 3:
        hidden = hidden.flatten(0, 1)  # (B, T, C) -> (N, C)
    targets = targets.flatten()  # (B, T) -> (N,)
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1] or targets.numel() != len(hidden):
        raise ValueError(
            f"hidden must be (N, C), weight (V, C) and targets (N,) with the same N and C; got hidden "
            f"{tuple(hidden.shape)}, weight {tuple(weight.shape)} and targets {tuple(targets.shape)}"
        )
    counted = targets[targets != _IGNORE_INDEX]
    if counted.numel():
        low, high = (int(x) for x in torch.aminmax(counted))
        if low < 0 or high >= weight.shape[0]:
            bad = low if low < 0 else high
            raise ValueError(
                f"target id {bad} is outside the head's vocabulary (ids 0..{weight.shape[0] - 1}, or -100 for "
                "a position that does not count); the targets probably come from another tokenizer or a "
                "collate that pads with another value"
            )
    chunk = default_chunk(weight.shape[0]) if chunk is None else chunk
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk={chunk!r} must be a positive integer (tokens per chunk), e.g. 256")
    need_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    loss: Tensor = _LinearCrossEntropy.apply(hidden, weight, targets, chunk, need_grad)
    return loss
