"""LoRA (companion.finetune.lora): the layer, applying and merging it, freezing, and parity with peft."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable
from typing import get_args

import pytest
import torch
from torch import nn

from companion.config import AttentionImpl, GPTConfig
from companion.finetune.lora import (
    LORA_TARGETS,
    LoRALinear,
    apply_lora,
    count_parameters,
    lora_layers,
    merge_lora,
)
from companion.model import GPTModel
from companion.train import train


def _ids(cfg: GPTConfig, batch: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.vocab_size, (batch, cfg.context_length), generator=g)  # (B, T)


def _randomise_b(model: nn.Module, seed: int = 3, std: float = 0.2) -> None:
    """Give every B a random value, so that the updates are not zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * std)


# --------------------------------------------------------------------------- #
# The layer
# --------------------------------------------------------------------------- #
def test_layer_computes_base_plus_scaled_low_rank_update() -> None:
    torch.manual_seed(0)
    base = nn.Linear(12, 10)
    layer = LoRALinear(base, rank=3, alpha=6.0)
    assert layer.weight is base.weight and layer.bias is base.bias  # shared, not copied
    assert not layer.weight.requires_grad and not layer.bias.requires_grad
    assert layer.lora_A.shape == (3, 12) and layer.lora_B.shape == (10, 3)
    assert torch.count_nonzero(layer.lora_B) == 0
    bound = 1 / 12**0.5
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.std() > bound / 4
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 5, 12)  # (..., in)
    expected = base(x) + 2.0 * (x @ layer.lora_A.T @ layer.lora_B.T)  # alpha / rank = 2
    torch.testing.assert_close(layer(x), expected)
    delta = layer.delta_weight()  # (out, in)
    assert delta.shape == (10, 12) and int(torch.linalg.matrix_rank(delta)) == 3
    torch.testing.assert_close(layer.merged()(x), expected)


def test_layer_dropout_only_on_update_path_and_only_in_training() -> None:
    torch.manual_seed(0)
    base = nn.Linear(8, 8, bias=False)
    layer = LoRALinear(base, rank=2, alpha=2.0, dropout=0.5)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(64, 8)
    layer.eval()
    torch.testing.assert_close(layer(x), layer.merged()(x))  # no dropout in evaluation
    layer.train()
    torch.manual_seed(5)
    out = layer(x)
    torch.manual_seed(5)
    mask = nn.functional.dropout(torch.ones_like(x), 0.5)  # the same draw: 0 or 2
    torch.testing.assert_close(out, base(x) + (x * mask) @ layer.lora_A.T @ layer.lora_B.T)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rank": 0, "alpha": 1.0}, "rank=0 must be an integer >= 1"),
        ({"rank": 2.0, "alpha": 1.0}, "rank=2.0 must be an integer"),
        ({"rank": 9, "alpha": 1.0}, "rank=9 exceeds min(in_features, out_features)=8"),
        ({"rank": 2, "alpha": 0.0}, "alpha=0.0 must be a finite number > 0"),
        ({"rank": 2, "alpha": 1.0, "dropout": 1.0}, "dropout=1.0 must be a probability in [0, 1)"),
    ],
)
def test_layer_rejects_bad_settings(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        LoRALinear(nn.Linear(8, 16), **kwargs)  # type: ignore[arg-type]


def test_layer_wraps_only_linear_layers() -> None:
    with pytest.raises(TypeError, match=re.escape("adapts an nn.Linear, got Embedding")):
        LoRALinear(nn.Embedding(4, 4), rank=1, alpha=1.0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- #
# Applying LoRA to a GPTModel, and merging it back
# --------------------------------------------------------------------------- #
def test_fresh_lora_model_computes_exactly_the_base_model(make_model: Callable[..., GPTModel], tiny_config: GPTConfig) -> None:
    base = make_model().eval()
    model = copy.deepcopy(base)
    names = apply_lora(model, "blocks", rank=4, alpha=8.0)
    assert len(names) == 6 * tiny_config.n_layers
    ids = _ids(tiny_config)
    with torch.no_grad():
        assert torch.equal(model(ids), base(ids)), "B = 0: the update is exactly zero"


@pytest.mark.parametrize("impl", get_args(AttentionImpl))
def test_merged_equals_unmerged_on_every_attention_path(
    make_model: Callable[..., GPTModel], tiny_config: GPTConfig, impl: str
) -> None:
    base = make_model().eval()
    model = copy.deepcopy(base)
    apply_lora(model, "blocks", rank=4, alpha=8.0)
    _randomise_b(model)
    model.set_attention_impl(impl)  # type: ignore[arg-type]
    ids = _ids(tiny_config)
    with torch.no_grad():
        adapted = model(ids)
        # the updates do reach the output on this path (the test would be empty otherwise)
        assert (adapted - base(ids)).abs().max() > 1e-2
        merged = merge_lora(model)
        torch.testing.assert_close(merged(ids), adapted)
    assert not lora_layers(merged)
    assert all(type(m) is nn.Linear for n, m in merged.named_modules() if n.endswith(("W_query", "layers.0")))


def test_merged_model_is_an_ordinary_gpt_model(make_model: Callable[..., GPTModel], tiny_config: GPTConfig) -> None:
    base = make_model()
    model = copy.deepcopy(base)
    apply_lora(model, "attention-qv", rank=2)
    _randomise_b(model)
    model.eval()
    ids = _ids(tiny_config)
    with torch.no_grad():
        adapted = model(ids)
    merged = merge_lora(model)
    state = merged.state_dict()
    assert state.keys() == base.state_dict().keys()
    assert all(p.requires_grad for p in merged.parameters())
    fresh = GPTModel(tiny_config).eval()
    fresh.load_state_dict(state)  # strict: the same keys and shapes
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids), adapted)
    # the base weights were left as they were: merging wrote new tensors
    for name in ("trf_blocks.0.att.W_query.weight", "trf_blocks.1.att.W_value.weight"):
        assert not torch.equal(state[name], base.state_dict()[name])
    torch.testing.assert_close(base.state_dict()["trf_blocks.0.att.W_query.weight"],
                               make_model().state_dict()["trf_blocks.0.att.W_query.weight"])


