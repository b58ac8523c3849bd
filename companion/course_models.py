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

import dataclasses
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader

from companion import distributed
from companion.checkpoint import (
    CheckpointError,
    CheckpointNotFoundError,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from companion.config import GPTConfig
from companion.data import DATASETS, SlidingWindowDataset, read_text
from companion.files import cache_folder, sha256_of
from companion.fused import HeadImpl
from companion.history import TrainHistory
from companion.losses import evaluate_text
from companion.model import GPTModel, num_parameters
from companion.optim import configure_optimizer
from companion.precision import Precision
from companion.tokenizers import BPETokenizer, encode_text, gpt2_tokenizer
from companion.train import TrainOptions, train

__all__ = [
    "MODEL_DIR_ENV",
    "RECIPES",
    "RECIPE_FORMAT",
    "SHIPPED",
    "SHIPPED_DIR",
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

RECIPE_FORMAT = 2
"""Part of every cache key: bump it when a change to the training code changes what a
recipe produces, so that every cached model is retrained."""

SHIPPED_DIR = Path(__file__).resolve().parent / "pretrained"
"""Where the package keeps the weights of its course models (one checkpoint folder each)."""

_TOKENIZERS = ("bpe", "gpt2")
_GPT2_VOCAB = 50_257


def model_dir() -> Path:
    """The model cache folder (it may not exist yet).

    ``$COMPANION_MODEL_DIR`` if set, else ``$XDG_CACHE_HOME/companion/models``, else
    ``~/.cache/companion/models``.
    """
    return cache_folder("models", MODEL_DIR_ENV)


# --------------------------------------------------------------------------- #
# Recipes
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Recipe:
    """Everything that determines a pretrained model, as data.

    Attributes:
        name: The model's name (its folder in the cache).
        config: The model's ``GPTConfig``; ``config.vocab_size`` is the tokenizer's
            size and ``config.context_length`` the length of the training windows.
        data: A course data file (a key of ``companion.data.DATASETS``) or the path
            of a UTF-8 text file.
        val_fraction: The last fraction of the text (in characters) held out for
            validation; the tokenizer and the model see only the rest.
        tokenizer: ``"bpe"``: a byte-level BPE of ``config.vocab_size`` tokens trained
            on the training split (``BPETokenizer.train``) and saved with the model;
            ``"gpt2"``: GPT-2's tokenizer (``config.vocab_size`` must be 50,257).
        batch_size: Windows per step. The windows start at every token of the
            training split (stride 1), in an order drawn from ``seed``.
        steps: Optimizer steps.
        lr: Peak learning rate.
        min_lr: End of the cosine decay; ``None`` for a constant rate after warmup.
        warmup_steps: Steps of linear warmup.
        weight_decay: AdamW weight decay of the matrices.
        betas: AdamW betas.
        grad_clip: Global gradient-norm clip; ``None`` for none.
        gpt2_init: Initialise with ``init_gpt2_weights`` (else PyTorch's defaults).
        seed: Seeds the initial weights, the data order and dropout.
        eval_every: Steps between validation points of the history.
        eval_batches: Validation batches per point (the final figures use the whole
            validation text).
        description: One line for people.
    """

    name: str
    config: GPTConfig
    data: str = "tinyshakespeare"
    val_fraction: float = 0.1
    tokenizer: str = "bpe"
    batch_size: int = 32
    steps: int = 1_000
    lr: float = 1e-3
    min_lr: float | None = 1e-4
    warmup_steps: int = 50
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0
    gpt2_init: bool = True
    seed: int = 123
    eval_every: int = 100
    eval_batches: int = 8
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(self.config).__name__}")
        for name in ("batch_size", "steps", "eval_every", "eval_batches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps={self.warmup_steps!r} must be an integer >= 0")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction={self.val_fraction!r} must be between 0 and 1")
        self.train_options()  # the training settings are checked where the loop checks them
        if self.tokenizer not in _TOKENIZERS:
            raise ValueError(f"tokenizer={self.tokenizer!r} is unknown; choose {' or '.join(map(repr, _TOKENIZERS))}")
        if self.tokenizer == "gpt2" and self.config.vocab_size != _GPT2_VOCAB:
            raise ValueError(
                f"tokenizer='gpt2' has {_GPT2_VOCAB} tokens but config.vocab_size={self.config.vocab_size}"
            )
        if self.tokenizer == "bpe" and self.config.vocab_size < 257:
            raise ValueError(
                f"config.vocab_size={self.config.vocab_size} is too small for a byte-level BPE: "
                "it needs 256 byte tokens and <|endoftext|>, so at least 257"
            )
        object.__setattr__(self, "betas", tuple(self.betas))

    def train_options(self, **changes: Any) -> TrainOptions:
        """The recipe's settings as ``TrainOptions`` for ``train`` (with some changed)."""
        return TrainOptions(
            max_steps=self.steps, lr=self.lr, min_lr=self.min_lr, warmup_steps=self.warmup_steps,
            weight_decay=self.weight_decay, betas=self.betas, grad_clip=self.grad_clip,
            eval_every=self.eval_every, eval_batches=self.eval_batches, seed=self.seed,
        ).replace(**changes)

    def replace(self, **changes: Any) -> Recipe:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as JSON data (the config as ``GPTConfig.to_dict()``)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["config"] = self.config.to_dict()
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """The inverse of ``to_dict``."""
        fields = dict(data)
        fields["config"] = GPTConfig.from_dict(fields["config"])
        return cls(**fields)

    def run(self, *, progress: bool = True) -> Pretrained:
        """Train the recipe now (``train_recipe``)."""
        return train_recipe(self, progress=progress)

    def data_sha256(self) -> str:
        """SHA-256 of the corpus: the registered hash of a course file, else the file's."""
        if self.data in DATASETS:
            return DATASETS[self.data].sha256
        path = Path(self.data).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"data {self.data!r} is neither a course data file ({', '.join(sorted(DATASETS))}) "
                "nor an existing text file"
            )
        return sha256_of(path)

    def cache_key(self) -> str:
        """A hash of everything that affects the trained model (not the name or description).

        A cached model whose key differs was made by another recipe and is retrained.
        """
        fields = self.to_dict()
        del fields["name"], fields["description"]
        fields["data"] = self.data_sha256()  # the bytes, not where they are
        payload = json.dumps({"format": RECIPE_FORMAT, "recipe": fields}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


RECIPES: Mapping[str, Recipe] = MappingProxyType(
    {
        recipe.name: recipe
        for recipe in (
            # Chosen by measurement (bench/recipe_search.py, summary in bench/recipe_search.md):
            # with a context of 128 tokens, in 2-minute probes on 2 CPU cores a 2,048-token
            # BPE beat 1,024 and 4,096, batches of 8 windows beat 4, 12 and 16, and a peak
            # rate of 2e-3 beat 3e-3. In 4-minute runs 128 wide and 4 deep with about 3,000 steps
            # beat 160 wide (fewer steps fit), 192 wide, and 6 deep. A context of 64 learns
            # faster but is too short for the fine-tuning data of chapters 6 and 7.
            Recipe(
                name="shakespeare-small",
                description=(
                    "A 4-layer, 128-wide GPT (1.07M parameters, context 128) on tinyshakespeare "
                    "with a 2,048-token BPE; about 4 minutes on 2 CPU cores (chapter 5)."
                ),
                config=GPTConfig.from_preset("shakespeare-small"),
                data="tinyshakespeare",
                val_fraction=0.1,
                tokenizer="bpe",
                batch_size=8,
                steps=3_100,
                lr=2e-3,
                min_lr=2e-4,
                warmup_steps=50,
                weight_decay=0.1,
                betas=(0.9, 0.95),
                grad_clip=1.0,
                gpt2_init=True,
                seed=123,
                eval_every=100,
                eval_batches=8,
            ),
        )
    }
)
"""The course's pretrained models, by name (read-only)."""


def list_recipes() -> list[str]:
    """The names of the models ``pretrained`` knows."""
    return list(RECIPES)


class CourseRecipe(Protocol):
    """What ``pretrained`` and ``ship`` need of a recipe: a ``Recipe`` here, or a
    fine-tuning recipe such as ``companion.finetune.task_model.TaskRecipe``."""

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
# Training a recipe
# --------------------------------------------------------------------------- #
@dataclass
class RecipeData:
    """A recipe's data, ready to train on (see ``prepare_data``).

    Attributes:
        train_text: The first ``1 - val_fraction`` of the corpus.
        val_text: The held-out rest.
        tokenizer: The recipe's tokenizer (a BPE is trained on ``train_text``).
        train_loader: Windows of ``context_length`` tokens starting at every token of
            the training split, shuffled.
        val_loader: Consecutive windows of the validation split (stride
            ``context_length``), in order.
    """

    train_text: str
    val_text: str
    tokenizer: Any
    train_loader: DataLoader[tuple[torch.Tensor, torch.Tensor]]
    val_loader: DataLoader[tuple[torch.Tensor, torch.Tensor]]


def _read_corpus(data: str, progress: bool) -> str:
    if data in DATASETS:
        return read_text(data, progress=progress)
    path = Path(data).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"data {data!r} is neither a course data file ({', '.join(sorted(DATASETS))}) "
            "nor an existing text file"
        )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"the data file {path} is not UTF-8 text ({err.reason} at byte {err.start}); "
            "convert it to UTF-8 first"
        ) from err


