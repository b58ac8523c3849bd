"""Chapter 7's checked exercises: ROUGE-N, and the nearest-neighbour lookup baseline."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from companion.exercises.core import Exercise
from companion.finetune.instruction import format_prompt
from companion.metrics import token_f1

__all__ = ["EXERCISES", "nearest_answer", "rouge_n"]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


# ---------------------------------------------------------------- reference solutions
def rouge_n(answer: str, reference: str, n: int) -> float:
    def ngrams(text: str) -> Counter[tuple[str, ...]]:
        w = _words(text)
        starts = range(len(w) - n + 1)
        return Counter(tuple(w[i:i + n]) for i in starts)

    a, r = ngrams(answer), ngrams(reference)
    common = sum((a & r).values())  # each n-gram as often as in both
    if common == 0:
        return 0.0
    precision = common / sum(a.values())
    recall = common / sum(r.values())
    return 2 * precision * recall / (precision + recall)


def nearest_answer(record: Mapping[str, str],
                   train_records: Sequence[Mapping[str, str]]
                   ) -> str:
    prompt = format_prompt(record, "compact")
    best = max(train_records, key=lambda t: token_f1(
        format_prompt(t, "compact"), prompt).fmeasure)
    return best["output"]


# ---------------------------------------------------------------- checks
def check_rouge_n(fn: Callable[[str, str, int], float]) -> None:
    def close(got: Any, want: float, case: str) -> None:
        assert isinstance(got, float | int), f"{case}: return a number, got {type(got).__name__}"
        assert abs(got - want) < 1e-9, f"{case}: expected {want:.4f}, got {got:.4f}"

    close(fn("the cat sat", "the cat sat down", 2), 0.8,
          "bigrams of 'the cat sat' against 'the cat sat down' (2 shared; precision 2/2, recall 2/3)")
    close(fn("dog bites man", "man bites dog", 2), 0.0,
          "'dog bites man' against 'man bites dog' share no bigram (order matters for n > 1)")
    close(fn("one", "one", 2), 0.0, "'one' has no bigram at all: return 0, not an error")
    close(fn("a a a", "a a", 2), 2 * (1 / 2) * 1 / (1 / 2 + 1),
          "'a a a' against 'a a': the bigram 'a a' occurs twice in one and once in the other, so it "
          "counts once (the smaller count), not twice")
    close(fn("The Cat, sat!", "the cat sat", 3), 1.0,
          "case and punctuation: use the chapter's words() tokenization (lower case, letters and digits)")
    for a, r in [("The capital of France is Paris.", "Paris is the capital of France."),
                 ("a b c a", "a c c b")]:
        close(fn(a, r, 1), token_f1(a, r).fmeasure, f"n=1 must equal token F1 ({a!r} against {r!r})")


def check_nearest_answer(fn: Callable[[Mapping[str, str], Sequence[Mapping[str, str]]], str]) -> None:
    train = [
        {"instruction": "What is the capital of France?", "input": "", "output": "Paris."},
        {"instruction": "Give a synonym for happy.", "input": "", "output": "Glad."},
        {"instruction": "Translate to French.", "input": "good morning", "output": "Bonjour."},
        {"instruction": "Translate to French.", "input": "thank you", "output": "Merci."},
    ]
    cases = [
        ({"instruction": "What is the capital of Italy?", "input": "", "output": "Rome."}, "Paris.",
         "the most similar training prompt asks for a capital"),
        ({"instruction": "Translate to French.", "input": "thank you very much", "output": "Merci beaucoup."},
         "Merci.", "two training prompts share the instruction; the input decides (compare whole prompts, "
                   "instruction and input)"),
        ({"instruction": "Give a synonym for sad.", "input": "", "output": "Unhappy."}, "Glad.",
         "answer with the training record's output, not its prompt"),
    ]
    for record, want, why in cases:
        got = fn(record, train)
        assert got == want, (
            f"for {record['instruction']!r} (input {record['input']!r}) the lookup should answer {want!r}: "
            f"{why}; got {got!r}")
    assert fn(train[2], train) == "Bonjour.", "a training record itself must find its own answer"


EXERCISES = {
    "ch07-rouge-n": Exercise("ch07-rouge-n", "rouge_n", rouge_n, check_rouge_n,
                             "ROUGE-N: the F-measure of shared n-grams"),
    "ch07-nearest": Exercise("ch07-nearest", "nearest_answer", nearest_answer, check_nearest_answer,
                             "a lookup baseline: the answer of the most similar training prompt"),
}
