"""Run a chapter's checks on a reader's notebook or ``.py`` file (``python -m companion check``)."""

from __future__ import annotations

import json
import os
import runpy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from companion.exercises.core import FAILED, NOT_ATTEMPTED, chapter_exercises, run_check

__all__ = ["Result", "check_file", "check_namespace", "print_namespace_results"]

_MARKER = "companion-exercise-results:"


class Result(NamedTuple):
    """One exercise's outcome: ``status`` is passed, failed or not attempted."""

    name: str
    status: str
    reason: str = ""

    def line(self) -> str:
        """One line: the name, the status and, for a failure, the reason."""
        reason = " ".join(part.strip() for part in self.reason.splitlines() if part.strip())
        return f"{self.name}: {self.status}" + (f" — {reason}" if reason else "")


def check_namespace(chapter: str, namespace: Mapping[str, Any]) -> list[Result]:
    """Check every exercise of ``chapter`` on the names the reader's code defined."""
    results = []
    for name, exercise in chapter_exercises(chapter).items():
        if exercise.answer not in namespace:
            results.append(Result(name, NOT_ATTEMPTED, f"no {exercise.answer} defined"))
            continue
        try:
            results.append(Result(name, run_check(exercise, namespace[exercise.answer])))
        except AssertionError as err:
            results.append(Result(name, FAILED, str(err).removeprefix(f"{name}: ")))
        except Exception as err:  # the reader's code raised: say what
            results.append(Result(name, FAILED, f"{exercise.answer} raised {type(err).__name__}: {err}"))
    return results


def print_namespace_results(chapter: str, namespace: Mapping[str, Any]) -> None:
    """Print the results as one JSON line (what the notebook runner reads back)."""
    print(_MARKER + json.dumps([list(r) for r in check_namespace(chapter, namespace)]))


def _run_notebook(chapter: str, path: Path, timeout: int | None) -> list[Result]:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    code = ("from companion.exercises.runner import print_namespace_results\n"
            f"print_namespace_results({chapter!r}, globals())")
    notebook.cells.append(nbformat.v4.new_code_cell(code))
    client = NotebookClient(notebook, timeout=timeout, allow_errors=True, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    for output in notebook.cells[-1].get("outputs", []):
        for line in output.get("text", "").splitlines():
            if line.startswith(_MARKER):
                return [Result(*r) for r in json.loads(line.removeprefix(_MARKER))]
    raise RuntimeError(f"{path}: the checks did not run; the notebook's kernel said: {notebook.cells[-1].get('outputs')}")


def check_file(chapter: str, path: str | os.PathLike[str], *, timeout: int | None = None) -> list[Result]:
    """Run ``path`` (a notebook, every cell in order, or a ``.py`` file) and check ``chapter``'s exercises.

    A notebook runs in a fresh kernel from its own folder, as "Run all" would, going on
    past cells that raise (a wrong answer's check cell), so that every exercise is reported.

    Raises:
        FileNotFoundError: No such file.
        KeyError: No exercises for ``chapter``.
        ValueError: Neither ``.ipynb`` nor ``.py``.
    """
    file = Path(path)
    chapter_exercises(chapter)  # an unknown chapter fails before anything runs
    if not file.is_file():
        raise FileNotFoundError(f"no such file: {file}")
    if file.suffix == ".ipynb":
        return _run_notebook(chapter, file.resolve(), timeout)
    if file.suffix != ".py":
        raise ValueError(f"{file}: expected a notebook (.ipynb) or a Python file (.py)")
    try:
        namespace = runpy.run_path(str(file), run_name="__exercises__")
    except Exception as err:
        reason = f"{file.name} raised {type(err).__name__}: {err}"
        return [Result(name, FAILED, reason) for name in chapter_exercises(chapter)]
    return check_namespace(chapter, namespace)
