"""Chapter 8's preference tuning as a whole run (``companion dpo``).

Setup (``load_base_model``: the policy's start and, frozen, its reference; preference
records split as chapter 7 splits its data; every pair scored once by the reference) →
train (``companion.train.train`` with ``DPOTask`` and ``OPTIONS`` changed by the flags) →
save (resumable checkpoints whose ``extra["dpo"]`` holds the settings and the run's key),
then one summary line: the held-out preference accuracy and reward margin before → after.

When a run resumes, the reference is still the base model (``--model`` or
``--checkpoint``), never the checkpoint being continued: the pairs' reference scores and
the loss stay those of the run's start.
"""

from __future__ import annotations

import argparse
from typing import Any

import companion.train as training
from companion.align.dpo import DPOTask, PreferenceDataset, check_pair, preference_loader
from companion.finetune import instruction as ins
from companion.runs import flags
from companion.runs.base import base_identity, load_policy_and_reference
from companion.runs.common import UsageError, check_resume, run_key
from companion.train import TrainOptions

__all__ = ["COMMAND", "OPTIONS", "add_command", "main"]

COMMAND = "dpo"

OPTIONS = TrainOptions(max_steps=60, lr=1e-4, warmup_steps=5, weight_decay=0.1, eval_every=20, seed=1)
"""The run's training settings (the flags' defaults): chapter 8's."""

_OPTION_FLAGS = ("max_steps", "lr", "min_lr", "warmup_steps", "weight_decay", "seed", "eval_every",
                 "checkpoint_every", "resume")


def add_command(commands: Any) -> argparse.ArgumentParser:
    """Add ``companion dpo`` to the command line's subparsers."""
    p = commands.add_parser(
        COMMAND,
        help="preference-tune an instruction model with DPO",
        description=(
            "Fine-tune an instruction-following model (a checkpoint, e.g. from finetune-instructions) "
            "with direct preference optimization (chapter 8) on records with 'chosen' and 'rejected' "
            "answers, writing a resumable checkpoint folder; then print the held-out preference "
            "accuracy and the reward margin before and after."
        ),
    )
    flags.add_run_flags(p, model_help="the model to start from: a course model (companion.list_models()) or a "
                                      "GPT-2 name (default shakespeare-small); usually --checkpoint of an "
                                      "instruction model")
    p.add_argument("--data", default="instruction-data-with-preference", metavar="NAME_OR_PATH",
                   help="a course data file or a JSON list of {instruction, input, chosen, rejected} records "
                        "(default instruction-data-with-preference)")
    p.add_argument("--beta", type=flags.positive_float, default=0.1, metavar="B",
                   help="how tightly the model is held to its start (default 0.1)")
    p.add_argument("--prompt-style", choices=ins.PROMPT_STYLES, default="compact",
                   help="the template the model was fine-tuned with (default compact)")
    p.add_argument("--split-seed", type=flags.non_negative, default=123, metavar="N",
                   help="seed of the split into training, validation and test (default 123)")
    p.add_argument("--batch-size", type=flags.positive, default=8, metavar="N", help="pairs per step (default 8)")
    flags.add_option_flags(p, TrainOptions, _OPTION_FLAGS, defaults=OPTIONS,
                           helps={"checkpoint_every": "steps between checkpoints (default: --eval-every)"})
    p.add_argument("--quiet", action="store_true", help="print only the summary (no progress)")
    p.set_defaults(run=main)
    return p


def main(args: argparse.Namespace) -> int:
    """``companion dpo``: setup → train → save, then the before/after summary."""
    # setup: the base model twice (the policy, and its frozen reference), the pairs, the key
    base = args.checkpoint or args.model
    policy, reference, tokenizer = load_policy_and_reference(base, progress=not args.quiet)
    records, data_hash = _load_pairs(args.data)
    settings = {"base": base_identity(base), "data": data_hash, "beta": args.beta, "prompt_style": args.prompt_style,
                "split_seed": args.split_seed, "batch_size": args.batch_size, "steps": args.max_steps,
                **{k: getattr(args, k) for k in ("lr", "min_lr", "warmup_steps", "weight_decay", "seed")}}
    key = run_key(settings)
    check_resume(args.out, key, resume=args.resume, key_of=lambda extra: extra.get("dpo", {}).get("run_key"),
                 hint="pass --no-resume to overwrite it, or choose another --out", error=UsageError)
    splits = ins.split_entries(records, seed=args.split_seed)
    train_pairs = PreferenceDataset(splits.train, tokenizer, reference, style=args.prompt_style)
    test_pairs = PreferenceDataset(splits.test, tokenizer, reference, style=args.prompt_style)
    loader = preference_loader(train_pairs, batch_size=args.batch_size, shuffle=True, drop_last=True)
    test_loader = preference_loader(test_pairs, batch_size=16)
    task = DPOTask(beta=args.beta)
    before = task.evaluate(reference, test_loader, None)
    print(f"{len(train_pairs)} training and {len(test_pairs)} held-out pairs ({train_pairs.identical} with the "
          f"same answer twice and {train_pairs.dropped} too long left out of training)", flush=True)

    # train and save (train writes the checkpoints into --out, holding the run-folder lock)
    options = flags.options_from_args(args, OPTIONS, _OPTION_FLAGS, progress=not args.quiet,
                                      checkpoint_dir=args.out)
    training.train(policy, loader, test_loader, options, task=task, tokenizer=tokenizer,
                   checkpoint_extra={"dpo": {**settings, "run_key": key}})
    after = task.evaluate(policy, test_loader, None)
    print(f"held-out pairs: preference accuracy {before['accuracy']:.1%} -> {after['accuracy']:.1%}, "
          f"reward margin {before['margin']:.3f} -> {after['margin']:.3f}; checkpoint in {args.out}")
    return 0


def _load_pairs(source: str) -> tuple[list[dict[str, str]], str]:
    """Preference records from a course data file or a JSON file, with the file's hash."""

    def check(record: Any) -> None:
        if not isinstance(record, dict):
            raise TypeError(f"a record is a {type(record).__name__}, not an object")
        check_pair(record)

    return ins.load_records(source, check=check)
