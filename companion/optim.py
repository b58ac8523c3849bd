"""The optimizer and the learning-rate schedule of the course's training runs (chapter 5).

* ``configure_optimizer``: AdamW with weight decay on the matrices only.
* ``lr_schedule``: linear warmup, then cosine decay, as a pure function of the step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["configure_optimizer", "lr_schedule"]


def lr_schedule(step: int, *, max_lr: float, warmup_steps: int, max_steps: int, min_lr: float | None) -> float:
    """The learning rate of step ``step`` (0-based): linear warmup, then cosine decay.

    * ``step < warmup_steps``: ``max_lr · (step + 1) / warmup_steps``, rising to
      ``max_lr`` at the last warmup step (the first step is never taken with lr 0).
    * then, with ``p = (step - warmup_steps) / (max_steps - warmup_steps)`` going from 0
      to 1: ``min_lr + (max_lr - min_lr) · (1 + cos(π·p)) / 2``, from ``max_lr`` down
      to ``min_lr``; ``min_lr`` from ``max_steps`` on.
    * ``min_lr=None``: constant ``max_lr`` after warmup (as chapter 5's first loop uses).

    A pure function, so it can be plotted and tested on its own (chapter 5,
    "A model that really learns").
    """
    if step < 0:
        raise ValueError(f"step={step} must be >= 0")
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if min_lr is None:
        return max_lr
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def configure_optimizer(
    model: nn.Module,
    *,
    lr: float = 4e-4,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.999),
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only (chapter 5, "A training loop").

    As in GPT-2 and nanoGPT: every parameter with two or more dimensions (the linear
    layers' weights and both embeddings) decays; biases and the layer norms' ``scale``
    and ``shift`` do not, since pulling a scale towards zero is not a useful prior. A
    tied output head is one parameter and appears once.

    Args:
        model: The model whose parameters to optimize (those with ``requires_grad``).
        lr: Learning rate (``train`` overrides it every step with its schedule).
        weight_decay: Decoupled weight decay of the matrices.
        betas: Adam's moment decay rates.
        fused: Update all parameters in one fused kernel (``torch.optim.AdamW(fused=True)``)
            instead of several elementwise operations per parameter: the same
            update (up to rounding), faster. ``None`` (default): fused when every parameter is a
            floating-point tensor on a CPU or CUDA device (where PyTorch has the kernel).

    Returns:
        An ``AdamW`` with two parameter groups: decayed, then not decayed.
    """
    params = [p for p in model.parameters() if p.requires_grad]  # deduplicated (tied weights)
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    if fused is None:
        fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
        betas=betas,
        fused=fused or None,
    )
