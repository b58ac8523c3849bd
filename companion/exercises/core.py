"""The machinery the chapters' exercise modules share: a registry and ``check_exercise``.

An exercise is named ``<chapter>-<short name>`` (``ch05-adamw``); its chapter module
(``companion.exercises.ch05``) holds ``EXERCISES``, a dict from those names to
``Exercise`` records. A check is a function of the reader's answer that returns nothing
when the answer is right and raises ``AssertionError`` with a helpful message when it is
not; a stub that raises ``NotImplementedError`` counts as not attempted.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FAILED",
    "NOT_ATTEMPTED",
    "PASSED",
    "Exercise",
    "chapter_exercises",
    "check_exercise",
    "get_exercise",
    "run_check",
    "show_solution",
]

PASSED = "passed"
FAILED = "failed"
NOT_ATTEMPTED = "not attempted"


@dataclass(frozen=True)
class Exercise:
    """One checked coding exercise.

    Attributes:
        name: ``<chapter>-<short name>``, as the notebook's check cell writes it.
        answer: The name the reader's function or class has in the notebook.
        reference: The reference solution (what the book's solution drop-down shows).
        check: Takes an answer; raises ``AssertionError`` (with a message for the reader)
            when it is wrong, ``NotImplementedError`` when it is the stub.
        what: One line: what the reader writes.
    """

    name: str
    answer: str
    reference: Any
    check: Callable[[Any], None]
    what: str


def chapter_exercises(chapter: str) -> dict[str, Exercise]:
    """The checked exercises of one chapter (``"ch05"``, ``"appa"``), in the book's order.

    Raises:
        KeyError: No exercise module for that chapter.
    """
    if not chapter.replace("_", "").isalnum():
        raise KeyError(f"no exercises for chapter {chapter!r}")
    try:
        module = importlib.import_module(f"companion.exercises.{chapter}")
    except ModuleNotFoundError as err:
        if err.name != f"companion.exercises.{chapter}":
            raise
        raise KeyError(f"no exercises for chapter {chapter!r} (chapters are named like 'ch05' or 'appa')") from None
    exercises: Mapping[str, Exercise] = module.EXERCISES
    return dict(exercises)


def get_exercise(name: str) -> Exercise:
    """The exercise called ``name`` (``"ch05-adamw"``)."""
    chapter = name.split("-", 1)[0]
    exercises = chapter_exercises(chapter)
    if name not in exercises:
        known = ", ".join(exercises)
        raise KeyError(f"no exercise {name!r}; chapter {chapter} has {known}")
    return exercises[name]


def run_check(exercise: Exercise, answer: Any) -> str:
    """Run ``exercise``'s check on ``answer``: ``PASSED`` or ``NOT_ATTEMPTED``.

    Raises:
        AssertionError: The answer is wrong; the message names the exercise and what differs.
        Exception: Whatever the reader's code raised other than ``NotImplementedError``.
    """
    try:
        exercise.check(answer)
    except NotImplementedError:
        return NOT_ATTEMPTED
    except AssertionError as err:
        raise AssertionError(f"{exercise.name}: {err}") from None
    return PASSED


def check_exercise(name: str, answer: Any) -> None:
    """Check the reader's answer to exercise ``name`` and print one line about it.

    A right answer prints ``<name>: passed``. The untouched stub prints that it is not
    attempted yet and shows the check passing on the reference solution. A wrong answer
    raises ``AssertionError`` saying what differs. (``run_check`` returns the status
    instead of printing it.)
    """
    exercise = get_exercise(name)
    status = run_check(exercise, answer)
    if status == NOT_ATTEMPTED:
        run_check(exercise, exercise.reference)
        print(f"{name}: not attempted yet.\n  (The check, run on the reference solution instead: passed.)")
    else:
        print(f"{name}: passed")


class SolutionSource:
    """The source of a reference solution, shown by a notebook cell.

    Jupyter and the HTML book render it as a highlighted Python block (its Markdown form);
    its plain-text form, which ``nbval`` compares, is the source itself.
    """

    def __init__(self, source: str) -> None:
        self.source = source

    def __repr__(self) -> str:
        return self.source.rstrip("\n")

    def _repr_markdown_(self) -> str:
        return f"```python\n{self.source.rstrip()}\n```"


def show_solution(name: str) -> SolutionSource:
    """The reference solution of exercise ``name``, read from the installed package.

    A chapter's solution drop-down calls this, so the solution shows the same code in
    Jupyter, in Colab and in the HTML book, and it is always the code the check runs.
    """
    return SolutionSource(inspect.getsource(get_exercise(name).reference))
