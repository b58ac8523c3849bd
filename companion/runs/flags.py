"""Command-line flags made from dataclass fields: each training setting is declared once.

``add_option_flags(parser, TrainOptions, names, defaults=...)`` adds one flag per named
field of ``companion.train.TrainOptions`` (or of any dataclass): its type, its check and
its help text come from the field, its default from the run's own ``TrainOptions``. A new
field of ``TrainOptions`` gets its flag for free: its help is the field's entry in the
class's ``Attributes:`` docstring (or ``metadata["help"]``), a ``str`` field's choices
are ``metadata["choices"]`` (or its ``Literal[...]`` type), a ``bool`` becomes ``--name/--no-name``, ``X | None``
accepts ``none``, a ``tuple[float, float]`` takes two numbers.

``options_from_args(args, base, names)`` reads the flags back into ``base.replace(...)``.

The number types (``positive``, ``non_negative_float``, ...) print clear messages such as
``argument --steps: must be at least 1, got 0``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "FLAG_NAMES",
    "UsageError",
    "add_option_flags",
    "add_run_flags",
    "field_help",
    "float_in",
    "int_at_least",
    "non_negative",
    "non_negative_float",
    "optional",
    "options_from_args",
    "positive",
    "positive_float",
    "probability",
]


class UsageError(ValueError):
    """Bad input found after parsing (``companion: error: ...``, status 2)."""


# --------------------------------------------------------------------------- #
# Number types with clear messages
# --------------------------------------------------------------------------- #
def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``low``."""

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


def float_in(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a number in an interval (``low_open``/``high_open`` exclude the ends)."""

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


def optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type that also accepts ``none`` (for ``None``)."""

    def parse_optional(text: str) -> Any:
        return None if text.lower() == "none" else parse(text)

    parse_optional.__name__ = parse.__name__
    return parse_optional


positive = int_at_least(1)
non_negative = int_at_least(0)
positive_float = float_in(0.0, math.inf, low_open=True, high_open=True)
non_negative_float = float_in(0.0, math.inf, high_open=True)
fraction = float_in(0.0, 1.0, low_open=True, high_open=True)
probability = float_in(0.0, 1.0, high_open=True)


# --------------------------------------------------------------------------- #
# Flags from fields
# --------------------------------------------------------------------------- #
FLAG_NAMES: Mapping[str, str] = {"max_steps": "steps"}
"""Fields whose flag is not the field's name (``--steps`` sets ``max_steps``)."""

_ZERO_ALLOWED = {"warmup_steps", "seed", "weight_decay", "min_lr", "grad_clip"}
"""Fields of ``TrainOptions`` whose flag accepts 0 (the others must be positive); a field
may say so itself with ``metadata={"min": 0}``."""

_ZERO_IS_NONE = {"grad_clip"}
"""Fields where 0 means "off" (``None``): ``--grad-clip 0`` disables clipping."""

_METAVARS = {int: "N", float: "X", str: "NAME"}


HELP: Mapping[str, str] = {
    "max_steps": "optimizer steps",
    "epochs": "passes over the training data",
    "lr": "peak learning rate",
    "min_lr": "learning rate at the end of the cosine decay; 'none' for a constant rate",
    "warmup_steps": "steps of linear warmup",
    "weight_decay": "AdamW weight decay",
    "betas": "AdamW's two betas",
    "grad_clip": "clip the gradients' global norm to X; 0 disables clipping",
    "eval_every": "steps between evaluation points",
    "eval_batches": "validation batches per evaluation",
    "eval_train_batches": "also evaluate on this many training batches",
    "sample_every": "steps between generated samples",
    "seed": "seed of the data order and dropout",
    "checkpoint_every": "steps between checkpoints (default: --eval-every)",
    "resume": "continue from the checkpoint in --out if there is one (default); --no-resume starts afresh "
              "and overwrites it",
}
"""The command line's words for the fields of ``TrainOptions`` (a field not named here is
described by its docstring, see ``field_help``)."""


def field_help(cls: type) -> dict[str, str]:
    """The help of each field of a dataclass: ``metadata["help"]``, else ``HELP``, else the
    first sentence of its entry in the ``Attributes:`` section of the class's docstring."""
    found: dict[str, str] = {}
    doc = cls.__doc__ or ""
    section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    for match in re.finditer(r"^ {4,8}(\w+): (.*?)(?=^ {4,8}\w+: |\Z)", section, re.M | re.S):
        text = " ".join(match.group(2).split()).replace("``", "")
        sentence = text.split(". ")[0].rstrip(".")
        found[match.group(1)] = sentence[:1].lower() + sentence[1:]
    for item in dataclasses.fields(cls):
        if "help" in item.metadata:
            found[item.name] = item.metadata["help"]
        elif item.name in HELP:
            found[item.name] = HELP[item.name]
    return found


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else hint), True
    return hint, False


