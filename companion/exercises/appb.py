"""Appendix B's checked exercises: LoRA's first gradients, and the adapter as a small state dict."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from companion.exercises.core import Exercise
from companion.finetune.lora import LoRALinear

__all__ = ["EXERCISES", "adapter_state", "first_gradients"]


# ---------------------------------------------------------------- reference solutions
def first_gradients(layer: LoRALinear, x: Tensor
                    ) -> tuple[Tensor, Tensor]:
    layer.zero_grad(set_to_none=True)
    layer(x).square().mean().backward()
    assert layer.lora_A.grad is not None
    assert layer.lora_B.grad is not None
    return layer.lora_A.grad.clone(), layer.lora_B.grad.clone()


def adapter_state(model: nn.Module) -> dict[str, Tensor]:
    return {name: p.detach().clone()
            for name, p in model.named_parameters()
            if p.requires_grad}


# ---------------------------------------------------------------- checks
def check_first_gradients(fn: Any) -> None:
    torch.manual_seed(1)
    layer = LoRALinear(nn.Linear(6, 5), rank=2, alpha=4)
    with torch.no_grad():
        layer.lora_B.normal_()  # B != 0, so that both gradients are non-zero
    xs = torch.randn(7, 6)
    for attempt in range(2):  # twice: the second call must not add to the first's gradients
        got = fn(layer, xs)
        assert isinstance(got, tuple) and len(got) == 2, "return the two gradients as a tuple (grad of A, grad of B)"
        got_A, got_B = got
        with torch.no_grad():
            dy = 2 * layer(xs) / layer(xs).numel()  # d loss / d y, (N, out)
            expected_B = layer.scaling * dy.T @ (xs @ layer.lora_A.T)  # (out, r)
            expected_A = layer.scaling * layer.lora_B.T @ dy.T @ xs  # (r, in)
        assert got_A.shape == layer.lora_A.shape and got_B.shape == layer.lora_B.shape, (
            f"expected the gradient of A {tuple(layer.lora_A.shape)} first, then of B {tuple(layer.lora_B.shape)}; "
            f"got {tuple(got_A.shape)} and {tuple(got_B.shape)}")
        call = "the first call" if attempt == 0 else "a second call (reset the gradients before backward)"
        assert torch.allclose(got_B, expected_B, atol=1e-6), f"{call}: the gradient of B differs from the one by hand"
        assert torch.allclose(got_A, expected_A, atol=1e-6), f"{call}: the gradient of A differs from the one by hand"


def check_adapter_state(fn: Any) -> None:
    from companion.config import GPTConfig
    from companion.finetune.lora import apply_lora
    from companion.model import GPTModel

    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=40, context_length=8, emb_dim=16, n_heads=2, n_layers=2))
    apply_lora(model, "attention-qv", rank=2, trainable=["final_norm"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_()  # as if trained
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    adapter = fn(model)
    assert isinstance(adapter, dict), f"return a dict from names to tensors, got {type(adapter).__name__}"
    extra, missing = sorted(set(adapter) - trained), sorted(trained - set(adapter))
    assert not extra, f"the adapter holds frozen tensors too ({len(extra)}, e.g. {extra[0]}): keep only those that train"
    assert not missing, f"the adapter misses trained tensors ({len(missing)}, e.g. {missing[0]})"
    params = dict(model.named_parameters())
    for name, tensor in adapter.items():
        assert torch.equal(tensor, params[name]), f"{name} differs from the model's"
    with torch.no_grad():
        for name in adapter:
            params[name].add_(1.0)  # training goes on
    changed = [n for n, t in adapter.items() if torch.equal(t, params[n])]
    assert not changed, (f"{changed[0]} changed when the model trained on: the adapter holds the live parameters, "
                         "not copies (detach().clone())")


EXERCISES = {
    "appb-zero-start": Exercise("appb-zero-start", "first_gradients", first_gradients, check_first_gradients,
                                "the gradients of LoRA's A and B after one backward pass"),
    "appb-adapter": Exercise("appb-adapter", "adapter_state", adapter_state, check_adapter_state,
                             "the adapter: copies of the trained tensors, by name"),
}
