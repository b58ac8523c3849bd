"""Exercises whose checks run the reader's code (the "Exercises" section of every chapter).

A chapter's exercise gives the reader a stub (a signature and a docstring that raises
``NotImplementedError``) and a check cell::

    check_exercise("ch05-adamw", adamw_step)

The check runs the reader's function. While it is still the stub, the check says so and
runs itself on the reference solution instead, so that "Run all" passes before the reader
has written a line; a wrong answer raises ``AssertionError`` with a message that says what
differs. The reference solutions and the checks live here, one module per chapter
(``ch01`` ... ``appb``), off the notebook's Run-all path; each solution drop-down shows the
reference's source with ``show_solution(name)``. ``python -m companion check ch05 notebook.ipynb``
runs all of a chapter's checks on a reader's notebook or ``.py`` file.
"""

from __future__ import annotations

from companion.exercises.core import (
    FAILED,
    NOT_ATTEMPTED,
    PASSED,
    Exercise,
    chapter_exercises,
    check_exercise,
    get_exercise,
    run_check,
    show_solution,
)

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
