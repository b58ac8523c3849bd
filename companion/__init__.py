"""companion: the tested package behind "Build a Large Language Model from scratch".

Each chapter of the book builds a piece step by step and then imports the finished
piece from here, so that later chapters use one definition of every name.

The names used most often are available at the top: ``GPTConfig``, ``GPTModel`` and
``pretrained`` (the course's trained models by name, from ``companion.course_models``).
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
    from companion.course_models import pretrained
    from companion.model import GPTModel

try:
    __version__ = version("companion")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["GPTConfig", "GPTModel", "__version__", "pretrained"]

_LAZY = {
    "GPTConfig": "companion.config",
    "GPTModel": "companion.model",
    "pretrained": "companion.course_models",
}


def __getattr__(name: str) -> Any:
    """Import ``GPTConfig``, ``GPTModel`` and ``pretrained`` from their modules on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'companion' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
