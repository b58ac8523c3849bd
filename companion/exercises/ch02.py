"""Chapter 2's checked exercises: counting windows, ALiBi's biases, a padded batch."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from companion.exercises.core import Exercise

__all__ = ["EXERCISES", "alibi_bias", "n_windows", "pad_batch"]


# ---------------------------------------------------------------- reference solutions
def n_windows(n_tokens: int, context_length: int,
              stride: int) -> int:
    # a window starting at s needs the tokens s .. s + context_length
    # (the last is its last target): the starts are 0, stride,
    # 2 * stride, ... up to n_tokens - context_length - 1
    if n_tokens <= context_length:
        return 0
    return (n_tokens - context_length - 1) // stride + 1


def alibi_bias(n_tokens: int, slope: float) -> Tensor:
    pos = torch.arange(n_tokens)
    distance = pos.unsqueeze(1) - pos.unsqueeze(0)  # (T, T): i - j
    return -distance.abs() * slope  # int tensor * float: floats


def pad_batch(sequences: list[list[int]], pad_id: int
              ) -> tuple[Tensor, Tensor]:
    longest = max(len(s) for s in sequences)
    batch = torch.full((len(sequences), longest), pad_id)  # (B, L)
    for row, s in enumerate(sequences):
        batch[row, : len(s)] = torch.tensor(s)
    lengths = torch.tensor([len(s) for s in sequences])  # (B,)
    targets = batch[:, 1:].clone()  # (B, L - 1): shifted by one
    # target t is token t + 1: padding from the sequence's length on
    positions = torch.arange(1, longest)  # (L - 1,)
    is_pad = positions >= lengths.unsqueeze(1)  # (B, L - 1)
    targets[is_pad] = -100
    return batch[:, :-1], targets


# ---------------------------------------------------------------- checks
def _windows_by_hand(n: int, ctx: int, stride: int) -> int:
    return sum(1 for start in range(0, n, stride) if start + ctx < n)


def check_n_windows(fn: Callable[[int, int, int], int]) -> None:
    for n in range(1, 30):
        for ctx in range(1, 9):
            for stride in range(1, 6):
                expected = _windows_by_hand(n, ctx, stride)
                got = fn(n, ctx, stride)
                assert got == expected, (
                    f"n_tokens={n}, context_length={ctx}, stride={stride}: the dataset has {expected} "
                    f"window(s), you count {got} (a window needs context_length + 1 tokens: its last target too)")


def check_alibi_bias(fn: Callable[[int, float], Tensor]) -> None:
    m = 0.25
    expected = torch.tensor([[-m * abs(i - j) for j in range(6)] for i in range(6)])
    result = fn(6, m)
    assert isinstance(result, Tensor) and result.shape == (6, 6), (
        f"expected a (6, 6) tensor, got {getattr(result, 'shape', type(result).__name__)}")
    assert result.is_floating_point(), f"the biases should be floats, got {result.dtype}"
    assert torch.allclose(result, expected), (
        f"alibi_bias(6, 0.25) should be -0.25 * |i - j| (0 on the diagonal, negative elsewhere), got\n{result}")
    assert torch.allclose(fn(9, m)[3:, 3:], result), "alibi_bias(9, m)[3:, 3:] should equal alibi_bias(6, m)"
    assert torch.all(fn(5, 1.0).diagonal() == 0), "a token's bias for itself is 0"


def check_pad_batch(fn: Callable[[list[list[int]], int], tuple[Tensor, Tensor]]) -> None:
    pad = 0
    sequences = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]
    inputs, targets = fn(sequences, pad)
    expected_inputs = torch.tensor([[5, 6, 7], [9, 10, 0], [11, 12, 13]])
    expected_targets = torch.tensor([[6, 7, 8], [10, -100, -100], [12, 13, -100]])
    assert inputs.shape == (3, 3) and targets.shape == (3, 3), (
        f"3 sequences of at most 4 tokens give (3, 3) inputs and targets (one fewer than the longest), "
        f"got {tuple(inputs.shape)} and {tuple(targets.shape)}")
    assert torch.equal(inputs, expected_inputs), (
        f"inputs: expected each sequence padded at the end, without its last position:\n{expected_inputs}\ngot\n{inputs}")
    assert torch.equal(targets, expected_targets), (
        f"targets: expected the tokens shifted by one, with -100 wherever the target is padding:\n"
        f"{expected_targets}\ngot\n{targets}")
    # a real token equal to pad_id is a real target (GPT-2 pads with <|endoftext|>, which texts contain)
    inputs, targets = fn([[3, 0, 4], [3]], 0)
    assert targets.tolist() == [[0, 4], [-100, -100]], (
        "[[3, 0, 4], [3]] with pad_id=0: the 0 inside the first sequence is a real token and must stay a "
        f"target; expected [[0, 4], [-100, -100]], got {targets.tolist()} (mask by length, not by value)")


EXERCISES = {
    "ch02-windows": Exercise("ch02-windows", "n_windows", n_windows, check_n_windows,
                             "the number of sliding windows, by a formula"),
    "ch02-alibi": Exercise("ch02-alibi", "alibi_bias", alibi_bias, check_alibi_bias,
                           "ALiBi's distance biases with broadcasting"),
    "ch02-pad-batch": Exercise("ch02-pad-batch", "pad_batch", pad_batch, check_pad_batch,
                               "a padded batch of inputs and targets with -100 for padding"),
}
