"""Tests for companion.attention: mask, manual vs fused attention, causality, KV cache."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from companion.attention import (
    CacheOverflowError,
    KVCache,
    MultiHeadAttention,
    causal_mask,
    scaled_dot_product_attention,
)

# (B, T, d_in, d_out, H, context_length)
SHAPES = [
    (1, 1, 8, 8, 1, 4),
    (2, 5, 6, 8, 2, 8),
    (3, 16, 16, 24, 4, 16),
    (4, 7, 32, 32, 8, 12),
]


def make_mha(
    d_in: int,
    d_out: int,
    H: int,
    ctx: int,
    *,
    qkv_bias: bool = False,
    dropout: float = 0.0,
    impl: str = "manual",
    seed: int = 0,
) -> MultiHeadAttention:
    torch.manual_seed(seed)
    return MultiHeadAttention(d_in, d_out, ctx, dropout, H, qkv_bias=qkv_bias, impl=impl)


def loop_reference(mha: MultiHeadAttention, x: Tensor) -> Tensor:
    """Causal multi-head attention written the slow way: one head and one query at a time."""
    T = x.shape[1]
    D = mha.head_dim
    q, k, v = mha.W_query(x), mha.W_key(x), mha.W_value(x)  # (B, T, C)
    heads = []
    for h in range(mha.num_heads):
        cols = slice(h * D, (h + 1) * D)
        rows = []
        for t in range(T):
            scores = q[:, t, cols].unsqueeze(1) @ k[:, : t + 1, cols].transpose(1, 2)  # (B, 1, t+1)
            weights = torch.softmax(scores / math.sqrt(D), dim=-1)
            rows.append(weights @ v[:, : t + 1, cols])  # (B, 1, D)
        heads.append(torch.cat(rows, dim=1))  # (B, T, D)
    return mha.out_proj(torch.cat(heads, dim=-1))  # (B, T, C)


def test_causal_mask_values() -> None:
    mask = causal_mask(4)
    expected = torch.tensor(
        [
            [False, True, True, True],
            [False, False, True, True],
            [False, False, False, True],
            [False, False, False, False],
        ]
    )
    assert mask.dtype == torch.bool
    assert torch.equal(mask, expected)
    assert causal_mask(3, device="meta").device.type == "meta"


def test_manual_function_matches_torch() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 6, 5) for _ in range(3))  # (B, H, T, D)
    out = scaled_dot_product_attention(q, k, v, mask=causal_mask(6))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, expected)
    # Without a mask every key is visible.
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, v)
    )


@pytest.mark.parametrize("qkv_bias", [False, True])
@pytest.mark.parametrize(("B", "T", "d_in", "d_out", "H", "ctx"), SHAPES)
def test_manual_sdpa_and_loop_reference_agree(
    B: int, T: int, d_in: int, d_out: int, H: int, ctx: int, qkv_bias: bool
) -> None:
    mha = make_mha(d_in, d_out, H, ctx, qkv_bias=qkv_bias, dropout=0.3).eval()
    assert (mha.W_query.bias is not None) == qkv_bias
    x = torch.randn(B, T, d_in)
    with torch.no_grad():
        manual = mha(x)
        mha.impl = "sdpa"
        fused = mha(x)
        reference = loop_reference(mha, x)
    assert manual.shape == (B, T, d_out)
    torch.testing.assert_close(manual, fused)
    torch.testing.assert_close(manual, reference)


def test_mask_is_a_non_persistent_buffer() -> None:
    mha = make_mha(8, 8, 2, 6, qkv_bias=True)
    assert "mask" in dict(mha.named_buffers())
    assert torch.equal(mha.mask, causal_mask(6))
    assert sorted(mha.state_dict()) == [
        "W_key.bias",
        "W_key.weight",
        "W_query.bias",
        "W_query.weight",
        "W_value.bias",
        "W_value.weight",
        "out_proj.bias",
        "out_proj.weight",
    ]
    # Loads strictly into a fresh layer: nothing else is expected.
    make_mha(8, 8, 2, 6, qkv_bias=True, seed=1).load_state_dict(mha.state_dict(), strict=True)


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_causal_later_tokens_do_not_change_earlier_outputs(impl: str) -> None:
    mha = make_mha(16, 16, 4, 10, impl=impl).eval()
    x = torch.randn(2, 10, 16)
    changed = x.clone()
    changed[:, 6:] = torch.randn(2, 4, 16)
    with torch.no_grad():
        before, after = mha(x), mha(changed)
    torch.testing.assert_close(before[:, :6], after[:, :6])
    assert not torch.allclose(before[:, 6:], after[:, 6:])


def test_attention_weights_rows_sum_to_one_and_hide_the_future() -> None:
    mha = make_mha(16, 16, 4, 10, dropout=0.5).train()  # weights are taken before dropout
    x = torch.randn(3, 7, 16)
    out, weights = mha(x, return_weights=True)
    assert out.shape == (3, 7, 16)
    assert weights.shape == (3, 4, 7, 7)  # (B, H, T, S)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(3, 4, 7))
    above = causal_mask(7).expand_as(weights)
    assert torch.all(weights[above] == 0)
    assert torch.all(weights[~above] > 0)


def test_weights_refused_on_sdpa_path() -> None:
    mha = make_mha(8, 8, 2, 4, impl="sdpa")
    with pytest.raises(ValueError, match=r"only computed on the manual path; set impl='manual'"):
        mha(torch.randn(1, 3, 8), return_weights=True)


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_dropout_only_in_training(impl: str) -> None:
    with_dropout = make_mha(16, 16, 4, 8, dropout=0.5, impl=impl, seed=3)
    without = make_mha(16, 16, 4, 8, dropout=0.0, impl=impl, seed=3)  # same weights
    x = torch.randn(2, 8, 16)
    with torch.no_grad():
        with_dropout.eval()
        reference = without.eval()(x)
        torch.testing.assert_close(with_dropout(x), reference)

        with_dropout.train()
        torch.manual_seed(0)
        first = with_dropout(x)
        torch.manual_seed(0)
        again = with_dropout(x)
        second = with_dropout(x)
    assert not torch.allclose(first, reference)
    torch.testing.assert_close(first, again)  # seeded dropout is reproducible
    assert not torch.allclose(first, second)  # and random from call to call


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
@pytest.mark.parametrize("chunks", [[1] * 9, [4, 1, 3, 1], [2, 7], [9]])
def test_kv_cache_matches_full_pass(impl: str, chunks: list[int]) -> None:
    mha = make_mha(16, 16, 4, 12, qkv_bias=True, impl=impl).eval()
    x = torch.randn(3, sum(chunks), 16)
    cache = KVCache(max_length=12)
    outputs = []
    with torch.no_grad():
        full = mha(x)
        start = 0
        for size in chunks:
            outputs.append(mha(x[:, start : start + size], cache=cache))
            start += size
    torch.testing.assert_close(torch.cat(outputs, dim=1), full)
    assert len(cache) == 9
    assert cache.k is not None and cache.v is not None
    assert cache.k.shape == cache.v.shape == (3, 4, 9, 4)  # (B, H, S, D)
    # The cache holds exactly the keys and values of the whole text.
    expected_k = mha.W_key(x).view(3, 9, 4, 4).transpose(1, 2)
    torch.testing.assert_close(cache.k, expected_k.detach())


def test_kv_cache_weights_with_offset() -> None:
    mha = make_mha(8, 8, 2, 8).eval()
    x = torch.randn(2, 6, 8)
    with torch.no_grad():
        _, full = mha(x, return_weights=True)  # (B, H, 6, 6)
        cache = KVCache(8)
        mha(x[:, :4], cache=cache)
        _, tail = mha(x[:, 4:], cache=cache, return_weights=True)  # (B, H, 2, 6)
    torch.testing.assert_close(tail, full[:, :, 4:])


def test_kv_cache_overflow_and_reset() -> None:
    cache = KVCache(max_length=8)
    assert len(cache) == 0 and cache.k is None
    k = torch.randn(2, 3, 6, 4)
    cache.append(k, k)
    with pytest.raises(CacheOverflowError) as info:
        cache.append(k[:, :, :3], k[:, :, :3])
    assert "KV cache holds 6 of 8 positions and cannot take 3 more" in str(info.value)
    assert "context_length=8" in str(info.value)
    assert len(cache) == 6  # a refused append changes nothing

    with pytest.raises(ValueError, match=r"do not fit this cache.*call reset"):
        cache.append(torch.randn(1, 3, 1, 4), torch.randn(1, 3, 1, 4))  # another batch size
    cache.reset()
    assert len(cache) == 0 and cache.k is None
    k_all, _ = cache.append(torch.ones(1, 3, 2, 4), torch.ones(1, 3, 2, 4))
    assert k_all.shape == (1, 3, 2, 4)


def test_layer_rejects_overflow_through_cache_and_too_long_input() -> None:
    mha = make_mha(8, 8, 2, 5).eval()
    cache = KVCache(5)
    mha(torch.randn(1, 4, 8), cache=cache)
    with pytest.raises(ValueError, match=r"4 cached \+ 2 new tokens exceed context_length=5"):
        mha(torch.randn(1, 2, 8), cache=cache)
    with pytest.raises(ValueError, match=r"0 cached \+ 6 new tokens exceed context_length=5"):
        mha(torch.randn(1, 6, 8))


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match=r"d_out=10 is not divisible by num_heads=4"):
        MultiHeadAttention(8, 10, 4, 0.0, 4)
    mha = make_mha(8, 8, 2, 4)
    with pytest.raises(ValueError, match=r"impl='fast' is unknown"):
        mha.impl = "fast"  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"must be positive"):
        KVCache(0)


# --------------------------------------------------------------------------- #
# attention_maps: the weights a trained model's heads use (chapter 3)
# --------------------------------------------------------------------------- #
def _tiny_model(impl: str = "sdpa"):
    from companion.config import GPTConfig
    from companion.model import GPTModel

    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=50, context_length=12, emb_dim=16, n_heads=4, n_layers=3, drop_rate=0.1,
                    attn_impl=impl)
    return GPTModel(cfg)


def test_attention_maps_equal_the_weights_each_layer_computes() -> None:
    from companion.model import attention_maps

    model = _tiny_model("manual")
    idx = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(1))
    captured = []
    # Reference: run each block's attention with return_weights on its normalized input.
    model.eval()
    with torch.no_grad():
        x = model.drop_emb(model.tok_emb(idx) + model.pos_emb(torch.arange(9)))
        for block in model.trf_blocks:
            _, w = block.att(block.norm1(x), return_weights=True)
            captured.append(w)
            x = block(x)
    model.train()
    maps = attention_maps(model, idx)
    assert maps.shape == (3, 2, 4, 9, 9)
    torch.testing.assert_close(maps, torch.stack(captured))
    assert model.training, "attention_maps must restore training mode"


def test_attention_maps_without_mask_renormalise_to_the_causal_ones() -> None:
    from companion.model import attention_maps

    model = _tiny_model()
    idx = torch.randint(0, 50, (1, 10), generator=torch.Generator().manual_seed(2))
    causal = attention_maps(model, idx)
    free = attention_maps(model, idx, causal=False)
    torch.testing.assert_close(free.sum(-1), torch.ones_like(free.sum(-1)))
    assert (free.triu(1) > 0).any(), "without the mask, heads must put weight on later tokens"
    kept = free.tril()
    torch.testing.assert_close(causal, kept / kept.sum(-1, keepdim=True))
