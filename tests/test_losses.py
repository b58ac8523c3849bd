"""Tests for companion.losses: cross-entropy, perplexity, evaluation of a loader and of a text."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import REPEATED_TEXT

from companion.config import GPTConfig
from companion.losses import IGNORE_INDEX, batch_loss, cross_entropy_loss, evaluate, evaluate_text, perplexity
from companion.tokenizers import BPETokenizer


# --------------------------------------------------------------------- losses
def manual_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of -log softmax(logits)[target] over the positions whose target is not ignored."""
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    losses = []
    for b in range(targets.shape[0]):
        for t in range(targets.shape[1]):
            if targets[b, t] != IGNORE_INDEX:
                losses.append(-log_probs[b, t, targets[b, t]])
    return torch.stack(losses).mean()


def test_cross_entropy_matches_manual_log_softmax() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    targets = torch.randint(0, 11, (2, 5))
    loss = cross_entropy_loss(logits, targets)
    assert loss.shape == ()
    torch.testing.assert_close(loss.double(), manual_cross_entropy(logits, targets))

    targets[0, :3] = IGNORE_INDEX
    targets[1, 4] = IGNORE_INDEX
    torch.testing.assert_close(cross_entropy_loss(logits, targets).double(), manual_cross_entropy(logits, targets))


def test_cross_entropy_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"logits must be \(B, T, V\)"):
        cross_entropy_loss(torch.randn(2, 5, 11), torch.zeros(2, 4, dtype=torch.long))


def test_uniform_model_loss_is_log_vocab_and_perplexity_is_vocab() -> None:
    logits = torch.zeros(3, 4, 50)
    loss = cross_entropy_loss(logits, torch.randint(0, 50, (3, 4)))
    assert loss.item() == pytest.approx(math.log(50), rel=1e-6)
    assert perplexity(loss) == pytest.approx(50, rel=1e-5)
    assert perplexity(math.log(7)) == pytest.approx(7)


def test_batch_loss_is_cross_entropy_of_the_logits(make_model) -> None:
    model = make_model().eval()
    x = torch.randint(0, 64, (3, 10))
    y = torch.randint(0, 64, (3, 10))
    with torch.no_grad():
        expected = manual_cross_entropy(model(x), y)
        torch.testing.assert_close(batch_loss(model, x, y, "cpu").double(), expected)
        torch.testing.assert_close(batch_loss(model, x, y).double(), expected)


def test_evaluate_is_the_token_weighted_mean_and_restores_the_mode(make_model) -> None:
    model = make_model(drop_rate=0.5)
    x = torch.randint(0, 64, (5, 8))
    y = torch.randint(0, 64, (5, 8))
    y[4, 2:] = IGNORE_INDEX
    batches = [(x[:2], y[:2]), (x[2:4], y[2:4]), (x[4:], y[4:])]
    model.train()
    result = evaluate(model, batches)
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        expected = manual_cross_entropy(model(x), y).item()
    assert result == pytest.approx(expected, rel=1e-6)
    assert not model.training
    with torch.no_grad():
        first_two = manual_cross_entropy(model(x[:4]), y[:4]).item()
    assert evaluate(model, batches, max_batches=2) == pytest.approx(first_two, rel=1e-6)
    assert math.isnan(evaluate(model, []))


def test_evaluate_text_scores_every_token_once(make_model) -> None:
    tokenizer = BPETokenizer.train(REPEATED_TEXT, 300)
    cfg = GPTConfig(vocab_size=300, context_length=16, emb_dim=32, n_heads=4, n_layers=1)
    model = make_model(cfg)
    text = REPEATED_TEXT[:400]
    ids = tokenizer.encode(text)
    n, ctx = len(ids), cfg.context_length
    assert n % ctx != 1  # the tail window overlaps the one before it

    # reference: position j (1..n-1) is predicted in the window of the definition
    total = 0.0
    with torch.no_grad():
        for j in range(1, n):
            start = ((j - 1) // ctx) * ctx
            if start + ctx + 1 > n:
                start = max(0, n - 1 - ctx)
            window = torch.tensor(ids[start : start + ctx]).unsqueeze(0)
            log_probs = torch.log_softmax(model(window)[0].double(), dim=-1)
            total -= log_probs[j - 1 - start, ids[j]].item()
    result = evaluate_text(model, tokenizer, text, batch_size=3)
    assert result.tokens == n - 1
    assert result.chars == len(text) - len(tokenizer.decode(ids[:1]))
    assert result.loss_per_token == pytest.approx(total / (n - 1), rel=1e-5)
    assert result.nats_per_char == pytest.approx(total / result.chars, rel=1e-5)
    assert result.bits_per_char == pytest.approx(result.nats_per_char / math.log(2))
    # a text shorter than one window is one window
    short = evaluate_text(model, tokenizer, text[:30])
    assert short.tokens == len(tokenizer.encode(text[:30])) - 1


def test_evaluate_text_refuses_a_context_length_outside_the_model(make_model) -> None:
    """Issue 18: context_length=0 used to mean the model's context, silently."""
    tokenizer = BPETokenizer.train(REPEATED_TEXT, 300)
    model = make_model(GPTConfig(vocab_size=300, context_length=16, emb_dim=32, n_heads=4, n_layers=1))
    for bad in (0, -4, 17, 8.0, True):
        with pytest.raises(ValueError, match=rf"context_length={bad!r} must be a whole number of tokens from 1 to the "
                                             r"model's context_length \(16\), or None"):
            evaluate_text(model, tokenizer, REPEATED_TEXT[:200], context_length=bad)
    shorter = evaluate_text(model, tokenizer, REPEATED_TEXT[:200], context_length=8)
    assert shorter.loss_per_token != evaluate_text(model, tokenizer, REPEATED_TEXT[:200]).loss_per_token
