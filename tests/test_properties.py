"""Property-based tests (Hypothesis) of the invariants a reader relies on (issue 18).

Each test states a rule that must hold for *every* input of a kind, and Hypothesis looks
for a counterexample: tokenizers give back any Unicode text they encode, sliding windows
are exactly the slices the docstring promises, a checkpoint gives back what was saved,
and ``collate_instructions`` pads and masks every row as documented. The example budget
is small (the machine has two CPU cores); the database is off so no folder is written.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from companion.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from companion.config import GPTConfig  # noqa: E402
from companion.data import SlidingWindowDataset  # noqa: E402
from companion.finetune.instruction import InstructionExample, collate_instructions  # noqa: E402
from companion.losses import IGNORE_INDEX  # noqa: E402
from companion.model import GPTModel  # noqa: E402
from companion.tokenizers import ENDOFTEXT, BPETokenizer, encode_text, gpt2_tokenizer  # noqa: E402

FAST = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=8, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Any Unicode text but lone surrogates (which UTF-8 cannot hold; tested on their own below).
TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=80)


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    corpus = "Hello world! Ça va? 日本語のテキスト. 12345 émoji 🙂🙂 tabs\tand\nnewlines " * 8
    return BPETokenizer.train(corpus, 300)


# --------------------------------------------------------------------------- #
# Tokenizers
# --------------------------------------------------------------------------- #
@FAST
@given(text=TEXT)
def test_bpe_round_trips_any_text(bpe: BPETokenizer, text: str) -> None:
    ids = bpe.encode_ordinary(text)
    assert all(0 <= i < bpe.n_vocab for i in ids)
    assert bpe.decode(ids) == text


@FAST
@given(parts=st.lists(TEXT, min_size=1, max_size=4))
def test_special_tokens_are_one_id_in_encode_text_and_text_in_encode_ordinary(bpe: BPETokenizer,
                                                                              parts: list[str]) -> None:
    text = ENDOFTEXT.join(parts)
    with_specials = encode_text(bpe, text)
    assert bpe.decode(with_specials) == text
    assert with_specials.count(bpe.eot_token) == text.count(ENDOFTEXT)
    ordinary = bpe.encode_ordinary(text)
    assert bpe.eot_token not in ordinary and bpe.decode(ordinary) == text


@FAST
@given(text=TEXT)
def test_gpt2_round_trips_any_text(text: str) -> None:
    gpt2 = gpt2_tokenizer()
    assert gpt2.decode(gpt2.encode_ordinary(text)) == text


LONE_SURROGATES = st.text(  # high surrogates only: no two of them form a valid pair
    alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDBFF) | st.sampled_from("ab é"), max_size=20)


@FAST
@given(text=LONE_SURROGATES)
def test_lone_surrogates_become_replacement_characters(bpe: BPETokenizer, text: str) -> None:
    expected = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    assert bpe.decode(bpe.encode_ordinary(text)) == expected


# --------------------------------------------------------------------------- #
# Sliding windows
# --------------------------------------------------------------------------- #
@FAST
@given(data=st.data(), context_length=st.integers(1, 12), stride=st.integers(1, 15))
def test_windows_are_the_documented_slices(data: st.DataObject, context_length: int, stride: int) -> None:
    n = data.draw(st.integers(context_length + 1, 80), label="n")
    ids = torch.tensor(data.draw(st.lists(st.integers(0, 999), min_size=n, max_size=n), label="ids"))
    windows = SlidingWindowDataset(ids, context_length, stride)
    assert len(windows) == (n - context_length - 1) // stride + 1
    for i in range(len(windows)):
        inputs, targets = windows[i]
        start = i * stride
        assert torch.equal(inputs, ids[start : start + context_length])
        assert torch.equal(targets, ids[start + 1 : start + context_length + 1])
    # no further window would fit: the next one's last target would lie past the end
    assert len(windows) * stride + context_length + 1 > n
    if stride <= context_length:  # overlapping or touching windows: every token but the last few is an input
        covered = {int(j) for i in range(len(windows)) for j in range(i * stride, i * stride + context_length)}
        assert covered == set(range((len(windows) - 1) * stride + context_length))


# --------------------------------------------------------------------------- #
# Checkpoints
# --------------------------------------------------------------------------- #
CONFIGS = st.builds(
    lambda heads, head_dim, layers, vocab, ctx, tie, bias: GPTConfig(
        vocab_size=vocab, context_length=ctx, emb_dim=heads * head_dim, n_heads=heads, n_layers=layers,
        tie_embeddings=tie, qkv_bias=bias),
    heads=st.integers(1, 3), head_dim=st.sampled_from([2, 4]), layers=st.integers(1, 2),
    vocab=st.integers(2, 40), ctx=st.integers(1, 12), tie=st.booleans(), bias=st.booleans(),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


@SLOW
@given(config=CONFIGS, seed=st.integers(0, 2**16), step=st.none() | st.integers(0, 10**6),
       extra=st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3))
def test_a_checkpoint_gives_back_what_was_saved(tmp_path: Path, config: GPTConfig, seed: int, step: int | None,
                                                extra: dict) -> None:
    torch.manual_seed(seed)
    model = GPTModel(config)
    folder = save_checkpoint(tmp_path / f"ck-{seed}", model, step=step, extra=extra)
    loaded, info = load_checkpoint(folder)
    assert info["config"] == config and info["step"] == step and info["extra"] == extra
    saved, back = model.state_dict(), loaded.state_dict()
    assert saved.keys() == back.keys()
    assert all(torch.equal(saved[k], back[k]) for k in saved)
    # saving again over it keeps one whole checkpoint
    save_checkpoint(folder, model, step=step, extra=extra)
    assert load_checkpoint(folder)[1]["extra"] == extra


# --------------------------------------------------------------------------- #
# Collate masks
# --------------------------------------------------------------------------- #
EXAMPLES = st.lists(st.integers(0, 99), min_size=2, max_size=12).flatmap(
    lambda ids: st.integers(0, len(ids)).map(lambda p: InstructionExample(tuple(ids), p))
)


@FAST
@given(batch=st.lists(EXAMPLES, min_size=1, max_size=5), mask_prompt=st.booleans(),
       max_length=st.none() | st.integers(1, 12))
def test_collate_pads_shifts_and_masks_every_row(batch: list[InstructionExample], mask_prompt: bool,
                                                max_length: int | None) -> None:
    pad = 100  # an id no example uses
    inputs, targets = collate_instructions(batch, pad_id=pad, mask_prompt=mask_prompt, max_length=max_length)
    T = max(len(ex.ids) for ex in batch) - 1
    if max_length is not None:
        T = min(T, max_length)
    assert inputs.shape == targets.shape == (len(batch), T)
    for row, ex in enumerate(batch):
        n = min(len(ex.ids) - 1, T)
        assert inputs[row, :n].tolist() == list(ex.ids[:n])  # the tokens but the last
        assert (inputs[row, n:] == pad).all()  # then padding
        expected = list(ex.ids[1 : n + 1])  # shifted by one
        if mask_prompt:
            hidden = min(max(ex.prompt_length - 1, 0), n)
            expected[:hidden] = [IGNORE_INDEX] * hidden
        assert targets[row, :n].tolist() == expected
        assert (targets[row, n:] == IGNORE_INDEX).all()  # padding never counts in the loss
