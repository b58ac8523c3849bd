"""Tokenizers: text to integer ids and back (chapter 2, "Working with text data").

Three tokenizers, one module each:

* ``companion.tokenizers.simple``: the word-and-punctuation tokenizer
  (``split_text``, ``build_vocab``, ``SimpleTokenizer``);
* ``companion.tokenizers.gpt2``: GPT-2's own tokenizer as a ``tiktoken.Encoding``,
  built offline (``gpt2_tokenizer()``);
* ``companion.tokenizers.bpe``: a byte-level BPE written from scratch, with its trainer
  (``BPETokenizer``, ``train_bpe_naive``).

Every public name is importable from here, e.g.
``from companion.tokenizers import BPETokenizer, gpt2_tokenizer``, and ``encode_text``
is the one way the rest of the package turns a text into ids.
"""

from __future__ import annotations

from typing import Any, Protocol

import tiktoken

from companion.tokenizers.base import ENDOFTEXT, UNKNOWN, UnknownTokenError, check_text
from companion.tokenizers.bpe import BPETokenizer, train_bpe_naive
from companion.tokenizers.gpt2 import GPT2_SPLIT_PATTERN, gpt2_tokenizer
from companion.tokenizers.simple import SimpleTokenizer, build_vocab, split_text

__all__ = [
    "ENDOFTEXT",
    "GPT2_SPLIT_PATTERN",
    "UNKNOWN",
    "BPETokenizer",
    "SimpleTokenizer",
    "TextTokenizer",
    "UnknownTokenError",
    "build_vocab",
    "encode_text",
    "gpt2_tokenizer",
    "split_text",
    "train_bpe_naive",
]


class TextTokenizer(Protocol):
    """Anything with ``encode(text) -> ids`` and ``decode(ids) -> text``."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Any) -> str: ...


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Encode ``text`` with any of the course's tokenizers, special tokens included.

    The one rule the package follows everywhere (training data, prompts, widgets): a
    special token's text, such as ``<|endoftext|>``, becomes that token's id. tiktoken's
    and ``BPETokenizer``'s own ``encode`` refuse special tokens by default (so that a
    user's text cannot smuggle one in); here they are all allowed. ``SimpleTokenizer``
    keeps its special tokens in its vocabulary and needs no option.

    Args:
        tokenizer: A ``BPETokenizer``, a ``tiktoken.Encoding`` (``gpt2_tokenizer()``), a
            ``SimpleTokenizer``, or any object whose ``encode(text)`` returns ids.
        text: The text.

    Returns:
        The ids.

    Raises:
        TypeError: ``text`` is not a ``str`` (e.g. ``None`` or bytes: decode them first).
    """
    check_text(text)
    if isinstance(tokenizer, (BPETokenizer, tiktoken.Encoding)):
        return list(tokenizer.encode(text, allowed_special="all"))
    return list(tokenizer.encode(text))
