"""companion: the tested package behind "Build a Large Language Model from scratch".

Each chapter of the book builds a piece step by step and then imports the finished
piece from here, so that later chapters use one definition of every name.

The names used most often are available at the top: ``GPTConfig``, ``GPTModel`` and
``pretrained`` (the course's trained models by name: the pretrained ones of
``companion.course_models`` and the fine-tuned ones of ``companion.runs.task_model``).
They are imported on first use, so ``import companion`` (or
``from companion.tokenizers import BPETokenizer``) does not load the training stack.
Everything else is imported from the module that owns it, for example
``from companion.generate import generate``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from companion.config import GPTConfig
    from companion.course_models import CourseRecipe, Pretrained
    from companion.model import GPTModel

try:
    __version__ = version("companion")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["GPTConfig", "GPTModel", "__version__", "list_models", "pretrained"]

_LAZY = {
    "GPTConfig": "companion.config",
    "GPTModel": "companion.model",
}


def pretrained(name: str | CourseRecipe = "shakespeare-small", **kwargs: Any) -> Pretrained:
    """A course model by name, pretrained or fine-tuned (``list_models()`` names them).

    Pretrained models come from ``companion.course_models.pretrained``; the fine-tuned
    ones (``companion.runs.task_model.RECIPES``) are loaded the same way, shipped or
    cached or trained. The keyword arguments are those of
    ``companion.course_models.pretrained`` (``progress``, ``cache_dir``, ``retrain``).
    """
    from companion import course_models
    from companion.runs import task_model

    if isinstance(name, str) and name in task_model.RECIPES:
        return course_models.pretrained(task_model.RECIPES[name], **kwargs)
    if isinstance(name, str) and name not in course_models.RECIPES:
        raise KeyError(f"unknown course model {name!r}; known models: {', '.join(list_models())}")
    return course_models.pretrained(name, **kwargs)


def list_models() -> list[str]:
    """The names ``pretrained`` knows: pretrained models first, then fine-tuned ones."""
    from companion import course_models
    from companion.runs import task_model

    return [*course_models.RECIPES, *task_model.RECIPES]


def __getattr__(name: str) -> Any:
    """Import ``GPTConfig`` and ``GPTModel`` from their modules on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'companion' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
