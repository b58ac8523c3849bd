"""Tests for companion.model: building blocks, parameter counts, tying, KV cache, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from companion import GPTConfig, GPTModel
from companion.attention import MultiHeadAttention
from companion.losses import cross_entropy_loss
from companion.model import GELU, FeedForward, LayerNorm, TransformerBlock, init_gpt2_weights, num_parameters

TINY = GPTConfig(vocab_size=97, context_length=16, emb_dim=32, n_heads=4, n_layers=2)


def build(cfg: GPTConfig, seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(cfg)


def build_on_meta(cfg: GPTConfig) -> GPTModel:
    with torch.device("meta"):
        return GPTModel(cfg)


# --------------------------------------------------------------- building blocks
def test_layer_norm_matches_torch() -> None:
    torch.manual_seed(0)
    norm = LayerNorm(12)
    with torch.no_grad():
        norm.scale.normal_()
        norm.shift.normal_()
    x = torch.randn(3, 5, 12) * 4 + 2
    expected = F.layer_norm(x, (12,), norm.scale, norm.shift, eps=1e-5)
    torch.testing.assert_close(norm(x), expected)
    assert sorted(dict(norm.named_parameters())) == ["scale", "shift"]


def test_gelu_is_the_tanh_approximation() -> None:
    x = torch.linspace(-6, 6, 1001)
    torch.testing.assert_close(GELU()(x), F.gelu(x, approximate="tanh"))
    assert not torch.allclose(GELU()(x), F.gelu(x))  # not the exact erf form


def test_feed_forward_layout() -> None:
    ff = FeedForward(TINY)
    assert [type(m) for m in ff.layers] == [torch.nn.Linear, GELU, torch.nn.Linear]
    assert ff.layers[0].weight.shape == (128, 32)
    assert ff.layers[2].weight.shape == (32, 128)
    assert ff(torch.randn(2, 3, 32)).shape == (2, 3, 32)


def test_transformer_block_is_pre_ln_with_shortcuts() -> None:
    torch.manual_seed(0)
    block = TransformerBlock(TINY).eval()
    x = torch.randn(2, 6, 32)
    with torch.no_grad():
        h = x + block.att(block.norm1(x))
        expected = h + block.ff(block.norm2(h))
        torch.testing.assert_close(block(x), expected)


# ---------------------------------------------------------------- parameter counts
def test_gpt2_small_parameter_counts() -> None:
    tied = build_on_meta(GPTConfig.from_preset("gpt2-small"))
    assert tied.tok_emb.weight.is_meta
    assert num_parameters(tied) == 124_439_808
    assert num_parameters(tied, exclude_tied=False) == 163_037_184

    # The book's GPT_CONFIG_124M: no qkv bias, separate output head.
    book = build_on_meta(GPTConfig.from_preset("gpt2-small", qkv_bias=False, tie_embeddings=False))
    assert num_parameters(book) == 163_009_536
    head = book.out_head.weight.numel()
    assert num_parameters(book) - head == 124_412_160  # the book's "weight tying" figure


@pytest.mark.parametrize(
    ("name", "count"),
    [("gpt2-medium", 354_823_168), ("gpt2-large", 774_030_080), ("gpt2-xl", 1_557_611_200)],
)
def test_larger_gpt2_parameter_counts(name: str, count: int) -> None:
    assert num_parameters(build_on_meta(GPTConfig.from_preset(name))) == count


def test_trainable_only() -> None:
    model = build(TINY)
    total = num_parameters(model)
    model.tok_emb.weight.requires_grad_(False)
    assert num_parameters(model, trainable_only=True) == total - 97 * 32


# -------------------------------------------------------------------- the model
def test_state_dict_names_follow_the_book() -> None:
    model = build(TINY.replace(n_layers=1, qkv_bias=True))
    block = [
        "att.W_query.weight", "att.W_query.bias", "att.W_key.weight", "att.W_key.bias",
        "att.W_value.weight", "att.W_value.bias", "att.out_proj.weight", "att.out_proj.bias",
        "ff.layers.0.weight", "ff.layers.0.bias", "ff.layers.2.weight", "ff.layers.2.bias",
        "norm1.scale", "norm1.shift", "norm2.scale", "norm2.shift",
    ]  # fmt: skip
    assert list(model.state_dict()) == [
        "tok_emb.weight",
        "pos_emb.weight",
        *(f"trf_blocks.0.{name}" for name in block),
        "final_norm.scale",
        "final_norm.shift",
        "out_head.weight",
    ]
    assert not any("mask" in name for name in model.state_dict())


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_forward_shape_and_dict_config(impl: str) -> None:
    model = build(TINY.to_dict() | {"attn_impl": impl}).eval()  # a plain dict works too
    assert model.config == TINY.replace(attn_impl=impl)
    idx = torch.randint(0, 97, (3, 11))
    logits = model(idx)
    assert logits.shape == (3, 11, 97)
    assert logits.dtype == torch.float32
    # Rows of a batch are independent: each row alone gives the same logits.
    with torch.no_grad():
        torch.testing.assert_close(model(idx[1:2]), logits[1:2].detach())


def test_dict_with_unknown_key_is_refused() -> None:
    with pytest.raises(KeyError, match=r"unknown GPTConfig field.*'n_embd'"):
        GPTModel(TINY.to_dict() | {"n_embd": 32})


def test_seeded_construction_is_deterministic() -> None:
    a, b, c = build(TINY, seed=7), build(TINY, seed=7), build(TINY, seed=8)
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name]), name
    assert not torch.equal(a.tok_emb.weight, c.tok_emb.weight)


def test_tied_weights_are_one_parameter() -> None:
    model = build(TINY.replace(tie_embeddings=True))
    assert model.out_head.weight is model.tok_emb.weight
    with torch.no_grad():
        model.tok_emb.weight[5, 3] = 123.0
    assert model.out_head.weight[5, 3].item() == 123.0
    assert num_parameters(model, exclude_tied=False) - num_parameters(model) == 97 * 32

    untied = build(TINY)
    assert untied.out_head.weight is not untied.tok_emb.weight
    assert untied.out_head.bias is None


def test_manual_and_sdpa_models_agree_and_switch() -> None:
    model = build(TINY.replace(qkv_bias=True, drop_rate=0.2)).eval()
    idx = torch.randint(0, 97, (2, 16))
    with torch.no_grad():
        fused = model(idx)
        assert model.set_attention_impl("manual") is model
        manual = model(idx)
    assert model.config.attn_impl == "manual"
    assert all(m.impl == "manual" for m in model.modules() if isinstance(m, MultiHeadAttention))
    torch.testing.assert_close(manual, fused)
    with pytest.raises(ValueError, match=r"attn_impl='flash' is unknown"):
        model.set_attention_impl("flash")  # type: ignore[arg-type]


def test_dropout_active_only_in_training() -> None:
    model = build(TINY.replace(drop_rate=0.3))
    idx = torch.randint(0, 97, (2, 8))
    with torch.no_grad():
        model.eval()
        a, b = model(idx), model(idx)
        model.train()
        c = model(idx)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_too_long_input_says_how_to_crop() -> None:
    model = build(TINY)
    with pytest.raises(ValueError) as info:
        model(torch.zeros(1, 17, dtype=torch.long))
    message = str(info.value)
    assert "T=17 tokens but the model's context_length is 16" in message
    assert "crop it to the last context_length tokens first: idx[:, -16:]" in message


def test_input_checks() -> None:
    model = build(TINY)
    with pytest.raises(
        ValueError, match=r"\(B, T\) batch of token ids, got shape \(5,\).*unsqueeze"
    ):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match=r"integer token ids"):
        model(torch.zeros(1, 5))
    assert model(torch.zeros(1, 5, dtype=torch.int32)).shape == (1, 5, 97)


def test_ids_outside_the_vocabulary_name_the_id_and_the_cause() -> None:
    """Failure mode: GPT-2 ids fed to a small model ended in torch's bare IndexError."""
    from companion.generate import generate

    model = build(TINY)
    with pytest.raises(ValueError, match=r"token id 15496 is outside this model's vocabulary \(ids 0..96, vocab_size=97\)"):
        model(torch.tensor([[1, 15496, 3]]))
    with pytest.raises(ValueError, match=r"token id -1 is outside.*another tokenizer"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="token id 50256 is outside"):
        generate(model, torch.tensor([[50256]]), max_new_tokens=3)


