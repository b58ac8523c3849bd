"""The course's own pretrained models, by name: shipped with the package, or trained and cached.

Chapter 5 pretrains a small GPT on Shakespeare; chapters 3, 5, 6 and 7 then start from
that model. ``pretrained("shakespeare-small")`` returns it.

**The same model on every machine.** Training is deterministic on one machine, but a
reader's CPU (another instruction set, BLAS library or thread count) rounds the last
bits of float32 arithmetic differently, and thousands of steps amplify that into
visibly different probabilities and samples. So the weights the course's chapters use
ship inside the package (``companion/pretrained/<name>/``, a checkpoint folder of a few
MB, each file's SHA-256 recorded in ``SHIPPED``), together with the recipe that made
them. ``pretrained(name)`` loads them in a second, identical everywhere. A chapter that
*demonstrates* training retrains and checks the result against bounds that hold on any
machine; ``pretrained(name, retrain=True)`` trains the recipe on your machine.

**The registry.** This module keeps the course models' registry (``SHIPPED``, ``pretrained``,
``list_recipes``, the cache, ``ship``); the runs that make them live in ``companion.runs``
(``companion.runs.pretrain`` for these, ``companion.runs.task_model`` for the fine-tuned ones)
and their names are re-exported here (``Recipe``, ``RECIPES``, ``prepare_data``,
``train_recipe``, ``Pretrained``).

**Recipes.** A ``Recipe`` is the whole training run as data: the corpus, the validation
split, the tokenizer, the model's configuration, the batches, the optimizer and
schedule, the seed. Its ``cache_key`` hashes all of it (with the corpus's SHA-256 and
``RECIPE_FORMAT``). Shipped weights are used only if they were made by exactly the
current recipe; a recipe without shipped weights (or a changed one) is trained on first
use and kept in the model cache, again keyed by the recipe.

Environment variables:

* ``COMPANION_MODEL_DIR``: the model cache (default ``$XDG_CACHE_HOME/companion/models``
  or ``~/.cache/companion/models``); one checkpoint folder per model name.

Maintainers regenerate the shipped weights after changing a recipe with
``python -m companion.course_models ship shakespeare-small`` (it trains the recipe,
writes the folder and prints the hashes to record in ``SHIPPED``).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import torch

from companion.checkpoint import (
    CheckpointError,
    CheckpointNotFoundError,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from companion.files import cache_folder, sha256_of
from companion.losses import evaluate_text
from companion.model import num_parameters
from companion.runs.common import Pretrained
from companion.runs.pretrain import RECIPE_FORMAT, RECIPES, Recipe, RecipeData, prepare_data, train_recipe

__all__ = [
    "MODEL_DIR_ENV",
    "RECIPES",
    "RECIPE_FORMAT",
    "SHIPPED",
    "SHIPPED_DIR",
    "CourseRecipe",
    "Pretrained",
    "Recipe",
    "RecipeData",
    "ShippedModel",
    "list_recipes",
    "model_dir",
    "prepare_data",
    "pretrained",
    "train_recipe",
]

MODEL_DIR_ENV = "COMPANION_MODEL_DIR"
"""Name of the environment variable that sets the model cache folder."""

SHIPPED_DIR = Path(__file__).resolve().parent / "pretrained"
"""Where the package keeps the weights of its course models (one checkpoint folder each)."""


def model_dir() -> Path:
    """The model cache folder (it may not exist yet).

    ``$COMPANION_MODEL_DIR`` if set, else ``$XDG_CACHE_HOME/companion/models``, else
    ``~/.cache/companion/models``.
    """
    return cache_folder("models", MODEL_DIR_ENV)


def list_recipes() -> list[str]:
    """The names of the models ``pretrained`` knows."""
    return list(RECIPES)


class CourseRecipe(Protocol):
    """What ``pretrained`` and ``ship`` need of a recipe: a ``Recipe`` here, or a
    fine-tuning recipe such as ``companion.runs.task_model.TaskRecipe``."""

    @property
    def name(self) -> str: ...

    def cache_key(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...

    def run(self, *, progress: bool = True) -> Pretrained: ...


def _lookup(name: str | CourseRecipe) -> CourseRecipe:
    if not isinstance(name, str):
        return name
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown pretrained model {name!r}; known models: {', '.join(RECIPES)}") from None


# --------------------------------------------------------------------------- #
# The cache
# --------------------------------------------------------------------------- #
def pretrained(
    name: str | CourseRecipe = "shakespeare-small",
    *,
    progress: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    retrain: bool = False,
) -> Pretrained:
    """A course model by name: shipped with the package, from the model cache, or trained now.

    In that order: the weights shipped in ``SHIPPED_DIR`` if they were made by exactly
    this recipe (same ``cache_key``) and their hashes verify; else a cached copy made by
    this recipe; else the recipe is trained (deterministically on this machine, with a
    progress bar) and the result saved to the cache atomically. A cache that cannot be
    written (read-only, full disk) only costs a warning: the trained model is returned.

    Args:
        name: A name in ``RECIPES`` (``list_recipes()``), or a ``Recipe``.
        progress: Show progress bars while training; ``False`` is silent.
        cache_dir: The cache folder; ``None`` for ``model_dir()``.
        retrain: Train now on this machine even if shipped or cached weights exist
            (the result replaces the cached copy; shipped files are never changed).

    Returns:
        A ``Pretrained`` with the model in eval mode; ``info["source"]`` is
        ``"shipped"``, ``"cache"`` or ``"trained"``.

    Raises:
        KeyError: ``name`` is unknown (the message lists the known models).
    """
    recipe = _lookup(name)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else model_dir()
    folder = folder / recipe.name
    key = recipe.cache_key()
    if not retrain:
        for found in (_from_shipped(recipe.name, key, recipe), _from_cache(folder, key)):
            if found is not None:
                return found
    result = recipe.run(progress=progress)
    try:
        save_checkpoint(folder, result.model, step=result.info["steps"], history=result.history,
                        extra={"recipe": recipe.to_dict(), "recipe_key": key,
                               "info": {k: v for k, v in result.info.items() if k not in ("source", "path")}},
                        tokenizer=result.tokenizer)
        result.info["path"] = folder
    except (OSError, CheckpointError) as err:
        warnings.warn(f"could not save {recipe.name!r} to the model cache {folder}: {err}", stacklevel=2)
    return result


def _from_cache(folder: Path, key: str) -> Pretrained | None:
    """The cached model if it loads, its files match the hashes recorded when it was cached
    and its recipe key is ``key``, else ``None``."""
    try:
        recorded = read_checkpoint_info(folder)["meta"].get("sha256")
        if not recorded:
            raise CheckpointError(
                "it has no record of its files' SHA-256 (it was cached by an older companion), so a damaged "
                "file could not be told from a good one"
            )
        model, meta = load_checkpoint(folder)  # checks every file against its recorded hash
    except CheckpointNotFoundError:
        return None
    except CheckpointError as err:
        warnings.warn(f"the cached model in {folder} is unusable ({err}); retraining it", stacklevel=3)
        return None
    extra = meta["extra"]
    if extra.get("recipe_key") != key or meta["tokenizer"] is None or "info" not in extra:
        return None
    bad = [name for name, tensor in model.state_dict().items() if not bool(torch.isfinite(tensor).all())]
    if bad:
        warnings.warn(f"the cached model in {folder} is unusable (its weights {', '.join(bad[:3])} hold NaN "
                      "or infinite values); retraining it", stacklevel=3)
        return None
    model.eval()
    info = {**extra["info"], "source": "cache", "path": meta["path"]}
    return Pretrained(model, meta["tokenizer"], meta["config"], info, meta["history"])


# --------------------------------------------------------------------------- #
# Weights shipped with the package
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class ShippedModel:
    """The record of a course model whose weights ship with the package.

    Attributes:
        recipe_key: The ``cache_key`` of the recipe that made them.
        sha256: The SHA-256 of each file of its checkpoint folder, by file name.
    """

    recipe_key: str
    sha256: Mapping[str, str]


SHIPPED: Mapping[str, ShippedModel] = MappingProxyType(
    {
        "shakespeare-small": ShippedModel(
            recipe_key="a08aabc3c3e16c1e",
            sha256={
                "checkpoint.json": "f5e12e33c92af67c42510ae91c063aff32118f0f1d5643c4fa624c0ca4de91c7",
                "config.json": "012547885f62c88006bdbd6200dada01af199aedbe486afa5850d0c850dd2e48",
                "model.safetensors": "17b6816a04bebf8d7a564401f820707177d445dc7c5c55025bf421fd3647a3a7",
                "tokenizer.json": "c45c68c5264c46d909bf97170515dfba20e35de302e7a129908d86514f2c6941",
            },
        ),
        # companion.runs.task_model.RECIPES["shakespeare-tasks"] (chapter 7)
        "shakespeare-tasks": ShippedModel(
            recipe_key="61cf994497d7617a",
            sha256={
                "checkpoint.json": "0cf85c77640c89ff1b2e3fa24f7334e7724f24931e3d2132d4741171fb1553b5",
                "config.json": "012547885f62c88006bdbd6200dada01af199aedbe486afa5850d0c850dd2e48",
                "model.safetensors": "b6646f71128a4a7fc42c20555205affa3ca9fcc1ac038c7dfb3bf51c4e7850c5",
                "tokenizer.json": "c45c68c5264c46d909bf97170515dfba20e35de302e7a129908d86514f2c6941",
            },
        ),
    }
)
"""Course models whose weights ship in ``SHIPPED_DIR``, by name (read-only)."""


def _from_shipped(name: str, key: str, recipe: CourseRecipe | None = None) -> Pretrained | None:
    """The shipped model if its record matches ``key`` and every file verifies, else ``None``."""
    record = SHIPPED.get(name)
    folder = SHIPPED_DIR / name
    if record is None or record.recipe_key != key:
        return None
    if not folder.is_dir():
        warnings.warn(
            f"the shipped weights of {name!r} are missing (there is no folder {folder}): companion was "
            f"installed incompletely; reinstall it. Training the recipe on this machine instead "
            f"({_training_time(recipe or RECIPES.get(name))}); weights trained here differ from the book's "
            "in their last bits, so the chapters' stored outputs will not match exactly.",
            stacklevel=3,
        )
        return None
    for filename, expected in record.sha256.items():
        path = folder / filename
        actual = sha256_of(path) if path.is_file() else "missing"
        if actual != expected:
            warnings.warn(
                f"the shipped weights of {name!r} are damaged ({path} has SHA-256 {actual}, expected "
                f"{expected}); reinstall companion. Training the recipe on this machine instead.",
                stacklevel=3,
            )
            return None
    try:
        model, meta = load_checkpoint(folder)
    except CheckpointError as err:
        warnings.warn(f"the shipped weights of {name!r} do not load ({err}); training instead", stacklevel=3)
        return None
    model.eval()
    info = {**meta["extra"]["info"], "made_with": meta["extra"].get("made_with"), "source": "shipped", "path": folder}
    return Pretrained(model, meta["tokenizer"], meta["config"], info, meta["history"])


def _training_time(recipe: CourseRecipe | None) -> str:
    """How long training a recipe takes, as its description says (else "minutes")."""
    match = re.search(r"about [^;.()]*?(minutes?|hours?)[^;.()]*", getattr(recipe, "description", ""))
    return match.group(0).strip() if match else "it may take minutes"


def ship(
    name: str | CourseRecipe, folder: str | os.PathLike[str] | None = None, *, progress: bool = True
) -> ShippedModel:
    """Train a recipe and write its checkpoint where the package ships it (maintainers).

    A model of more than about a million parameters is stored in float16 to keep the
    package small (half the bytes; a relative rounding of 2^-11 per weight). The model
    then *is* the rounded one: it is loaded back into float32 the same way on every
    machine, and its validation figures in ``info`` are measured after the rounding.

    Args:
        name: A recipe in ``RECIPES`` (or a ``Recipe``).
        folder: Where to write the checkpoint folder; ``SHIPPED_DIR / name`` by default.
        progress: Show the training's progress bar.

    Returns:
        The ``ShippedModel`` record to put into ``SHIPPED``.
    """
    recipe = _lookup(name)
    result = recipe.run(progress=progress)
    target = Path(folder) if folder is not None else SHIPPED_DIR / recipe.name
    info = {k: v for k, v in result.info.items() if k not in ("source", "path")}
    model = result.model
    if num_parameters(model) > _SHIP_FLOAT32_LIMIT and isinstance(recipe, Recipe):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.copy_(parameter.half().float())
        final = evaluate_text(model, result.tokenizer, prepare_data(recipe, progress=False).val_text)
        info.update(val_loss=final.loss_per_token, val_nats_per_char=final.nats_per_char,
                    val_bits_per_char=final.bits_per_char, stored_as="float16")
        model = model.half()
    made_with = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }
    if target.exists():
        shutil.rmtree(target)
    save_checkpoint(target, model, history=result.history,
                    extra={"recipe": recipe.to_dict(), "recipe_key": recipe.cache_key(), "info": info,
                           "made_with": made_with},
                    tokenizer=result.tokenizer)
    hashes = {p.name: sha256_of(p) for p in sorted(target.iterdir()) if p.is_file()}
    return ShippedModel(recipe.cache_key(), hashes)


_SHIP_FLOAT32_LIMIT = 1_100_000
"""Above this many parameters ``ship`` stores float16 weights (a float32 file would pass ~4.5 MB)."""


if __name__ == "__main__":  # python -m companion.course_models ship NAME
    if len(sys.argv) != 3 or sys.argv[1] != "ship":
        sys.exit("usage: python -m companion.course_models ship NAME")
    record = ship(sys.argv[2])
    print(f"    {sys.argv[2]!r}: ShippedModel(\n        recipe_key={record.recipe_key!r},\n        sha256={{")
    for filename, digest in record.sha256.items():
        print(f"            {filename!r}: {digest!r},")
    print("        },\n    ),")
