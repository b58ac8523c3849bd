"""Chapter 8's reinforcement learning with checkable rewards as a whole run (``companion grpo``).

Setup (``load_base_model``: the policy's start and, frozen, its reference; chapter 7's task
families, training prompts on training items, held-out test prompts on held-out items) →
train (``companion.train.train`` with ``GRPOTask`` and ``OPTIONS`` changed by the flags) →
save (resumable checkpoints whose ``extra["grpo"]`` holds the settings and the run's key),
then one summary line: the held-out accuracy of each family before → after.

The training prompts are the families' training wordings on training items, without the
leads ("Now, ", ...) that chapter 7's fine-tuning varied them with (the test has none, and a
lead shifts the model's counts, which GRPO then learns to correct in a way that does not
carry over); ``--wordings held_out`` trains on the held-out wordings instead, with no answer
ever shown, only the checker's verdict. The test is chapter 7's: held-out items in the
held-out wordings.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

import companion.train as training
from companion.align.grpo import GRPOTask
from companion.course_models import RECIPES
from companion.finetune.tasks import FAMILIES, evaluate_tasks, make_tasks, strip_lead
from companion.runs import flags
from companion.runs.base import base_identity, load_policy_and_reference
from companion.runs.common import UsageError, check_resume, run_key
from companion.runs.task_model import task_items
from companion.train import TrainOptions

__all__ = ["COMMAND", "OPTIONS", "add_command", "main"]

COMMAND = "grpo"

OPTIONS = TrainOptions(max_steps=60, lr=1e-4, weight_decay=0.0, eval_every=60, seed=7)
"""The run's training settings (the flags' defaults): chapter 8's."""

_OPTION_FLAGS = ("max_steps", "lr", "min_lr", "warmup_steps", "weight_decay", "seed", "eval_every",
                 "checkpoint_every", "resume")


def _families(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in FAMILIES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown task families {unknown or [text]}; known: {', '.join(FAMILIES)}")
    return names


def add_command(commands: Any) -> argparse.ArgumentParser:
    """Add ``companion grpo`` to the command line's subparsers."""
    p = commands.add_parser(
        COMMAND,
        help="train a task model with GRPO on rewards chapter 7's checker computes",
        description=(
            "Train a model on chapter 7's checkable task families with group relative policy "
            "optimization (chapter 8): sample a group of answers per prompt, reward each with the "
            "exact checker, normalise the rewards within the group, and take a clipped policy-gradient "
            "step with a KL penalty to the starting model. Writes a resumable checkpoint folder, then "
            "prints each family's held-out accuracy before and after."
        ),
    )
    flags.add_run_flags(p, default_model="shakespeare-tasks",
                        model_help="the model to start from: a course model (companion.list_models()) or "
                                   "a GPT-2 name (default shakespeare-tasks)")
    p.add_argument("--families", type=_families, default=["count", "larger", "smaller"], metavar="A,B",
                   help="the task families to train on (default count,larger,smaller)")
    p.add_argument("--wordings", choices=("train", "held_out", "all"), default="train",
                   help="the instruction wordings of the training prompts (default train; held_out: the "
                        "test's wordings, never shown with an answer)")
    p.add_argument("--items-from", choices=tuple(RECIPES), default="shakespeare-small",
                   help="the pretrained course model whose text gives the tasks' words (default shakespeare-small)")
    p.add_argument("--prompts", type=flags.positive, default=300, metavar="N",
                   help="training prompts per family (default 300)")
    p.add_argument("--batch-size", type=flags.positive, default=4, metavar="N", help="prompts per step (default 4)")
    p.add_argument("--group-size", type=flags.positive, default=8, metavar="G", help="answers per prompt (default 8)")
    p.add_argument("--kl-beta", type=flags.non_negative_float, default=0.04, metavar="B",
                   help="weight of the KL penalty; 0 turns it off (default 0.04)")
    p.add_argument("--clip", type=flags.float_in(0, 1, low_open=True, high_open=True), default=0.2, metavar="E",
                   help="PPO's clip range (default 0.2)")
    p.add_argument("--temperature", type=flags.positive_float, default=1.0, metavar="T",
                   help="sampling temperature of the groups (default 1.0)")
    p.add_argument("--test-per-family", type=flags.positive, default=30, metavar="N",
                   help="held-out test tasks per family (default 30)")
    flags.add_option_flags(p, TrainOptions, _OPTION_FLAGS, defaults=OPTIONS,
                           helps={"checkpoint_every": "steps between checkpoints (default: --eval-every)"})
    p.add_argument("--quiet", action="store_true", help="print only the summary (no progress)")
    p.set_defaults(run=main)
    return p


def main(args: argparse.Namespace) -> int:
    """``companion grpo``: setup → train → save, then the before/after summary."""
    # setup: the base model twice (the policy, and its frozen reference), the prompts, the key
    base = args.checkpoint or args.model
    policy, reference, tokenizer = load_policy_and_reference(base, progress=not args.quiet)
    settings = {"base": base_identity(base), "families": args.families, "wordings": args.wordings,
                "items_from": args.items_from, "prompts": args.prompts, "batch_size": args.batch_size,
                "group_size": args.group_size, "kl_beta": args.kl_beta, "clip": args.clip,
                "temperature": args.temperature, "steps": args.max_steps,
                **{k: getattr(args, k) for k in ("lr", "min_lr", "warmup_steps", "weight_decay", "seed")}}
    key = run_key(settings)
    check_resume(args.out, key, resume=args.resume, key_of=lambda extra: extra.get("grpo", {}).get("run_key"),
                 hint="pass --no-resume to overwrite it, or choose another --out", error=UsageError)
    items = task_items(args.items_from)
    prompts = [{**record, "instruction": strip_lead(record["instruction"])}
               for record in make_tasks(items, args.prompts, split="train", phrasings=args.wordings,
                                        families=args.families, seed=11)]
    test = make_tasks(items, args.test_per_family, split="test",
                      phrasings="held_out", families=args.families, seed=3)
    loader = DataLoader(TensorDataset(torch.arange(len(prompts))), batch_size=args.batch_size, shuffle=True,
                        drop_last=True)
    task = GRPOTask(prompts, tokenizer, reference, group_size=args.group_size, temperature=args.temperature,
                    clip=args.clip, kl_beta=args.kl_beta)
    before = evaluate_tasks(policy, tokenizer, test)

    # train and save (train writes the checkpoints into --out, holding the run-folder lock)
    options = flags.options_from_args(args, OPTIONS, _OPTION_FLAGS, progress=not args.quiet,
                                      checkpoint_dir=args.out)
    training.train(policy, loader, None, options, task=task, tokenizer=tokenizer,
                   checkpoint_extra={"grpo": {**settings, "run_key": key}})
    after = evaluate_tasks(policy, tokenizer, test)
    per_family = ", ".join(f"{name} {before.accuracy[name]:.0%} -> {after.accuracy[name]:.0%}"
                           for name in args.families)
    print(f"held-out accuracy: {per_family}; mean {before.mean:.1%} -> {after.mean:.1%}; "
          f"checkpoint in {args.out}")
    return 0