def prepare_data(recipe: Recipe, *, progress: bool = True) -> RecipeData:
    """Split the corpus, build the tokenizer and the loaders of a recipe (chapter 5).

    Raises:
        ValueError: A split is too short for one window of ``context_length`` tokens.
    """
    text = _read_corpus(recipe.data, progress)
    split = int(len(text) * (1 - recipe.val_fraction))
    train_text, val_text = text[:split], text[split:]
    tokenizer: Any
    if recipe.tokenizer == "bpe":
        tokenizer = BPETokenizer.train(train_text, recipe.config.vocab_size)
    else:
        tokenizer = gpt2_tokenizer()
    T = recipe.config.context_length
    train_ids = encode_text(tokenizer, train_text)
    val_ids = encode_text(tokenizer, val_text)
    for part, ids in (("training", train_ids), ("validation", val_ids)):
        if len(ids) < T + 1:
            raise ValueError(
                f"the {part} split of {recipe.data!r} has {len(ids)} tokens, fewer than one window of "
                f"context_length={T} needs ({T + 1}); use more text or a shorter context"
            )
    train_set = SlidingWindowDataset(train_ids, context_length=T, stride=1)
    val_set = SlidingWindowDataset(val_ids, context_length=T, stride=T)
    if len(train_set) < recipe.batch_size:
        raise ValueError(
            f"the training split gives {len(train_set)} windows, fewer than batch_size={recipe.batch_size}"
        )
    return RecipeData(
        train_text=train_text,
        val_text=val_text,
        tokenizer=tokenizer,
        # shuffle=True: train() draws the order itself from the recipe's seed
        train_loader=DataLoader(train_set, batch_size=recipe.batch_size, shuffle=True, drop_last=True),
        val_loader=DataLoader(val_set, batch_size=recipe.batch_size, shuffle=False),
    )


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