def test_lora_model_state_dict_keeps_the_base_keys(make_model: Callable[..., GPTModel]) -> None:
    base = make_model()
    model = copy.deepcopy(base)
    apply_lora(model, "attention-qv", rank=2)
    keys, base_keys = set(model.state_dict()), set(base.state_dict())
    added = keys - base_keys
    assert base_keys <= keys
    assert added == {f"trf_blocks.{i}.att.{w}.lora_{m}" for i in range(2) for w in ("W_query", "W_value") for m in "AB"}


# --------------------------------------------------------------------------- #
# Freezing, gradients and trainable-parameter counts
# --------------------------------------------------------------------------- #
def test_only_lora_and_named_parameters_get_gradients(make_model: Callable[..., GPTModel], tiny_config: GPTConfig) -> None:
    model = make_model()
    apply_lora(model, "attention", rank=2, trainable=["final_norm"])
    _randomise_b(model)  # with B = 0 the gradient of A would be zero too
    ids = _ids(tiny_config)
    model(ids).sum().backward()
    for name, param in model.named_parameters():
        should_train = name.endswith((".lora_A", ".lora_B")) or name.startswith("final_norm.")
        assert param.requires_grad == should_train, name
        assert (param.grad is not None) == should_train, name
        if should_train:
            assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_training_changes_only_lora_and_named_parameters(
    make_model: Callable[..., GPTModel], random_loaders: Callable[..., tuple[object, object]]
) -> None:
    model = make_model(drop_rate=0.1)
    apply_lora(model, "blocks", rank=2, alpha=4.0, dropout=0.1, trainable=["final_norm"])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train_loader, val_loader = random_loaders()
    history = train(model, train_loader, val_loader, max_steps=4, eval_every=4, lr=1e-2, progress=False)
    assert len(history.batch_losses) == 4
    for name, param in model.named_parameters():
        changed = not torch.equal(param, before[name])
        if name.endswith(".lora_A") or name.endswith(".lora_B") or name.startswith("final_norm."):
            assert changed, f"{name} should have been trained"
        else:
            assert not changed, f"{name} is frozen and must not change"


def test_trainable_parameter_counts_by_hand(make_model: Callable[..., GPTModel], tiny_config: GPTConfig) -> None:
    C, L, r = tiny_config.emb_dim, tiny_config.n_layers, 4
    total = count_parameters(make_model()).total
    assert count_parameters(make_model()).trainable == total
    # r·(in + out) per adapted layer
    qv = L * 2 * r * (C + C)
    attention = L * 4 * r * (C + C)
    blocks = attention + L * (r * (C + 4 * C) + r * (4 * C + C))
    for targets, lora in (("attention-qv", qv), ("attention", attention), ("blocks", blocks)):
        model = make_model()
        apply_lora(model, targets, rank=r, trainable=["final_norm"])
        counted = count_parameters(model)
        assert counted.trainable == lora + 2 * C, targets  # final_norm: scale and shift
        assert counted.total == total + lora, targets
    assert (qv, attention, blocks) == (1024, 2048, 4608)  # C = 32, L = 2, r = 4


def test_counts_tied_weight_once(make_model: Callable[..., GPTModel], tiny_config: GPTConfig) -> None:
    tied = make_model(tie_embeddings=True)
    untied = make_model()
    V, C = tiny_config.vocab_size, tiny_config.emb_dim
    assert count_parameters(untied).total - count_parameters(tied).total == V * C
    assert str(count_parameters(tied)).endswith("trainable (100.00%)")


