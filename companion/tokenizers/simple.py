"""Chapter 2's word-level tokenizer: split on words and punctuation, one id per token.

Chapter 2, "Splitting text into tokens", "From tokens to token ids" and "Special
tokens" build these three pieces step by step:

* ``split_text`` cuts a text into words and punctuation marks;
* ``build_vocab`` gives every distinct token an id (special tokens last);
* ``SimpleTokenizer`` encodes and decodes with such a vocabulary, mapping unknown
  words to ``<|unk|>`` when the vocabulary has it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from companion.tokenizers.base import (
    ENDOFTEXT,
    UNKNOWN,
    UnknownTokenError,
    as_id_list,
    check_special_tokens,
    check_text,
)

__all__ = ["SimpleTokenizer", "build_vocab", "split_text"]

_SIMPLE_SPLIT = re.compile(r'([,.:;?_!"()\']|--|\s)')
_SPACE_BEFORE_PUNCTUATION = re.compile(r'\s+([,.:;?!"()\'])')


def split_text(text: str) -> list[str]:
    """Split text into words and punctuation marks, dropping the whitespace.

    Chapter 2, "Splitting text into tokens". Splits on ``([,.:;?_!"()\\']|--|\\s)``
    (keeping the separators, since punctuation marks are tokens too) and drops empty
    and whitespace-only pieces.

    Args:
        text: any text.

    Returns:
        The tokens in order, e.g. ``split_text("Hello, world.")`` is
        ``["Hello", ",", "world", "."]``.
    """
    return [piece for piece in _SIMPLE_SPLIT.split(text) if piece.strip()]


def build_vocab(
    text_or_tokens: str | Iterable[str],
    special_tokens: Sequence[str] = (ENDOFTEXT, UNKNOWN),
) -> dict[str, int]:
    """Map every distinct token to an id: sorted tokens first, special tokens last.

    Chapter 2, "From tokens to token ids" (and "Special tokens" for the two special
    tokens appended at the end).

    Args:
        text_or_tokens: a text (split with ``split_text``) or tokens already split.
        special_tokens: appended after the sorted tokens, in this order; pass ``()``
            for none. A special token that also occurs in the text keeps only its
            place at the end.

    Returns:
        ``{token: id}`` with ids ``0 .. len - 1``.

    Raises:
        ValueError: ``special_tokens`` repeats a token or contains an empty string.
        TypeError: ``special_tokens`` is one string instead of a sequence of them.
    """
    specials = check_special_tokens(special_tokens)
    tokens = split_text(text_or_tokens) if isinstance(text_or_tokens, str) else list(text_or_tokens)
    words = sorted(set(tokens) - set(specials))
    return {token: i for i, token in enumerate(words + specials)}


class SimpleTokenizer:
    """Chapter 2's word-level tokenizer: one id per word or punctuation mark.

    Chapter 2, "From tokens to token ids" (``WordTokenizer``) and "Special tokens"
    (``WordTokenizerWithUnknown``): one class does both. If the vocabulary contains
    ``<|unk|>``, unknown words become that token; otherwise ``encode`` raises an
    ``UnknownTokenError`` that names them.

    Args:
        vocab: ``{token: id}``, e.g. from ``build_vocab``; ids must be distinct.
    """

    def __init__(self, vocab: Mapping[str, int]) -> None:
        self.vocab: dict[str, int] = dict(vocab)
        self.inverse_vocab: dict[int, str] = {i: token for token, i in self.vocab.items()}
        if len(self.inverse_vocab) != len(self.vocab):
            raise ValueError("vocab maps two tokens to the same id; ids must be distinct")
        self._unk_id: int | None = self.vocab.get(UNKNOWN)

    def __len__(self) -> int:
        return len(self.vocab)

    def __repr__(self) -> str:
        return f"SimpleTokenizer(vocab_size={len(self)}, unk={self._unk_id is not None})"

    def encode(self, text: str) -> list[int]:
        """Split ``text`` with ``split_text`` and map each token to its id.

        Args:
            text: any text.

        Returns:
            One id per token.

        Raises:
            UnknownTokenError: a token is missing from the vocabulary and the vocabulary
                has no ``<|unk|>``.
        """
        tokens = split_text(check_text(text))
        if self._unk_id is not None:
            return [self.vocab.get(token, self._unk_id) for token in tokens]
        unknown = [token for token in dict.fromkeys(tokens) if token not in self.vocab]
        if unknown:
            shown = ", ".join(repr(token) for token in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise UnknownTokenError(
                f"{len(unknown)} token(s) are not in the vocabulary: {shown}{more}. "
                f"Add {UNKNOWN!r} to the vocabulary (build_vocab(text) does by default) so "
                "that unknown words map to it, or build the vocabulary from more text."
            )
        return [self.vocab[token] for token in tokens]

    def decode(self, ids: Iterable[int]) -> str:
        """Turn ids back into text, joining tokens with spaces but none before punctuation.

        Args:
            ids: token ids (a list, or a 1-D tensor or array).

        Returns:
            The text; ``decode(encode(t))`` equals ``t`` after tokenizing and rejoining
            (whitespace becomes single spaces).

        Raises:
            UnknownTokenError: an id is not in the vocabulary.
        """
        ids = as_id_list(ids)
        bad = [i for i in ids if i not in self.inverse_vocab]
        if bad:
            raise UnknownTokenError(
                f"id(s) {bad[:5]} are not in the vocabulary (valid ids are 0..{len(self) - 1})"
            )
        text = " ".join(self.inverse_vocab[i] for i in ids)
        return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", text)
