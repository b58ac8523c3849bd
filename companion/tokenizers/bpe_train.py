"""Learning a byte-level BPE's merges from a text (chapter 2, "Byte-pair encoding").

``learn_merges`` pre-splits the text into chunks with a regex, turns each chunk into
its UTF-8 bytes, and merges the most frequent adjacent pair again and again. Two
implementations learn exactly the same merges:

* the fast one keeps every pair's count up to date as merges happen, and touches only
  the chunks a merge changes (``BPETokenizer.train``);
* the naive one recounts every pair of the whole text after every merge, as the chapter
  first writes it (``train_bpe_naive``): a readable reference for tests and benchmarks.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Sequence
from itertools import pairwise

from tqdm.auto import tqdm

from companion.tokenizers.base import (
    Pair,
    check_special_tokens,
    chunk_bytes,
    compile_pattern,
    merge_pair,
    special_regex,
)

__all__ = ["learn_merges"]


def learn_merges(
    text: str,
    vocab_size: int,
    *,
    pattern: str,
    special_tokens: Sequence[str],
    progress: bool = False,
    naive: bool = False,
) -> tuple[list[Pair], list[str]]:
    """Learn the merges that bring a byte-level vocabulary to ``vocab_size`` tokens.

    Ties are broken deterministically: highest count first, then the smallest pair
    ``(left id, right id)``, so the result does not depend on dict or set order.

    Args:
        text: The training text. Special tokens in it are cut out first: no merge
            crosses or learns from them.
        vocab_size: 256 byte tokens + the merges + the special tokens.
        pattern: The pre-split regex.
        special_tokens: Their number is subtracted from the merges to learn.
        progress: Show a ``tqdm`` progress bar.
        naive: Recount every pair after every merge (slow, readable).

    Returns:
        ``(merges, special_tokens)``: merge ``i`` creates id ``256 + i``.

    Raises:
        ValueError: ``vocab_size`` is too small, the text is empty, or it has too few
            distinct pairs to reach ``vocab_size``.
    """
    chunks, n_merges, specials = _training_chunks(text, vocab_size, pattern, special_tokens)
    learn = _learn_merges_naive if naive else _learn_merges_fast
    return learn(chunks, n_merges, len(specials), progress), specials


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
    specials = check_special_tokens(special_tokens)
    if vocab_size < 256 + len(specials):
        raise ValueError(
            f"vocab_size={vocab_size} is too small: a byte-level BPE has 256 byte tokens plus "
            f"{len(specials)} special token(s), so vocab_size must be at least {256 + len(specials)}"
        )
    compiled = compile_pattern(pattern)
    pieces = special_regex(frozenset(specials)).split(text) if specials else [text]
    chunks = [chunk for piece in pieces for chunk in compiled.findall(piece)]
    if not chunks:
        raise ValueError("cannot train a tokenizer on an empty text")
    return chunks, vocab_size - 256 - len(specials), specials


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
    words: list[list[int]] = [list(chunk_bytes(chunk)) for chunk in chunk_counts]
    freqs: list[int] = list(chunk_counts.values())
    counts: dict[Pair, int] = defaultdict(int)
    where: dict[Pair, set[int]] = defaultdict(set)
    for w, (ids, freq) in enumerate(zip(words, freqs, strict=True)):
        for pair in pairwise(ids):
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
                new = merge_pair(old, pair, new_id)
                if len(new) == len(old):
                    continue  # the pair left this chunk in an earlier merge
                freq = freqs[w]
                delta: dict[Pair, int] = defaultdict(int)
                for p in pairwise(old):
                    delta[p] -= 1
                for p in pairwise(new):
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
    ids_per_chunk = [list(chunk_bytes(chunk)) for chunk in chunks]
    merges: list[Pair] = []
    for step in tqdm(range(n_merges), desc="BPE merges (naive)", disable=not progress):
        counts: dict[Pair, int] = {}
        for ids in ids_per_chunk:
            for pair in pairwise(ids):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            raise _out_of_pairs(step, n_merges, n_specials)
        # most frequent pair; among equal counts, the smallest pair (left id, then right id)
        pair = min(counts, key=lambda p: (-counts[p], p))
        new_id = 256 + step
        ids_per_chunk = [merge_pair(ids, pair, new_id) for ids in ids_per_chunk]
        merges.append(pair)
    return merges
