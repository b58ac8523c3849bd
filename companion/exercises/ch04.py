"""Chapter 4's checked exercises: a GPT's parameters from its configuration, layer norm, GELU."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from companion.config import PRESETS, GPTConfig
from companion.exercises.core import Exercise

__all__ = ["EXERCISES", "gelu", "gpt_parameters", "layer_norm"]


# ---------------------------------------------------------------- reference solutions
def gpt_parameters(cfg: GPTConfig) -> int:
    C, V = cfg.emb_dim, cfg.vocab_size
    qkv = 3 * (C * C + (C if cfg.qkv_bias else 0))
    attention = qkv + C * C + C  # out_proj has a bias
    feed_forward = (C * 4 * C + 4 * C) + (4 * C * C + C)
    norms = 2 * 2 * C  # two layer norms, scale and shift each
    block = attention + feed_forward + norms
    embeddings = V * C + cfg.context_length * C
    head = 0 if cfg.tie_embeddings else V * C
    final_norm = 2 * C
    return embeddings + cfg.n_layers * block + final_norm + head


def layer_norm(x: Tensor, scale: Tensor, shift: Tensor,
               eps: float = 1e-5) -> Tensor:
    mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
    # (..., 1): the mean squared deviation, dividing by C
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    normed = (x - mean) / torch.sqrt(var + eps)  # (..., C)
    return scale * normed + shift


def gelu(x: Tensor) -> Tensor:
    inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
    return 0.5 * x * (1 + torch.tanh(inner))


# ---------------------------------------------------------------- checks
def _built_parameters(config: GPTConfig) -> int:
    from companion.model import GPTModel, num_parameters

    with torch.device("meta"):
        return num_parameters(GPTModel(config))


def check_gpt_parameters(fn: Callable[[GPTConfig], int]) -> None:
    small = GPTConfig(vocab_size=1000, context_length=64, emb_dim=48, n_heads=4, n_layers=3)
    checks = [
        ("GPT-2 small", PRESETS["gpt2-small"]),
        ("GPT-2 medium", PRESETS["gpt2-medium"]),
        ("a small model with qkv_bias=True", small.replace(qkv_bias=True)),
        ("a small model with tie_embeddings=True", small.replace(tie_embeddings=True)),
        ("a small model", small),
    ]
    for label, config in checks:
        built = _built_parameters(config)
        got = fn(config)
        assert got == built, (f"{label} ({config.n_layers} layers, {config.emb_dim} wide, qkv_bias={config.qkv_bias}, "
                              f"tie_embeddings={config.tie_embeddings}): you count {got:,}, the model has {built:,}, "
                              f"a difference of {got - built:+,}")


def check_layer_norm(fn: Callable[..., Tensor]) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8) * 3 + 1  # (B, T, C)
    scale, shift = torch.randn(8), torch.randn(8)
    out = fn(x, scale, shift)
    assert out.shape == x.shape, f"expected the input's shape {tuple(x.shape)}, got {tuple(out.shape)}"
    expected = F.layer_norm(x, (8,), scale, shift, eps=1e-5)
    plain = fn(x, torch.ones(8), torch.zeros(8))
    mean, var = plain.mean(-1), plain.var(-1, correction=0)
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-5), (
        f"with scale 1 and shift 0 every vector should have mean 0 over its last dimension (C); got means {mean.flatten()[:4]}...")
    assert torch.allclose(var, torch.ones_like(var), atol=1e-3), (
        f"with scale 1 and shift 0 every vector should have variance 1 (dividing by C, not C - 1); got {var.flatten()[:4]}...")
    assert torch.allclose(out, expected, atol=1e-5), "the result differs from torch.nn.functional.layer_norm"
    constant = fn(torch.full((1, 4), 2.0), torch.ones(4), torch.zeros(4))
    assert bool(torch.isfinite(constant).all()), "a constant vector must not divide by zero: add eps to the variance"


def check_gelu(fn: Callable[[Tensor], Tensor]) -> None:
    x = torch.linspace(-6, 6, 241)
    out = fn(x)
    assert out.shape == x.shape, f"GELU works elementwise: expected shape {tuple(x.shape)}, got {tuple(out.shape)}"
    expected = F.gelu(x, approximate="tanh")
    worst = int((out - expected).abs().argmax())
    assert torch.allclose(out, expected, atol=1e-6), (
        f"at x = {x[worst]:.2f} GPT-2's GELU is {expected[worst]:.6f}, you give {out[worst]:.6f} "
        "(the tanh approximation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))))")


EXERCISES = {
    "ch04-count": Exercise("ch04-count", "gpt_parameters", gpt_parameters, check_gpt_parameters,
                           "a GPT's number of parameters from its configuration"),
    "ch04-layer-norm": Exercise("ch04-layer-norm", "layer_norm", layer_norm, check_layer_norm,
                                "layer normalisation as a function"),
    "ch04-gelu": Exercise("ch04-gelu", "gelu", gelu, check_gelu, "GPT-2's GELU (tanh approximation)"),
}