# ------------------------------------------------------------------ GPT-2 initialisation (the default)
def test_init_gpt2_weights_statistics() -> None:
    cfg = GPTConfig(vocab_size=512, context_length=64, emb_dim=128, n_heads=4, n_layers=4, qkv_bias=True)
    torch.manual_seed(0)
    model = GPTModel(cfg)
    residual_std = 0.02 / math.sqrt(2 * 4)
    for name, p in model.named_parameters():
        if name.endswith(("att.out_proj.weight", "ff.layers.2.weight")):
            assert p.std().item() == pytest.approx(residual_std, rel=0.05), name
        elif name.endswith("bias") or name.endswith("shift"):
            assert torch.count_nonzero(p) == 0, name
        elif name.endswith("scale"):
            assert torch.equal(p, torch.ones_like(p)), name
        else:
            assert p.dim() == 2
            assert p.std().item() == pytest.approx(0.02, rel=0.05), name
    # seeded: the same model twice; and a fresh model's loss is about ln(V)
    torch.manual_seed(0)
    again = GPTModel(cfg)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    x = torch.randint(0, 512, (4, 32))
    with torch.no_grad():
        loss = cross_entropy_loss(model.eval()(x), torch.randint(0, 512, (4, 32)))
    assert loss.item() == pytest.approx(math.log(512), abs=0.15)


