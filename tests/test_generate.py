"""Tests for companion.generate: greedy and sampled decoding, the KV cache, eos, helpers."""

from __future__ import annotations

import pytest
import torch

from companion import GPTConfig, GPTModel
from companion.generate import (
    generate,
    generate_text,
    ids_to_text,
    softmax_with_temperature,
    text_to_ids,
    top_k_filter,
    top_p_filter,
)
from companion.model import init_gpt2_weights
from companion.tokenizers import BPETokenizer

CFG = GPTConfig(vocab_size=50, context_length=12, emb_dim=32, n_heads=4, n_layers=2)


def build(cfg: GPTConfig = CFG, seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    model = GPTModel(cfg)
    # sharper logits than GPT-2's init, so greedy choices are far from ties
    return model.eval()


def prompts(batch: int = 2, length: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, CFG.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


def greedy_reference(model: GPTModel, idx: torch.Tensor, n: int) -> torch.Tensor:
    """The book's loop: re-read the last context_length tokens, take the argmax."""
    ctx = model.config.context_length
    for _ in range(n):
        with torch.no_grad():
            logits = model(idx[:, -ctx:])[:, -1, :]
        next_ids = torch.stack([row.argmax() for row in logits]).unsqueeze(1)
        idx = torch.cat([idx, next_ids], dim=1)
    return idx


# ------------------------------------------------------------------- greedy
def test_greedy_matches_a_hand_written_argmax_loop() -> None:
    model = build()
    idx = prompts()
    expected = greedy_reference(model, idx, 5)
    for use_cache in (False, True):
        out = generate(model, idx, 5, use_cache=use_cache)
        assert out.shape == (2, 9)
        assert torch.equal(out, expected)
    assert torch.equal(generate(model, idx, 0), idx)


def test_cached_and_uncached_greedy_agree_across_the_context_boundary() -> None:
    model = build()
    idx = prompts(batch=3, length=5)
    n = 3 * CFG.context_length  # far past the 12 positions the cache can hold
    cached = generate(model, idx, n, use_cache=True)
    uncached = generate(model, idx, n, use_cache=False)
    assert cached.shape == (3, 5 + n)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, greedy_reference(model, idx, n))


def test_a_prompt_longer_than_the_context_is_cropped() -> None:
    model = build()
    long = prompts(batch=2, length=20)
    out = generate(model, long, 4)
    assert torch.equal(out[:, :20], long)
    tail = generate(model, long[:, -CFG.context_length :], 4)
    assert torch.equal(out[:, 20:], tail[:, CFG.context_length :])


# ------------------------------------------------------------------- sampling
@pytest.mark.parametrize("settings", [dict(temperature=1.0), dict(temperature=0.7, top_k=5),
                                      dict(temperature=1.5, top_p=0.9), dict(temperature=1.0, top_k=10, top_p=0.8)])
def test_cached_and_uncached_sampling_agree_with_the_same_generator(settings: dict) -> None:
    model = build()
    idx = prompts(batch=2, length=3)
    n = 2 * CFG.context_length
    a = generate(model, idx, n, use_cache=True, generator=torch.Generator().manual_seed(5), **settings)
    b = generate(model, idx, n, use_cache=False, generator=torch.Generator().manual_seed(5), **settings)
    assert torch.equal(a, b)
    c = generate(model, idx, n, generator=torch.Generator().manual_seed(6), **settings)
    assert not torch.equal(a, c)


def test_sampling_follows_the_filtered_distribution() -> None:
    model = build()
    idx = prompts(batch=1, length=3)
    with torch.no_grad():
        logits = model(idx)[0, -1]
    allowed = set(torch.topk(logits, 3).indices.tolist())
    g = torch.Generator().manual_seed(0)
    firsts = [generate(model, idx, 1, temperature=2.0, top_k=3, generator=g)[0, -1].item() for _ in range(200)]
    assert set(firsts) == allowed  # only the top 3, and all of them at a high temperature


def test_eos_stops_early_and_finished_rows_repeat_it() -> None:
    model = build()
    idx = prompts(batch=2, length=4)
    free = generate(model, idx, 10)
    eos = free[0, 6].item()  # row 0's third new token
    first_eos = [int((row[4:] == eos).nonzero()[0]) if (row[4:] == eos).any() else None for row in free]
    out = generate(model, idx, 10, eos_id=eos)
    for r, first in enumerate(first_eos):
        if first is None:
            assert torch.equal(out[r, : out.shape[1]], free[r, : out.shape[1]])
        else:
            assert torch.equal(out[r, : 4 + first + 1], free[r, : 4 + first + 1])
            assert (out[r, 4 + first :] == eos).all()
    # every row finished: generation stops right after the last row's eos
    same = idx[:1].repeat(3, 1)
    stopped = generate(model, same, 10, eos_id=eos)
    assert stopped.shape == (3, 4 + first_eos[0] + 1)
    assert (stopped[:, -1] == eos).all()


def test_generate_restores_training_mode_and_disables_dropout() -> None:
    model = build(CFG.replace(drop_rate=0.5)).train()
    idx = prompts()
    a = generate(model, idx, 6)
    assert model.training
    b = generate(model.eval(), idx, 6)
    assert torch.equal(a, b)


def test_generate_rejects_bad_input() -> None:
    model = build()
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        generate(model, torch.tensor([1, 2, 3]), 2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, prompts(), -1)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, prompts(), 2, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        generate(model, prompts(), 2, temperature=1.0, top_k=0)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, prompts(), 2, temperature=1.0, top_p=1.5)


