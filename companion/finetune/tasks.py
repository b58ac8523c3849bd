"""Instructions whose answers a program can check: generated families, held out two ways.

Chapter 7, "Instructions a small model can follow", fine-tunes the course model on
tasks it can learn without knowing anything about the world, and measures whether it
*follows* the instruction rather than recalls an answer:

* ``FAMILIES``: the task families. Each has a skill (copying, selecting, transforming,
  counting, comparing, arithmetic), eight phrasings of its instruction for training and
  three others kept for the test, and ``answer``, the program that computes the right
  answer from the items.
* ``TaskItems``: the words the tasks are made of (from a text, such as the plays the
  model was pretrained on), split into training words and held-out words; numbers are
  held out by a fixed rule (``held_out_numbers``).
* ``make_tasks``: seeded records in the format of ``companion.finetune.instruction``
  (``instruction``, ``input``, ``output``, plus ``family``), for training or for a test
  on held-out items with held-out phrasings.
* ``check_answer``, ``evaluate_tasks``: exact match of the model's answer with the
  program's, per family; ``copy_baseline`` and ``lookup_baseline``: what answering
  without following the instruction scores.

The format keeps every item in the same tokens wherever it appears. An instruction ends
with a colon and its items ("Reverse the order of the words: king horse crown"), and an
answer is a short sentence with the items after a space ("Reversed: crown horse king").
In a byte-level BPE " crown" (with its space) and "crown" (at the start of a line) are
different tokens, so an answer that began with a bare item would ask the model to
translate between the two forms of a word it has never seen in fine-tuning.

Every random choice comes from ``random.Random(seed)``, the same on every machine and
Python version, so a seed names the same records everywhere.
"""

from __future__ import annotations

import collections
import hashlib
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from tqdm.auto import tqdm

from companion.finetune.instruction import PromptStyle, format_prompt, generate_response
from companion.metrics import token_f1
from companion.model import GPTModel

__all__ = [
    "FAMILIES",
    "LEADS",
    "TaskEvaluation",
    "TaskFamily",
    "TaskItems",
    "check_answer",
    "copy_baseline",
    "evaluate_tasks",
    "expected_answer",
    "held_out_numbers",
    "items_of",
    "lookup_baseline",
    "make_tasks",
    "per_family",
    "strip_lead",
]

Split = Literal["train", "test"]
Phrasings = Literal["train", "held_out", "all"]


# --------------------------------------------------------------------------- #
# The families
# --------------------------------------------------------------------------- #
def items_of(record: Mapping[str, str]) -> list[str]:
    """The items of a task record: the words or numbers after the instruction's last colon."""
    return record["instruction"].rpartition(": ")[2].split()


@dataclass(frozen=True)
class TaskFamily:
    """One kind of instruction.

    Attributes:
        name: Short name (a key of ``FAMILIES``).
        skill: What answering takes, in a word.
        kind: What the items are: ``"words"`` (two to five), ``"digits"`` (three to five
            different digits), ``"number"`` (one number from 10 to 99) or ``"pair"`` (two
            different numbers from 10 to 99).
        template: The answer's sentence, ``{}`` where the result goes.
        work: The program that computes the result from the items.
        phrasings: Ways of writing the instruction used in fine-tuning.
        held_out_phrasings: Other sentences, never seen in fine-tuning, for the test.
    """

    name: str
    skill: str
    kind: Literal["words", "digits", "number", "pair"]
    template: str
    work: Callable[[list[str]], str]
    phrasings: tuple[str, ...]
    held_out_phrasings: tuple[str, ...]

    def answer(self, items: list[str]) -> str:
        """The right answer for a list of items: the result in the answer's sentence."""
        return self.template.format(self.work(items))

    def __post_init__(self) -> None:
        if not self.phrasings or not self.held_out_phrasings:
            raise ValueError(f"family {self.name!r} needs training and held-out phrasings")
        if set(self.phrasings) & set(self.held_out_phrasings):
            raise ValueError(f"family {self.name!r}: a held-out phrasing is also a training phrasing")


def _family(name: str, skill: str, kind: str, template: str, work: Callable[[list[str]], str],
            phrasings: str, held_out: str) -> TaskFamily:
    def split(text: str) -> tuple[str, ...]:
        return tuple(p.strip() for p in text.split("|"))

    return TaskFamily(name, skill, kind, template, work, split(phrasings), split(held_out))  # type: ignore[arg-type]


