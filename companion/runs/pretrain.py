"""Pretraining as a whole run (chapter 5): the ``Recipe``, its data, ``train_recipe``, ``companion train``.

Setup (``prepare_data``: split the corpus, build the tokenizer and the loaders; a seeded
``GPTModel``) → train (``companion.train.train`` with the recipe's ``TrainOptions``) →
save (the last checkpoint also holds the final figures on the whole validation text).

A ``Recipe`` is the whole run as data. Its training settings are one ``TrainOptions``
(``recipe.options``), which is also where ``companion train`` takes its flags and defaults
from; ``recipe.lr``, ``recipe.steps`` and the like read it. ``cache_key`` hashes the recipe
in the flat form it has always had, so the keys of shipped and cached models are unchanged.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch.utils.data import DataLoader

from companion import distributed
from companion.checkpoint import save_checkpoint
from companion.config import PRESETS, GPTConfig
from companion.data import DATASETS, SlidingWindowDataset, read_text
from companion.files import sha256_of
from companion.fused import HeadImpl
from companion.history import TrainHistory
from companion.losses import evaluate_text
from companion.model import GPTModel, num_parameters
from companion.optim import configure_optimizer
from companion.precision import PRECISIONS, Precision
from companion.runs import flags
from companion.runs.common import Pretrained, UsageError, check_resume
from companion.tokenizers import BPETokenizer, encode_text, gpt2_tokenizer
from companion.train import TrainOptions, train

__all__ = [
    "COMMAND",
    "DEFAULT_OPTIONS",
    "RECIPES",
    "RECIPE_FORMAT",
    "Recipe",
    "RecipeData",
    "add_command",
    "main",
    "prepare_data",
    "train_recipe",
]

RECIPE_FORMAT = 2
"""Part of every cache key: bump it when a change to the training code changes what a
recipe produces, so that every cached model is retrained."""

_TOKENIZERS = ("bpe", "gpt2")
_GPT2_VOCAB = 50_257

DEFAULT_OPTIONS = TrainOptions(
    max_steps=1_000, lr=1e-3, min_lr=1e-4, warmup_steps=50, weight_decay=0.1, betas=(0.9, 0.95),
    grad_clip=1.0, eval_every=100, eval_batches=8, seed=123,
)
"""The training settings of a ``Recipe`` that gives none (a preset on the command line)."""

_OPTION_FIELDS = {
    "steps": "max_steps", "lr": "lr", "min_lr": "min_lr", "warmup_steps": "warmup_steps",
    "weight_decay": "weight_decay", "betas": "betas", "grad_clip": "grad_clip", "seed": "seed",
    "eval_every": "eval_every", "eval_batches": "eval_batches",
}
"""The recipe's training settings: their names in ``to_dict`` (and as keywords) → ``TrainOptions`` fields."""

_DICT_ORDER = ("name", "config", "data", "val_fraction", "tokenizer", "batch_size", "steps", "lr", "min_lr",
               "warmup_steps", "weight_decay", "betas", "grad_clip", "gpt2_init", "seed", "eval_every",
               "eval_batches", "description")
"""The keys of ``Recipe.to_dict``, in order (as checkpoints have always recorded them)."""


