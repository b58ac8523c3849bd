"""Tests for companion.tokenizers: Chapter 2's tokenizers, GPT-2's, and the BPE from scratch.

The BPE written from scratch is checked against tiktoken (GPT-2's ids on every course
text, on edge cases and on a seeded fuzz) and its fast trainer against the naive one.
Everything runs offline.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
from pathlib import Path

import pytest
import tiktoken

from companion import tokenizers as tk
from companion.tokenizers import (
    ENDOFTEXT,
    UNKNOWN,
    BPETokenizer,
    SimpleTokenizer,
    UnknownTokenError,
    build_vocab,
    encode_text,
    gpt2_tokenizer,
    split_text,
    train_bpe_naive,
)
from companion.tokenizers import gpt2 as gpt2_module

REPO_ROOT = Path(__file__).resolve().parents[1]
COURSE_FILES = [
    "the-verdict.txt",
    "tinyshakespeare.txt",
    "SMSSpamCollection",
    "instruction-data.json",
    "instruction-data-with-preference.json",
]


def _data_dir() -> Path:
    return Path(os.environ.get("COMPANION_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")


def _read_course_text(name: str) -> str:
    path = _data_dir() / name
    if not path.is_file():
        pytest.skip(f"course data file {path} not found (set COMPANION_SHARED_DATA to the folder that holds it)")
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def verdict() -> str:
    return _read_course_text("the-verdict.txt")


@pytest.fixture(scope="module")
def shakespeare() -> str:
    return _read_course_text("tinyshakespeare.txt")


@pytest.fixture(scope="module")
def gpt2_bpe() -> BPETokenizer:
    return BPETokenizer.from_gpt2()


@pytest.fixture(scope="module")
def shakespeare_bpe(shakespeare: str) -> BPETokenizer:
    return BPETokenizer.train(shakespeare, 1024)


# ---------------------------------------------------------------------------------------
# Chapter 2's word-level tokenizer
# ---------------------------------------------------------------------------------------

def test_split_text_keeps_punctuation_and_drops_whitespace() -> None:
    assert split_text("Hello, world. Is this-- a test?") == [
        "Hello", ",", "world", ".", "Is", "this", "--", "a", "test", "?"
    ]
    assert split_text("  \n\t ") == []


def test_verdict_vocabulary_sizes(verdict: str) -> None:
    # the book: 4,690 tokens and 1,130 distinct ones; the two special tokens come last
    tokens = [t.strip() for t in re.split(r'([,.:;?_!"()\']|--|\s)', verdict) if t.strip()]
    assert split_text(verdict) == tokens
    assert len(tokens) == 4690
    assert len(set(tokens)) == 1130

    plain = build_vocab(verdict, special_tokens=())
    assert len(plain) == len(set(tokens)) == 1130
    assert list(plain) == sorted(set(tokens))
    assert list(plain.values()) == list(range(len(plain)))

    vocab = build_vocab(verdict)
    assert len(vocab) == len(set(tokens)) + 2
    assert vocab[ENDOFTEXT] == 1130 and vocab[UNKNOWN] == 1131
    assert build_vocab(tokens) == vocab


def test_build_vocab_puts_special_tokens_last_even_if_in_text() -> None:
    vocab = build_vocab("b a <|endoftext|> a", special_tokens=(ENDOFTEXT, UNKNOWN))
    assert vocab == {"a": 0, "b": 1, ENDOFTEXT: 2, UNKNOWN: 3}
    with pytest.raises(ValueError, match="repeats"):
        build_vocab("a", special_tokens=("<x>", "<x>"))
    with pytest.raises(TypeError):
        build_vocab("a", special_tokens=UNKNOWN)


def test_simple_tokenizer_book_examples(verdict: str) -> None:
    tokenizer = SimpleTokenizer(build_vocab(verdict))
    text = '"It\'s the last he painted, you know," Mrs. Gisburn said with pardonable pride.'
    ids = tokenizer.encode(text)
    assert ids == [1, 56, 2, 850, 988, 602, 533, 746, 5, 1126, 596, 5, 1, 67, 7, 38, 851, 1108, 754, 793, 7]
    assert tokenizer.decode(ids) == '" It\' s the last he painted, you know," Mrs. Gisburn said with pardonable pride.'

    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of the palace."
    ids = tokenizer.encode(text)
    assert ids == [1131, 5, 355, 1126, 628, 975, 10, 1130, 55, 988, 956, 984, 722, 988, 1131, 7]
    assert tokenizer.decode(ids) == (
        "<|unk|>, do you like tea? <|endoftext|> In the sunlit terraces of the <|unk|>."
    )
    assert len(tokenizer) == 1132
    assert tokenizer.inverse_vocab[1130] == ENDOFTEXT


def test_simple_tokenizer_round_trip(verdict: str) -> None:
    tokenizer = SimpleTokenizer(build_vocab(verdict))
    decoded = tokenizer.decode(tokenizer.encode(verdict))
    # the same tokens; whitespace normalised to single spaces, none before punctuation
    assert split_text(decoded) == split_text(verdict)
    assert " ," not in decoded and " ." not in decoded and "\n" not in decoded
    assert tokenizer.decode(tokenizer.encode("He said: no; I know!")) == "He said: no; I know!"


def test_simple_tokenizer_without_unk_names_unknown_tokens(verdict: str) -> None:
    tokenizer = SimpleTokenizer(build_vocab(verdict, special_tokens=()))
    with pytest.raises(UnknownTokenError) as info:
        tokenizer.encode("Hello, do you like tea? Hello!")
    message = str(info.value)
    assert "'Hello'" in message and message.count("Hello") == 1  # listed once
    assert UNKNOWN in message and "more text" in message
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)

    many = " ".join(f"zzz{i}" for i in range(8))
    with pytest.raises(UnknownTokenError, match=r"8 token.*and 3 more"):
        tokenizer.encode(many)


def test_simple_tokenizer_decode_unknown_id(verdict: str) -> None:
    tokenizer = SimpleTokenizer(build_vocab(verdict))
    with pytest.raises(UnknownTokenError, match="99999"):
        tokenizer.decode([1, 99999])


# ---------------------------------------------------------------------------------------
# GPT-2's tokenizer, offline
# ---------------------------------------------------------------------------------------

HELLO = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."
HELLO_IDS = [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114, 286, 617, 34680,
             27271, 13]


def test_gpt2_tokenizer_known_ids() -> None:
    enc = gpt2_tokenizer()
    assert enc.name == "gpt2"
    assert enc.n_vocab == 50257 and enc.eot_token == 50256
    assert enc.encode(HELLO, allowed_special={ENDOFTEXT}) == HELLO_IDS
    assert enc.decode(HELLO_IDS) == HELLO
    assert gpt2_tokenizer() is enc  # cached


def test_gpt2_tokenizer_needs_no_network_and_no_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("network access in a test")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(cache))
    tk.gpt2_tokenizer.cache_clear()
    gpt2_module.gpt2_merges.cache_clear()
    try:
        assert gpt2_tokenizer().encode(HELLO, allowed_special={ENDOFTEXT}) == HELLO_IDS
        assert BPETokenizer.from_gpt2().encode(HELLO, allowed_special={ENDOFTEXT}) == HELLO_IDS
    finally:
        tk.gpt2_tokenizer.cache_clear()
        gpt2_module.gpt2_merges.cache_clear()
    assert list(cache.iterdir()) == []


def test_gpt2_files_hash_mismatch_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(gpt2_module._GPT2_FILES_SHA256, "vocab.bpe", "0" * 64)
    tk.gpt2_tokenizer.cache_clear()
    gpt2_module.gpt2_merges.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"SHA-256.*vocab\.bpe|vocab\.bpe.*SHA-256"):
            gpt2_tokenizer()
        with pytest.raises(ValueError, match="SHA-256"):
            BPETokenizer.from_gpt2()
    finally:
        tk.gpt2_tokenizer.cache_clear()
        gpt2_module.gpt2_merges.cache_clear()


# ---------------------------------------------------------------------------------------
# The BPE from scratch gives GPT-2's ids: the same as tiktoken on every text
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", COURSE_FILES)
def test_gpt2_bpe_equals_tiktoken_on_course_texts(name: str, gpt2_bpe: BPETokenizer) -> None:
    text = _read_course_text(name)
    ids = gpt2_bpe.encode(text)
    assert ids == gpt2_tokenizer().encode(text)
    assert gpt2_bpe.decode(ids) == text


EDGE_CASES = [
    "",
    " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\n ", "a ", "a  ", "a\n", "a \n", "a\n\n  ",
    "a  b", "a   b", "a\t\tb", "a \t b", " \t\n a", "line one\n\nline two\n  indented\n\ttabbed\n",
    "x \u00a0y", "wide\u3000space", "thin\u2009space", "\x0b\x0c\x85\u2028\u2029",
    "it's don't we're they've I'm you'll he'd", "IT'S DON'T WE'RE THEY'VE I'M YOU'LL HE'D",
    "it’s don’t we’re", "'s 't 're 've 'm 'll 'd", "''s'''t", "rock 'n' roll", "'S'T'RE",
    "1234567890", "3.14159", "2024-05-17", "1,000,000", "٣٤٥ ３４５ ½ ⅷ", "a1b2c3 12ab 1 2  3",
    "héllo wörld naïve café Straße", "Ελληνικά Русский עברית العربية हिन्दी ไทย 中文 日本語 한국어",
    "e\u0301 a\u0300\u0316 \u0915\u094d\u0937", "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334",
    "😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇫🇷🇯🇵 ❤️ 1️⃣", "emoji😀in😀words", "\U0001f600\U0001f600\U0001f600",
    "<|endoftext|>", "a<|endoftext|>b", "<|endoftext|><|endoftext|>", "<|endoftext", "<| endoftext |>",
    "def f(x):\n    return x ** 2  # square\n", '{"key": [1, 2.5e-3, null, "v\\u00e9"]}',
    "!!!???...---___", "(((a)))", "ab" * 200, "a" * 1000, " " * 300 + "x", "\n" * 50,
    "\x00\x01\x02\x7f", "\ufeffBOM", "\ufffd replacement",
]


@pytest.mark.parametrize("text", EDGE_CASES, ids=range(len(EDGE_CASES)))
def test_gpt2_bpe_equals_tiktoken_on_edge_cases(text: str, gpt2_bpe: BPETokenizer) -> None:
    enc = gpt2_tokenizer()
    ids = gpt2_bpe.encode(text, disallowed_special=())
    assert ids == enc.encode(text, disallowed_special=())
    assert gpt2_bpe.encode_ordinary(text) == enc.encode_ordinary(text) == ids
    assert gpt2_bpe.decode(ids) == text
    assert gpt2_bpe.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")


def test_gpt2_bpe_special_tokens_like_tiktoken(gpt2_bpe: BPETokenizer) -> None:
    enc = gpt2_tokenizer()
    text = "a<|endoftext|>b <|endoftext|>"
    for kwargs in (
        {"allowed_special": {ENDOFTEXT}},
        {"allowed_special": "all"},
        {"disallowed_special": ()},
        {"allowed_special": {ENDOFTEXT, "<|not-a-special-token|>"}},
        {"allowed_special": set(), "disallowed_special": ()},
    ):
        assert gpt2_bpe.encode(text, **kwargs) == enc.encode(text, **kwargs), kwargs
    assert gpt2_bpe.encode(text, allowed_special="all").count(50256) == 2
    assert gpt2_bpe.encode(text, disallowed_special=()).count(50256) == 0
    for kwargs in ({}, {"disallowed_special": {ENDOFTEXT}}, {"allowed_special": {"<|other|>"}}):
        with pytest.raises(ValueError, match="allowed_special"):
            gpt2_bpe.encode(text, **kwargs)
        with pytest.raises(ValueError):
            enc.encode(text, **kwargs)
    assert gpt2_bpe.decode([50256]) == ENDOFTEXT
    assert gpt2_bpe.eot_token == 50256 and gpt2_bpe.special_tokens == {ENDOFTEXT: 50256}


def test_gpt2_bpe_lone_surrogates_like_tiktoken(gpt2_bpe: BPETokenizer) -> None:
    text = "a\ud800b \udfff"
    ids = gpt2_bpe.encode(text)
    assert ids == gpt2_tokenizer().encode(text)
    assert gpt2_bpe.decode(ids) == "a\ufffdb \ufffd"



# ---------------------------------------------------------------------------------------
# encode_text: the one rule, special tokens become their ids
# ---------------------------------------------------------------------------------------

def _as_tiktoken(tokenizer: BPETokenizer) -> tiktoken.Encoding:
    """The same vocabulary as a tiktoken Encoding (for a trained BPE, whose byte ids are the bytes)."""
    assert tokenizer.byte_order == tuple(range(256))
    return tiktoken.Encoding(
        name="trained-bpe",
        pat_str=tokenizer.pattern,
        mergeable_ranks={tokenizer.token_bytes(i): i for i in range(256 + len(tokenizer.merges))},
        special_tokens=tokenizer.special_tokens,
    )


def test_encode_text_gives_special_tokens_their_ids_like_tiktoken(gpt2_bpe: BPETokenizer, verdict: str) -> None:
    enc = gpt2_tokenizer()
    text = HELLO + " and then<|endoftext|><|endoftext|> more"
    reference = enc.encode(text, allowed_special="all")
    assert reference.count(50256) == 3
    assert encode_text(enc, text) == reference
    assert encode_text(gpt2_bpe, text) == reference
    assert encode_text(gpt2_bpe, "no special token here") == enc.encode_ordinary("no special token here")

    # A trained BPE with two special tokens, against tiktoken with the same vocabulary.
    trained = BPETokenizer.train(verdict, 300, special_tokens=(ENDOFTEXT, "<|pad|>"))
    reference_enc = _as_tiktoken(trained)
    mixed = "I had always<|pad|><|pad|> thought Jack Gisburn<|endoftext|>"
    ids = encode_text(trained, mixed)
    assert ids == reference_enc.encode(mixed, allowed_special="all") == encode_text(reference_enc, mixed)
    assert ids.count(trained.special_tokens["<|pad|>"]) == 2 and ids[-1] == trained.eot_token
    assert trained.decode(ids) == mixed
    with pytest.raises(ValueError, match="allowed_special"):
        trained.encode(mixed)  # the tokenizer's own default still refuses them


def test_encode_text_with_the_word_tokenizer_and_any_encode(verdict: str) -> None:
    vocab = build_vocab(verdict)
    simple = SimpleTokenizer(vocab)
    text = "I had always <|endoftext|> thought Jack"
    ids = encode_text(simple, text)
    assert ids == [vocab[token] for token in ["I", "had", "always", ENDOFTEXT, "thought", "Jack"]]
    assert ids == simple.encode(text)

    class TupleTokenizer:  # anything with encode(text): called with the text alone
        def encode(self, text: str) -> tuple[int, ...]:
            return tuple(len(word) for word in text.split())

    assert encode_text(TupleTokenizer(), "ab <|endoftext|> c") == [2, 13, 1]


_FUZZ_ATOMS = (
    *"abcxyzABCXYZ0123456789",
    *[" ", " ", " ", "  ", "\t", "\n", "\n\n", "\r", "\u00a0", "\u3000", "\u2009"],
    *".,;:!?-_'\"()[]{}<>|/\\@#$%^&*+=~`",
    *["'s", "'S", "'t", "'re", "'ve", "'m", "'ll", "'d", "’", "n't", "<|endoftext|>", "<|", "|>"],
    *"éßñøåçÉ", *["e\u0301", "\u0301", "\u0316", "\u094d"],
    *"αβγΩжЩяשלוםمرحبا", *"हिन्दीไทย中文日本語한국어ひらカタ", *"٣３½",
    *["😀", "👍", "🏽", "\u200d", "\ufe0f", "🇫", "🇷", "👨‍👩‍👧", "🏳️‍🌈", "\U0001f9d1\U0001f3fd\u200d\U0001f4bb"],
    *["\x00", "\x7f", "\ufeff", "\U00010348", "\U000e0001"],
)


def test_gpt2_bpe_equals_tiktoken_on_seeded_fuzz(gpt2_bpe: BPETokenizer) -> None:
    enc = gpt2_tokenizer()
    rng = random.Random(20240517)
    for _ in range(3000):
        text = "".join(rng.choice(_FUZZ_ATOMS) for _ in range(rng.randint(0, 40)))
        ids = gpt2_bpe.encode(text, disallowed_special=())
        assert ids == enc.encode(text, disallowed_special=()), text
        assert gpt2_bpe.decode(ids) == text
        assert gpt2_bpe.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all"), text


def test_gpt2_merges_make_pair_rank_equal_to_byte_rank(gpt2_bpe: BPETokenizer) -> None:
    # tiktoken merges by the rank of the concatenated bytes, which also allows
    # "implicit" pairs: two tokens that spell a third one made by a different merge.
    # Pair-rank BPE equals it when every merged token encodes to itself...
    assert gpt2_bpe.unreachable_tokens() == []
    # ...and here is the adversarial check: every implicit pair, glued between random
    # tokens, BPE-encoded without any regex split, against tiktoken's own BPE.
    enc = gpt2_tokenizer()
    if not hasattr(enc, "_encode_single_piece"):
        pytest.skip("this tiktoken version has no _encode_single_piece")
    vocab = [gpt2_bpe.token_bytes(i) for i in range(50256)]
    id_of = {token: i for i, token in enumerate(vocab)}
    rng = random.Random(7)
    implicit = 0
    for new_id in range(256, 50256):
        token = vocab[new_id]
        for cut in range(1, len(token)):
            left, right = id_of.get(token[:cut]), id_of.get(token[cut:])
            if left is None or right is None or gpt2_bpe.merges.get((left, right)) == new_id:
                continue
            implicit += 1
            piece = rng.choice((b"", rng.choice(vocab))) + token + rng.choice((b"", rng.choice(vocab)))
            assert gpt2_bpe.encode_chunk(piece) == enc._encode_single_piece(piece), piece
    assert implicit > 10_000  # GPT-2 has tens of thousands of them


# ---------------------------------------------------------------------------------------
# Training a BPE
# ---------------------------------------------------------------------------------------

TIE_TEXT = "aaaa aaa aa abab baba ab ba cdcd dc cd cd aaaaaa bbbbbb ab\nab\tba éé ééé 12 21 12"


@pytest.mark.parametrize(
    ("source", "vocab_size", "pattern", "specials"),
    [
        ("the-verdict.txt", 512, tk.GPT2_SPLIT_PATTERN, (ENDOFTEXT,)),
        ("tinyshakespeare.txt", 400, r"\S+|\s+", ()),
        ("ties", 270, tk.GPT2_SPLIT_PATTERN, (ENDOFTEXT, "<|pad|>")),
        ("ties", 268, r"[\s\S]+", ()),
    ],
)
def test_fast_trainer_learns_the_naive_trainers_merges(
    source: str, vocab_size: int, pattern: str, specials: tuple[str, ...]
) -> None:
    text = TIE_TEXT if source == "ties" else _read_course_text(source)[:25_000]
    fast = BPETokenizer.train(text, vocab_size, pattern=pattern, special_tokens=specials)
    naive = train_bpe_naive(text, vocab_size, pattern=pattern, special_tokens=specials)
    assert list(fast.merges.items()) == list(naive.merges.items())
    assert fast.special_tokens == naive.special_tokens
    assert fast.vocab_size == vocab_size


def test_tie_break_highest_count_then_smallest_pair() -> None:
    # "ab" and "cd" both occur once: the smaller pair (97, 98) wins
    assert list(BPETokenizer.train("cd ab", 257, pattern=r"\S+", special_tokens=()).merges) == [(97, 98)]
    # "cd" occurs twice: the higher count wins
    assert list(BPETokenizer.train("cd cd ab", 257, pattern=r"\S+", special_tokens=()).merges) == [(99, 100)]
    # overlapping pairs: "aaa" holds (a, a) twice and merges left to right into "aa", "a"
    tokenizer = BPETokenizer.train("aaa", 257, pattern=r"\S+", special_tokens=())
    assert list(tokenizer.merges) == [(97, 97)]
    assert tokenizer.encode("aaa") == [256, 97]


def test_trained_tokenizer_round_trip_and_size(shakespeare: str, shakespeare_bpe: BPETokenizer) -> None:
    tokenizer = shakespeare_bpe
    assert tokenizer.vocab_size == tokenizer.n_vocab == len(tokenizer) == 1024
    assert len(tokenizer.merges) == 1024 - 256 - 1
    assert tokenizer.special_tokens == {ENDOFTEXT: 1023} and tokenizer.eot_token == 1023
    ids = tokenizer.encode(shakespeare)
    assert tokenizer.decode(ids) == shakespeare
    assert max(ids) < 1023
    assert len(shakespeare) / len(ids) > 2.2  # ~2.4 characters per token at this size
    assert tokenizer.unreachable_tokens() == []
    for text in EDGE_CASES[:40]:
        assert tokenizer.decode(tokenizer.encode(text, disallowed_special=())) == text


@pytest.mark.parametrize("vocab_size", [256, 257, 300, 777])
def test_trained_vocab_size_is_exact(verdict: str, vocab_size: int) -> None:
    specials = () if vocab_size == 256 else (ENDOFTEXT,)
    tokenizer = BPETokenizer.train(verdict, vocab_size, special_tokens=specials)
    assert tokenizer.vocab_size == vocab_size
    assert len(tokenizer.merges) + 256 + len(specials) == vocab_size


def test_training_is_deterministic(shakespeare: str, shakespeare_bpe: BPETokenizer) -> None:
    again = BPETokenizer.train(shakespeare, 1024)
    assert list(again.merges.items()) == list(shakespeare_bpe.merges.items())
    snippet = shakespeare[:2000]
    assert again.encode(snippet) == shakespeare_bpe.encode(snippet)


def test_trained_special_tokens(shakespeare_bpe: BPETokenizer) -> None:
    tokenizer = shakespeare_bpe
    text = "First Citizen:<|endoftext|>Second"
    with pytest.raises(ValueError, match="allowed_special"):
        tokenizer.encode(text)
    ids = tokenizer.encode(text, allowed_special={ENDOFTEXT})
    assert ids.count(1023) == 1 and tokenizer.decode(ids) == text
    assert tokenizer.encode(text, allowed_special="all") == ids
    plain = tokenizer.encode(text, disallowed_special=())
    assert 1023 not in plain and tokenizer.decode(plain) == text
    assert tokenizer.encode_ordinary(text) == plain
    assert tokenizer.token_bytes(1023) == ENDOFTEXT.encode()


def test_training_never_merges_across_or_inside_special_tokens() -> None:
    text = "hello world<|endoftext|>" * 50
    tokenizer = BPETokenizer.train(text, 256 + 1 + 9)
    learned = [tokenizer.token_bytes(i) for i in range(256, 256 + 9)]
    assert all(b"<" not in token and b"|" not in token for token in learned), learned
    with pytest.raises(ValueError, match="ran out of pairs"):
        BPETokenizer.train(text, 256 + 1 + 10)


def test_no_eot_token_without_endoftext() -> None:
    tokenizer = BPETokenizer.train("low lower lowest", 260, special_tokens=())
    with pytest.raises(AttributeError, match="endoftext"):
        _ = tokenizer.eot_token
    assert tokenizer.encode("<|endoftext|>") == tokenizer.encode_ordinary("<|endoftext|>")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"text": "abc", "vocab_size": 200}, ValueError, "at least 257"),
        ({"text": "abc", "vocab_size": 256}, ValueError, "at least 257"),
        ({"text": "", "vocab_size": 300}, ValueError, "empty"),
        ({"text": "<|endoftext|>", "vocab_size": 300}, ValueError, "empty"),
        ({"text": "ab", "vocab_size": 300}, ValueError, "ran out of pairs to merge after 1 of 43 merges.*<= 258"),
        ({"text": "abc", "vocab_size": "300"}, TypeError, "vocab_size"),
        ({"text": b"abc", "vocab_size": 300}, TypeError, "str"),
        ({"text": "abc", "vocab_size": 300, "special_tokens": "<s>"}, TypeError, "sequence"),
        ({"text": "abc", "vocab_size": 300, "special_tokens": ("<s>", "<s>")}, ValueError, "repeats"),
        ({"text": "abc", "vocab_size": 300, "special_tokens": ("",)}, ValueError, "non-empty"),
        ({"text": "abc", "vocab_size": 300, "pattern": "(unclosed"}, ValueError, "not a valid regular"),
        ({"text": "abc", "vocab_size": 300, "pattern": r"(\w+)|\s+"}, ValueError, "capturing groups"),
    ],
)
def test_training_argument_errors(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        BPETokenizer.train(**kwargs)
    with pytest.raises(error, match=match):
        train_bpe_naive(**kwargs)


def test_decode_errors_and_partial_characters(shakespeare_bpe: BPETokenizer) -> None:
    tokenizer = shakespeare_bpe
    for bad in (1024, -1, 5000):
        with pytest.raises(UnknownTokenError, match=str(bad)):
            tokenizer.decode([65, bad])
    # a character cut in two decodes with U+FFFD, like tiktoken; the bytes are exact
    ids = tokenizer.encode("é")
    assert tokenizer.decode_bytes(ids[:1]) == "é".encode()[:1]
    assert tokenizer.decode(ids[:1]) == "\ufffd"
    assert tokenizer.token_bytes(65) == b"A"


def test_decode_accepts_tensors_and_generators(shakespeare_bpe: BPETokenizer, verdict: str) -> None:
    torch = pytest.importorskip("torch")
    text = "Romeo, Romeo!<|endoftext|>"
    ids = shakespeare_bpe.encode(text, allowed_special="all")
    assert shakespeare_bpe.decode(torch.tensor(ids)) == text
    assert shakespeare_bpe.decode(i for i in ids) == text
    with pytest.raises(UnknownTokenError, match="5000"):
        shakespeare_bpe.decode(i for i in [*ids, 5000])
    simple = SimpleTokenizer(build_vocab(verdict))
    assert simple.decode(torch.tensor(simple.encode("I had always"))) == "I had always"


def test_training_progress_bar_is_optional(capsys: pytest.CaptureFixture[str]) -> None:
    quiet = BPETokenizer.train("low lower lowest", 260)
    assert capsys.readouterr().err == ""
    loud = BPETokenizer.train("low lower lowest", 260, progress=True)
    assert "BPE merges" in capsys.readouterr().err
    assert list(loud.merges.items()) == list(quiet.merges.items())


def test_constructor_rejects_inconsistent_merges() -> None:
    with pytest.raises(ValueError, match="below 256"):
        BPETokenizer([(97, 256)])
    with pytest.raises(ValueError, match="repeats"):
        BPETokenizer([(97, 98), (97, 98)])
    with pytest.raises(ValueError, match="both make the token"):
        BPETokenizer([(97, 98), (256, 99), (98, 99), (97, 258)])
    with pytest.raises(ValueError, match="byte_order"):
        BPETokenizer([], byte_order=[0] * 256)
    with pytest.raises(ValueError, match="at or above 257"):
        BPETokenizer([(97, 98)], special_tokens={"<s>": 100})
    with pytest.raises(ValueError, match="share an id"):
        BPETokenizer([], special_tokens={"<s>": 300, "</s>": 300})


# ---------------------------------------------------------------------------------------
# Saving and loading
# ---------------------------------------------------------------------------------------

def test_save_load_round_trip(shakespeare: str, shakespeare_bpe: BPETokenizer, tmp_path: Path) -> None:
    path = tmp_path / "bpe.json"
    shakespeare_bpe.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["bpe.json"]  # no temporary file left
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == "companion-bpe" and data["version"] == 1
    assert len(data["merges"]) == 767 and data["special_tokens"] == {ENDOFTEXT: 1023}
    assert path.read_text(encoding="utf-8").count("\n") > 767  # one merge per line

    loaded = BPETokenizer.load(path)
    assert list(loaded.merges.items()) == list(shakespeare_bpe.merges.items())
    assert loaded.special_tokens == shakespeare_bpe.special_tokens
    assert loaded.pattern == shakespeare_bpe.pattern
    snippet = shakespeare[:20_000] + "<|endoftext|>"
    assert loaded.encode(snippet, allowed_special="all") == shakespeare_bpe.encode(snippet, allowed_special="all")

    shakespeare_bpe.save(str(path))  # overwrites in place, str paths work too
    assert BPETokenizer.load(str(path)).vocab_size == 1024


def test_save_load_gpt2_keeps_its_byte_order(gpt2_bpe: BPETokenizer, tmp_path: Path) -> None:
    path = tmp_path / "gpt2.json"
    gpt2_bpe.save(path)
    loaded = BPETokenizer.load(path)
    assert loaded.byte_order == gpt2_bpe.byte_order != tuple(range(256))
    assert loaded.encode(HELLO, allowed_special={ENDOFTEXT}) == HELLO_IDS


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("this is not json", "not valid JSON"),
        ("[1, 2, 3]", "not a BPE tokenizer file written by BPETokenizer.save"),
        ('{"format": "tiktoken", "version": 1}', "expected \"format\": 'companion-bpe'"),
        ('{"format": "companion-bpe", "version": 99}', "version 99"),
        ('{"format": "companion-bpe", "version": 1, "pattern": "\\\\S+"}', "missing"),
        ('{"format": "companion-bpe", "version": 1, "pattern": "x", "special_tokens": {}, '
         '"byte_order": [], "merges": []}', "byte_order"),
        ('{"format": "companion-bpe", "version": 1, "pattern": "x", "special_tokens": {}, '
         '"byte_order": ' + json.dumps(list(range(256))) + ', "merges": [[97, 300]]}', "merge 0"),
        ('{"format": "companion-bpe", "version": 1, "pattern": "x", "special_tokens": {}, '
         '"byte_order": ' + json.dumps(list(range(256))) + ', "merges": {"a": 1}}', "merges"),
        ('{"format": "companion-bpe", "version": 1, "pattern": "(", "special_tokens": {}, '
         '"byte_order": ' + json.dumps(list(range(256))) + ', "merges": []}', "regular expression"),
        ('{"format": "companion-bpe", "version": 1, "pattern": "x", "special_tokens": {"<s>": 5}, '
         '"byte_order": ' + json.dumps(list(range(256))) + ', "merges": []}', "special"),
    ],
)
def test_load_rejects_bad_files(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match) as info:
        BPETokenizer.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "raw",
    [
        '{"format": "companion-bpe", "pattern": "café"}'.encode("latin-1"),
        json.dumps({"format": "companion-bpe", "version": 1}).encode("utf-16"),
        b"\x80\x81\x82 not text",
    ],
    ids=["latin-1", "utf-16", "binary"],
)
def test_load_of_a_file_that_is_not_utf8_names_the_file(tmp_path: Path, raw: bytes) -> None:
    # Failure mode 7: a bare UnicodeDecodeError that did not say which file.
    path = tmp_path / "tokenizer.json"
    path.write_bytes(raw)
    with pytest.raises(ValueError) as info:
        BPETokenizer.load(path)
    assert str(path) in str(info.value) and "UTF-8" in str(info.value)
    assert not isinstance(info.value, UnicodeDecodeError)


def test_save_into_a_missing_folder_names_the_file(tmp_path: Path) -> None:
    # Failure mode 7: the error named the temporary file next to the target.
    tokenizer = BPETokenizer.train("low lower lowest", 260)
    target = tmp_path / "no-such-folder" / "bpe.json"
    with pytest.raises(FileNotFoundError) as info:
        tokenizer.save(target)
    message = str(info.value)
    assert str(target) in message and f"{target.parent} does not exist" in message
    assert ".tmp" not in message
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ issue 18: bare errors
@pytest.mark.parametrize("text, fix", [(None, "got NoneType"), (b"hello", r"got bytes; decode the bytes first"),
                                       (42, "got int")])
def test_encoding_something_that_is_not_text_is_named(text: object, fix: str) -> None:
    bpe = BPETokenizer([], special_tokens={ENDOFTEXT: 256})
    simple = SimpleTokenizer(build_vocab("hello world"))
    gpt2 = gpt2_tokenizer()
    calls = [lambda: bpe.encode(text), lambda: bpe.encode_ordinary(text), lambda: simple.encode(text),
             lambda: gpt2.encode(text), lambda: gpt2.encode_ordinary(text), lambda: encode_text(gpt2, text)]
    for call in calls:
        with pytest.raises(TypeError, match=rf"text must be a str, {fix}"):
            call()


@pytest.mark.parametrize("bad", [-1, 50257, 10**12])
def test_gpt2_decode_names_an_id_outside_the_vocabulary(bad: int) -> None:
    """tiktoken says 'OverflowError: out of range integral type conversion attempted' for -1."""
    gpt2 = gpt2_tokenizer()
    with pytest.raises(UnknownTokenError, match=rf"^{bad} is not a token id of gpt2's tokenizer \(ids 0\.\.50256\)"):
        gpt2.decode([31373, bad])
    assert isinstance(gpt2, tiktoken.Encoding) and repr(gpt2) == "<Encoding 'gpt2'>"
    assert gpt2.decode([31373, 995]) == "hello world"