# --------------------------------------------------------------------------- #
# Name patterns and errors
# --------------------------------------------------------------------------- #
def test_patterns_and_presets_choose_the_named_layers(make_model: Callable[..., GPTModel]) -> None:
    model = make_model()
    assert apply_lora(model, ["*.ff.layers.0"], rank=2) == ["trf_blocks.0.ff.layers.0", "trf_blocks.1.ff.layers.0"]
    model = make_model()
    names = apply_lora(model, "attention-qv", rank=2)
    assert names == [f"trf_blocks.{i}.att.{w}" for i in range(2) for w in ("W_query", "W_value")]
    assert set(LORA_TARGETS) == {"attention-qv", "attention", "blocks"}
    model = make_model()
    names = apply_lora(model, "blocks", rank=2)
    assert "out_head" not in names and len(names) == 12


def _assert_unchanged(model: nn.Module, reference: nn.Module) -> None:
    assert not lora_layers(model)
    assert all(p.requires_grad for p in model.parameters())
    assert str(model) == str(reference)


@pytest.mark.parametrize(
    ("targets", "kwargs", "message"),
    [
        ("trf_blocks.*.att.W_qeury", {}, "pattern 'trf_blocks.*.att.W_qeury' matches no nn.Linear of the model; its linear layers are trf_blocks.0.att.W_query"),
        (["*.W_query", "trf_blocks.*.norm1"], {}, "pattern 'trf_blocks.*.norm1' matches no nn.Linear"),
        ([], {}, "targets is empty"),
        ("attention-qv", {"rank": 0}, "rank=0 must be an integer >= 1"),
        ("attention-qv", {"rank": 33}, "rank=33 exceeds trf_blocks.0.att.W_query's min(in_features, out_features)=32"),
        ("attention-qv", {"trainable": ["head"]}, "trainable pattern 'head' matches no parameter"),
        ("attention-qv", {"dropout": -0.1}, "dropout=-0.1 must be a probability"),
    ],
)
def test_apply_rejects_bad_requests_and_leaves_the_model_alone(
    make_model: Callable[..., GPTModel], targets: str | list[str], kwargs: dict[str, object], message: str
) -> None:
    model = make_model()
    with pytest.raises(ValueError, match=re.escape(message)):
        apply_lora(model, targets, **kwargs)  # type: ignore[arg-type]
    _assert_unchanged(model, make_model())


def test_apply_refuses_a_tied_weight(make_model: Callable[..., GPTModel]) -> None:
    model = make_model(tie_embeddings=True)
    with pytest.raises(ValueError, match=re.escape("out_head.weight is shared with tok_emb.weight (weight tying)")):
        apply_lora(model, ["*.W_query", "out_head"])
    _assert_unchanged(model, make_model(tie_embeddings=True))


def test_apply_twice_and_merge_without_lora_are_errors(make_model: Callable[..., GPTModel]) -> None:
    model = make_model()
    apply_lora(model, "attention-qv", rank=2)
    with pytest.raises(ValueError, match=re.escape("already has LoRA (pattern 'trf_blocks.*.att.W_query'); merge_lora first")):
        apply_lora(model, "attention-qv", rank=2)
    with pytest.raises(ValueError, match="has no LoRALinear layer to merge"):
        merge_lora(make_model())


# --------------------------------------------------------------------------- #
# Parity with Hugging Face peft (the reference implementation)
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_parity_with_peft(make_model: Callable[..., GPTModel], tiny_config: GPTConfig, dropout: float) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    peft = pytest.importorskip("peft")
    rank, alpha = 4, 12.0
    base = make_model()
    ours = copy.deepcopy(base)
    theirs = copy.deepcopy(base)
    config = peft.LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=["W_query", "W_value", "layers.0"],
        init_lora_weights=False,  # random A and B: a non-zero update to compare
    )
    theirs = peft.inject_adapter_in_model(config, theirs)
    names = apply_lora(ours, ["*.W_query", "*.W_value", "*.ff.layers.0"], rank=rank, alpha=alpha, dropout=dropout)
    modules = dict(theirs.named_modules())
    with torch.no_grad():
        for name, layer in lora_layers(ours).items():
            ref = modules[name]
            layer.lora_A.copy_(ref.lora_A["default"].weight)
            layer.lora_B.copy_(ref.lora_B["default"].weight)
            assert layer.scaling == ref.scaling["default"] == alpha / rank
            torch.testing.assert_close(layer.delta_weight(), ref.get_delta_weight("default"))
    assert len(names) == 3 * tiny_config.n_layers
    assert {n for n, p in theirs.named_parameters() if p.requires_grad} == {
        n.replace("lora_A", "lora_A.default.weight").replace("lora_B", "lora_B.default.weight")
        for n, p in ours.named_parameters() if p.requires_grad
    }

    ids = _ids(tiny_config, batch=3)
    outputs = []
    for model in (ours, theirs):
        model.train()
        torch.manual_seed(11)  # the same dropout masks, drawn in the same order
        logits = model(ids)
        (logits**2).mean().backward()
        outputs.append(logits)
    torch.testing.assert_close(outputs[0], outputs[1])
    for name, layer in lora_layers(ours).items():
        ref = modules[name]
        torch.testing.assert_close(layer.lora_A.grad, ref.lora_A["default"].weight.grad)
        torch.testing.assert_close(layer.lora_B.grad, ref.lora_B["default"].weight.grad)
