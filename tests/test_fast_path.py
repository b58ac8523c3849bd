"""The fast path computes what the readable path computes: fused layers, fused AdamW,
last-position logits and generation under inference mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from companion import GPTConfig, GPTModel
from companion.generate import generate
from companion.model import GELU, LayerNorm
from companion.optim import configure_optimizer

CFG = GPTConfig(vocab_size=61, context_length=16, emb_dim=32, n_heads=4, n_layers=2)


def twins(cfg: GPTConfig, seed: int = 0) -> tuple[GPTModel, GPTModel]:
    """The same weights on the readable path (manual layers and attention) and the fast one."""
    torch.manual_seed(seed)
    fast = GPTModel(cfg)
    readable = GPTModel(cfg, layer_impl="manual").set_attention_impl("manual")
    readable.load_state_dict(fast.state_dict())
    return readable, fast


# ------------------------------------------------------------------ the pieces
def test_fused_layer_norm_equals_the_formula_in_value_and_gradient() -> None:
    torch.manual_seed(0)
    manual, fused = LayerNorm(24, impl="manual"), LayerNorm(24)
    with torch.no_grad():
        manual.scale.normal_()
        manual.shift.normal_()
    fused.load_state_dict(manual.state_dict())
    x = (torch.randn(3, 7, 24) * 5 + 3).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    y_manual, y_fused = manual(x), fused(x2)
    torch.testing.assert_close(y_fused, y_manual)
    weights = torch.randn_like(y_manual)
    (y_manual * weights).sum().backward()
    (y_fused * weights).sum().backward()
    torch.testing.assert_close(x2.grad, x.grad)
    torch.testing.assert_close(fused.scale.grad, manual.scale.grad)
    torch.testing.assert_close(fused.shift.grad, manual.shift.grad)
    assert fused.impl == "fused" and manual.impl == "manual"


def test_fused_gelu_equals_the_tanh_formula_in_value_and_gradient() -> None:
    x = torch.linspace(-8, 8, 2001, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y_manual, y_fused = GELU("manual")(x), GELU("fused")(x2)
    torch.testing.assert_close(y_fused, y_manual)
    y_manual.sum().backward()
    y_fused.sum().backward()
    torch.testing.assert_close(x2.grad, x.grad)
    assert not torch.allclose(y_fused, F.gelu(x2))  # the tanh form, not the exact erf one


def test_impl_is_validated() -> None:
    with pytest.raises(ValueError, match="'fast' is unknown"):
        LayerNorm(4, impl="fast")  # type: ignore[arg-type]
    gelu = GELU()
    with pytest.raises(ValueError, match="unknown"):
        gelu.impl = "tanh"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="unknown"):
        GPTModel(CFG).set_layer_impl("fast")  # type: ignore[arg-type]


# ------------------------------------------------------------------ the model
@pytest.mark.parametrize("tied", [False, True])
def test_readable_and_fast_models_agree_in_logits_and_gradients(tied: bool) -> None:
    cfg = CFG.replace(tie_embeddings=tied)
    readable, fast = twins(cfg)
    idx = torch.randint(0, cfg.vocab_size, (3, cfg.context_length), generator=torch.Generator().manual_seed(1))
    targets = torch.roll(idx, -1, dims=1)
    losses = []
    for model in (readable, fast):
        logits = model(idx)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        loss.backward()
        losses.append((logits, loss))
    torch.testing.assert_close(losses[1][0], losses[0][0])
    grads_readable = dict(readable.named_parameters())
    for name, p in fast.named_parameters():
        torch.testing.assert_close(p.grad, grads_readable[name].grad, msg=f"gradient of {name}")


def test_the_switches_keep_the_state_dict_names() -> None:
    readable, fast = twins(CFG)
    assert list(readable.state_dict()) == list(fast.state_dict())
    assert "trf_blocks.0.att.W_query.weight" in fast.state_dict()
    assert "trf_blocks.1.norm2.scale" in fast.state_dict()
    fast.set_layer_impl("manual")
    impls = {m.impl for m in fast.modules() if isinstance(m, (LayerNorm, GELU))}
    assert impls == {"manual"}
    assert fast.set_layer_impl("fused") is fast


def test_last_only_gives_the_last_row_of_the_full_logits() -> None:
    _, model = twins(CFG)
    idx = torch.randint(0, CFG.vocab_size, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(idx)
        last = model(idx, last_only=True)
        assert last.shape == (2, 1, CFG.vocab_size)
        torch.testing.assert_close(last[:, 0], full[:, -1])
        cache = model.new_cache()
        model(idx[:, :5], cache=cache)
        torch.testing.assert_close(model(idx[:, 5:], cache=cache, last_only=True)[:, 0], full[:, -1])


# ------------------------------------------------------------------ the optimizer
def test_fused_adamw_takes_the_steps_of_the_for_loop_adamw() -> None:
    readable, fast = twins(CFG.replace(tie_embeddings=True))
    opt_loop = configure_optimizer(readable, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95), fused=False)
    opt_fused = configure_optimizer(fast, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95))
    assert opt_fused.defaults["fused"] and not opt_loop.defaults["fused"]
    readable.set_layer_impl("fused").set_attention_impl("sdpa")  # same forward pass for both
    idx = torch.randint(0, CFG.vocab_size, (4, 12), generator=torch.Generator().manual_seed(3))
    for _ in range(5):
        for model, opt in ((readable, opt_loop), (fast, opt_fused)):
            loss = F.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
    moved = dict(readable.named_parameters())
    for name, p in fast.named_parameters():
        torch.testing.assert_close(p, moved[name], msg=f"parameter {name}")


def test_configure_optimizer_does_not_fuse_where_there_is_no_kernel() -> None:
    with torch.device("meta"):
        model = GPTModel(CFG)
    assert not configure_optimizer(model).defaults["fused"]


# ------------------------------------------------------------------ generation
def test_generated_ids_are_ordinary_tensors_usable_for_training() -> None:
    _, model = twins(CFG)
    prompt = torch.randint(0, CFG.vocab_size, (2, 3), generator=torch.Generator().manual_seed(4))
    out = generate(model, prompt, 6)
    assert not out.is_inference()
    loss = F.cross_entropy(model(out[:, :-1]).flatten(0, 1), out[:, 1:].flatten())
    loss.backward()  # would fail on an inference tensor saved for backward
    assert model.tok_emb.weight.grad is not None


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_one_token_steps_without_a_mask_match_the_full_pass(impl: str) -> None:
    _, model = twins(CFG)
    model.set_attention_impl(impl)  # type: ignore[arg-type]
    idx = torch.randint(0, CFG.vocab_size, (3, CFG.context_length), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache()
        steps = [model(idx[:, t : t + 1], cache=cache) for t in range(CFG.context_length)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)
