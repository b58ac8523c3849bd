"""Tests for companion.metrics: known answers worked out by hand, and agreement with
Google's ``rouge-score`` package (the reference implementation of ROUGE) on many pairs."""

from __future__ import annotations

import itertools
import json
import os
import random
from fractions import Fraction
from pathlib import Path

import pytest

from companion.metrics import Score, lcs_length, mean_scores, rouge_l, token_f1, words

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")

REPO_ROOT = Path(__file__).resolve().parents[1]

# Sentences written for this test: punctuation, contractions, digits, capitals, repeats,
# non-ASCII letters, and pairs that share words in a different order.
SENTENCES = [
    "The capital of France is Paris.",
    "Paris is the capital of France.",
    "The cat sat on the mat, and the cat slept.",
    "A mat sat on the cat?",
    "Don't count your chickens before they've hatched!",
    "It's 3:45 pm; the train leaves at 4 o'clock.",
    "H2O is the chemical formula for water.",
    "The chemical formula of water is H2O.",
    "Café au lait costs €3.50 in Zürich — naïvely cheap.",
    "Rewrite the sentence: 'He go to the park every day.'",
    "He goes to the park every day.",
    "The opposite of 'hot' is 'cold'.",
    "Cold.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "   Leading and trailing   spaces\tand\ttabs\n",
    "UPPER lower MiXeD 42 42 42",
    "1. Wash 2. Rinse 3. Repeat",
    "",
    "!!! ??? ...",
    "Romeo, Romeo, wherefore art thou Romeo?",
]


def frac_score(matched: int, n_pred: int, n_ref: int) -> tuple[float, float, float]:
    """Precision, recall and F from counts, in exact fractions (an independent derivation)."""
    if matched == 0:
        return 0.0, 0.0, 0.0
    p, r = Fraction(matched, n_pred), Fraction(matched, n_ref)
    return float(p), float(r), float(2 * p * r / (p + r))


def as_tuple(score: Score) -> tuple[float, float, float]:
    return score.precision, score.recall, score.fmeasure


# --------------------------------------------------------------------------- #
# Known answers, worked out by hand
# --------------------------------------------------------------------------- #
def test_words_follows_rouge_scores_rules() -> None:
    assert words("Don't stop!") == ["don", "t", "stop"]
    assert words("Café au lait, 3.50") == ["caf", "au", "lait", "3", "50"]
    assert words("  ") == []
    assert words("H2O\tis\nWATER") == ["h2o", "is", "water"]


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("abcde", "ace", 3),
        ("abc", "abc", 3),
        ("abc", "def", 0),
        ("", "abc", 0),
        ("abcbdab", "bdcaba", 4),  # the textbook example (Cormen et al.): e.g. "bcba"
        ("aaaa", "aa", 2),
        ("xyz", "zyx", 1),
    ],
)
def test_lcs_length_known_answers(a: str, b: str, expected: int) -> None:
    assert lcs_length(list(a), list(b)) == expected
    assert lcs_length(list(b), list(a)) == expected  # symmetric


def test_lcs_length_matches_brute_force() -> None:
    """On short sequences, the longest subsequence of a that is also one of b, by enumeration."""

    def is_subsequence(sub: tuple[str, ...], seq: list[str]) -> bool:
        it = iter(seq)
        return all(x in it for x in sub)  # consumes the iterator: order is respected

    rng = random.Random(1)
    for _ in range(200):
        a = [rng.choice("abc") for _ in range(rng.randint(0, 7))]
        b = [rng.choice("abc") for _ in range(rng.randint(0, 7))]
        best = max(
            (k for k in range(len(a) + 1) for sub in itertools.combinations(a, k) if is_subsequence(sub, b)),
            default=0,
        )
        assert lcs_length(a, b) == best, (a, b)