FAMILIES: Mapping[str, TaskFamily] = MappingProxyType({
    family.name: family
    for family in (
        _family("first", "selecting", "digits", "The first number is {}.", lambda d: d[0],
                "What is the first number | Give the first number | Name the first number | "
                "Which number comes first | Tell me the first number | Write the first number of the list | "
                "Say the number that comes first | Show me the first number",
                "Tell me the number that comes first | Write the first number | Name the first number of the list"),
        _family("last", "selecting", "digits", "The last number is {}.", lambda d: d[-1],
                "What is the last number | Give the last number | Name the last number | "
                "Which number comes last | Tell me the last number | Write the last number of the list | "
                "Say the number that comes last | Show me the last number",
                "Tell me the number that comes last | Write the last number | Name the last number of the list"),
        _family("repeat", "copying", "number", "Twice: {}", lambda n: f"{n[0]} {n[0]}",
                "Repeat the number twice | Say the number twice | Write the number two times | "
                "Give the number two times | Repeat this number two times | Write this number twice | "
                "Say this number two times | Show me the number twice",
                "Give this number twice | Repeat the number two times | Show me this number two times"),
        _family("reverse", "transforming", "digits", "Reversed: {}", lambda d: " ".join(reversed(d)),
                "Reverse the order of the numbers | Write the numbers in reverse order | "
                "Give the numbers in reverse | List the numbers backwards | Say the numbers backwards | "
                "Reverse these numbers | Write these numbers backwards | Show me the numbers in reverse order",
                "Write these numbers in reverse order | Reverse the order of these numbers | "
                "Give the numbers backwards"),
        _family("count", "counting", "words", "There are {} words.", lambda w: str(len(w)),
                "How many words are there | Count the words | How many words does the list have | "
                "Give the number of words | Tell me how many words there are | Count these words | "
                "Say how many words you see | Write the number of words",
                "Tell me the number of words | Say how many words there are | How many words do you see"),
        _family("larger", "comparing", "pair", "The larger number is {}.", lambda n: str(max(map(int, n))),
                "Which number is larger | Give the larger number | Name the larger number | "
                "Which of the numbers is larger | Tell me the larger number | Write the larger of the numbers | "
                "Say which number is larger | Show me the larger number",
                "Tell me which number is larger | Name the larger of the numbers | Write the larger number"),
        _family("smaller", "comparing", "pair", "The smaller number is {}.", lambda n: str(min(map(int, n))),
                "Which number is smaller | Give the smaller number | Name the smaller number | "
                "Which of the numbers is smaller | Tell me the smaller number | Write the smaller of the numbers | "
                "Say which number is smaller | Show me the smaller number",
                "Tell me which number is smaller | Name the smaller of the numbers | Write the smaller number"),
        _family("sort", "sorting", "digits", "Sorted: {}", lambda d: " ".join(sorted(d)),
                "Sort the numbers | Sort the numbers from smallest to largest | Put the numbers in order | "
                "Order these numbers | Write the numbers in order | Give the numbers sorted | "
                "Sort these numbers, smallest first | List the numbers in order",
                "Sort these numbers | Put these numbers in order | Give the numbers in order"),
    )
})
"""The instruction families, by name (read-only)."""


# --------------------------------------------------------------------------- #
# Items: words and numbers, held out
# --------------------------------------------------------------------------- #
_WORD = re.compile(r"\b[a-z]{3,8}\b")


