"""Chapter 7's whole run: instruction fine-tuning (``companion finetune-instructions``).

Setup (``load_base_model``; instruction records in the Alpaca format, split, encoded
and batched by ``companion.finetune.instruction``) → train (``companion.train.train`` with
``OPTIONS`` changed by the flags) → save (resumable checkpoints whose ``extra["finetune"]``
holds the settings and the run's key), then a one-line-per-model summary: the held-out
test instructions answered before and after fine-tuning.
"""

from __future__ import annotations

import argparse
from typing import Any

import companion.train as training
from companion.course_models import RECIPES
from companion.finetune import instruction as ins
from companion.history import TrainHistory
from companion.model import num_parameters
from companion.runs import flags
from companion.runs.base import load_base_model
from companion.runs.common import UsageError, check_resume
from companion.train import TrainOptions

__all__ = ["COMMAND", "OPTIONS", "add_command", "main"]

COMMAND = "finetune-instructions"

OPTIONS = TrainOptions(max_steps=400, lr=1e-3, min_lr=None, warmup_steps=10, weight_decay=0.1, eval_every=50,
                       seed=123)
"""The run's training settings (the flags' defaults); without ``--min-lr`` the rate decays to a tenth of ``--lr``."""

LOW_MEMORY_PARAMS = 100_000_000
"""From this many parameters (GPT-2 124M and up) the run saves memory by default: the fused
head (``companion.fused``) and activation checkpointing. GPT-2 124M at batch 8 then peaks at
about 3.3 GB instead of 5.1 GB (``bench/memory.py``)."""

_OPTION_FLAGS = ("max_steps", "lr", "min_lr", "warmup_steps", "weight_decay", "seed", "eval_every",
                 "checkpoint_every", "resume")
"""The ``TrainOptions`` fields the command has flags for."""


def add_command(commands: Any) -> argparse.ArgumentParser:
    """Add ``companion finetune-instructions`` to the command line's subparsers."""
    fi = commands.add_parser(
        COMMAND,
        help="fine-tune a model to follow instructions and score its answers",
        description=(
            "Fine-tune a course model (or a checkpoint) on instruction records in the Alpaca format "
            "(chapter 7), writing a resumable checkpoint folder; then answer the held-out test "
            "instructions with the model before and after fine-tuning and print the mean ROUGE-L, "
            "token F1, and the share of answers that end with the end-of-text token. Records that "
            "do not fit the model's context are dropped (or truncated with --too-long truncate)."
        ),
    )
    flags.add_run_flags(fi, model_help=f"the model to start from: a course model ({', '.join(RECIPES)}; default "
                                       "shakespeare-small) or a GPT-2 size such as gpt2-small (OpenAI's weights, "
                                       "downloaded on first use)")
    fi.add_argument("--data", default="instruction-data", metavar="NAME_OR_PATH",
                    help="a course data file or a JSON list of {instruction, input, output} records "
                         "(default instruction-data)")
    fi.add_argument("--prompt-style", choices=ins.PROMPT_STYLES, default="compact",
                    help="alpaca: the full Alpaca template; compact: without its opening sentence (default)")
    fi.add_argument("--mask-instructions", action="store_true",
                    help="train on the responses only (the prompt's tokens do not count in the loss)")
    fi.add_argument("--too-long", choices=("drop", "truncate"), default="drop",
                    help="records longer than the context: drop them (default) or cut them to fit")
    fi.add_argument("--val-fraction", type=flags.probability, default=0.1, metavar="F",
                    help="share of the records held out for validation (default 0.1)")
    fi.add_argument("--test-fraction", type=flags.probability, default=0.1, metavar="F",
                    help="share of the records held out for the test (default 0.1)")
    fi.add_argument("--split-seed", type=flags.non_negative, default=123, metavar="N",
                    help="seed of the split into training, validation and test (default 123)")
    fi.add_argument("--batch-size", type=flags.positive, default=8, metavar="N", help="examples per step (default 8)")
    fi.add_argument("--checkpoint-activations", action=argparse.BooleanOptionalAction, default=None,
                    help="keep only each block's input and recompute the block in the backward pass: the same "
                         "gradients, about a third more compute, much less memory (default: on for models of "
                         f"{LOW_MEMORY_PARAMS // 10**6}M parameters or more, such as GPT-2)")
    flags.add_option_flags(fi, TrainOptions, _OPTION_FLAGS, defaults=OPTIONS,
                           helps={"min_lr": "end of the cosine decay (default: a tenth of --lr)",
                                  "seed": "seed of the data order and dropout",
                                  "checkpoint_every": "steps between checkpoints (default: --eval-every)"})
    fi.add_argument("--eval-examples", type=flags.non_negative, default=None, metavar="N",
                    help="answer only the first N test instructions (default all; 0 skips the evaluation)")
    fi.add_argument("--quiet", action="store_true", help="print only the summary (no progress)")
    fi.set_defaults(run=main)
    return fi


