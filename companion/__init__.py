"""companion: the tested package behind "Build a Large Language Model from scratch".

Each chapter of the book builds a piece step by step and then imports the finished
piece from here, so that later chapters use one definition of every name.

The names used most often are exported here: ``GPTConfig``, ``GPTModel`` and
``pretrained`` (the course's trained models by name, from ``companion.course_models``).
Everything else is imported from the module that owns it, for example
``from companion.generate import generate``.
"""

from __future__ import annotations

from companion.config import GPTConfig
from companion.course_models import pretrained
from companion.model import GPTModel

__version__ = "0.1.0"

__all__ = ["GPTConfig", "GPTModel", "__version__", "pretrained"]
