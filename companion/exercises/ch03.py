"""Chapter 3's checked exercises: a sliding-window mask, a causal mask for a padded batch, heads split."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from companion.exercises.core import Exercise

__all__ = ["EXERCISES", "padded_causal_mask", "sliding_window_mask", "split_heads"]


# ---------------------------------------------------------------- reference solutions
def sliding_window_mask(T: int, window: int) -> Tensor:
    i = torch.arange(T).unsqueeze(1)  # (T, 1): query positions
    j = torch.arange(T).unsqueeze(0)  # (1, T): key positions
    return (j > i) | (j <= i - window)  # broadcasts to (T, T)


def padded_causal_mask(lengths: Tensor, T: int) -> Tensor:
    i = torch.arange(T).view(1, T, 1)  # (1, T, 1): query positions
    j = torch.arange(T).view(1, 1, T)  # (1, 1, T): key positions
    is_pad_key = j >= lengths.view(-1, 1, 1)  # (B, 1, T)
    return (j > i) | is_pad_key  # (B, T, T)


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    B, T, C = x.shape
    head_dim = C // num_heads
    # (B, T, H, D): cut each vector
    x = x.view(B, T, num_heads, head_dim)
    return x.transpose(1, 2)  # (B, H, T, D): heads before tokens


# ---------------------------------------------------------------- checks
def check_sliding_window_mask(fn: Callable[[int, int], Tensor]) -> None:
    by_hand = torch.tensor([[0, 1, 1, 1, 1],  # T=5, window=2: each query
                            [0, 0, 1, 1, 1],  # sees itself and the token
                            [1, 0, 0, 1, 1],  # just before it
                            [1, 1, 0, 0, 1],
                            [1, 1, 1, 0, 0]], dtype=torch.bool)
    result = fn(5, 2)
    assert result.dtype == torch.bool, f"the mask should hold True/False, got {result.dtype}"
    assert torch.equal(result, by_hand), (
        f"T=5, window=2 should let each query see itself and one token before it (True = hidden):\n"
        f"{by_hand.int()}\ngot\n{result.int()}")
    for n in [1, 6, 10]:
        causal = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
        assert torch.equal(fn(n, n), causal), f"window={n} covers all {n} tokens: expected the causal mask"
    seen = (~fn(10, 3)).sum(dim=-1).tolist()
    assert seen == [1, 2, 3, 3, 3, 3, 3, 3, 3, 3], f"T=10, window=3: keys seen per query should be 1, 2, 3, 3, ...; got {seen}"


def check_padded_causal_mask(fn: Callable[[Tensor, int], Tensor]) -> None:
    lengths = torch.tensor([4, 2, 3])
    mask = fn(lengths, 4)
    assert mask.shape == (3, 4, 4) and mask.dtype == torch.bool, (
        f"3 sequences padded to 4 tokens: expected a (3, 4, 4) bool mask, got {tuple(mask.shape)} {mask.dtype}")
    causal = torch.triu(torch.ones(4, 4, dtype=torch.bool), diagonal=1)
    assert torch.equal(mask[0], causal), (
        f"the first sequence has no padding: its mask should be the causal mask\n{causal.int()}\ngot\n{mask[0].int()}")
    expected = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask[1], expected), (
        "the second sequence has 2 real tokens: no query may see the future or keys 2 and 3 (padding), and "
        f"the padded queries still see the real tokens (a row with every key hidden gives NaN):\n"
        f"{expected.int()}\ngot\n{mask[1].int()}")
    assert not bool(mask.all(dim=-1).any()), "some query has every key hidden: softmax over it gives NaN"
    scores = torch.randn(3, 4, 4)
    weights = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
    assert bool(torch.isfinite(weights).all()), "attention weights with this mask contain NaN"
    assert bool((weights[2, :, 3] == 0).all()), "no query of the third sequence may attend to its padding (key 3)"


def check_split_heads(fn: Callable[[Tensor, int], Tensor]) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 12)  # (B, T, C)
    out = fn(x, 3)
    assert tuple(out.shape) == (2, 3, 5, 4), f"(B, T, C) = (2, 5, 12) with 3 heads should give (B, H, T, D) = (2, 3, 5, 4), got {tuple(out.shape)}"
    for b, h, t in [(0, 0, 0), (1, 2, 4), (0, 1, 3)]:
        want = x[b, t, h * 4:(h + 1) * 4]
        assert torch.equal(out[b, h, t], want), (
            f"out[{b}, {h}, {t}] should be token {t}'s features {h * 4}..{h * 4 + 3} (its slice for head {h}); "
            "a view straight to (B, H, T, D) mixes tokens: view as (B, T, H, D), then swap T and H")


EXERCISES = {
    "ch03-window": Exercise("ch03-window", "sliding_window_mask", sliding_window_mask, check_sliding_window_mask,
                            "a sliding-window causal mask"),
    "ch03-padded-mask": Exercise("ch03-padded-mask", "padded_causal_mask", padded_causal_mask,
                                 check_padded_causal_mask, "a causal mask for a padded batch"),
    "ch03-split-heads": Exercise("ch03-split-heads", "split_heads", split_heads, check_split_heads,
                                 "split (B, T, C) into (B, H, T, D) heads"),
}