def set_memory_savers(model: Any, checkpoint: bool | None) -> None:
    """The fused head and activation checkpointing for a large model (``checkpoint=None``: by size).

    Both compute the same loss (the fused head to float32 rounding, checkpointing bit for
    bit), so they change memory and time, not the run's result or its key.

    Raises:
        UsageError: Checkpointing was asked for a model that cannot do it.
    """
    large = num_parameters(model) >= LOW_MEMORY_PARAMS
    if checkpoint is None:  # by size, where the model can do it (a ModernGPT cannot)
        checkpoint = large and hasattr(model, "set_activation_checkpointing")
    if checkpoint and not hasattr(model, "set_activation_checkpointing"):
        raise UsageError(f"--checkpoint-activations needs a GPTModel; this model is a {type(model).__name__}; "
                         "pass --no-checkpoint-activations")
    if checkpoint:
        model.set_activation_checkpointing(True)
    if large and hasattr(model, "set_head_impl"):
        model.set_head_impl("fused")


def main(args: argparse.Namespace) -> int:
    """``companion finetune-instructions``: setup → train → save, then the before/after summary."""
    # setup: the base model, the data, the run's key
    model, tokenizer = load_base_model(args.checkpoint or args.model, progress=not args.quiet)
    if args.checkpoint is not None:
        from companion.files import sha256_of

        base: dict[str, str] = {"checkpoint": sha256_of(args.checkpoint / "model.safetensors")}
    else:
        base = {"model": RECIPES[args.model].cache_key() if args.model in RECIPES else args.model}
    records, data_hash = ins.load_records(args.data)
    settings = {"base": base, "data": data_hash, **{k: getattr(args, k) for k in (
        "prompt_style", "mask_instructions", "too_long", "val_fraction", "test_fraction", "split_seed")},
        "steps": args.max_steps, "batch_size": args.batch_size,
        **{k: getattr(args, k) for k in ("lr", "min_lr", "warmup_steps", "weight_decay", "seed")}}
    key = ins.run_key(settings)
    check_resume(args.out, key, resume=args.resume, key_of=lambda extra: extra.get("finetune", {}).get("run_key"),
                 hint="pass --no-resume to overwrite it, or choose another --out", error=UsageError)
    set_memory_savers(model, args.checkpoint_activations)
    T = model.config.context_length
    data = ins.prepare_instruction_data(
        records, tokenizer, T, style=args.prompt_style, batch_size=args.batch_size,
        mask_prompt=args.mask_instructions, too_long=args.too_long, val_fraction=args.val_fraction,
        test_fraction=args.test_fraction, seed=args.split_seed)
    test = data.test_set.entries[: args.eval_examples]
    done_to = "dropped" if args.too_long == "drop" else "truncated"
    print(f"{len(data.train_set)} training, {len(data.val_set)} validation and {len(data.test_set)} test examples "
          f"for a context of {T} tokens ({data.train_set.dropped + data.train_set.truncated} of the "
          f"{len(data.splits.train)} training records were too long and {done_to})", flush=True)
    before = ins.evaluate_instructions(model, tokenizer, test, style=args.prompt_style) if test else None

    # train and save (train writes the checkpoints into --out, holding the run-folder lock)
    def report(step: int, history: TrainHistory) -> None:
        if not args.quiet and history.steps and history.steps[-1] == step:
            print(f"step {step:>5}/{args.max_steps}  train {history.train_loss[-1]:.4f}  "
                  f"val {history.val_loss[-1] if history.val_loss[-1] is not None else float('nan'):.4f}", flush=True)

    options = flags.options_from_args(
        args, OPTIONS, _OPTION_FLAGS, min_lr=args.lr / 10 if args.min_lr is None else args.min_lr,
        progress=not args.quiet, checkpoint_dir=args.out)
    history = training.train(model, data.train_loader, data.val_loader if len(data.val_set) else None, options,
                             tokenizer=tokenizer, callback=report,
                             checkpoint_extra={"finetune": {**settings, "run_key": key}})
    print(f"done: {history.steps[-1] if history.steps else 0} steps; checkpoint in {args.out}", flush=True)

    # the summary
    if before is not None:
        after = ins.evaluate_instructions(model, tokenizer, test, style=args.prompt_style)
        print(f"{len(test)} test instructions   ROUGE-L   token F1   ended with <|endoftext|>")
        for name, result in (("before", before), ("after", after)):
            print(f"{name + ' fine-tuning':<24}{result.rouge_l:>9.3f}{result.token_f1:>11.3f}{result.stop_rate:>13.0%}")
    return 0
