"""Tests for companion.config: validation messages, presets, serialisation, immutability."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from companion import GPTConfig
from companion.config import PRESETS, list_presets

# The book's dict from chapter 4, verbatim.
GPT_CONFIG_124M = {
    "vocab_size": 50257,
    "context_length": 1024,
    "emb_dim": 768,
    "n_heads": 12,
    "n_layers": 12,
    "drop_rate": 0.1,
    "qkv_bias": False,
}

TINY = dict(vocab_size=100, context_length=16, emb_dim=32, n_heads=4, n_layers=2)


def test_book_dict_works_unchanged() -> None:
    cfg = GPTConfig(**GPT_CONFIG_124M)
    assert cfg.emb_dim == 768
    assert cfg.qkv_bias is False
    assert cfg.tie_embeddings is False
    assert cfg.attn_impl == "sdpa"
    assert cfg.head_dim == 64
    assert {k: v for k, v in cfg.to_dict().items() if k in GPT_CONFIG_124M} == GPT_CONFIG_124M


def test_defaults() -> None:
    cfg = GPTConfig(**TINY)
    assert (cfg.drop_rate, cfg.qkv_bias, cfg.tie_embeddings, cfg.attn_impl) == (
        0.0,
        False,
        False,
        "sdpa",
    )


@pytest.mark.parametrize(
    "field", ["vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"]
)
@pytest.mark.parametrize("value", [0, -3])
def test_non_positive_ints_rejected(field: str, value: int) -> None:
    with pytest.raises(
        ValueError, match=rf"^{field}={value} must be positive; choose {field} >= 1$"
    ):
        GPTConfig(**{**TINY, field: value})


@pytest.mark.parametrize(
    "field", ["vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"]
)
@pytest.mark.parametrize("value", [True, 12.0, "12", None])
def test_non_int_sizes_rejected(field: str, value: object) -> None:
    with pytest.raises(
        TypeError, match=rf"^{field}={value!r} must be an int, not {type(value).__name__}"
    ):
        GPTConfig(**{**TINY, field: value})


def test_emb_dim_must_divide_by_heads() -> None:
    with pytest.raises(ValueError) as info:
        GPTConfig(**{**GPT_CONFIG_124M, "emb_dim": 770})
    assert str(info.value) == (
        "emb_dim=770 is not divisible by n_heads=12; choose emb_dim a multiple of n_heads"
    )


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan")])
def test_drop_rate_outside_unit_interval(rate: float) -> None:
    with pytest.raises(ValueError, match=r"drop_rate=.* is outside \[0, 1\); choose a dropout"):
        GPTConfig(**TINY, drop_rate=rate)


@pytest.mark.parametrize("rate", [True, "0.1", None])
def test_drop_rate_type(rate: object) -> None:
    with pytest.raises(TypeError, match=r"^drop_rate=.* must be a float"):
        GPTConfig(**TINY, drop_rate=rate)


def test_int_drop_rate_stored_as_float() -> None:
    cfg = GPTConfig(**TINY, drop_rate=0)
    assert cfg.drop_rate == 0.0
    assert type(cfg.drop_rate) is float


@pytest.mark.parametrize("field", ["qkv_bias", "tie_embeddings"])
@pytest.mark.parametrize("value", [1, 0, "True", None])
def test_bools_must_be_bools(field: str, value: object) -> None:
    with pytest.raises(TypeError) as info:
        GPTConfig(**TINY, **{field: value})
    message = str(info.value)
    assert message.startswith(f"{field}={value!r} must be a bool, not {type(value).__name__}")
    assert f"pass {field}=True or {field}=False" in message


def test_unknown_attn_impl() -> None:
    with pytest.raises(ValueError) as info:
        GPTConfig(**TINY, attn_impl="flash")
    assert str(info.value) == "attn_impl='flash' is unknown; choose 'manual' or 'sdpa'"


def test_frozen() -> None:
    cfg = GPTConfig(**TINY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.emb_dim = 64  # type: ignore[misc]
    assert cfg.emb_dim == 32


def test_replace_validates_and_copies() -> None:
    cfg = GPTConfig(**TINY)
    wider = cfg.replace(emb_dim=64, attn_impl="manual")
    assert (wider.emb_dim, wider.attn_impl) == (64, "manual")
    assert (cfg.emb_dim, cfg.attn_impl) == (32, "sdpa")
    with pytest.raises(ValueError, match=r"emb_dim=30 is not divisible by n_heads=4"):
        cfg.replace(emb_dim=30)
    with pytest.raises(
        KeyError, match=r"unknown GPTConfig field.*'emb_size'.*valid fields are vocab_size"
    ):
        cfg.replace(emb_size=64)


def test_dict_round_trip_through_json() -> None:
    cfg = GPTConfig.from_preset("gpt2-medium", attn_impl="manual")
    text = json.dumps(cfg.to_dict())
    assert GPTConfig.from_dict(json.loads(text)) == cfg
    assert cfg.to_dict() == {
        "vocab_size": 50257,
        "context_length": 1024,
        "emb_dim": 1024,
        "n_heads": 16,
        "n_layers": 24,
        "drop_rate": 0.1,
        "qkv_bias": True,
        "tie_embeddings": True,
        "attn_impl": "manual",
    }


def test_from_dict_names_unknown_and_missing_keys() -> None:
    with pytest.raises(KeyError) as info:
        GPTConfig.from_dict({**TINY, "n_head": 4, "dropout": 0.1})
    message = str(info.value)
    assert "unknown GPTConfig field(s) 'dropout', 'n_head'" in message
    assert "valid fields are vocab_size, context_length, emb_dim, n_heads" in message

    partial = dict(TINY)
    del partial["n_layers"], partial["emb_dim"]
    with pytest.raises(KeyError, match=r"missing required GPTConfig field.*'emb_dim', 'n_layers'"):
        GPTConfig.from_dict(partial)


@pytest.mark.parametrize(
    ("name", "emb_dim", "n_heads", "n_layers"),
    [
        ("gpt2-small", 768, 12, 12),
        ("gpt2-medium", 1024, 16, 24),
        ("gpt2-large", 1280, 20, 36),
        ("gpt2-xl", 1600, 25, 48),
    ],
)
def test_gpt2_presets(name: str, emb_dim: int, n_heads: int, n_layers: int) -> None:
    cfg = GPTConfig.from_preset(name)
    assert cfg == GPTConfig(
        vocab_size=50257,
        context_length=1024,
        emb_dim=emb_dim,
        n_heads=n_heads,
        n_layers=n_layers,
        drop_rate=0.1,
        qkv_bias=True,
        tie_embeddings=True,
    )
    assert cfg.head_dim == 64


def test_book_training_preset() -> None:
    cfg = GPTConfig.from_preset("gpt2-small-book")
    assert cfg == GPTConfig(**{**GPT_CONFIG_124M, "context_length": 256})
    assert cfg.tie_embeddings is False


def test_preset_overrides_and_listing() -> None:
    cfg = GPTConfig.from_preset("gpt2-small", context_length=256, drop_rate=0.0)
    assert (cfg.context_length, cfg.drop_rate, cfg.emb_dim) == (256, 0.0, 768)
    assert PRESETS["gpt2-small"].context_length == 1024  # the preset itself is unchanged
    assert list_presets() == [
        "gpt2-small",
        "gpt2-medium",
        "gpt2-large",
        "gpt2-xl",
        "gpt2-small-book",
        "shakespeare-small",
        "verdict-tiny",
    ]
    with pytest.raises(TypeError):
        PRESETS["mine"] = cfg  # type: ignore[index]


def test_unknown_preset_lists_known_ones() -> None:
    with pytest.raises(KeyError) as info:
        GPTConfig.from_preset("gpt3")
    assert "unknown preset 'gpt3'; known presets: gpt2-small, gpt2-medium, gpt2-large" in str(
        info.value
    )


def test_course_presets_are_the_configs_the_course_trains() -> None:
    from companion.course_models import RECIPES
    from companion.model import GPTModel, num_parameters

    assert RECIPES["shakespeare-small"].config == PRESETS["shakespeare-small"]
    with torch.device("meta"):
        # 1.07M parameters as chapter 5 states: 2,048 x 128 tied embedding, 128 positions,
        # 4 blocks of 12*C^2 weights and 10*C biases and norm parameters, a final norm
        C = 128
        expected = 2048 * C + 128 * C + 4 * (12 * C * C + 10 * C) + 2 * C
        assert num_parameters(GPTModel(PRESETS["shakespeare-small"])) == expected == 1_070_336