def test_init_gpt2_weights_keeps_a_tied_head_tied() -> None:
    torch.manual_seed(0)
    model = GPTModel(TINY.replace(tie_embeddings=True))
    assert model.out_head.weight is model.tok_emb.weight
    assert model.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.1)




def test_init_gpt2_weights_redraws_a_pytorch_initialised_model_the_same_way() -> None:
    torch.manual_seed(3)
    default = GPTModel(TINY)
    torch.manual_seed(3)
    by_hand = init_gpt2_weights(GPTModel(TINY, init="pytorch"))
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(), by_hand.state_dict().values(), strict=True))


def test_pytorch_init_keeps_the_book_defaults_and_is_a_trap_when_tied() -> None:
    """With init="pytorch" the tied head is the N(0, 1) embedding: logits spread by about sqrt(C)."""
    cfg = TINY.replace(tie_embeddings=True, emb_dim=64)
    torch.manual_seed(0)
    trap = GPTModel(cfg, init="pytorch").eval()
    torch.manual_seed(0)
    safe = GPTModel(cfg).eval()
    x = torch.randint(0, cfg.vocab_size, (2, 8))
    with torch.no_grad():
        assert trap(x).std().item() > 3.0
        assert safe(x).std().item() < 0.5
    assert trap.tok_emb.weight.std().item() == pytest.approx(1.0, rel=0.1)
    with pytest.raises(ValueError, match="init='xavier' is unknown"):
        GPTModel(cfg, init="xavier")


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
@pytest.mark.parametrize("chunks", [[1] * 10, [6, 1, 1, 2], [3, 7]])
def test_cache_gives_the_same_logits(impl: str, chunks: list[int]) -> None:
    model = build(TINY.replace(attn_impl=impl, qkv_bias=True, tie_embeddings=True)).eval()
    idx = torch.randint(0, 97, (2, 10))
    cache = model.new_cache()
    assert len(cache) == 0 and len(cache.layers) == 2 and cache.max_length == 16
    with torch.no_grad():
        full = model(idx)
        pieces, start = [], 0
        for size in chunks:
            pieces.append(model(idx[:, start : start + size], cache=cache))
            start += size
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)
    assert len(cache) == 10


def test_cache_overflow_and_reset() -> None:
    model = build(TINY).eval()
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.zeros(2, 12, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match=r"cache holds 12 tokens and 5 new ones would exceed"):
            model(torch.zeros(2, 5, dtype=torch.long), cache=cache)
        assert len(cache) == 12
        cache.reset()
        assert len(cache) == 0
        # After a reset the cache takes a new batch size; positions start again at 0.
        one = model(torch.tensor([[4, 5, 6]]), cache=cache)
        torch.testing.assert_close(one, model(torch.tensor([[4, 5, 6]])))
    other = build(TINY.replace(n_layers=3)).new_cache()
    with pytest.raises(ValueError, match=r"cache has 3 layers but the model has 2 blocks"):
        model(torch.zeros(1, 1, dtype=torch.long), cache=other)
