"""The command line: ``companion train``, ``generate``, ``chat`` and the fine-tuning commands.

``python -m companion train --help`` and ``python -m companion generate --help``
describe every option. Examples::

    companion train --out runs/shakespeare                  # the shakespeare-small recipe
    companion train --model gpt2-small --n-layers 4 --emb-dim 256 --n-heads 4 \\
        --context-length 128 --data my_text.txt --steps 500 --out runs/mine
    companion generate --checkpoint runs/shakespeare --prompt "ROMEO:" --temperature 0.8 --top-k 40
    companion generate --pretrained shakespeare-small --prompt "ROMEO:"
    companion finetune-instructions --out runs/assistant    # chapter 7: follow instructions
    companion finetune-classifier --out runs/spam          # chapter 6: a spam classifier
    companion chat                                         # talk to the chapter 7 model
    companion chat --prompt "Which number is larger: 37 52"  # one answer, for scripts
    companion check ch05 my_notebook.ipynb                 # run chapter 5's exercise checks on your answers

Errors in the input (a missing checkpoint, a bad number, an unknown name) print one
line starting with ``companion: error:`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

__all__ = ["build_parser", "main"]

_PROG = "companion"


# --------------------------------------------------------------------------- #
# Number types with clear messages
# --------------------------------------------------------------------------- #
def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _float_in(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if math.isnan(value) or value < low or value > high or (low_open and value == low) or (
            high_open and value == high
        ):
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            raise argparse.ArgumentTypeError(f"must be in {left}{low}, {high}{right}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


_positive = _int_at_least(1)
_non_negative = _int_at_least(0)
_positive_float = _float_in(0.0, math.inf, low_open=True, high_open=True)
_non_negative_float = _float_in(0.0, math.inf, high_open=True)
_fraction = _float_in(0.0, 1.0, low_open=True, high_open=True)
_probability = _float_in(0.0, 1.0, high_open=True)


def _optional_float(text: str) -> float | None:
    if text.lower() == "none":
        return None
    return _non_negative_float(text)


_optional_float.__name__ = "number"


# --------------------------------------------------------------------------- #
# The parser
# --------------------------------------------------------------------------- #
class _UsageError(Exception):
    """Bad input found after parsing (printed as ``companion: error: ...``, status 2)."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises instead of exiting, so ``main`` can return."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The ``companion`` argument parser with its ``train`` and ``generate`` commands."""
    from companion.config import PRESETS
    from companion.course_models import RECIPES

    recipes = ", ".join(RECIPES)
    presets = ", ".join(PRESETS)
    parser = _Parser(
        prog=_PROG,
        description="Train and sample the GPT models of the course 'Build a Large Language Model from scratch'.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    # ----------------------------------------------------------------- train
    tr = commands.add_parser(
        "train",
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
    tr.add_argument("--val-fraction", type=_fraction, metavar="F",
                    help="last fraction of the text held out for validation (default 0.1)")
    tr.add_argument("--tokenizer", choices=("bpe", "gpt2"),
                    help="bpe: train a byte-level BPE on the training split (saved with the model); "
                         "gpt2: GPT-2's tokenizer (default for presets)")
    tr.add_argument("--vocab-size", type=_int_at_least(257), metavar="N",
                    help="tokens of the BPE tokenizer (with --tokenizer bpe)")
    model = tr.add_argument_group("model shape (overrides the recipe or preset)")
    model.add_argument("--context-length", type=_positive, metavar="N", help="tokens per training window")
    model.add_argument("--emb-dim", type=_positive, metavar="N", help="embedding width")
    model.add_argument("--n-heads", type=_positive, metavar="N", help="attention heads (must divide --emb-dim)")
    model.add_argument("--n-layers", type=_positive, metavar="N", help="transformer blocks")
    model.add_argument("--dropout", type=_probability, metavar="P", help="dropout rate in [0, 1)")
    opt = tr.add_argument_group("training (overrides the recipe)")
    opt.add_argument("--steps", type=_positive, metavar="N", help="optimizer steps")
    opt.add_argument("--batch-size", type=_positive, metavar="N", help="windows per step")
    opt.add_argument("--lr", type=_positive_float, metavar="X", help="peak learning rate")
    opt.add_argument("--min-lr", type=_optional_float, metavar="X",
                     help="learning rate at the end of the cosine decay; 'none' for a constant rate")
    opt.add_argument("--warmup-steps", type=_non_negative, metavar="N", help="steps of linear warmup")
    opt.add_argument("--weight-decay", type=_non_negative_float, metavar="X", help="AdamW weight decay")
    opt.add_argument("--grad-clip", type=_non_negative_float, metavar="X",
                     help="clip the gradients' global norm to X; 0 disables clipping")
    opt.add_argument("--seed", type=_non_negative, metavar="N", help="seed of the weights, data order and dropout")
    opt.add_argument("--eval-every", type=_positive, metavar="N", help="steps between evaluation points")
    opt.add_argument("--eval-batches", type=_positive, metavar="N", help="validation batches per evaluation")
    opt.add_argument("--checkpoint-every", type=_positive, metavar="N",
                     help="steps between checkpoints (default: --eval-every)")
    opt.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                     help="continue from the checkpoint in --out if there is one (default); "
                          "--no-resume starts afresh and overwrites it")
    opt.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                     help="auto: bfloat16 autocast where the hardware has it natively, else float32 "
                          "(default); fp32 reproduces the shipped models")
    tr.add_argument("--quiet", action="store_true", help="print only the final summary (no progress)")
    tr.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                    help="where to train; auto picks a CUDA GPU (LOCAL_RANK's under torchrun), else "
                         "Apple's MPS, else the CPU (default auto)")

    # -------------------------------------------------------------- generate
    ge = commands.add_parser(
        "generate",
        help="generate text from a checkpoint or a pretrained model",
        description="Continue a prompt with a trained model and print the text.",
    )
    source = ge.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, metavar="DIR",
                        help="a checkpoint folder written by 'companion train'")
    source.add_argument("--pretrained", metavar="NAME",
                        help=f"a course model ({recipes}); trained and cached on first use")
    ge.add_argument("--prompt", required=True, help="the text to continue")
    ge.add_argument("--max-tokens", type=_positive, default=100, metavar="N",
                    help="most tokens to generate (default 100)")
    ge.add_argument("--temperature", type=_non_negative_float, default=0.8, metavar="T",
                    help="sampling temperature; 0 for greedy decoding (default 0.8)")
    ge.add_argument("--top-k", type=_positive, default=None, metavar="K",
                    help="sample only among the K most likely tokens")
    ge.add_argument("--top-p", type=_float_in(0.0, 1.0, low_open=True), default=None, metavar="P",
                    help="sample only among the most likely tokens that add up to probability P")
    ge.add_argument("--seed", type=_non_negative, default=123, metavar="N",
                    help="seed of the sampling (default 123)")
    ge.add_argument("--stop-at-eos", action="store_true",
                    help="stop at the tokenizer's <|endoftext|> token")
    ge.add_argument("--no-cache", action="store_true",
                    help="re-read the whole context at every step instead of using the KV cache")
    ge.add_argument("--weights", choices=("fp32", "bf16", "int8"), default="fp32",
                    help="decode with the weights in float32 (default), bfloat16, or int8 linear layers "
                         "(fewer bytes per token; see companion.quantize)")

    # ------------------------------------------------------------------ chat
    from companion import list_models

    models = ", ".join(list_models())
    ch = commands.add_parser(
        "chat",
        help="talk to a course model or a fine-tuned checkpoint",
        description=(
            "Type a message, read the answer as it is written (chapter 7). Each message is put into the "
            "prompt template the model was fine-tuned with. Commands: /temperature X, /top_k N, "
            "/max_tokens N, /reset, /help, /quit. Ctrl-C stops an answer, Ctrl-D leaves. With --prompt, "
            "answer one message and exit."
        ),
    )
    ch.add_argument("--model", default="shakespeare-tasks", metavar="NAME_OR_DIR",
                    help=f"a course model ({models}) or a checkpoint folder from chapters 5 to 7 "
                         "(default shakespeare-tasks)")
    ch.add_argument("--prompt", default=None, metavar="TEXT", help="answer this message, print the answer and exit")
    ch.add_argument("--input", default="", metavar="TEXT", help="the input of the --prompt instruction, if it has one")
    ch.add_argument("--template", choices=("auto", "compact", "alpaca", "none"), default="auto",
                    help="the prompt template; auto: the one the model was fine-tuned with, none for a model "
                         "that was only pretrained (it continues the text)")
    ch.add_argument("--temperature", type=_non_negative_float, default=0.0, metavar="T",
                    help="0 answers greedily (default); above 0 samples")
    ch.add_argument("--top-k", type=_positive, default=None, metavar="K",
                    help="sample only among the K most likely tokens")
    ch.add_argument("--max-tokens", type=_positive, default=64, metavar="N", help="longest answer (default 64)")
    ch.add_argument("--seed", type=_non_negative, default=123, metavar="N", help="seed of the sampling (default 123)")
    ch.add_argument("--weights", choices=("fp32", "bf16", "int8"), default="fp32",
                    help="answer with the weights in float32 (default), bfloat16, or int8 linear layers")

    # ------------------------------------------------- finetune-instructions
    fi = commands.add_parser(
        "finetune-instructions",
        help="fine-tune a model to follow instructions and score its answers",
        description=(
            "Fine-tune a course model (or a checkpoint) on instruction records in the Alpaca format "
            "(chapter 7), writing a resumable checkpoint folder; then answer the held-out test "
            "instructions with the model before and after fine-tuning and print the mean ROUGE-L, "
            "token F1, and the share of answers that end with the end-of-text token. Records that "
            "do not fit the model's context are dropped (or truncated with --too-long truncate)."
        ),
    )
    fi.add_argument("--out", required=True, type=Path, metavar="DIR",
                    help="checkpoint folder to write (and to resume from)")
    base = fi.add_mutually_exclusive_group()
    base.add_argument("--model", default="shakespeare-small", metavar="NAME",
                      help=f"the course model to start from ({recipes}; default shakespeare-small)")
    base.add_argument("--checkpoint", type=Path, metavar="DIR",
                      help="start from a checkpoint folder instead (it must hold its tokenizer)")
    fi.add_argument("--data", default="instruction-data", metavar="NAME_OR_PATH",
                    help="a course data file or a JSON list of {instruction, input, output} records "
                         "(default instruction-data)")
    fi.add_argument("--prompt-style", choices=("alpaca", "compact"), default="compact",
                    help="alpaca: the full Alpaca template; compact: without its opening sentence (default)")
    fi.add_argument("--mask-instructions", action="store_true",
                    help="train on the responses only (the prompt's tokens do not count in the loss)")
    fi.add_argument("--too-long", choices=("drop", "truncate"), default="drop",
                    help="records longer than the context: drop them (default) or cut them to fit")
    fi.add_argument("--val-fraction", type=_probability, default=0.1, metavar="F",
                    help="share of the records held out for validation (default 0.1)")
    fi.add_argument("--test-fraction", type=_probability, default=0.1, metavar="F",
                    help="share of the records held out for the test (default 0.1)")
    fi.add_argument("--split-seed", type=_non_negative, default=123, metavar="N",
                    help="seed of the split into training, validation and test (default 123)")
    fi.add_argument("--steps", type=_positive, default=400, metavar="N", help="optimizer steps (default 400)")
    fi.add_argument("--batch-size", type=_positive, default=8, metavar="N", help="examples per step (default 8)")
    fi.add_argument("--lr", type=_positive_float, default=1e-3, metavar="X", help="peak learning rate (default 1e-3)")
    fi.add_argument("--min-lr", type=_non_negative_float, default=None, metavar="X",
                    help="end of the cosine decay (default: a tenth of --lr)")
    fi.add_argument("--warmup-steps", type=_non_negative, default=10, metavar="N",
                    help="steps of linear warmup (default 10)")
    fi.add_argument("--weight-decay", type=_non_negative_float, default=0.1, metavar="X",
                    help="AdamW weight decay (default 0.1)")
    fi.add_argument("--seed", type=_non_negative, default=123, metavar="N",
                    help="seed of the data order and dropout (default 123)")
    fi.add_argument("--eval-every", type=_positive, default=50, metavar="N",
                    help="steps between validation points (default 50)")
    fi.add_argument("--checkpoint-every", type=_positive, metavar="N",
                    help="steps between checkpoints (default: --eval-every)")
    fi.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                    help="continue from the checkpoint in --out if there is one (default); "
                         "--no-resume starts afresh and overwrites it")
    fi.add_argument("--eval-examples", type=_non_negative, default=None, metavar="N",
                    help="answer only the first N test instructions (default all; 0 skips the evaluation)")
    fi.add_argument("--quiet", action="store_true", help="print only the summary (no progress)")

    # --------------------------------------------------- finetune-classifier
    fc = commands.add_parser(
        "finetune-classifier",
        help="fine-tune a model into a spam classifier",
        description=(
            "Fine-tune a pretrained model into a spam classifier on the SMS Spam Collection (chapter 6): "
            "deduplicate, balance and split the messages, replace the output layer by a 2-class head, "
            "train with resumable checkpoints in --out, then print the training, validation and test "
            "accuracy. The defaults are the chapter's settings for shakespeare-small."
        ),
    )
    fc.add_argument("--out", required=True, type=Path, metavar="DIR",
                    help="checkpoint folder to write (and to resume from)")
    fc_base = fc.add_mutually_exclusive_group()
    fc_base.add_argument("--model", default="shakespeare-small", metavar="NAME",
                         help=f"the model to start from: a course model ({recipes}) or a GPT-2 preset whose "
                              "weights are downloaded on first use (gpt2-small, ...); default shakespeare-small")
    fc_base.add_argument("--checkpoint", type=Path, metavar="DIR",
                         help="start from a checkpoint folder instead (it must hold its tokenizer)")
    fc.add_argument("--data", type=Path, metavar="PATH",
                    help="a file in the collection's format (label<TAB>message per line; default: the course's copy)")
    fc.add_argument("--train-blocks", type=_blocks, default=None, metavar="N|all",
                    help="how many of the last transformer blocks train with the head and final norm "
                         "(default all: every parameter)")
    length = fc.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=_positive, metavar="N", help="passes over the training messages (default 6)")
    length.add_argument("--steps", type=_positive, metavar="N", help="optimizer steps instead of epochs")
    fc.add_argument("--batch-size", type=_positive, default=8, metavar="N", help="messages per step (default 8)")
    fc.add_argument("--lr", type=_positive_float, default=5e-4, metavar="X", help="peak learning rate (default 5e-4)")
    fc.add_argument("--min-lr", type=_optional_float, default=5e-5, metavar="X",
                    help="end of the cosine decay (default 5e-5); 'none' for a constant rate")
    fc.add_argument("--max-length", type=_positive, metavar="N",
                    help="tokens per message (default: the longest training message, at most the context)")
    fc.add_argument("--seed", type=_non_negative, default=123, metavar="N",
                    help="seed of the split, the new head, the data order and dropout (default 123)")
    fc.add_argument("--eval-every", type=_positive, metavar="N", help="steps between evaluations (default: an epoch)")
    fc.add_argument("--checkpoint-every", type=_positive, metavar="N",
                    help="steps between checkpoints (default: --eval-every)")
    fc.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                    help="continue from the checkpoint in --out if there is one (default); "
                         "--no-resume starts afresh and overwrites it")
    fc.add_argument("--quiet", action="store_true", help="print only the summary (no progress)")

    # ----------------------------------------------------------------- check
    ch = commands.add_parser(
        "check",
        help="check your answers to a chapter's exercises",
        description=(
            "Run your notebook (every cell, in a fresh kernel, going on past errors) or your .py file, "
            "then run the chapter's exercise checks on the functions it defines. Prints one line per "
            "exercise: passed, failed with the reason, or not attempted. Exits with 1 if any failed."
        ),
    )
    ch.add_argument("chapter", metavar="CHAPTER", help="ch01 ... ch06, appa (Appendix A) or appb (Appendix B)")
    ch.add_argument("file", type=Path, metavar="FILE", help="your notebook (.ipynb) or Python file (.py)")
    return parser


# --------------------------------------------------------------------------- #
# Commands
# --------------------------------------------------------------------------- #
def _recipe_from_args(args: argparse.Namespace) -> Any:
    from companion.config import PRESETS, GPTConfig
    from companion.course_models import RECIPES, Recipe

    if args.model in RECIPES:
        base = RECIPES[args.model]
        config = base.config
        tokenizer = args.tokenizer or base.tokenizer
    elif args.model in PRESETS:
        config = GPTConfig.from_preset(args.model)
        tokenizer = args.tokenizer or ("bpe" if args.vocab_size else "gpt2")
        base = None
    else:
        raise _UsageError(
            f"unknown --model {args.model!r}; recipes: {', '.join(RECIPES)}; presets: {', '.join(PRESETS)}"
        )
    if tokenizer == "gpt2" and args.vocab_size and args.vocab_size != 50_257:
        raise _UsageError("--vocab-size sets the size of a BPE tokenizer; GPT-2's has 50,257 tokens")
    changes = {
        "context_length": args.context_length,
        "emb_dim": args.emb_dim,
        "n_heads": args.n_heads,
        "n_layers": args.n_layers,
        "drop_rate": args.dropout,
    }
    if tokenizer == "gpt2":
        changes["vocab_size"] = 50_257
    elif args.vocab_size:
        changes["vocab_size"] = args.vocab_size
    elif config.vocab_size == 50_257:  # a preset trained with a BPE of our own
        changes["vocab_size"] = 1_024
    config = config.replace(**{k: v for k, v in changes.items() if v is not None})

    fields: dict[str, Any] = {}
    for arg in ("data", "val_fraction", "steps", "batch_size", "lr", "warmup_steps", "weight_decay",
                "seed", "eval_every", "eval_batches"):
        value = getattr(args, arg)
        if value is not None:
            fields[arg] = value
    if args.grad_clip is not None:
        fields["grad_clip"] = args.grad_clip or None  # 0 disables clipping
    if args.min_lr_given:
        fields["min_lr"] = args.min_lr
    elif base is None:
        fields["min_lr"] = fields.get("lr", Recipe.lr) / 10
    elif "lr" in fields and base.min_lr is not None:
        fields["min_lr"] = fields["lr"] * base.min_lr / base.lr  # keep the recipe's ratio
    name = args.model if base is not None else f"{args.model}-custom"
    if base is not None:
        return base.replace(config=config, tokenizer=tokenizer, **fields)
    return Recipe(name=name, config=config, tokenizer=tokenizer, **fields)


def _train(args: argparse.Namespace) -> int:
    from companion import distributed

    joined = distributed.join_from_environment()  # started by torchrun: one process group for the run
    try:
        return _train_recipe(args, distributed.world().is_main)
    finally:
        if joined:
            distributed.leave()


def _train_recipe(args: argparse.Namespace, main: bool) -> int:
    from tqdm.auto import tqdm

    from companion.checkpoint import find_checkpoint, load_checkpoint
    from companion.course_models import train_recipe

    recipe = _recipe_from_args(args)
    key = recipe.cache_key()
    if args.resume and find_checkpoint(args.out) is not None:
        _, info = load_checkpoint(args.out)
        if info["extra"].get("recipe_key") != key:
            raise _UsageError(
                f"{args.out} holds a checkpoint of a different run (other model, data or training "
                "settings); pass --no-resume to overwrite it, or choose another --out"
            )
    cfg = recipe.config
    quiet = args.quiet or not main  # under torchrun only rank 0 prints
    say = print if main else _silent
    say(f"training {recipe.name}: {cfg.n_layers} layers, width {cfg.emb_dim}, {cfg.n_heads} heads, "
          f"context {cfg.context_length}, vocabulary {cfg.vocab_size} ({recipe.tokenizer}), "
          f"{recipe.steps} steps of {recipe.batch_size} windows, lr {recipe.lr:g}, data {recipe.data!r}",
          flush=True)

    def report(step: int, history: Any) -> None:
        if quiet or not history.steps or history.steps[-1] != step:
            return
        val = history.val_loss[-1]
        tqdm.write(
            f"step {step:>6}/{recipe.steps}  train {history.train_loss[-1]:.4f}  "
            f"val {'-' if val is None else f'{val:.4f}'}  lr {history.lr[-1]:.2e}  "
            f"{history.elapsed:.1f} s",
            file=sys.stdout,
        )

    from companion.devices import pick_device

    device = pick_device(None if args.device == "auto" else args.device)
    # the fused head pays with a large vocabulary (GPT-2's), not with a course BPE's (bench/run.py)
    head: Literal["fused", "manual"] = "fused" if recipe.config.vocab_size >= 16_384 else "manual"
    result = train_recipe(recipe, device=device, progress=not quiet, checkpoint_dir=args.out,
                          checkpoint_every=args.checkpoint_every, resume=args.resume, callback=report,
                          precision=args.precision, head_impl=head)
    info = result.info
    say(f"done: {info['steps']} steps in {info['train_seconds']:.1f} s; validation loss "
          f"{info['val_loss']:.4f} nats/token, {info['val_nats_per_char']:.4f} nats/char; "
          f"checkpoint in {args.out}", flush=True)
    return 0


def _generate(args: argparse.Namespace) -> int:
    from companion.checkpoint import load_checkpoint
    from companion.course_models import pretrained
    from companion.generate import generate_text

    if args.checkpoint is not None:
        model, info = load_checkpoint(args.checkpoint)
        tokenizer = info["tokenizer"]
        if tokenizer is None:
            if model.config.vocab_size != 50_257:
                raise _UsageError(
                    f"checkpoint {args.checkpoint} has no tokenizer and its vocabulary "
                    f"({model.config.vocab_size}) is not GPT-2's"
                )
            from companion.tokenizers import gpt2_tokenizer

            tokenizer = gpt2_tokenizer()
    else:
        result = pretrained(args.pretrained)
        model, tokenizer = result.model, result.tokenizer
    eos_id = None
    if args.stop_at_eos:
        eos_id = getattr(tokenizer, "eot_token", None)
        if eos_id is None:
            raise _UsageError("--stop-at-eos: this tokenizer has no <|endoftext|> token")
    try:
        prompt_ok = len(tokenizer.encode(args.prompt)) > 0
    except ValueError as err:  # a special token in the prompt
        raise _UsageError(f"--prompt: {err}") from err
    if not prompt_ok:
        raise _UsageError("--prompt must not be empty")
    if args.weights != "fp32":
        from companion.quantize import for_decoding

        model = for_decoding(model, args.weights)
    text = generate_text(model, tokenizer, args.prompt, args.max_tokens, temperature=args.temperature,
                         top_k=args.top_k, top_p=args.top_p, eos_id=eos_id, seed=args.seed,
                         use_cache=not args.no_cache)
    print(text)
    return 0


def _finetune_instructions(args: argparse.Namespace) -> int:
    import companion.train as training
    from companion.checkpoint import find_checkpoint, load_checkpoint
    from companion.course_models import pretrained
    from companion.files import sha256_of
    from companion.finetune import instruction as ins

    if args.checkpoint is not None:
        model, meta = load_checkpoint(args.checkpoint)
        tokenizer = meta["tokenizer"]
        if tokenizer is None:
            raise _UsageError(f"checkpoint {args.checkpoint} holds no tokenizer; fine-tuning needs the model's own")
        base = {"checkpoint": sha256_of(args.checkpoint / "model.safetensors")}
    else:
        found = pretrained(args.model, progress=not args.quiet)
        model, tokenizer, base = found.model, found.tokenizer, {"model": found.info["recipe_key"]}
    records, data_hash = ins.load_records(args.data)
    settings = {"base": base, "data": data_hash, **{k: getattr(args, k) for k in (
        "prompt_style", "mask_instructions", "too_long", "val_fraction", "test_fraction", "split_seed",
        "steps", "batch_size", "lr", "min_lr", "warmup_steps", "weight_decay", "seed")}}
    key = ins.run_key(settings)
    resuming = args.resume and find_checkpoint(args.out) is not None
    if resuming and load_checkpoint(args.out)[1]["extra"].get("finetune", {}).get("run_key") != key:
        raise _UsageError(f"{args.out} holds a checkpoint of a different run (other model, data or settings); "
                              "pass --no-resume to overwrite it, or choose another --out")
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

    def report(step: int, history: Any) -> None:
        if not args.quiet and history.steps and history.steps[-1] == step:
            print(f"step {step:>5}/{args.steps}  train {history.train_loss[-1]:.4f}  "
                  f"val {history.val_loss[-1] if history.val_loss[-1] is not None else float('nan'):.4f}", flush=True)

    options = training.TrainOptions(
        max_steps=args.steps, lr=args.lr, min_lr=args.lr / 10 if args.min_lr is None else args.min_lr,
        warmup_steps=args.warmup_steps, weight_decay=args.weight_decay, eval_every=args.eval_every,
        seed=args.seed, progress=not args.quiet, checkpoint_dir=args.out,
        checkpoint_every=args.checkpoint_every, resume=args.resume)
    history = training.train(model, data.train_loader, data.val_loader if len(data.val_set) else None, options,
                             tokenizer=tokenizer, callback=report,
                             checkpoint_extra={"finetune": {**settings, "run_key": key}})
    print(f"done: {history.steps[-1] if history.steps else 0} steps; checkpoint in {args.out}", flush=True)
    if before is not None:
        after = ins.evaluate_instructions(model, tokenizer, test, style=args.prompt_style)
        print(f"{len(test)} test instructions   ROUGE-L   token F1   ended with <|endoftext|>")
        for name, result in (("before", before), ("after", after)):
            print(f"{name + ' fine-tuning':<24}{result.rouge_l:>9.3f}{result.token_f1:>11.3f}{result.stop_rate:>13.0%}")
    return 0


def _chat_model(source: str) -> tuple[Any, Any, str | None, str]:
    """The model, tokenizer, template and a name for ``companion chat --model``."""
    from companion import list_models, pretrained
    from companion.checkpoint import load_checkpoint

    if source in list_models():
        found = pretrained(source)
        return found.model, found.tokenizer, found.info.get("prompt_style"), source
    path = Path(source).expanduser()
    if not path.exists():
        raise _UsageError(f"--model {source!r} is neither a course model ({', '.join(list_models())}) "
                          "nor an existing checkpoint folder")
    model, meta = load_checkpoint(path)
    if meta["tokenizer"] is None:
        raise _UsageError(f"the checkpoint {path} holds no tokenizer; chat needs the model's own")
    extra = meta["extra"]
    style = extra.get("finetune", {}).get("prompt_style") or extra.get("info", {}).get("prompt_style")
    return model, meta["tokenizer"], style, str(path)


def _chat(args: argparse.Namespace) -> int:
    from companion.chat import Chat, ChatSettings, run_chat

    model, tokenizer, style, name = _chat_model(args.model)
    if args.weights != "fp32":
        from companion.quantize import for_decoding

        model = for_decoding(model, args.weights)
    if args.template != "auto":
        style = None if args.template == "none" else args.template
    settings = ChatSettings(temperature=args.temperature, top_k=args.top_k, max_tokens=args.max_tokens,
                            seed=args.seed)
    chat = Chat(model, tokenizer, style=style, settings=settings)
    if args.prompt is not None:
        try:
            print(chat.answer(args.prompt, args.input))
        except ValueError as err:
            raise _UsageError(f"--prompt: {err}") from err
        return 0
    template = f"the {style} template" if style else "no template (the model continues your text)"
    greeting = (f"{name}: {template}; {chat.describe()}.\n"
                "Type a message (an input after ' | '), /help for commands, Ctrl-D to leave.")
    return run_chat(chat, greeting=greeting)


def _blocks(text: str) -> int | None:
    return None if text == "all" else _non_negative(text)


_blocks.__name__ = "number of blocks"


def _finetune_classifier(args: argparse.Namespace) -> int:
    from companion.finetune.classification import CHAPTER_OPTIONS, finetune_spam_classifier

    options = CHAPTER_OPTIONS.replace(
        epochs=None if args.steps else (args.epochs or CHAPTER_OPTIONS.epochs), max_steps=args.steps, lr=args.lr,
        min_lr=args.min_lr, seed=args.seed, progress=not args.quiet, checkpoint_dir=args.out,
        checkpoint_every=args.checkpoint_every, resume=args.resume)
    steps_run: list[int] = []

    def report(step: int, history: Any) -> None:
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


def _check(args: argparse.Namespace) -> int:
    from companion.exercises.core import FAILED
    from companion.exercises.runner import check_file

    results = check_file(args.chapter, args.file)
    for result in results:
        print(result.line())
    return 1 if any(r.status == FAILED for r in results) else 0


def _silent(*args: Any, **kwargs: Any) -> None:
    """``print`` for the processes other than rank 0."""


# --------------------------------------------------------------------------- #
# Entry point
# --------------------------------------------------------------------------- #
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 2 bad input).

    ``--help`` prints the help and returns 0. Used by ``python -m companion`` and the
    ``companion`` script.
    """
    from companion.checkpoint import CheckpointError
    from companion.files import DownloadError
    from companion.train import NonFiniteLossError, RunFolderBusyError

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
        args.min_lr_given = any(a == "--min-lr" or a.startswith("--min-lr=") for a in argv)
        if args.command == "train":
            return _train(args)
        if args.command == "finetune-instructions":
            return _finetune_instructions(args)
        if args.command == "finetune-classifier":
            return _finetune_classifier(args)
        if args.command == "chat":
            return _chat(args)
        if args.command == "check":
            return _check(args)
        return _generate(args)
    except SystemExit as exit_:  # --help (0)
        return int(exit_.code or 0)
    except _UsageError as err:
        print(f"{_PROG}: error: {err}", file=sys.stderr)
        return 2
    except (CheckpointError, FileNotFoundError, KeyError, ValueError, RunFolderBusyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"{_PROG}: error: {message}", file=sys.stderr)
        return 2
    except (OSError, NonFiniteLossError, DownloadError) as err:  # a full disk, a diverged run, no network
        print(f"{_PROG}: error: {err}", file=sys.stderr)
        return 1
