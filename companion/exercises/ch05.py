"""Chapter 5's checked exercises: one AdamW step, GPT-2's weights by hand, top-p filtering."""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from companion.exercises.core import Exercise
from companion.model import GPTModel

__all__ = ["EXERCISES", "adamw_step", "load_gpt2_by_hand", "top_p_filter"]


# ---------------------------------------------------------------- reference solutions
def adamw_step(w: Tensor, grad: Tensor, m: Tensor, v: Tensor, t: int,
               *, lr: float, betas: tuple[float, float], eps: float,
               weight_decay: float) -> None:
    beta1, beta2 = betas
    m.mul_(beta1).add_((1 - beta1) * grad)  # average of gradients
    v.mul_(beta2).add_((1 - beta2) * grad**2)  # of squared ones
    m_hat = m / (1 - beta1**t)  # undo the bias of starting at 0
    v_hat = v / (1 - beta2**t)
    w -= lr * (m_hat / (v_hat.sqrt() + eps) + weight_decay * w)


def load_gpt2_by_hand(model: GPTModel, hf_state: dict[str, Tensor]
                      ) -> GPTModel:
    def get(name: str) -> Tensor:
        return hf_state["transformer." + name]

    with torch.no_grad():
        model.tok_emb.weight.copy_(get("wte.weight"))
        model.pos_emb.weight.copy_(get("wpe.weight"))
        for i, block in enumerate(model.trf_blocks):
            def hf_i(name: str, i: int = i) -> Tensor:
                return get(f"h.{i}.{name}")
            att, ff = block.att, block.ff.layers
            w = hf_i("attn.c_attn.weight").t()  # (3C, C)
            qkv = zip([att.W_query, att.W_key, att.W_value],
                      w.chunk(3, dim=0),
                      hf_i("attn.c_attn.bias").chunk(3))
            for layer, part, b in qkv:
                layer.weight.copy_(part)
                layer.bias.copy_(b)
            pairs = [(att.out_proj, "attn.c_proj"),
                     (ff[0], "mlp.c_fc"), (ff[2], "mlp.c_proj")]
            for layer, name in pairs:  # Conv1D: transpose
                layer.weight.copy_(hf_i(name + ".weight").t())
                layer.bias.copy_(hf_i(name + ".bias"))
            for norm, name in [(block.norm1, "ln_1"),
                               (block.norm2, "ln_2")]:
                norm.scale.copy_(hf_i(name + ".weight"))
                norm.shift.copy_(hf_i(name + ".bias"))
        model.final_norm.scale.copy_(get("ln_f.weight"))
        model.final_norm.shift.copy_(get("ln_f.bias"))
    return model


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    # (..., V): most likely first, and where each came from
    sorted_logits, order = torch.sort(logits, dim=-1,
                                      descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)  # (..., V)
    before = probs.cumsum(dim=-1) - probs  # the mass ahead of each
    drop_sorted = before >= p  # those ahead already reach p
    # back to vocabulary order
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


# ---------------------------------------------------------------- checks
def check_adamw_step(fn: Callable[..., Any]) -> None:
    torch.manual_seed(0)
    settings = [(1e-3, (0.9, 0.999), 0.0), (1e-2, (0.9, 0.95), 0.1), (0.1, (0.5, 0.9), 0.5)]
    for lr, betas, decay in settings:
        w = torch.randn(4, 3)
        reference = w.clone().requires_grad_()
        opt = torch.optim.AdamW([reference], lr=lr, betas=betas, eps=1e-8, weight_decay=decay)
        m, v = torch.zeros_like(w), torch.zeros_like(w)
        for t in range(1, 6):
            grad = torch.randn(4, 3) * 10 ** (t - 3)  # from tiny to large
            reference.grad = grad.clone()
            opt.step()
            fn(w, grad, m, v, t, lr=lr, betas=betas, eps=1e-8, weight_decay=decay)
            if not torch.allclose(w, reference.detach(), rtol=1e-4, atol=1e-6):
                hint = ("is the decay decoupled (lr · weight_decay · w, not added to the gradient)?" if decay and t == 1
                        else "are m and v updated in place, and divided by 1 - beta**t (bias correction)?")
                raise AssertionError(
                    f"lr={lr}, betas={betas}, weight_decay={decay}: step {t} differs from torch.optim.AdamW "
                    f"by up to {(w - reference.detach()).abs().max():.2e}; {hint}")


