"""Tests for companion.optim: the learning-rate schedule and AdamW's parameter groups."""

from __future__ import annotations

import itertools
import math

import pytest

from companion.model import num_parameters
from companion.optim import configure_optimizer, lr_schedule


# ------------------------------------------------------------ schedule, optimizer
def test_lr_schedule_known_values() -> None:
    kw = dict(max_lr=1e-3, warmup_steps=10, max_steps=110, min_lr=1e-4)
    assert lr_schedule(0, **kw) == pytest.approx(1e-4)  # 1/10 of the peak
    assert lr_schedule(4, **kw) == pytest.approx(5e-4)
    assert lr_schedule(9, **kw) == pytest.approx(1e-3)  # last warmup step reaches the peak
    assert lr_schedule(10, **kw) == pytest.approx(1e-3)  # cosine starts at the peak
    assert lr_schedule(60, **kw) == pytest.approx(5.5e-4)  # halfway: the mean of peak and floor
    assert lr_schedule(35, **kw) == pytest.approx(1e-4 + 9e-4 * (1 + math.cos(math.pi / 4)) / 2)
    assert lr_schedule(110, **kw) == pytest.approx(1e-4)
    assert lr_schedule(500, **kw) == pytest.approx(1e-4)
    values = [lr_schedule(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(values))  # decays monotonically
    # no warmup, no decay: the book's constant rate
    assert lr_schedule(0, max_lr=4e-4, warmup_steps=0, max_steps=10, min_lr=None) == 4e-4
    assert lr_schedule(99, max_lr=4e-4, warmup_steps=0, max_steps=10, min_lr=None) == 4e-4
    with pytest.raises(ValueError, match="step=-1"):
        lr_schedule(-1, **kw)


def test_configure_optimizer_decays_matrices_only(make_model) -> None:
    model = make_model(tie_embeddings=True, qkv_bias=True)
    opt = configure_optimizer(model, lr=1e-3, weight_decay=0.2, betas=(0.9, 0.95))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0
    assert opt.defaults["betas"] == (0.9, 0.95)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert "tok_emb.weight" in decayed and "pos_emb.weight" in decayed
    assert "trf_blocks.0.att.W_query.weight" in decayed and "trf_blocks.1.ff.layers.2.weight" in decayed
    assert "trf_blocks.0.att.W_query.bias" in kept and "final_norm.scale" in kept
    assert "trf_blocks.0.norm1.shift" in kept and "trf_blocks.0.ff.layers.0.bias" in kept
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    # the tied head is one parameter, counted once
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == num_parameters(model)