# ------------------------------------------------------------------- helpers
def test_softmax_with_temperature() -> None:
    logits = torch.tensor([[1.0, 2.0, 4.0], [0.0, 0.0, 0.0]])
    for t in (0.5, 1.0, 3.0):
        expected = torch.exp(logits / t) / torch.exp(logits / t).sum(dim=-1, keepdim=True)
        torch.testing.assert_close(softmax_with_temperature(logits, t), expected)
    sharp = softmax_with_temperature(logits, 0.1)[0]
    flat = softmax_with_temperature(logits, 10.0)[0]
    assert sharp.max() > 0.99 and flat.max() < 0.4
    with pytest.raises(ValueError, match="greedy"):
        softmax_with_temperature(logits, 0.0)


def test_top_k_filter() -> None:
    logits = torch.tensor([[4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]])
    out = top_k_filter(logits, 3)
    kept = torch.isfinite(out)[0].nonzero().flatten().tolist()
    assert kept == [0, 3, 7]  # 4.51, 6.75, 6.28
    assert torch.equal(out[0, kept], logits[0, kept])
    assert (out[0, ~torch.isfinite(out)[0]] == float("-inf")).all()
    assert torch.equal(top_k_filter(logits, 100), logits)
    ties = torch.tensor([1.0, 3.0, 3.0, 2.0])
    assert torch.isfinite(top_k_filter(ties, 1)).tolist() == [False, True, True, False]
    with pytest.raises(ValueError):
        top_k_filter(logits, 0)


def test_top_p_filter() -> None:
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])
    logits = probs.log()
    kept = lambda p: torch.isfinite(top_p_filter(logits, p)).tolist()  # noqa: E731
    assert kept(0.4) == [False, True, False, False]  # the top token alone reaches 0.4
    assert kept(0.7) == [False, True, False, True]  # 0.5 + 0.3
    assert kept(0.81) == [False, True, True, True]  # 0.5 + 0.3 < 0.81: add 0.15
    assert kept(1.0) == [True, True, True, True]
    assert kept(1e-6) == [False, True, False, False]  # the top token is always kept
    batch = torch.stack([logits, logits.flip(0)])
    assert torch.isfinite(top_p_filter(batch, 0.7)).tolist() == [[False, True, False, True], [True, False, True, False]]


def test_text_helpers_round_trip_and_generate_text() -> None:
    text = "To be, or not to be, that is the question. " * 20
    tokenizer = BPETokenizer.train(text, 275)
    ids = text_to_ids("To be, or not", tokenizer)
    assert ids.shape == (1, len(tokenizer.encode("To be, or not"))) and ids.dtype == torch.long
    assert ids_to_text(ids, tokenizer) == "To be, or not"
    assert ids_to_text(ids[0], tokenizer) == "To be, or not"
    assert text_to_ids("a<|endoftext|>b", tokenizer)[0, 1].item() == tokenizer.eot_token
    with pytest.raises(ValueError, match="one row at a time"):
        ids_to_text(ids.repeat(2, 1), tokenizer)

    cfg = GPTConfig(vocab_size=275, context_length=16, emb_dim=32, n_heads=4, n_layers=1)
    torch.manual_seed(0)
    model = init_gpt2_weights(GPTModel(cfg))
    greedy = generate_text(model, tokenizer, "To be", 6)
    expected = greedy_reference(model, text_to_ids("To be", tokenizer), 6)
    assert greedy == tokenizer.decode(expected[0].tolist())
    assert generate_text(model, tokenizer, "To be", 6, include_prompt=False) == tokenizer.decode(
        expected[0, ids_to_len("To be", tokenizer) :].tolist()
    )
    a = generate_text(model, tokenizer, "To be", 10, temperature=1.0, seed=3)
    b = generate_text(model, tokenizer, "To be", 10, temperature=1.0, seed=3)
    assert a == b and a.startswith("To be")
    # eos: the text ends before it
    first = expected[0, ids_to_len("To be", tokenizer)].item()
    assert generate_text(model, tokenizer, "To be", 6, eos_id=first) == "To be"


def ids_to_len(text: str, tokenizer: BPETokenizer) -> int:
    return len(tokenizer.encode(text))


# ------------------------------------------------------------------ issue 18: bare errors
@pytest.mark.parametrize(
    "changes, message",
    [
        ({"temperature": float("nan")}, r"temperature=nan must be a finite number >= 0"),
        ({"temperature": float("inf")}, r"temperature=inf must be a finite number >= 0"),
        ({"temperature": "0.8"}, r"temperature='0.8' must be a finite number >= 0"),
        ({"max_new_tokens": 2.0}, r"max_new_tokens=2.0 must be a whole number of tokens"),
        ({"max_new_tokens": "5"}, r"max_new_tokens='5' must be a whole number of tokens"),
        ({"top_k": 2.5}, r"top_k=2.5 must be a whole number >= 1"),
        ({"top_p": "0.9"}, r"top_p='0.9' must be a number in \(0, 1\]"),
    ],
)
def test_generate_names_a_bad_number(changes: dict, message: str) -> None:
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=32, context_length=8, emb_dim=16, n_heads=2, n_layers=1))
    args = {"max_new_tokens": 2, "temperature": 0.5, **changes}
    with pytest.raises(ValueError, match=message):
        generate(model, torch.tensor([[1, 2]]), args.pop("max_new_tokens"), **args)


def test_a_python_list_given_to_the_model_is_named() -> None:
    """It used to fail with "'list' object has no attribute 'dim'"."""
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=32, context_length=8, emb_dim=16, n_heads=2, n_layers=1))
    with pytest.raises(TypeError, match=r"idx must be a \(B, T\) tensor of token ids, got a list; .*torch\.tensor"):
        model([[1, 2, 3]])
    with pytest.raises(TypeError, match=r"got a list; convert it with torch\.tensor\(\[ids\]\)"):
        generate(model, [[1, 2, 3]], 2)