@dataclass(frozen=True)
class TaskItems:
    """The words of the tasks, split into training words and held-out words.

    Numbers need no list: a pair or list of numbers is held out when
    ``held_out_numbers`` says so, a rule that puts about one in five of them in the test.

    Attributes:
        train_words: Words that fine-tuning sees.
        test_words: Words it never sees, for the test.
    """

    train_words: tuple[str, ...]
    test_words: tuple[str, ...]

    def __post_init__(self) -> None:
        if set(self.train_words) & set(self.test_words):
            raise ValueError("a word is both a training word and a held-out word")
        for name in ("train_words", "test_words"):
            if len(getattr(self, name)) < 8:
                raise ValueError(f"{name} has {len(getattr(self, name))} words; the tasks need at least 8")

    @classmethod
    def from_text(
        cls,
        text: str,
        *,
        tokenizer: Any = None,
        min_count: int = 8,
        test_fraction: float = 0.2,
        seed: int = 0,
    ) -> TaskItems:
        """Words of 3 to 8 lower-case letters that occur at least ``min_count`` times in
        ``text``, shuffled with ``seed`` and cut into training and held-out words.

        Args:
            text: Where the words come from.
            tokenizer: If given, keep only the words it encodes, after a space, as one
                token (chapter 7 explains why).
            min_count: How often a word must occur.
            test_fraction: The share of words held out.
            seed: Seeds the split.

        Raises:
            ValueError: Too few words for the split, or ``test_fraction`` out of range.
        """
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction={test_fraction!r} must be between 0 and 1")
        counts = collections.Counter(_WORD.findall(text))
        words = sorted(w for w, c in counts.items() if c >= min_count)
        if tokenizer is not None:
            words = [w for w in words if len(tokenizer.encode(" " + w)) == 1]
        random.Random(seed).shuffle(words)
        k = round(len(words) * test_fraction)
        if min(k, len(words) - k) < 8:
            one_token = " (and are one token)" if tokenizer is not None else ""
            raise ValueError(
                f"the text has {len(words)} words of 3 to 8 letters that occur at least {min_count} times"
                f"{one_token}; "
                "the tasks need at least 8 training and 8 held-out words: use a longer text or a lower min_count"
            )
        return cls(train_words=tuple(sorted(words[k:])), test_words=tuple(sorted(words[:k])))


def held_out_numbers(numbers: Sequence[int]) -> bool:
    """Whether a number, pair or list belongs to the test: a fixed rule, true for about one
    in five of them, so a held-out number, pair or list is never seen in fine-tuning.

    The rule hashes the numbers (SHA-256 of their text), so that the held-out numbers share
    no digit pattern: a rule on the last digit would hide whole digits from fine-tuning.
    """
    digest = hashlib.sha256(" ".join(map(str, numbers)).encode()).digest()
    return digest[0] % 5 == 0


def _number_items(kind: str, rng: random.Random, split: Split) -> list[int]:
    while True:
        if kind == "digits":
            numbers = rng.sample(range(10), rng.randint(3, 5))
        elif kind == "number":
            numbers = [rng.randint(10, 99)]
        else:  # a pair
            numbers = rng.sample(range(10, 100), 2)
        if held_out_numbers(numbers) == (split == "test"):
            return numbers


LEADS: tuple[str, ...] = ("", "", "", "Please, ", "Now, ", "Okay, ", "Next, ", "Quick question: ")
"""Words that may open a training instruction ("" most often): they vary the wording without
changing the task, so that the model learns to look for the words that matter. Test
instructions have none."""


def _with_lead(phrasing: str, lead: str) -> str:
    return lead + phrasing[0].lower() + phrasing[1:] if lead else phrasing


def strip_lead(phrasing: str) -> str:
    """A training phrasing without its lead (``"Now, sort the numbers"`` -> ``"Sort the numbers"``)."""
    for lead in LEADS:
        if lead and phrasing.startswith(lead):
            rest = phrasing[len(lead):]
            return rest[0].upper() + rest[1:]
    return phrasing


def make_tasks(
    items: TaskItems,
    n_per_family: int,
    *,
    split: Split = "train",
    phrasings: Phrasings | None = None,
    families: Iterable[str] | None = None,
    seed: int = 0,
) -> list[dict[str, str]]:
    """Seeded instruction records of every family, shuffled (chapter 7).

    Args:
        items: The words to use.
        n_per_family: Records per family.
        split: ``"train"``: training words and numbers; ``"test"``: held-out ones only.
        phrasings: Which instructions: ``"train"`` (the training phrasings, in the training
            split opened by one of ``LEADS``),
            ``"held_out"`` (only phrasings never used in training) or ``"all"``.
            Default: ``"train"`` for the training split, ``"held_out"`` for the test.
        families: Names of ``FAMILIES`` to include (default: all).
        seed: Seeds every choice.

    Returns:
        Records with ``instruction`` (a phrasing, a colon and the items), an empty
        ``input``, ``output`` (the family's answer) and ``family``.

    Raises:
        ValueError: An unknown family, split or phrasings, or ``n_per_family < 1``.
    """
    if isinstance(n_per_family, bool) or not isinstance(n_per_family, int) or n_per_family < 1:
        raise ValueError(f"n_per_family={n_per_family!r} must be a positive integer")
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} must be 'train' or 'test'")
    phrasings = phrasings or ("train" if split == "train" else "held_out")
    if phrasings not in ("train", "held_out", "all"):
        raise ValueError(f"phrasings={phrasings!r} must be 'train', 'held_out' or 'all'")
    names = list(FAMILIES) if families is None else list(families)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown task families {unknown}; known: {', '.join(FAMILIES)}")
    words = items.train_words if split == "train" else items.test_words
    rng = random.Random(seed)
    records = []
    for name in names:
        family = FAMILIES[name]
        choices = {"train": family.phrasings, "held_out": family.held_out_phrasings,
                   "all": family.phrasings + family.held_out_phrasings}[phrasings]
        for _ in range(n_per_family):
            phrasing = rng.choice(choices)
            if split == "train":
                phrasing = _with_lead(phrasing, rng.choice(LEADS))
            if family.kind == "words":
                listed = rng.sample(words, rng.randint(2, 5))
            else:
                listed = [str(n) for n in _number_items(family.kind, rng, split)]
            records.append({"instruction": f"{phrasing}: {' '.join(listed)}", "input": "",
                            "output": family.answer(listed), "family": name})
    rng.shuffle(records)
    return records


