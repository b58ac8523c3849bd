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
    companion dpo --checkpoint runs/assistant --out runs/dpo   # chapter 8: preference tuning
    companion grpo --out runs/grpo                         # chapter 8: RL on checkable tasks
    companion chat                                         # talk to the chapter 7 model
    companion chat --prompt "Which number is larger: 37 52"  # one answer, for scripts
    companion check ch05 my_notebook.ipynb                 # run chapter 5's exercise checks on your answers

Errors in the input (a missing checkpoint, a bad number, an unknown name) print one
line starting with ``companion: error:`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from companion.runs.flags import UsageError, float_in, non_negative, non_negative_float, positive

__all__ = ["build_parser", "main"]

_PROG = "companion"


# --------------------------------------------------------------------------- #
# The parser
# --------------------------------------------------------------------------- #
_UsageError = UsageError
"""Bad input found after parsing (printed as ``companion: error: ...``, status 2)."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises instead of exiting, so ``main`` can return."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The ``companion`` argument parser: the whole runs' commands (``companion.runs``), ``generate``,
    ``chat`` and ``check``."""
    from companion.course_models import RECIPES
    from companion.runs import classify, dpo, grpo, instruct, pretrain

    recipes = ", ".join(RECIPES)
    parser = _Parser(
        prog=_PROG,
        description="Train and sample the GPT models of the course 'Build a Large Language Model from scratch'.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    pretrain.add_command(commands)  # train

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
    ge.add_argument("--max-tokens", type=positive, default=100, metavar="N",
                    help="most tokens to generate (default 100)")
    ge.add_argument("--temperature", type=non_negative_float, default=0.8, metavar="T",
                    help="sampling temperature; 0 for greedy decoding (default 0.8)")
    ge.add_argument("--top-k", type=positive, default=None, metavar="K",
                    help="sample only among the K most likely tokens")
    ge.add_argument("--top-p", type=float_in(0.0, 1.0, low_open=True), default=None, metavar="P",
                    help="sample only among the most likely tokens that add up to probability P")
    ge.add_argument("--seed", type=non_negative, default=123, metavar="N",
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
                    help=f"a course model ({models}), qwen3-0.6b (downloaded from the Hugging Face hub, "
                         "chapter 9) or a checkpoint folder (default shakespeare-tasks)")
    ch.add_argument("--prompt", default=None, metavar="TEXT", help="answer this message, print the answer and exit")
    ch.add_argument("--input", default="", metavar="TEXT", help="the input of the --prompt instruction, if it has one")
    ch.add_argument("--template", choices=("auto", "compact", "alpaca", "none"), default="auto",
                    help="the prompt template; auto: the one the model was fine-tuned with, none for a model "
                         "that was only pretrained (it continues the text)")
    ch.add_argument("--temperature", type=non_negative_float, default=0.0, metavar="T",
                    help="0 answers greedily (default); above 0 samples")
    ch.add_argument("--top-k", type=positive, default=None, metavar="K",
                    help="sample only among the K most likely tokens")
    ch.add_argument("--max-tokens", type=positive, default=64, metavar="N", help="longest answer (default 64)")
    ch.add_argument("--seed", type=non_negative, default=123, metavar="N", help="seed of the sampling (default 123)")
    ch.add_argument("--weights", choices=("fp32", "bf16", "int8"), default="fp32",
                    help="answer with the weights in float32 (default), bfloat16, or int8 linear layers")

    instruct.add_command(commands)  # finetune-instructions
    classify.add_command(commands)  # finetune-classifier
    dpo.add_command(commands)  # dpo
    grpo.add_command(commands)  # grpo

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


def _chat_model(source: str) -> tuple[Any, Any, Any, str]:
    """The model, tokenizer, template and a name for ``companion chat --model``."""
    from companion import list_models, pretrained
    from companion.checkpoint import load_checkpoint

    if source in list_models():
        found = pretrained(source)
        return found.model, found.tokenizer, found.info.get("prompt_style"), source
    path = Path(source).expanduser()
    from companion.modern import qwen3  # chapter 9: an open model from the Hugging Face hub

    if source in qwen3.HUB_MODELS or qwen3.is_qwen3_folder(path):
        try:
            folder = qwen3.download(source) if source in qwen3.HUB_MODELS else path
        except ConnectionError as err:
            raise _UsageError(str(err)) from err
        qwen, qwen_tokenizer = qwen3.load_qwen3_folder(folder)
        return qwen, qwen_tokenizer, qwen3.chat_prompt, source
    if not path.exists():
        raise _UsageError(f"--model {source!r} is neither a course model ({', '.join(list_models())}), "
                          f"a hub model ({', '.join(qwen3.HUB_MODELS)}) nor an existing checkpoint folder")
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
    template = ("its chat template" if callable(style) else f"the {style} template" if style
                else "no template (the model continues your text)")
    greeting = (f"{name}: {template}; {chat.describe()}.\n"
                "Type a message (an input after ' | '), /help for commands, Ctrl-D to leave.")
    return run_chat(chat, greeting=greeting)


def _check(args: argparse.Namespace) -> int:
    from companion.exercises.core import FAILED
    from companion.exercises.runner import check_file

    results = check_file(args.chapter, args.file)
    for result in results:
        print(result.line())
    return 1 if any(r.status == FAILED for r in results) else 0


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
        if hasattr(args, "run"):  # a whole run: companion.runs.<module>.main
            return int(args.run(args))
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
