"""Chapter 9's checked exercises: counting a modern model, a rotary embedding, sharing key/value heads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from companion.exercises.core import Exercise
from companion.model import num_parameters
from companion.modern.config import ModernConfig
from companion.modern.layers import apply_rope, rope_angles
from companion.modern.model import ModernGPT

__all__ = ["EXERCISES", "count_params", "repeat_kv", "rotate"]


# ---------------------------------------------------------------- reference solutions
def count_params(cfg: ModernConfig) -> int:
    C, V, L = cfg.emb_dim, cfg.vocab_size, cfg.n_layers
    H, G, D, F = cfg.n_heads, cfg.kv_heads, cfg.kv_dim, cfg.ffn_dim
    # RMSNorm: a scale; layer norm: a scale and a shift
    norm = C if cfg.norm == "rmsnorm" else 2 * C
    # queries, keys and values, output projection
    att = C * H * D + 2 * C * G * D + H * D * C
    if cfg.qkv_bias:
        att += H * D + 2 * G * D
    if cfg.bias:
        att += C  # the output projection's bias
    if cfg.qk_norm:
        att += 2 * D  # a scale for queries, one for keys
    if cfg.ffn == "swiglu":
        ff = 3 * C * F + (2 * F + C if cfg.bias else 0)
    else:
        ff = 2 * C * F + (F + C if cfg.bias else 0)
    total = V * C + L * (att + ff + 2 * norm) + norm
    if cfg.positions == "learned":
        total += cfg.context_length * C
    if not cfg.tie_embeddings:
        total += V * C
    return total


def rotate(x: Tensor, position: int,
           theta: float = 10_000.0) -> Tensor:
    D = x.shape[-1]
    half = D // 2
    i = torch.arange(half, dtype=torch.float32)
    angle = position * theta ** (-2 * i / D)  # (D/2,)
    cos, sin = torch.cos(angle), torch.sin(angle)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin,
                      x2 * cos + x1 * sin], dim=-1)


def repeat_kv(k: Tensor, n_heads: int) -> Tensor:
    B, G, S, D = k.shape
    group = n_heads // G
    wide = k[:, :, None].expand(B, G, group, S, D)  # no copy yet
    return wide.reshape(B, n_heads, S, D)


# ---------------------------------------------------------------- checks
def _tensor(got: Any, shape: tuple[int, ...], case: str) -> Tensor:
    assert isinstance(got, Tensor), f"{case}: return a tensor, got {type(got).__name__}"
    assert tuple(got.shape) == shape, f"{case}: expected shape {shape}, got {tuple(got.shape)}"
    return got


_COUNT_CASES: list[tuple[dict[str, Any], str]] = [
    ({}, "a Llama-style model (RMSNorm, RoPE, SwiGLU, untied head)"),
    ({"tie_embeddings": True}, "a tied head: the output matrix is the embedding, counted once"),
    ({"n_kv_heads": 2}, "n_kv_heads=2: keys and values have n_kv_heads * head_dim columns"),
    ({"head_dim": 12}, "head_dim=12: queries are n_heads * head_dim wide, not emb_dim"),
    ({"qk_norm": True}, "qk_norm: a scale of head_dim for the queries and one for the keys, per layer"),
    ({"hidden_dim": 40}, "hidden_dim=40: SwiGLU has three matrices of emb_dim x hidden_dim"),
    ({"norm": "layernorm", "positions": "learned", "ffn": "gelu", "bias": True, "qkv_bias": True},
     "GPT-2's block: layer norms with a shift, learned positions, two feed-forward matrices, biases"),
]


def check_count_params(fn: Callable[[ModernConfig], int]) -> None:
    base = ModernConfig(vocab_size=50, context_length=16, emb_dim=32, n_heads=4, n_layers=2)
    for changes, what in _COUNT_CASES:
        cfg = base.replace(**changes)
        with torch.device("meta"):
            want = num_parameters(ModernGPT(cfg))
        got = fn(cfg)
        assert isinstance(got, int) and not isinstance(got, bool), f"return an int, got {type(got).__name__}"
        assert got == want, f"{what}: expected {want:,} parameters, got {got:,} ({got - want:+,})"


def check_rotate(fn: Callable[..., Tensor]) -> None:
    torch.manual_seed(0)
    q, k = torch.randn(16), torch.randn(16)
    got = _tensor(fn(q, 3), (16,), "a vector of 16 channels at position 3")
    cos, sin = rope_angles(8, 16)
    want = apply_rope(q.view(1, 16), cos[3:4], sin[3:4])[0]
    assert torch.allclose(fn(q, 0), q, atol=1e-6), "position 0 must leave the vector unchanged"
    assert abs(float(got.norm() - q.norm())) < 1e-4, "a rotation keeps the vector's length; yours changes it"
    s1 = float(fn(q, 7) @ fn(k, 4))
    s2 = float(fn(q, 10) @ fn(k, 7))
    assert abs(s1 - s2) < 1e-3, (
        f"q at 7 and k at 4 score {s1:.4f}, q at 10 and k at 7 score {s2:.4f}: with RoPE a score "
        "depends only on the distance (each pair's angle must be position * frequency)")
    assert torch.allclose(got, want, atol=1e-5), (
        "the distance property holds, but the pairs differ from the chapter's: pair i is channels i "
        "and i + D/2, turned by position * theta ** (-2i / D)")


def check_repeat_kv(fn: Callable[[Tensor, int], Tensor]) -> None:
    k = torch.arange(2 * 2 * 3 * 4, dtype=torch.float32).view(2, 2, 3, 4)  # (B, G, S, D)
    got = _tensor(fn(k, 6), (2, 6, 3, 4), "keys (2, 2, 3, 4) for 6 query heads")
    for h in range(6):
        assert torch.equal(got[:, h], k[:, h // 3]), (
            f"query head {h} must see key head {h // 3}: heads 0-2 share key head 0, heads 3-5 key "
            "head 1 (consecutive query heads form a group, as in repeat_interleave)")
    assert torch.equal(fn(k, 2), k), "with as many query heads as key heads nothing changes"


EXERCISES = {
    "ch09-count": Exercise("ch09-count", "count_params", count_params, check_count_params,
                           "count a ModernConfig's parameters without building the model"),
    "ch09-rotate": Exercise("ch09-rotate", "rotate", rotate, check_rotate,
                            "rotate one vector to a position, as RoPE does"),
    "ch09-repeat-kv": Exercise("ch09-repeat-kv", "repeat_kv", repeat_kv, check_repeat_kv,
                               "share key heads among query heads (grouped-query attention)"),
}
