"""What every whole run shares: its result, its key, the resume guard, a usage error.

* ``Pretrained``: what a run that makes a course model returns (model, tokenizer, facts).
* ``run_key(settings)``: a short hash of everything that determines a run.
* ``check_resume(folder, key, ...)``: the one resume guard. A run writes its key into its
  checkpoints; continuing in a folder that holds a checkpoint of another run is refused.
* ``UsageError``: bad input found after parsing; the command line prints it as
  ``companion: error: ...`` and exits with status 2.

The run-folder lock (one run per checkpoint folder) is taken by ``companion.train.train``
itself for as long as it trains, so every run that trains through it is covered.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from companion.checkpoint import find_checkpoint, read_checkpoint_info
from companion.config import GPTConfig
from companion.history import TrainHistory
from companion.model import GPTModel
from companion.runs.flags import UsageError

__all__ = ["Pretrained", "UsageError", "check_resume", "run_key"]


@dataclass
class Pretrained:
    """A trained course model with everything needed to use it.

    Attributes:
        model: The ``GPTModel``, in eval mode, on the CPU.
        tokenizer: Its tokenizer (``encode`` / ``decode``).
        config: ``model.config``.
        info: Facts about the run: ``"recipe"`` (its name), ``"recipe_key"``,
            ``"val_loss"`` (nats per token on the whole validation split),
            ``"val_nats_per_char"``, ``"val_bits_per_char"``, ``"train_seconds"``,
            ``"steps"``, ``"tokens_seen"``, ``"parameters"``, ``"source"``
            (``"trained"`` or ``"cache"``), ``"path"`` (the cache folder or ``None``).
        history: The ``TrainHistory`` of the run (for loss plots).
    """

    model: GPTModel
    tokenizer: Any
    config: GPTConfig
    info: dict[str, Any] = field(default_factory=dict)
    history: TrainHistory | None = None


def run_key(settings: Mapping[str, Any]) -> str:
    """A short hash of a run's settings (JSON data): equal settings, equal key."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _different_run(folder: str | os.PathLike[str]) -> str:
    return f"{os.fspath(folder)} holds a checkpoint of a different run (other model, data or settings)"


def check_resume(
    folder: str | os.PathLike[str] | None,
    key: str,
    *,
    resume: bool = True,
    key_of: Callable[[Mapping[str, Any]], Any] = lambda extra: extra.get("run_key"),
    hint: str = "start afresh (resume off) or choose another folder",
    error: type[Exception] = ValueError,
) -> bool:
    """The resume guard: may a run with key ``key`` continue in ``folder``?

    Returns ``True`` when the run will resume (there is a checkpoint of this run there),
    ``False`` when it starts afresh (no folder, no checkpoint, or ``resume`` off).

    Args:
        folder: The run's checkpoint folder (``None``: no checkpoints).
        key: The run's key, as the run writes it into its checkpoints' ``extra``.
        resume: Whether the run is asked to continue.
        key_of: Where the key is in a checkpoint's ``extra``.
        hint: What to do about it, for the message.
        error: The exception to raise (``UsageError`` on the command line).

    Raises:
        error: The folder holds a checkpoint of another run.
    """
    if folder is None or not resume or find_checkpoint(folder) is None:
        return False
    if key_of(read_checkpoint_info(folder)["extra"]) != key:
        raise error(f"{_different_run(folder)}; {hint}")
    return True