def test_rouge_l_known_answers() -> None:
    # LCS "the cat on mat": 4 of 6 words in each
    assert as_tuple(rouge_l("the cat sat on a mat", "the cat was on the mat")) == frac_score(4, 6, 6)
    # the same words in reverse order share only one word in order
    assert as_tuple(rouge_l("c b a", "a b c")) == frac_score(1, 3, 3)
    # a prediction that is a prefix of the reference: all precision, half the recall
    assert as_tuple(rouge_l("Paris is", "Paris is the capital")) == frac_score(2, 2, 4)
    # case and punctuation do not matter
    assert rouge_l("PARIS!!", "paris").fmeasure == 1.0
    # no common word, or an empty side: all zero
    assert as_tuple(rouge_l("yes", "no")) == (0.0, 0.0, 0.0)
    assert as_tuple(rouge_l("", "no")) == (0.0, 0.0, 0.0)
    assert as_tuple(rouge_l("...", "")) == (0.0, 0.0, 0.0)


def test_token_f1_known_answers() -> None:
    assert as_tuple(token_f1("the cat sat", "the cat sat down")) == frac_score(3, 3, 4)
    # order does not matter for a bag of words (unlike ROUGE-L)
    assert token_f1("c b a", "a b c").fmeasure == 1.0
    # a repeated word matches only as often as the reference has it
    assert as_tuple(token_f1("the the the", "the cat")) == frac_score(1, 3, 2)
    assert as_tuple(token_f1("cold cold", "cold cold hot")) == frac_score(2, 2, 3)
    assert as_tuple(token_f1("", "")) == (0.0, 0.0, 0.0)


def test_rouge_l_is_never_above_token_f1() -> None:
    """An in-order common subsequence is also a common bag of words."""
    for a, b in itertools.product(SENTENCES, repeat=2):
        assert rouge_l(a, b).fmeasure <= token_f1(a, b).fmeasure + 1e-12


def test_mean_scores() -> None:
    result = mean_scores(["the cat sat", "c b a"], ["the cat sat down", "a b c"])
    assert result["token_f1"] == pytest.approx((6 / 7 + 1.0) / 2)
    assert result["rouge_l"] == pytest.approx((6 / 7 + 1 / 3) / 2)
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        mean_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no predictions"):
        mean_scores([], [])


# --------------------------------------------------------------------------- #
# Agreement with rouge-score
# --------------------------------------------------------------------------- #
def check_against_rouge_score(pairs: list[tuple[str, str]]) -> None:
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)
    for prediction, reference in pairs:
        theirs = scorer.score(reference, prediction)  # rouge-score: (target, prediction)
        for ours, name in ((rouge_l(prediction, reference), "rougeL"), (token_f1(prediction, reference), "rouge1")):
            expected = theirs[name]
            assert ours.precision == pytest.approx(expected.precision, abs=1e-12), (name, prediction, reference)
            assert ours.recall == pytest.approx(expected.recall, abs=1e-12), (name, prediction, reference)
            assert ours.fmeasure == pytest.approx(expected.fmeasure, abs=1e-12), (name, prediction, reference)


def test_agrees_with_rouge_score_on_written_sentences() -> None:
    check_against_rouge_score(list(itertools.product(SENTENCES, repeat=2)))


def test_agrees_with_rouge_score_on_random_texts() -> None:
    """Seeded random texts from a small vocabulary (so they share words), with case,
    punctuation, digits and non-ASCII characters mixed in."""
    rng = random.Random(2024)
    vocab = ["the", "The", "cat", "CAT", "sat", "on", "a", "mat", "42", "x1", "naïve", "don't", "end."]
    separators = [" ", "  ", ", ", "! ", "\n", " - ", "…"]

    def text() -> str:
        n = rng.randint(0, 14)
        return "".join(rng.choice(vocab) + rng.choice(separators) for _ in range(n))

    check_against_rouge_score([(text(), text()) for _ in range(500)])


def test_agrees_with_rouge_score_on_instruction_data() -> None:
    """Real answers of the course's instruction data, each against a few others (seeded)."""
    folder = Path(os.environ.get("COMPANION_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")
    path = folder / "instruction-data.json"
    if not path.is_file():
        pytest.skip(f"{path} not found (set COMPANION_SHARED_DATA to the folder that holds the course data)")
    outputs = [record["output"] for record in json.loads(path.read_text(encoding="utf-8"))]
    rng = random.Random(7)
    pairs = [(rng.choice(outputs), rng.choice(outputs)) for _ in range(300)]
    pairs += [(o, o) for o in outputs[:20]]  # identical texts score 1
    check_against_rouge_score(pairs)
