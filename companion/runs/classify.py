"""Chapter 6's whole run: fine-tune a pretrained model into a spam classifier (``companion finetune-classifier``).

Setup (``load_base_model``; the SMS Spam Collection split, padded and batched by
``companion.finetune.classification``; a new 2-class head) → train (``companion.train.train``
with a ``ClassificationTask`` and the chapter's ``TrainOptions``, ``CHAPTER_OPTIONS``) →
save (resumable checkpoints whose ``extra`` holds the settings ``load_classifier`` reads).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from companion.course_models import RECIPES
from companion.finetune.classification import (
    CHAPTER_OPTIONS,
    LABELS,
    ClassificationDataset,
    ClassificationTask,
    make_loaders,
    prepare_classifier,
    spam_splits,
)
from companion.history import TrainHistory
from companion.model import GPTModel
from companion.runs import flags
from companion.runs.base import base_identity, load_base_model
from companion.runs.common import check_resume, run_key
from companion.train import TrainOptions, train

__all__ = ["COMMAND", "FinetuneResult", "add_command", "finetune_spam_classifier", "main"]


@dataclass
class FinetuneResult:
    """What ``finetune_spam_classifier`` made.

    Attributes:
        model: The fine-tuned classifier (eval mode).
        tokenizer: Its tokenizer.
        history: The ``TrainHistory`` (``metrics`` holds the accuracies).
        accuracy: ``{"train": ..., "val": ..., "test": ...}`` after the last step.
        settings: The run's settings, as stored in the checkpoint's ``extra``.
    """

    model: GPTModel
    tokenizer: Any
    history: TrainHistory
    accuracy: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)


def finetune_spam_classifier(
    base: str | os.PathLike[str] = "shakespeare-small",
    options: TrainOptions | None = None,
    *,
    data: str | os.PathLike[str] | None = None,
    batch_size: int = 8,
    train_blocks: int | None = None,
    max_length: int | None = None,
    eval_every: int | None = None,
    seed: int = 123,
    callback: Callable[[int, TrainHistory], None] | None = None,
) -> FinetuneResult:
    """Fine-tune a pretrained model into a spam classifier, as chapter 6 does.

    Reads and splits the data (``spam_splits(seed=seed, path=data)``), pads to
    ``max_length`` (``None``: the longest training message, at most the model's
    context), replaces the head (``prepare_classifier``, its weights drawn from
    ``seed``) and trains with ``companion.train.train`` and a ``ClassificationTask``.
    With ``options.checkpoint_dir`` the run writes resumable checkpoints whose
    ``extra`` holds ``"classifier"`` (the settings, which ``load_classifier`` reads)
    and ``"run_key"`` (a hash of everything that determines the run).

    Args:
        base: See ``load_base_model``.
        options: The ``TrainOptions``; ``None`` for the chapter's (``CHAPTER_OPTIONS``).
        data: A file in the SMS collection's format; ``None`` for the course's copy.
        batch_size: Messages per step.
        train_blocks: See ``prepare_classifier`` (``None``: every layer trains).
        max_length: Tokens per message (see ``make_loaders``).
        eval_every: Steps between evaluations; ``None`` for once per epoch (this
            replaces ``options.eval_every``).
        seed: Seeds the data split and the new head (the data order and dropout come
            from ``options.seed``).
        callback: Passed to ``train``.

    Raises:
        ValueError: The checkpoint folder holds a run with other settings (and
            ``options.resume`` is on).
    """
    model, tokenizer = load_base_model(base)
    splits = spam_splits(seed=seed, path=data)
    loaders = make_loaders(splits, tokenizer, batch_size=batch_size, max_length=max_length,
                           context_length=model.config.context_length)
    dataset = loaders[0].dataset
    assert isinstance(dataset, ClassificationDataset)
    options = (options or CHAPTER_OPTIONS).replace(eval_every=eval_every or len(loaders[0]))
    settings = {
        "base": os.fspath(base), "data": None if data is None else os.fspath(data), "labels": list(LABELS),
        "num_classes": len(LABELS), "train_blocks": train_blocks, "max_length": dataset.max_length,
        "pad_id": dataset.pad_id, "batch_size": batch_size, "seed": seed,
    }
    ignored = ("checkpoint_dir", "checkpoint_every", "resume", "progress")
    key_source = {**settings, "base": base_identity(base),
                  "options": {k: v for k, v in options.to_dict().items() if k not in ignored}}
    key = run_key(key_source)
    check_resume(options.checkpoint_dir, key, resume=options.resume)
    with torch.random.fork_rng(devices=[]):  # seed the new head without touching the caller's state
        torch.manual_seed(seed)
        prepare_classifier(model, len(LABELS), train_blocks=train_blocks)
    task = ClassificationTask(dataset.pad_id)
    history = train(model, loaders[0], loaders[1], options, task=task, callback=callback, tokenizer=tokenizer,
                    checkpoint_extra={"classifier": settings, "run_key": key})
    model.eval()
    result = {name: task.evaluate(model, loader, None)["accuracy"]
              for name, loader in zip(("train", "val", "test"), loaders, strict=True)}
    return FinetuneResult(model, tokenizer, history, result, settings)


# --------------------------------------------------------------------------- #
# The command: companion finetune-classifier
# --------------------------------------------------------------------------- #
COMMAND = "finetune-classifier"


def _blocks(text: str) -> int | None:
    return None if text == "all" else flags.non_negative(text)


_blocks.__name__ = "number of blocks"


def add_command(commands: Any) -> argparse.ArgumentParser:
    """Add ``companion finetune-classifier`` to the command line's subparsers."""
    fc = commands.add_parser(
        COMMAND,
        help="fine-tune a model into a spam classifier",
        description=(
            "Fine-tune a pretrained model into a spam classifier on the SMS Spam Collection (chapter 6): "
            "deduplicate, balance and split the messages, replace the output layer by a 2-class head, "
            "train with resumable checkpoints in --out, then print the training, validation and test "
            "accuracy. The defaults are the chapter's settings for shakespeare-small."
        ),
    )
    flags.add_run_flags(fc, model_help=f"the model to start from: a course model ({', '.join(RECIPES)}) or a GPT-2 "
                                       "preset whose weights are downloaded on first use (gpt2-small, ...); "
                                       "default shakespeare-small")
    fc.add_argument("--data", type=Path, metavar="PATH",
                    help="a file in the collection's format (label<TAB>message per line; default: the course's copy)")
    fc.add_argument("--train-blocks", type=_blocks, default=None, metavar="N|all",
                    help="how many of the last transformer blocks train with the head and final norm "
                         "(default all: every parameter)")
    length = fc.add_mutually_exclusive_group()
    flags.add_option_flags(length, TrainOptions, ("epochs", "max_steps"),
                           helps={"epochs": f"passes over the training messages (default {CHAPTER_OPTIONS.epochs})",
                                  "max_steps": "optimizer steps instead of epochs"})
    fc.add_argument("--batch-size", type=flags.positive, default=8, metavar="N", help="messages per step (default 8)")
    flags.add_option_flags(fc, TrainOptions, ("lr", "min_lr"), defaults=CHAPTER_OPTIONS,
                           helps={"min_lr": "end of the cosine decay; 'none' for a constant rate"})
    fc.add_argument("--max-length", type=flags.positive, metavar="N",
                    help="tokens per message (default: the longest training message, at most the context)")
    flags.add_option_flags(fc, TrainOptions, ("seed", "eval_every", "checkpoint_every", "resume"),
                           defaults={"seed": CHAPTER_OPTIONS.seed, "eval_every": None, "checkpoint_every": None,
                                     "resume": True},
                           helps={"seed": "seed of the split, the new head, the data order and dropout",
                                  "eval_every": "steps between evaluations (default: an epoch)",
                                  "checkpoint_every": "steps between checkpoints (default: --eval-every)"})
    fc.add_argument("--quiet", action="store_true", help="print only the summary (no progress)")
    fc.set_defaults(run=main)
    return fc