def _parser_of(name: str, hint: Any, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``add_argument`` keywords for a field of type ``hint``."""
    if "type" in metadata:  # a field may name its own parser
        return {"type": metadata["type"], "metavar": metadata.get("metavar", "X")}
    base, is_optional = _unwrap_optional(hint)
    if base is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(base) is tuple:
        inner = typing.get_args(base)
        kind = inner[0] if inner else float
        return {"type": non_negative_float if kind is float else kind, "nargs": len(inner) or "+",
                "metavar": _METAVARS.get(kind, "X")}
    if base is str and metadata.get("choices"):
        return {"choices": tuple(metadata["choices"])}
    if typing.get_origin(base) is typing.Literal:  # precision: Literal["auto", "fp32", "bf16"]
        return {"choices": typing.get_args(base)}
    low = metadata.get("min", 0 if name in _ZERO_ALLOWED else 1)
    parse: Callable[[str], Any]
    if base is int:
        parse = int_at_least(low)
    elif base is float:
        parse = non_negative_float if low == 0 else positive_float
    elif base is str:
        parse = str
    else:
        raise TypeError(f"no flag for the field {name!r} of type {hint!r}; give it metadata['type']")
    if name in _ZERO_IS_NONE:
        inner_parse = parse

        def parse(text: str) -> Any:  # 0 turns it off
            value = inner_parse(text)
            return value or None

        parse.__name__ = inner_parse.__name__
    elif is_optional:
        parse = optional(parse)
    return {"type": parse, "metavar": metadata.get("metavar", _METAVARS.get(base, "X"))}


def _shown(value: Any) -> str:
    """A default as one writes it on the command line: 5e-4 rather than 0.0005."""
    if isinstance(value, tuple):
        return " ".join(_shown(v) for v in value)
    if isinstance(value, float) and value and abs(value) < 1e-2:
        mantissa, exponent = f"{value:.6e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def add_option_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    names: Sequence[str],
    *,
    defaults: Any = None,
    helps: Mapping[str, str] | None = None,
) -> None:
    """Add a flag for each field ``names`` of the dataclass ``cls`` (e.g. ``TrainOptions``).

    Args:
        parser: The parser or argument group.
        cls: The dataclass whose fields the flags set.
        names: The fields, in the order of the help.
        defaults: An instance of ``cls`` whose values are the defaults (shown in the help),
            or a mapping of some of them; a field without a default here is left out of
            the namespace unless given (``options_from_args`` then keeps the run's value).
        helps: Help texts that replace the field's own (e.g. "examples per step").
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    texts = {**field_help(cls), **(helps or {})}
    for name in names:
        item = fields[name]
        keywords = _parser_of(name, hints[name], item.metadata)
        if isinstance(defaults, Mapping):
            known, value = name in defaults, defaults.get(name)
        else:
            known, value = defaults is not None, getattr(defaults, name, None)
        text = texts.get(name, name.replace("_", " "))
        if known:
            keywords["default"] = value
            if keywords.get("action") is None and "(default" not in text:
                text = f"{text} (default {_shown(value)})"
        else:
            keywords["default"] = argparse.SUPPRESS
        flag = "--" + FLAG_NAMES.get(name, name).replace("_", "-")
        parser.add_argument(flag, dest=name, help=text.replace("%", "%%"), **keywords)


def options_from_args(args: argparse.Namespace, base: Any, names: Sequence[str], **changes: Any) -> Any:
    """``base.replace(...)`` with the fields ``names`` that the command line set (and ``changes``)."""
    given = {name: getattr(args, name) for name in names if hasattr(args, name)}
    given = {name: tuple(value) if isinstance(value, list) else value for name, value in given.items()}  # nargs
    return base.replace(**{**given, **changes})


def add_run_flags(parser: argparse.ArgumentParser, *, model_help: str, default_model: str = "shakespeare-small") -> None:
    """The flags every fine-tuning run has: ``--out DIR`` (its checkpoint folder) and the base
    model, ``--model NAME`` or ``--checkpoint DIR`` (for ``companion.runs.base.load_base_model``)."""
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="checkpoint folder to write (and to resume from)")
    base = parser.add_mutually_exclusive_group()
    base.add_argument("--model", default=default_model, metavar="NAME", help=model_help)
    base.add_argument("--checkpoint", type=Path, metavar="DIR",
                      help="start from a checkpoint folder instead (it must hold its tokenizer)")