# --------------------------------------------------------------------------- #
# Recipes
# --------------------------------------------------------------------------- #
@dataclass(frozen=True, init=False)
class Recipe:
    """Everything that determines a pretrained model, as data.

    ``Recipe(name, config, ..., options=TrainOptions(...))``; the training settings may
    also be given one by one (``steps=3_100, lr=2e-3``), each changing ``DEFAULT_OPTIONS``.

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
            training split (stride 1), in an order drawn from ``options.seed``.
        options: The training settings: ``max_steps`` (``recipe.steps``), the peak ``lr``,
            ``min_lr`` (end of the cosine decay; ``None`` for a constant rate after
            warmup), ``warmup_steps``, AdamW's ``weight_decay`` and ``betas``,
            ``grad_clip``, ``seed`` (the initial weights, the data order and dropout),
            ``eval_every`` and ``eval_batches`` (the final figures use the whole
            validation text). Each is also readable as ``recipe.<name>``.
        gpt2_init: Initialise with ``init_gpt2_weights`` (else PyTorch's defaults).
        description: One line for people.
    """

    name: str
    config: GPTConfig
    data: str
    val_fraction: float
    tokenizer: str
    batch_size: int
    options: TrainOptions
    gpt2_init: bool
    description: str

    def __init__(
        self,
        name: str,
        config: GPTConfig,
        data: str = "tinyshakespeare",
        val_fraction: float = 0.1,
        tokenizer: str = "bpe",
        batch_size: int = 32,
        options: TrainOptions | None = None,
        gpt2_init: bool = True,
        description: str = "",
        **settings: Any,
    ) -> None:
        unknown = sorted(set(settings) - set(_OPTION_FIELDS))
        if unknown:
            raise TypeError(f"unknown recipe field(s) {unknown}; the training settings are {', '.join(_OPTION_FIELDS)}")
        base = DEFAULT_OPTIONS if options is None else options
        if not isinstance(base, TrainOptions):
            raise TypeError(f"options must be TrainOptions, got {type(base).__name__}")
        options = base.replace(**{_OPTION_FIELDS[k]: v for k, v in settings.items()})
        for key, value in (("name", name), ("config", config), ("data", data), ("val_fraction", val_fraction),
                           ("tokenizer", tokenizer), ("batch_size", batch_size), ("options", options),
                           ("gpt2_init", gpt2_init), ("description", description)):
            object.__setattr__(self, key, value)
        self._check()

    def _check(self) -> None:
        if not isinstance(self.config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(self.config).__name__}")
        value = self.batch_size
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"batch_size={value!r} must be a positive integer")
        for name in ("steps", "eval_batches"):
            if getattr(self, name) is None:
                raise ValueError(f"{name}=None: a recipe needs a number of {name.replace('_', ' ')}")
        kept = TrainOptions(**{f: getattr(self.options, f) for f in _OPTION_FIELDS.values()})
        if self.options.replace(progress=True, checkpoint_dir=None, checkpoint_every=None, resume=True) != kept:
            raise ValueError(f"a recipe's options set only {', '.join(_OPTION_FIELDS.values())} "
                             "(and the run-only progress, checkpoint_dir, checkpoint_every, resume)")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction={self.val_fraction!r} must be between 0 and 1")
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

    # the training settings, read from the options
    steps = property(lambda self: self.options.max_steps, doc="Optimizer steps (``options.max_steps``).")
    lr = property(lambda self: self.options.lr, doc="Peak learning rate.")
    min_lr = property(lambda self: self.options.min_lr, doc="End of the cosine decay (``None``: constant).")
    warmup_steps = property(lambda self: self.options.warmup_steps, doc="Steps of linear warmup.")
    weight_decay = property(lambda self: self.options.weight_decay, doc="AdamW weight decay of the matrices.")
    betas = property(lambda self: self.options.betas, doc="AdamW betas.")
    grad_clip = property(lambda self: self.options.grad_clip, doc="Global gradient-norm clip (``None``: none).")
    seed = property(lambda self: self.options.seed, doc="Seeds the initial weights, the data order and dropout.")
    eval_every = property(lambda self: self.options.eval_every, doc="Steps between validation points.")
    eval_batches = property(lambda self: self.options.eval_batches, doc="Validation batches per point.")

    def train_options(self, **changes: Any) -> TrainOptions:
        """The recipe's settings as ``TrainOptions`` for ``train`` (with some changed)."""
        return self.options.replace(**changes)

    def replace(self, **changes: Any) -> Recipe:
        """A copy with some fields changed (validated again); ``steps=``, ``lr=`` etc. change the options."""
        kept = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return Recipe(**{**kept, **changes})

    def to_dict(self) -> dict[str, Any]:
        """The recipe as JSON data: flat (``"steps"``, ``"lr"``, ...), the config as ``GPTConfig.to_dict()``."""
        data: dict[str, Any] = {name: getattr(self, name) for name in _DICT_ORDER}  # the order it always had
        data["config"] = self.config.to_dict()
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """The inverse of ``to_dict``."""
        fields = dict(data)
        fields["config"] = GPTConfig.from_dict(fields["config"])
        if "betas" in fields:
            fields["betas"] = tuple(fields["betas"])
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
                options=TrainOptions(
                    max_steps=3_100, lr=2e-3, min_lr=2e-4, warmup_steps=50, weight_decay=0.1,
                    betas=(0.9, 0.95), grad_clip=1.0, seed=123, eval_every=100, eval_batches=8,
                ),
                gpt2_init=True,
            ),
        )
    }
)
"""The course's pretrained models, by name (read-only)."""


# --------------------------------------------------------------------------- #
# Setup: the data
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