def _random_gpt2(folder: Path) -> tuple[Any, dict[str, Tensor], Any]:
    import transformers
    from safetensors.torch import load_file

    from companion.weights import config_from_hf

    torch.manual_seed(3)
    config = transformers.GPT2Config(n_embd=48, n_layer=3, n_head=4, n_positions=32, vocab_size=1000,
                                     bos_token_id=999, eos_token_id=999)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with contextlib.redirect_stderr(io.StringIO()):  # no progress bar in the check's output
        hf.save_pretrained(folder)
    return hf, load_file(folder / "model.safetensors"), config_from_hf(folder / "config.json", drop_rate=0.0)


def check_load_gpt2_by_hand(fn: Callable[[GPTModel, dict[str, Tensor]], GPTModel]) -> None:
    from companion.weights import load_gpt2_weights

    with tempfile.TemporaryDirectory() as folder:
        hf, state, cfg = _random_gpt2(Path(folder))
    torch.manual_seed(4)  # random weights that must all be overwritten
    yours = fn(GPTModel(cfg), state)
    assert isinstance(yours, GPTModel), f"return the model, got {type(yours).__name__}"
    yours.eval()
    reference = load_gpt2_weights(GPTModel(cfg), state)
    mine = yours.state_dict()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(mine[name], tensor), (
            f"{name} differs from GPT-2's weights (Hugging Face's Conv1D stores (in, out): transpose; "
            "c_attn holds query, key and value side by side)")
    ids = torch.randint(0, 1000, (2, 20))
    with torch.no_grad():
        assert torch.allclose(yours(ids), hf(ids).logits, atol=1e-4), "the logits differ from Hugging Face's GPT-2"


def check_top_p_filter(fn: Callable[[Tensor, float], Tensor]) -> None:
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])  # sorted: 0.5, 0.3, 0.15, 0.05
    logits = probs.log()
    for p, kept in [(0.4, [1]), (0.7, [1, 3]), (0.85, [1, 2, 3]), (1.0, [0, 1, 2, 3])]:
        out = fn(logits.clone(), p)
        assert out.shape == logits.shape, f"expected the logits' shape {tuple(logits.shape)}, got {tuple(out.shape)}"
        got = torch.isfinite(out).nonzero().flatten().tolist()
        assert got == kept, (
            f"probabilities {probs.tolist()}, p={p}: keep the tokens {kept} (the most likely ones until their "
            f"probabilities reach p, the one that crosses p included), got {got}")
        assert torch.equal(out[kept], logits[kept]), "the kept logits must be unchanged, in vocabulary order"
        assert bool((out[torch.isinf(out)] < 0).all()), "dropped tokens get -inf"
    batch = torch.tensor([[0.05, 0.5, 0.15, 0.3], [0.6, 0.02, 0.3, 0.08]]).log()
    got = torch.isfinite(fn(batch, 0.7)).tolist()
    assert got == [[False, True, False, True], [True, False, True, False]], (
        f"a batch of two rows, p=0.7: each row is filtered on its own (sort and sum along the last dimension), got {got}")


EXERCISES = {
    "ch05-adamw": Exercise("ch05-adamw", "adamw_step", adamw_step, check_adamw_step, "one AdamW step, in place"),
    "ch05-load-gpt2": Exercise("ch05-load-gpt2", "load_gpt2_by_hand", load_gpt2_by_hand, check_load_gpt2_by_hand,
                               "GPT-2's weights copied into our model by hand"),
    "ch05-top-p": Exercise("ch05-top-p", "top_p_filter", top_p_filter, check_top_p_filter,
                           "top-p (nucleus) filtering of logits"),
}
