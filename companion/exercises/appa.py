"""Appendix A's checked exercises: broadcasting's rules, and gradient accumulation."""

from __future__ import annotations

import random
from typing import Any

import torch
from torch import Tensor, nn

from companion.exercises.core import Exercise
from companion.losses import batch_loss

__all__ = ["EXERCISES", "accumulate_gradients", "broadcast_shape"]


# ---------------------------------------------------------------- reference solutions
def broadcast_shape(a: tuple[int, ...],
                    b: tuple[int, ...]) -> tuple[int, ...]:
    n = max(len(a), len(b))
    # rule 2: missing dimensions count as 1
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    result = []
    for dim, (size_a, size_b) in enumerate(zip(a, b)):  # rule 1
        if size_a != size_b and 1 not in (size_a, size_b):
            raise ValueError(
                f"sizes {size_a}, {size_b} in dimension {dim}")
        result.append(size_b if size_a == 1 else size_a)  # rule 3
    return tuple(result)


def accumulate_gradients(model: nn.Module, inputs: Tensor,
                         targets: Tensor,
                         micro_batch_size: int) -> None:
    model.zero_grad()
    n = len(inputs)
    for start in range(0, n, micro_batch_size):
        rows = slice(start, start + micro_batch_size)
        share = len(inputs[rows]) / n  # this micro-batch's share
        loss = batch_loss(model, inputs[rows], targets[rows])
        (loss * share).backward()  # adds to .grad


# ---------------------------------------------------------------- checks
def check_broadcast_shape(fn: Any) -> None:
    rng = random.Random(0)
    sizes = [0, 1, 2, 3]

    def random_shape() -> tuple[int, ...]:
        return tuple(rng.choice(sizes) for _ in range(rng.randint(0, 4)))

    for _ in range(3000):
        a, b = random_shape(), random_shape()
        try:
            expected = tuple(torch.broadcast_shapes(a, b))
        except RuntimeError:
            try:
                got = fn(a, b)
            except ValueError:
                continue
            raise AssertionError(f"{a} and {b} cannot broadcast: expected a ValueError, got {got}") from None
        try:
            got = tuple(fn(a, b))
        except ValueError as err:
            raise AssertionError(f"{a} and {b} broadcast to {expected}, but you raised ValueError({err}) "
                                 "(line the shapes up from the right)") from None
        assert got == expected, f"{a} and {b} broadcast to {expected}, got {got} (line the shapes up from the right)"


def check_accumulate_gradients(fn: Any) -> None:
    from companion.config import GPTConfig
    from companion.model import GPTModel

    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=40, context_length=8, emb_dim=16, n_heads=2, n_layers=1))
    xs = torch.randint(0, 40, (8, 6))
    ys = torch.randint(0, 40, (8, 6))
    model.zero_grad()
    batch_loss(model, xs, ys).backward()
    whole = [p.grad.clone() for p in model.parameters()]
    for micro in (4, 3, 8, 1):
        for p in model.parameters():  # stale gradients from an earlier step
            p.grad = torch.ones_like(p)
        fn(model, xs, ys, micro)
        worst = max((p.grad - g).abs().max().item() for p, g in zip(model.parameters(), whole))
        sizes = [len(xs[s:s + micro]) for s in range(0, 8, micro)]
        assert worst < 1e-6, (
            f"micro-batches of {sizes} rows: the accumulated gradient differs from the whole batch's by up to "
            f"{worst:.2e}; start from zero gradients, and weight each micro-batch's mean loss by its share of "
            "the rows (with uneven micro-batches, dividing by their number is not enough)")


EXERCISES = {
    "appa-broadcast": Exercise("appa-broadcast", "broadcast_shape", broadcast_shape, check_broadcast_shape,
                               "the shape two shapes broadcast to, or ValueError"),
    "appa-accumulate": Exercise("appa-accumulate", "accumulate_gradients", accumulate_gradients,
                                check_accumulate_gradients, "gradient accumulation over micro-batches"),
}
