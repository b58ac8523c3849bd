"""The fused, chunked head and loss against the readable path: same loss, same gradients.

Tolerances: in float64 the two agree to 1e-12 (the same sums in another order); in
float32, to a relative 1e-5 and an absolute 1e-6 on every gradient entry (the logits'
softmax is summed in chunks instead of over the whole batch).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from companion.config import GPTConfig
from companion.fused import default_chunk, linear_cross_entropy
from companion.losses import IGNORE_INDEX, batch_loss
from companion.model import GPTModel
from companion.train import train

CFG = GPTConfig(vocab_size=97, context_length=16, emb_dim=32, n_heads=4, n_layers=2, tie_embeddings=True)


def _reference(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(hidden @ weight.T, targets, ignore_index=IGNORE_INDEX)


def _grads(fn, hidden, weight, targets, scale=1.0):
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    loss = fn(h, w, targets)
    (loss * scale).backward()
    return loss.detach(), h.grad, w.grad


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000, None])
@pytest.mark.parametrize("ignored", [False, True])
@pytest.mark.parametrize("vocab", [101, 128])  # the buffer's rows padded to 128, and not padded
def test_loss_and_gradients_equal_the_readable_path_float64(chunk: int | None, ignored: bool, vocab: int) -> None:
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 16, generator=gen, dtype=torch.float64)
    weight = torch.randn(vocab, 16, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, vocab, (37,), generator=gen)
    targets[-1] = vocab - 1  # the last real column, beside the padding
    if ignored:
        targets[::3] = IGNORE_INDEX
    fused = _grads(lambda h, w, t: linear_cross_entropy(h, w, t, chunk=chunk), hidden, weight, targets)
    ref = _grads(_reference, hidden, weight, targets)
    for ours, theirs in zip(fused, ref, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    if ignored:  # an ignored token gets no gradient at all
        assert torch.count_nonzero(fused[1][::3]) == 0


def test_a_scaled_loss_scales_the_gradients() -> None:
    gen = torch.Generator().manual_seed(1)
    hidden, weight = torch.randn(20, 8, generator=gen), torch.randn(30, 8, generator=gen)
    targets = torch.randint(0, 30, (20,), generator=gen)
    fused = _grads(lambda h, w, t: linear_cross_entropy(h, w, t, chunk=6), hidden, weight, targets, scale=2.5)
    ref = _grads(_reference, hidden, weight, targets, scale=2.5)
    for ours, theirs in zip(fused, ref, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_the_default_chunk_holds_51_mb_of_logits() -> None:
    assert default_chunk(50257) == 256  # GPT-2's vocabulary, rows padded to 50,304
    assert default_chunk(4096) == 3144  # a small vocabulary: a whole batch in one chunk
    assert default_chunk(10**9) == 1


def test_every_target_ignored_gives_nan_like_cross_entropy() -> None:
    hidden, weight = torch.randn(4, 8), torch.randn(10, 8)
    targets = torch.full((4,), IGNORE_INDEX)
    assert torch.isnan(linear_cross_entropy(hidden, weight, targets))
    assert torch.isnan(_reference(hidden, weight, targets))


def test_bad_shapes_and_chunks_are_named() -> None:
    with pytest.raises(ValueError, match=r"hidden must be \(N, C\)"):
        linear_cross_entropy(torch.randn(4, 8), torch.randn(10, 7), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="chunk=0"):
        linear_cross_entropy(torch.randn(4, 8), torch.randn(10, 8), torch.zeros(4, dtype=torch.long), chunk=0)


@pytest.mark.parametrize("bad", [101, -1])
def test_a_target_outside_the_vocabulary_is_refused(bad: int) -> None:
    # the logits' buffer is padded to 128 columns: an id of 101 must not read a padding column
    targets = torch.zeros(4, dtype=torch.long)
    targets[2] = bad
    with pytest.raises(ValueError, match=f"target id {bad} is outside the head's vocabulary"):
        with torch.no_grad():
            linear_cross_entropy(torch.randn(4, 8), torch.randn(101, 8), targets)


def test_without_grad_it_computes_only_the_loss() -> None:
    hidden, weight = torch.randn(6, 8, requires_grad=True), torch.randn(10, 8, requires_grad=True)
    targets = torch.randint(0, 10, (6,))
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, targets)
    torch.testing.assert_close(loss, _reference(hidden, weight, targets).detach())
    assert not loss.requires_grad


@pytest.mark.parametrize("tied", [True, False])
def test_model_fused_head_matches_manual_in_float32(tied: bool) -> None:
    torch.manual_seed(0)
    model = GPTModel(CFG.replace(tie_embeddings=tied))
    gen = torch.Generator().manual_seed(2)
    inputs = torch.randint(0, 97, (3, 16), generator=gen)
    targets = torch.randint(0, 97, (3, 16), generator=gen)
    targets[0, :5] = IGNORE_INDEX  # chapter 7's masked instruction
    results = {}
    for impl in ("manual", "fused"):
        model.set_head_impl(impl)  # type: ignore[arg-type]
        model.zero_grad(set_to_none=True)
        loss = batch_loss(model, inputs, targets)
        loss.backward()
        results[impl] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(results["fused"][0], results["manual"][0], rtol=1e-5, atol=1e-6)
    for name, grad in results["manual"][1].items():
        torch.testing.assert_close(results["fused"][1][name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_training_with_the_fused_head_follows_the_readable_one() -> None:
    gen = torch.Generator().manual_seed(3)
    data = torch.randint(0, 97, (8, 17), generator=gen)
    batches = [(data[:4, :-1], data[:4, 1:]), (data[4:, :-1], data[4:, 1:])]
    losses = {}
    for impl in ("manual", "fused"):
        torch.manual_seed(0)
        model = GPTModel(CFG, head_impl=impl)  # type: ignore[arg-type]
        history = train(model, batches, max_steps=6, lr=1e-3, progress=False, eval_every=6)
        losses[impl] = history.batch_losses
    torch.testing.assert_close(torch.tensor(losses["fused"]), torch.tensor(losses["manual"]), rtol=1e-4, atol=1e-5)


def test_bad_head_impl_is_named() -> None:
    with pytest.raises(ValueError, match="head_impl='cut'"):
        GPTModel(CFG, head_impl="cut")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="targets must have the inputs' shape"):
        GPTModel(CFG)(torch.zeros(2, 4, dtype=torch.long), targets=torch.zeros(2, 3, dtype=torch.long))


def test_bf16_autocast_fused_loss_is_close_to_float32() -> None:
    torch.manual_seed(0)
    model = GPTModel(CFG, head_impl="fused")
    inputs = torch.randint(0, 97, (2, 16))
    with torch.no_grad():
        reference = float(model(inputs, targets=inputs))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(inputs, targets=inputs)
    loss.backward()
    assert loss.dtype == torch.float32
    assert abs(float(loss.detach()) - reference) < 0.02
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


def test_activation_checkpointing_gives_the_same_gradients_bit_for_bit() -> None:
    # dropout on: the recomputed forward must replay the same random masks
    cfg = CFG.replace(drop_rate=0.1, n_layers=3)

    def grads(on: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model = GPTModel(cfg, head_impl="fused").set_activation_checkpointing(on)
        gen = torch.Generator().manual_seed(1)
        x, y = torch.randint(0, 97, (4, 16), generator=gen), torch.randint(0, 97, (4, 16), generator=gen)
        torch.manual_seed(2)
        loss = model(x, targets=y)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    plain, checkpointed = grads(False), grads(True)
    assert torch.equal(plain[0], checkpointed[0])
    assert plain[1].keys() == checkpointed[1].keys()
    for name, grad in plain[1].items():
        assert torch.equal(grad, checkpointed[1][name]), name


def test_activation_checkpointing_keeps_fewer_tensors_for_backward() -> None:
    # what the saving is: count the tensors autograd keeps from the forward pass
    cfg = CFG.replace(n_layers=3)
    kept: dict[bool, int] = {}
    for on in (False, True):
        torch.manual_seed(0)
        model = GPTModel(cfg).set_activation_checkpointing(on)
        count = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal count
            count += 1
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(torch.zeros(2, 16, dtype=torch.long)).sum()
        kept[on] = count
    assert kept[True] < kept[False] / 3, kept


def test_activation_checkpointing_does_not_touch_generation() -> None:
    torch.manual_seed(0)
    model = GPTModel(CFG).eval()
    idx = torch.randint(0, 97, (1, 5))
    with torch.no_grad():
        before = model(idx)
        after = model.set_activation_checkpointing(True)(idx)
    assert torch.equal(before, after)
    with pytest.raises(TypeError, match="True or False"):
        model.set_activation_checkpointing("yes")  # type: ignore[arg-type]


def test_under_bf16_autocast_it_stays_close_to_float32_and_keeps_float32_gradients() -> None:
    # precision="bf16" trains with autocast around the forward pass: the head's products
    # run in bfloat16 (8 bits of mantissa), the softmax and the gradients' sums in float32
    gen = torch.Generator().manual_seed(3)
    hidden, weight = torch.randn(40, 32, generator=gen), torch.randn(101, 32, generator=gen) * 0.2
    targets = torch.randint(0, 101, (40,), generator=gen)
    ref = _grads(_reference, hidden, weight, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = _grads(lambda h, w, t: linear_cross_entropy(h, w, t, chunk=16), hidden, weight, targets)
    assert ours[0].dtype == ours[1].dtype == ours[2].dtype == torch.float32
    torch.testing.assert_close(ours[0], ref[0], rtol=2e-2, atol=2e-2)
    for mine, theirs in zip(ours[1:], ref[1:], strict=True):
        torch.testing.assert_close(mine, theirs, rtol=5e-2, atol=5e-3)