def main(args: argparse.Namespace) -> int:
    """``companion finetune-classifier``: fine-tune, then print the accuracies."""
    options = flags.options_from_args(
        args, CHAPTER_OPTIONS, ("epochs", "max_steps", "lr", "min_lr", "seed", "checkpoint_every", "resume"),
        progress=not args.quiet, checkpoint_dir=args.out,
        **({"epochs": None} if hasattr(args, "max_steps") else {}))  # --steps instead of epochs
    steps_run: list[int] = []

    def report(step: int, history: TrainHistory) -> None:
        steps_run.append(step)
        if args.quiet or history.steps[-1:] != [step]:
            return
        accuracy = history.metrics.get("val_accuracy", [None])[-1]
        print(f"step {step:>5}  train loss {history.train_loss[-1]:.4f}  val loss {history.val_loss[-1]:.4f}  "
              f"val accuracy {accuracy:.3f}", flush=True)

    result = finetune_spam_classifier(
        args.checkpoint or args.model, options, data=args.data, batch_size=args.batch_size,
        train_blocks=args.train_blocks, max_length=args.max_length, eval_every=args.eval_every, seed=args.seed,
        callback=report)
    total = len(result.history.batch_losses)
    if total > len(steps_run):
        print(f"resumed from step {total - len(steps_run)} of the checkpoint in {args.out}")
    acc = result.accuracy
    print(f"done: {total} steps; accuracy: training {acc['train']:.3f}, validation {acc['val']:.3f}, "
          f"test accuracy {acc['test']:.3f}; checkpoint in {args.out}", flush=True)
    return 0
