"""Losses and evaluation: how wrong a model's next-token predictions are.

Chapter 5, "Measuring how wrong a model is: cross-entropy", builds these pieces:

* ``cross_entropy_loss`` and ``batch_loss``: the mean negative log-probability of the
  correct next tokens, in nats per token, skipping targets equal to ``IGNORE_INDEX``
  (the padding of chapters 6 and 7); ``perplexity`` turns a loss into an effective
  number of choices.
* ``evaluate``: the mean loss per token over a data loader.
* ``evaluate_text``: the loss of a whole text, per token and per character (the
  measure that compares models with different tokenizers).

Shape letters used in this module:

* ``B``: batch size
* ``T``: tokens per sequence
* ``V``: vocabulary size
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from companion.model import GPTModel, eval_mode
from companion.tokenizers import encode_text

__all__ = [
    "IGNORE_INDEX",
    "Batch",
    "TextLoss",
    "batch_loss",
    "cross_entropy_loss",
    "device_of",
    "evaluate",
    "evaluate_text",
    "perplexity",
]

IGNORE_INDEX = -100
"""Target id that the loss skips (padding in chapters 6 and 7), as in PyTorch."""

Batch = tuple[Tensor, Tensor]
"""One batch: ``(inputs, targets)``, both ``(B, T)`` (or ``(B,)`` class labels in chapter 6)."""


# --------------------------------------------------------------------------- #
# Losses
# --------------------------------------------------------------------------- #
def cross_entropy_loss(logits: Tensor, targets: Tensor, *, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Mean cross-entropy of next-token predictions, in nats per token (chapter 5,
    "Measuring how wrong a model is: cross-entropy").

    For every position, the negative log of the probability the model gives to the
    correct next token, averaged over all positions whose target is not
    ``ignore_index``. Batch and time are flattened first, because
    ``F.cross_entropy`` wants the classes in dimension 1.

    Args:
        logits: ``(B, T, V)`` unnormalised scores.
        targets: ``(B, T)`` the correct next-token ids; ``ignore_index`` marks positions
            that do not count (chapters 6 and 7 pad with it).
        ignore_index: The id to skip (default ``-100``, PyTorch's).

    Returns:
        A scalar tensor. ``NaN`` when every target is ignored (nothing to average).

    Raises:
        ValueError: The shapes do not fit together.
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"logits must be (B, T, V) and targets (B, T) with the same B and T; got logits "
            f"{tuple(logits.shape)} and targets {tuple(targets.shape)}"
        )
    # (B, T, V) -> (B*T, V) and (B, T) -> (B*T,)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=ignore_index)


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without any)."""
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def batch_loss(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    device: torch.device | str | None = None,
) -> Tensor:
    """Loss of one batch (chapter 5, "Measuring how wrong a model is: cross-entropy").

    Args:
        model: Maps ``(B, T)`` ids to ``(B, T, V)`` logits.
        inputs: ``(B, T)`` input ids.
        targets: ``(B, T)`` target ids (the inputs shifted by one).
        device: Where to compute; ``None`` takes the model's device.

    Returns:
        The scalar mean loss, with a graph for ``backward()`` when grad is enabled.

    A ``GPTModel`` whose ``head_impl`` is ``"fused"`` (possibly inside
    ``DistributedDataParallel``) is given the targets and computes the loss itself,
    without all the logits (``companion.fused``).
    """
    device = device_of(model) if device is None else torch.device(device)
    inputs, targets = inputs.to(device), targets.to(device)
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    if isinstance(inner, GPTModel) and inner.head_impl == "fused":
        return model(inputs, targets=targets)  # through the wrapper, so that DDP sees the pass
    return cross_entropy_loss(model(inputs), targets)


def perplexity(loss: float | Tensor) -> float:
    """``exp(loss)``: the number of equally likely tokens that would give this loss.

    A model that hesitated uniformly between ``k`` tokens at every step would have loss
    ``ln k`` and perplexity ``k`` (chapter 5,
    "Measuring how wrong a model is: cross-entropy").
    """
    return math.exp(float(loss))


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[Batch], *, max_batches: int | None = None) -> float:
    """Mean loss per target token over a loader (chapter 5,
    "Training and validation losses").

    Runs in eval mode (no dropout) without gradients, and restores the mode the model
    was in. The mean is over tokens (targets equal to ``IGNORE_INDEX`` do not count),
    which equals the mean of the batch means when every batch holds as many tokens.

    Args:
        model: The model.
        loader: Yields ``(inputs, targets)`` batches, each ``(B, T)``.
        max_batches: Use only the first ``max_batches`` batches; ``None`` for all.

    Returns:
        The mean loss in nats per token; ``nan`` when the loader is empty.
    """
    device = device_of(model)
    total, count = 0.0, 0
    with eval_mode(model):
        for i, (inputs, targets) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            inputs, targets = inputs.to(device), targets.to(device)
            logits = model(inputs)  # (B, T, V)
            loss_sum = F.cross_entropy(
                logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
            )
            total += loss_sum.item()
            count += int((targets != IGNORE_INDEX).sum())
    return total / count if count else float("nan")


