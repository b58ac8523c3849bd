"""The one loader of a base model, for every fine-tuning run.

``load_base_model(base)`` takes a course model by name (``companion.course_models``), a
GPT-2 model by name (its weights downloaded on first use) or a checkpoint folder that
holds its tokenizer; ``base_identity(base)`` says what identifies those weights, for a
run's key (a recipe's key, a checkpoint's hash, a name).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from companion.checkpoint import MODEL_FILE, find_checkpoint, load_checkpoint
from companion.course_models import RECIPES, pretrained
from companion.files import sha256_of
from companion.model import GPTModel
from companion.runs.task_model import RECIPES as TASK_RECIPES
from companion.weights import GPT2_CHECKPOINTS

__all__ = ["base_identity", "load_base_model", "load_policy_and_reference"]


def load_base_model(base: str | os.PathLike[str], *, progress: bool = False) -> tuple[GPTModel, Any]:
    """A pretrained model and its tokenizer, by name or checkpoint folder (chapters 6 and 7).

    ``base`` is the name of a course model (``companion.list_models()``: the pretrained
    ones of ``companion.course_models.RECIPES`` and the fine-tuned ones of
    ``companion.runs.task_model.RECIPES``) or of a GPT-2 preset, whose weights are downloaded on first use (``"gpt2-small"``, ...), or
    a ``Path`` to a checkpoint folder that holds its tokenizer.

    Args:
        base: The model.
        progress: Show a progress bar if a course model has to be trained first.

    Raises:
        ValueError: The name is unknown, there is no checkpoint there, or the
            checkpoint has no tokenizer.
    """
    if isinstance(base, str):
        if base in RECIPES:
            result = pretrained(base, progress=progress)
            return result.model, result.tokenizer
        fine_tuned = _fine_tuned_recipes()
        if base in fine_tuned:
            result = pretrained(fine_tuned[base], progress=progress)
            return result.model, result.tokenizer
        if base in GPT2_CHECKPOINTS:
            from companion import weights
            from companion.tokenizers import gpt2_tokenizer

            return weights.load_pretrained_gpt2(base, drop_rate=0.0), gpt2_tokenizer()
        raise ValueError(f"{base!r} is neither a course model ({', '.join([*RECIPES, *fine_tuned])}) nor a GPT-2 model "
                         f"({', '.join(GPT2_CHECKPOINTS)}); pass a checkpoint folder as a Path")
    if find_checkpoint(base) is None:
        raise ValueError(f"there is no checkpoint at {os.fspath(base)}")
    model, info = load_checkpoint(base)
    if info["tokenizer"] is None:
        raise ValueError(f"the checkpoint {os.fspath(base)} holds no tokenizer; fine-tuning needs the model's own")
    return model, info["tokenizer"]


def load_policy_and_reference(base: str | os.PathLike[str], *, progress: bool = False) -> tuple[GPTModel, GPTModel, Any]:
    """``load_base_model`` for an alignment run (chapter 8): the policy to train, a frozen copy
    of it as the reference (eval mode, no gradients), and the tokenizer."""
    policy, tokenizer = load_base_model(base, progress=progress)
    return policy, copy.deepcopy(policy).eval().requires_grad_(False), tokenizer


def base_identity(base: str | os.PathLike[str]) -> str:
    """What identifies a base model's weights: ``"name:<recipe key>"`` for a course model,
    ``"checkpoint:<SHA-256 of its weights>"`` for a folder, else the name."""
    if isinstance(base, str):
        recipe = RECIPES.get(base) or _fine_tuned_recipes().get(base)
        return f"{base}:{recipe.cache_key()}" if recipe is not None else base
    folder = find_checkpoint(base)
    return f"checkpoint:{sha256_of(Path(folder or base) / MODEL_FILE)}"


def _fine_tuned_recipes() -> dict[str, Any]:
    return dict(TASK_RECIPES)
