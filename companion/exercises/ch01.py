"""Chapter 1's checked exercises: a sentence's probability, and a model with two words of context."""

from __future__ import annotations

import collections
import functools
import math
import re
from collections.abc import Callable

from companion.exercises.core import Exercise

__all__ = ["EXERCISES", "next_word_probabilities", "sentence_log_prob"]


@functools.cache
def verdict_words() -> tuple[str, ...]:
    """The words and marks of *The Verdict*, cut as chapter 1 cuts them."""
    from companion.data import read_text

    text = read_text("the-verdict", progress=False)
    return tuple(re.findall(r"[a-z']+|--|[^a-z'\s]", text.lower()))


@functools.cache
def _followers() -> dict[str, collections.Counter[str]]:
    words = verdict_words()
    followers: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for current, following in zip(words, words[1:]):
        followers[current][following] += 1
    return followers


# ---------------------------------------------------------------- reference solutions
def sentence_log_prob(sentence: list[str]) -> float:
    # in the notebook: the chapter's `followers`
    followers = _followers()
    log_prob = 0.0
    for previous, word in zip(sentence, sentence[1:]):
        counts = followers[previous]
        if counts[word] == 0:
            return -math.inf
        log_prob += math.log2(counts[word] / sum(counts.values()))
    return log_prob


def next_word_probabilities(words: list[str],
                            context: tuple[str, str]
                            ) -> dict[str, float]:
    counts: collections.Counter[str] = collections.Counter()
    # every three words in a row
    for a, b, c in zip(words, words[1:], words[2:]):
        if (a, b) == context:
            counts[c] += 1
    total = sum(counts.values())
    return {word: n / total for word, n in counts.items()}


# ---------------------------------------------------------------- checks
def _share_after(words: tuple[str, ...], a: str, b: str) -> float:
    after_a = [y for x, y in zip(words, words[1:]) if x == a]
    return after_a.count(b) / len(after_a)


def check_sentence_log_prob(fn: Callable[[list[str]], float]) -> None:
    words = verdict_words()
    got = fn(["jack"])
    assert got == 0.0, f"a one-word sentence predicts nothing: expected 0.0, got {got}"
    expected = math.log2(_share_after(words, "i", "had"))
    got = fn(["i", "had"])
    assert math.isclose(got, expected), (
        f"['i', 'had']: expected log2 of the share of 'had' among the words after 'i', {expected:.4f}, got {got}")
    first = list(words[:8])
    expected = sum(math.log2(_share_after(words, a, b)) for a, b in zip(first, first[1:]))
    got = fn(first)
    assert math.isclose(got, expected), (
        f"the story's first 8 words {first}: expected {expected:.4f} bits, got {got}; "
        "is every pair of neighbours counted once, in base 2?")
    got = fn(["the", "the"])
    assert got == -math.inf, f"'the' never follows 'the': expected -math.inf, got {got}"
    total = sum(2 ** fn(["at", w]) for w in set(words))
    assert math.isclose(total, 1.0), f"the probabilities of every word after 'at' must sum to 1, they sum to {total:.4f}"


def check_next_word_probabilities(fn: Callable[[list[str], tuple[str, str]], dict[str, float]]) -> None:
    tiny = "a b c a b d a b c x b c".split()
    got = fn(tiny, ("a", "b"))
    expected = {"c": 2 / 3, "d": 1 / 3}
    assert isinstance(got, dict), f"expected a dict from words to probabilities, got {type(got).__name__}"
    assert set(got) == set(expected) and all(math.isclose(got[w], p) for w, p in expected.items()), (
        f"in {' '.join(tiny)!r}, 'a b' is followed by c, d, c: expected {expected}, got {got} "
        "(only the words right after both context words count)")
    got = fn(tiny, ("x", "b"))
    assert set(got) == {"c"} and math.isclose(got["c"], 1.0), f"'x b' is followed by 'c' only: got {got}"
    got = fn(tiny, ("c", "c"))
    assert got == {}, f"'c c' never occurs: expected an empty dict, got {got}"
    words = list(verdict_words())
    for context in [("i", "had"), ("of", "the"), ("jack", "gisburn")]:
        got = fn(words, context)
        want = next_word_probabilities(words, context)
        assert set(got) == set(want), (
            f"after {context} in The Verdict: expected the words {sorted(want)}, got {sorted(got)}")
        for word, p in want.items():
            assert math.isclose(got[word], p), f"after {context}: p({word!r}) should be {p:.4f}, got {got[word]:.4f}"


EXERCISES = {
    "ch01-sentence-prob": Exercise(
        "ch01-sentence-prob", "sentence_log_prob", sentence_log_prob, check_sentence_log_prob,
        "the base-2 log-probability of a sentence under the bigram model"),
    "ch01-two-words": Exercise(
        "ch01-two-words", "next_word_probabilities", next_word_probabilities, check_next_word_probabilities,
        "the next word's probabilities given the two words before it"),
}