def train_recipe(
    recipe: str | Recipe,
    *,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = True,
    callback: Callable[[int, TrainHistory], None] | None = None,
    device: str | torch.device = "cpu",
    precision: Precision = "fp32",
    head_impl: HeadImpl = "manual",
) -> Pretrained:
    """Train a recipe from scratch (chapter 5, "A model that really learns") and
    measure it.

    Deterministic: the same recipe on the same machine gives the same weights. The
    final validation figures use the whole held-out text (``evaluate_text``).

    Args:
        recipe: A ``Recipe`` or the name of one in ``RECIPES``.
        progress: Show ``tqdm`` progress bars.
        checkpoint_dir: Write resumable checkpoints there (see ``train``); the last one
            also holds the final figures.
        checkpoint_every: Steps between checkpoints (default: ``recipe.eval_every``).
        resume: Continue from a checkpoint in ``checkpoint_dir``.
        callback: Passed to ``train``.
        device: Where to train (``companion.devices.pick_device()`` picks the best one). The
            weights are initialised on the CPU first, so a seed gives the same start anywhere.
        precision: ``TrainOptions.precision``; ``"fp32"`` (default) reproduces the shipped models.
        head_impl: ``"manual"`` (default) or ``"fused"``, the model's loss path
            (``companion.fused``): the same function, not the same bits.

    Returns:
        The ``Pretrained`` model (``info["source"] == "trained"``), on the CPU.
    """
    found = _lookup(recipe)
    if not isinstance(found, Recipe):
        raise TypeError(f"train_recipe trains a pretraining Recipe, not a {type(found).__name__}; call its run()")
    recipe = found
    key = recipe.cache_key()
    data = prepare_data(recipe, progress=progress)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = GPTModel(recipe.config, init="gpt2" if recipe.gpt2_init else "pytorch", head_impl=head_impl)
    model.to(device)
    optimizer = configure_optimizer(model, lr=recipe.lr, weight_decay=recipe.weight_decay, betas=recipe.betas)
    extra = {"recipe": recipe.to_dict(), "recipe_key": key}
    options = recipe.train_options(
        progress=progress, checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume,
        precision=precision,
    )
    history = train(model, data.train_loader, data.val_loader, options, optimizer=optimizer,
                    tokenizer=data.tokenizer, checkpoint_extra=extra, callback=callback)
    model.eval()
    final = evaluate_text(model, data.tokenizer, data.val_text)
    info = {
        "recipe": recipe.name,
        "recipe_key": key,
        "val_loss": final.loss_per_token,
        "val_nats_per_char": final.nats_per_char,
        "val_bits_per_char": final.bits_per_char,
        "val_tokens": final.tokens,
        "val_chars": final.chars,
        "train_seconds": history.elapsed,
        "steps": history.steps[-1] if history.steps else 0,
        "tokens_seen": history.tokens_seen[-1] if history.tokens_seen else 0,
        "parameters": num_parameters(model),
    }
    if checkpoint_dir is not None and distributed.world().is_main:
        # the final figures join the last checkpoint, which stays resumable
        save_checkpoint(checkpoint_dir, model, optimizer=optimizer, step=history.steps[-1] if history.steps else 0,
                        history=history,
                        extra={**extra, "info": info, "tokens_seen": info["tokens_seen"],
                               "world_size": distributed.world().size},
                        tokenizer=data.tokenizer)
    distributed.barrier()
    model.cpu()
    return Pretrained(model, data.tokenizer, recipe.config,
                      {**info, "source": "trained", "path": checkpoint_dir}, history)


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
        # companion.finetune.task_model.RECIPES["shakespeare-tasks"] (chapter 7)
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