@dataclass(frozen=True)
class TextLoss:
    """How well a model predicts a text; see ``evaluate_text``.

    Attributes:
        loss_per_token: Mean loss in nats per predicted token.
        nats_per_char: Total loss divided by the characters those tokens spell. It does
            not depend on the tokenizer, so it compares models with different ones.
        bits_per_char: The same in bits (``nats_per_char / ln 2``).
        tokens: Tokens predicted (every token of the text but the first).
        chars: Characters those tokens spell.
    """

    loss_per_token: float
    nats_per_char: float
    bits_per_char: float
    tokens: int
    chars: int


@torch.no_grad()
def evaluate_text(
    model: GPTModel,
    tokenizer: Any,
    text: str,
    *,
    context_length: int | None = None,
    batch_size: int = 16,
) -> TextLoss:
    """Loss of a whole text, per token and per character (chapter 5,
    "A model that really learns").

    The text is encoded and cut into consecutive windows of ``context_length`` tokens
    (a stride equal to the context length); every token after the first is predicted
    exactly once, from the tokens before it in its window. The last window is aligned
    to the end of the text and scores only the tokens no earlier window scored. So the
    whole text counts, and the per-character loss divides the total by exactly the
    characters that were predicted.

    Per-token losses of two tokenizers cannot be compared (a token of a larger
    vocabulary spells more text); per-character losses can.

    Args:
        model: The model (eval mode is used and the previous mode restored).
        tokenizer: Has ``encode`` and ``decode`` (``BPETokenizer``, tiktoken).
        text: The text, e.g. the held-out validation split.
        context_length: Window length; ``None`` for the model's context length.
        batch_size: Windows per forward pass (memory only; the result is the same).

    Returns:
        A ``TextLoss``.

    Raises:
        ValueError: The text has fewer than two tokens, or ``context_length`` is not
            between 1 and the model's.
    """
    limit = model.config.context_length
    if context_length is not None and (
        isinstance(context_length, bool) or not isinstance(context_length, int) or not 1 <= context_length <= limit
    ):
        raise ValueError(
            f"context_length={context_length!r} must be a whole number of tokens from 1 to the model's "
            f"context_length ({limit}), or None for the model's"
        )
    ctx = context_length or limit
    ids = torch.tensor(encode_text(tokenizer, text), dtype=torch.long)  # (N,)
    n = ids.numel()
    if n < 2:
        raise ValueError(f"the text has {n} token(s); at least 2 are needed to predict one")
    device = device_of(model)
    # Window k covers inputs ids[s : s+T] and targets ids[s+1 : s+T+1] and scores the
    # targets from position `first` on (earlier ones were scored by window k-1).
    windows: list[tuple[int, int]] = []  # (start, first scored position in the window)
    for start in range(0, n - 1, ctx):
        if start + ctx + 1 <= n:
            windows.append((start, 0))
        else:  # the tail: a full-length window ending at the text's end, if the text allows
            last = max(0, n - 1 - ctx)
            windows.append((last, start - last))
    total = 0.0
    with eval_mode(model):
        for i in range(0, len(windows), batch_size):
            group = windows[i : i + batch_size]
            length = min(ctx, n - 1 - group[0][0])  # all windows but a short text's are ctx long
            inputs = torch.stack([ids[s : s + length] for s, _ in group]).to(device)  # (B, T)
            targets = torch.stack([ids[s + 1 : s + length + 1] for s, _ in group]).to(device)  # (B, T)
            for row, (_, first) in enumerate(group):
                targets[row, :first] = IGNORE_INDEX  # already scored
            logits = model(inputs)  # (B, T, V)
            total += F.cross_entropy(
                logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
            ).item()
    tokens = n - 1
    chars = len(tokenizer.decode(ids[1:].tolist()))
    return TextLoss(
        loss_per_token=total / tokens,
        nats_per_char=total / chars,
        bits_per_char=total / chars / math.log(2),
        tokens=tokens,
        chars=chars,
    )
