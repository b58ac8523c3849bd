"""companion: the tested package behind "Build a Large Language Model from scratch".

Each chapter of the book builds a piece step by step and then imports the finished
piece from here, so that later chapters use one definition of every name.
"""

from __future__ import annotations

from companion.config import GPTConfig
from companion.model import GPTModel

__version__ = "0.1.0"

__all__ = ["GPTConfig", "GPTModel", "__version__"]