# --------------------------------------------------------------------------- #
# Train and save
# --------------------------------------------------------------------------- #
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
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise KeyError(f"unknown pretrained model {recipe!r}; known models: {', '.join(RECIPES)}")
        recipe = RECIPES[recipe]
    found: object = recipe
    if not isinstance(found, Recipe):
        raise TypeError(f"train_recipe trains a pretraining Recipe, not a {type(found).__name__}; call its run()")
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
# The command: companion train
# --------------------------------------------------------------------------- #
COMMAND = "train"
_OPTION_FLAGS = ("max_steps", "lr", "min_lr", "warmup_steps", "weight_decay", "grad_clip", "seed", "eval_every",
                 "eval_batches", "checkpoint_every", "resume")
"""The ``TrainOptions`` fields ``companion train`` has flags for (``--steps`` is ``max_steps``)."""


def add_command(commands: Any) -> argparse.ArgumentParser:
    """Add ``companion train`` to the command line's subparsers."""
    recipes, presets = ", ".join(RECIPES), ", ".join(PRESETS)
    tr = commands.add_parser(
        COMMAND,
        help="train a model and write a checkpoint",
        description=(
            "Train a GPT on a text and write a resumable checkpoint folder. --model names a course "
            f"recipe ({recipes}), whose settings are the defaults, or a GPTConfig preset ({presets}), "
            "whose shape you will usually shrink with the model options. Progress is printed at every "
            "evaluation point."
        ),
    )
    tr.add_argument("--out", required=True, type=Path, metavar="DIR",
                    help="checkpoint folder to write (and to resume from)")
    tr.add_argument("--model", default="shakespeare-small", metavar="NAME",
                    help=f"a recipe ({recipes}) or a preset ({presets}); default shakespeare-small")
    tr.add_argument("--data", default=None, metavar="NAME_OR_PATH",
                    help="a course data file (e.g. tinyshakespeare, the-verdict) or a UTF-8 text file; "
                         "default: the recipe's, or tinyshakespeare")
    tr.add_argument("--val-fraction", type=flags.fraction, metavar="F",
                    help="last fraction of the text held out for validation (default 0.1)")
    tr.add_argument("--tokenizer", choices=_TOKENIZERS,
                    help="bpe: train a byte-level BPE on the training split (saved with the model); "
                         "gpt2: GPT-2's tokenizer (default for presets)")
    tr.add_argument("--vocab-size", type=flags.int_at_least(257), metavar="N",
                    help="tokens of the BPE tokenizer (with --tokenizer bpe)")
    model = tr.add_argument_group("model shape (overrides the recipe or preset)")
    model.add_argument("--context-length", type=flags.positive, metavar="N", help="tokens per training window")
    model.add_argument("--emb-dim", type=flags.positive, metavar="N", help="embedding width")
    model.add_argument("--n-heads", type=flags.positive, metavar="N", help="attention heads (must divide --emb-dim)")
    model.add_argument("--n-layers", type=flags.positive, metavar="N", help="transformer blocks")
    model.add_argument("--dropout", type=flags.probability, metavar="P", help="dropout rate in [0, 1)")
    opt = tr.add_argument_group("training (overrides the recipe)")
    opt.add_argument("--batch-size", type=flags.positive, metavar="N", help="windows per step")
    flags.add_option_flags(opt, TrainOptions, _OPTION_FLAGS, defaults={"resume": True, "checkpoint_every": None},
                           helps={"seed": "seed of the weights, data order and dropout"})
    opt.add_argument("--precision", choices=PRECISIONS, default="auto",
                     help="auto: bfloat16 autocast where the hardware has it natively, else float32 "
                          "(default); fp32 reproduces the shipped models")
    tr.add_argument("--quiet", action="store_true", help="print only the final summary (no progress)")
    tr.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                    help="where to train; auto picks a CUDA GPU (LOCAL_RANK's under torchrun), else "
                         "Apple's MPS, else the CPU (default auto)")
    tr.set_defaults(run=main)
    return tr


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The recipe ``companion train`` runs: ``--model``'s recipe (or preset) with the flags' changes."""
    base = RECIPES.get(args.model)
    if base is not None:
        config = base.config
        tokenizer = args.tokenizer or base.tokenizer
    elif args.model in PRESETS:
        config = GPTConfig.from_preset(args.model)
        tokenizer = args.tokenizer or ("bpe" if args.vocab_size else "gpt2")
    else:
        raise UsageError(
            f"unknown --model {args.model!r}; recipes: {', '.join(RECIPES)}; presets: {', '.join(PRESETS)}"
        )
    if tokenizer == "gpt2" and args.vocab_size and args.vocab_size != _GPT2_VOCAB:
        raise UsageError("--vocab-size sets the size of a BPE tokenizer; GPT-2's has 50,257 tokens")
    changes = {
        "context_length": args.context_length,
        "emb_dim": args.emb_dim,
        "n_heads": args.n_heads,
        "n_layers": args.n_layers,
        "drop_rate": args.dropout,
    }
    if tokenizer == "gpt2":
        changes["vocab_size"] = _GPT2_VOCAB
    elif args.vocab_size:
        changes["vocab_size"] = args.vocab_size
    elif config.vocab_size == _GPT2_VOCAB:  # a preset trained with a BPE of our own
        changes["vocab_size"] = 1_024
    config = config.replace(**{k: v for k, v in changes.items() if v is not None})

    fields = {k: getattr(args, k) for k in ("data", "val_fraction", "batch_size") if getattr(args, k) is not None}
    recipe_flags = [f for f in _OPTION_FLAGS if f not in ("checkpoint_every", "resume")]  # the run-only ones
    start = base.options if base is not None else DEFAULT_OPTIONS
    follow: dict[str, Any] = {}
    if not hasattr(args, "min_lr"):  # --min-lr not given: it follows --lr
        lr: float | None = getattr(args, "lr", start.lr)
        if base is None and lr is not None:
            follow["min_lr"] = lr / 10
        elif hasattr(args, "lr") and lr is not None and start.min_lr is not None and start.lr is not None:
            follow["min_lr"] = lr * start.min_lr / start.lr  # keep the recipe's ratio
    options = flags.options_from_args(args, start, recipe_flags, **follow)
    if base is not None:
        return base.replace(config=config, tokenizer=tokenizer, options=options, **fields)
    return Recipe(name=f"{args.model}-custom", config=config, tokenizer=tokenizer, options=options, **fields)


def main(args: argparse.Namespace) -> int:
    """``companion train``: setup → train → save, as one process or under ``torchrun``."""
    joined = distributed.join_from_environment()  # started by torchrun: one process group for the run
    try:
        return _run(args, distributed.world().is_main)
    finally:
        if joined:
            distributed.leave()


def _silent(*args: Any, **kwargs: Any) -> None:
    """``print`` for the processes other than rank 0."""


def _run(args: argparse.Namespace, is_main: bool) -> int:
    from tqdm.auto import tqdm

    from companion.devices import pick_device

    recipe = recipe_from_args(args)
    check_resume(args.out, recipe.cache_key(), resume=args.resume, key_of=lambda extra: extra.get("recipe_key"),
                 hint="pass --no-resume to overwrite it, or choose another --out", error=UsageError)
    cfg = recipe.config
    quiet = args.quiet or not is_main  # under torchrun only rank 0 prints
    say: Callable[..., None] = print if is_main else _silent
    say(f"training {recipe.name}: {cfg.n_layers} layers, width {cfg.emb_dim}, {cfg.n_heads} heads, "
        f"context {cfg.context_length}, vocabulary {cfg.vocab_size} ({recipe.tokenizer}), "
        f"{recipe.steps} steps of {recipe.batch_size} windows, lr {recipe.lr:g}, data {recipe.data!r}",
        flush=True)

    def report(step: int, history: TrainHistory) -> None:
        if quiet or not history.steps or history.steps[-1] != step:
            return
        val = history.val_loss[-1]
        tqdm.write(
            f"step {step:>6}/{recipe.steps}  train {history.train_loss[-1]:.4f}  "
            f"val {'-' if val is None else f'{val:.4f}'}  lr {history.lr[-1]:.2e}  "
            f"{history.elapsed:.1f} s",
            file=sys.stdout,
        )

    device = pick_device(None if args.device == "auto" else args.device)
    # the fused head pays with a large vocabulary (GPT-2's: 1.6x the readable head in bench/run.py);
    # at a course BPE's size the two run alike, and the readable one reproduces the shipped weights
    head: HeadImpl = "fused" if recipe.config.vocab_size >= 16_384 else "manual"
    result = train_recipe(recipe, device=device, progress=not quiet, checkpoint_dir=args.out,
                          checkpoint_every=args.checkpoint_every, resume=args.resume, callback=report,
                          precision=args.precision, head_impl=head)
    info = result.info
    say(f"done: {info['steps']} steps in {info['train_seconds']:.1f} s; validation loss "
        f"{info['val_loss']:.4f} nats/token, {info['val_nats_per_char']:.4f} nats/char; "
        f"checkpoint in {args.out}", flush=True)
    return 0
