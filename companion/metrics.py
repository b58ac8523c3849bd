"""Reference-based text metrics: how much of a reference answer a generated answer contains.

Chapter 7, "Scoring answers against references", builds these to evaluate a model
fine-tuned to follow instructions, offline and without a judge:

* ``words``: the tokenization both metrics share (lower case, runs of ASCII letters and
  digits), the one of Google's ``rouge-score`` package without stemming.
* ``token_f1``: the F1 of the two bags of words (counts clipped): the harmonic mean of
  the share of the answer's words found in the reference (precision) and of the
  reference's words found in the answer (recall). It equals ROUGE-1's F-measure.
* ``rouge_l``: the F-measure of the longest common subsequence (LCS) of the two word
  sequences (Lin, 2004), which, unlike a bag of words, rewards words in the right order.
* ``mean_scores``: both metrics averaged over many pairs.

Both return a ``Score`` (precision, recall, F-measure) between 0 and 1; when either text
has no words, all three are 0, as in ``rouge-score``. The tests compare every function
with ``rouge-score`` (``rouge1`` and ``rougeL``) on hand-computed cases and on many
random and real pairs.

Argument order: ``(prediction, reference)``, as in most evaluation libraries;
``rouge_score.RougeScorer.score`` takes them the other way round, ``(target, prediction)``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Score", "lcs_length", "mean_scores", "rouge_l", "token_f1", "words"]

_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Score:
    """How well a prediction matches a reference, each between 0 and 1.

    Attributes:
        precision: Matched words divided by the prediction's words.
        recall: Matched words divided by the reference's words.
        fmeasure: Their harmonic mean ``2PR / (P + R)`` (0 when both are 0).
    """

    precision: float
    recall: float
    fmeasure: float


def words(text: str) -> list[str]:
    """Lower-case the text and keep its runs of ASCII letters and digits.

    ``"Don't stop!"`` gives ``["don", "t", "stop"]``. This is ``rouge-score``'s default
    tokenization (``use_stemmer=False``): every other character, accented letters
    included, separates words.
    """
    return _WORD.findall(text.lower())


def _score(matched: int, n_prediction: int, n_reference: int) -> Score:
    if matched == 0:  # also covers an empty prediction or reference
        return Score(0.0, 0.0, 0.0)
    precision = matched / n_prediction
    recall = matched / n_reference
    return Score(precision, recall, 2 * precision * recall / (precision + recall))


def token_f1(prediction: str, reference: str) -> Score:
    """Precision, recall and F1 of the words two texts share, counted with multiplicity.

    A word that appears twice in the prediction and once in the reference matches once.
    The order of the words does not matter (for that, see ``rouge_l``).

    Example: prediction "the cat sat", reference "the cat sat down" share 3 words:
    precision 3/3, recall 3/4, F1 6/7.
    """
    pred, ref = words(prediction), words(reference)
    matched = sum((Counter(pred) & Counter(ref)).values())  # min of the two counts, per word
    return _score(matched, len(pred), len(ref))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two sequences.

    A subsequence keeps the order of the items but may skip some: ``"a c"`` is one of
    ``"a b c"``. Dynamic programming: after reading ``a[:i]``, ``row[j]`` is the LCS length
    of ``a[:i]`` and ``b[:j]``; each new item of ``a`` extends a diagonal match or keeps
    the better of the two neighbours. ``O(len(a) * len(b))`` time, ``O(len(b))`` memory.
    """
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0  # the value of row[j - 1] before this item of a updated it
        for j, y in enumerate(b, start=1):
            above = row[j]
            row[j] = diagonal + 1 if x == y else max(above, row[j - 1])
            diagonal = above
    return row[-1]


def rouge_l(prediction: str, reference: str) -> Score:
    """ROUGE-L: precision, recall and F-measure of the longest common subsequence of words.

    Lin (2004), "ROUGE: A package for automatic evaluation of summaries", with
    ``beta = 1`` (precision and recall weigh the same), as ``rouge-score`` computes it.

    Example: prediction "the cat sat on a mat", reference "the cat was on the mat": the
    LCS "the cat on mat" has 4 words: precision 4/6, recall 4/6, F-measure 2/3.
    """
    pred, ref = words(prediction), words(reference)
    return _score(lcs_length(pred, ref), len(pred), len(ref))


def mean_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """The mean ROUGE-L and token F1 F-measures over pairs of texts.

    Returns:
        ``{"rouge_l": ..., "token_f1": ...}``.

    Raises:
        ValueError: The two lists differ in length, or are empty.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references: give one per prediction")
    if not predictions:
        raise ValueError("no predictions to score")
    n = len(predictions)
    return {
        "rouge_l": sum(rouge_l(p, r).fmeasure for p, r in zip(predictions, references, strict=True)) / n,
        "token_f1": sum(token_f1(p, r).fmeasure for p, r in zip(predictions, references, strict=True)) / n,
    }