# --------------------------------------------------------------------------- #
# Checking answers
# --------------------------------------------------------------------------- #
def expected_answer(record: Mapping[str, str]) -> str:
    """The right answer to a task record, computed from its items by its family's program
    (not read from the record's ``output``)."""
    return FAMILIES[record["family"]].answer(items_of(record))


def check_answer(record: Mapping[str, str], response: str) -> bool:
    """Whether ``response`` is the right answer to a task record: exact match with
    ``expected_answer`` (surrounding whitespace ignored)."""
    return response.strip() == expected_answer(record)


def per_family(records: Sequence[Mapping[str, str]], correct: Sequence[bool]) -> dict[str, float]:
    """The share of correct answers in each family (in ``FAMILIES`` order)."""
    if len(records) != len(correct):
        raise ValueError(f"{len(records)} records but {len(correct)} results")
    right: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    for record, ok in zip(records, correct, strict=True):
        total[record["family"]] += 1
        right[record["family"]] += bool(ok)
    return {name: right[name] / total[name] for name in FAMILIES if total[name]}


@dataclass
class TaskEvaluation:
    """A model's answers to task records, checked.

    Attributes:
        rows: One dict per record: ``family``, ``instruction``, ``input``, ``expected``,
            ``response``, ``correct``.
        accuracy: Exact match per family.
        mean: The mean of the families' exact match (each family counts the same).
    """

    rows: list[dict[str, Any]]
    accuracy: dict[str, float] = field(default_factory=dict)
    mean: float = 0.0


def evaluate_tasks(
    model: GPTModel,
    tokenizer: Any,
    records: Sequence[Mapping[str, str]],
    *,
    style: PromptStyle = "compact",
    max_new_tokens: int = 24,
    progress: bool = False,
) -> TaskEvaluation:
    """Answer every task greedily and check each answer exactly (chapter 7).

    Raises:
        ValueError: ``records`` is empty.
    """
    if not records:
        raise ValueError("no task records to evaluate")
    rows = []
    for record in tqdm(records, desc="answering", disable=not progress):
        response = generate_response(model, tokenizer, record, style=style, max_new_tokens=max_new_tokens)
        rows.append({"family": record["family"], "instruction": record["instruction"], "input": record["input"],
                     "expected": expected_answer(record), "response": response.text,
                     "correct": check_answer(record, response.text)})
    accuracy = per_family(records, [row["correct"] for row in rows])
    return TaskEvaluation(rows, accuracy, sum(accuracy.values()) / len(accuracy))


def copy_baseline(records: Sequence[Mapping[str, str]]) -> dict[str, float]:
    """Exact match per family of copying the items unchanged into the family's answer
    (``"Reversed: king horse crown"``): the form of the answer without its work."""
    return per_family(records, [check_answer(r, _copied(r)) for r in records])


def _copied(record: Mapping[str, str]) -> str:
    return FAMILIES[record["family"]].template.format(" ".join(items_of(record)))


def lookup_baseline(
    records: Sequence[Mapping[str, str]], train_records: Sequence[Mapping[str, str]], *, style: PromptStyle = "compact"
) -> dict[str, float]:
    """Exact match per family of answering with the output of the most similar training
    prompt (token F1 between whole prompts): recall without following."""
    prompts = [format_prompt(t, style) for t in train_records]
    answers = []
    for record in records:
        prompt = format_prompt(record, style)
        best = max(range(len(prompts)), key=lambda i: token_f1(prompts[i], prompt).fmeasure)
        answers.append(check_answer(record, train_records[best]["output"]))
    return per_family(records, answers)
