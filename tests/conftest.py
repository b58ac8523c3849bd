"""Fixtures shared by the unit tests: a tiny configuration, a tiny model, tiny data."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.utils.data import DataLoader

from companion.config import GPTConfig
from companion.data import SlidingWindowDataset
from companion.model import GPTModel

TINY = GPTConfig(vocab_size=64, context_length=16, emb_dim=32, n_heads=4, n_layers=2)
"""A GPT small enough that a forward and backward pass take a millisecond."""

REPEATED_TEXT = (
    "First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. "
    "First Citizen: You are all resolved rather to die than to famish? All: Resolved. resolved. "
) * 6
"""A short, repetitive text that a tiny model learns in a few dozen steps."""


@pytest.fixture
def tiny_config() -> GPTConfig:
    return TINY


@pytest.fixture
def make_model() -> Callable[..., GPTModel]:
    """``make_model(cfg=TINY, seed=0, **config_changes)``: a seeded GPTModel (GPT-2 initialisation)."""

    def make(cfg: GPTConfig = TINY, seed: int = 0, **changes: object) -> GPTModel:
        torch.manual_seed(seed)
        return GPTModel(cfg.replace(**changes) if changes else cfg)

    return make


@pytest.fixture
def random_loaders() -> Callable[..., tuple[DataLoader, DataLoader]]:
    """``random_loaders(n_tokens=400, batch_size=4, ctx=16, vocab=64)``: seeded random-token
    training windows (stride 4, shuffled) and validation windows (in order)."""

    def make(n_tokens: int = 400, batch_size: int = 4, ctx: int = 16, vocab: int = 64) -> tuple[DataLoader, DataLoader]:
        g = torch.Generator().manual_seed(7)
        ids = torch.randint(0, vocab, (n_tokens,), generator=g)
        train_set = SlidingWindowDataset(ids[: n_tokens * 3 // 4], ctx, stride=4)
        val_set = SlidingWindowDataset(ids[n_tokens * 3 // 4 :], ctx, stride=ctx)
        return (
            DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True),
            DataLoader(val_set, batch_size=batch_size, shuffle=False),
        )

    return make
