"""What every tokenizer of the course shares: the special-token names, the error for an
unknown token, and the checks of ids and special tokens.

Shared by ``companion.tokenizers.simple`` and ``companion.tokenizers.bpe``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import regex

__all__ = ["ENDOFTEXT", "UNKNOWN", "UnknownTokenError"]

Pair = tuple[int, int]
"""A merge's left and right ids."""

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


def check_text(text: object) -> str:
    """``text`` itself if it is a ``str``; a clear ``TypeError`` for bytes, ``None`` or anything else."""
    if isinstance(text, str):
        return text
    if isinstance(text, (bytes, bytearray)):
        raise TypeError(
            f"text must be a str, got {type(text).__name__}; decode the bytes first, e.g. text.decode('utf-8')"
        )
    raise TypeError(f"text must be a str, got {type(text).__name__}: {text!r:.60}")


def as_id_list(ids: Iterable[int]) -> list[int]:
    """Token ids as a list of ints; also takes a 1-D tensor or array (via ``tolist()``)."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return ids if isinstance(ids, list) else list(ids)


def check_special_tokens(special_tokens: Sequence[str]) -> list[str]:
    """The special tokens as a list, after checking they are distinct non-empty strings."""
    if isinstance(special_tokens, str):
        raise TypeError(f"special_tokens must be a sequence of strings, e.g. ({special_tokens!r},), not one string")
    specials = list(special_tokens)
    if any(not isinstance(s, str) or not s for s in specials):
        raise ValueError(f"special tokens must be non-empty strings, got {specials}")
    if len(set(specials)) != len(specials):
        raise ValueError(f"special_tokens repeats a token: {specials}")
    return specials


def scrub_surrogates(text: str) -> str:
    """Replace lone surrogates (which UTF-8 cannot encode) with U+FFFD, as tiktoken does."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def merge_pair(ids: list[int], pair: Pair, new_id: int) -> list[int]:
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


def compile_pattern(pattern: str) -> regex.Pattern[str]:
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


def chunk_bytes(chunk: str) -> bytes:
    try:
        return chunk.encode("utf-8")
    except UnicodeEncodeError:
        return scrub_surrogates(chunk).encode("utf-8")


@functools.lru_cache(maxsize=64)
def special_regex(tokens: frozenset[str], capture: bool = False) -> regex.Pattern[str]:
    """A regex that finds any of ``tokens``, longest first where one starts another."""
    alternation = "|".join(regex.escape(t) for t in sorted(tokens, key=lambda t: (-len(t), t)))
    return regex.compile(f"({alternation})" if capture else alternation)
