"""Instruction fine-tuning: prompts, splits, a dataset, a collate function, and responses.

Chapter 7, "Fine-tuning to follow instructions", builds each piece step by step:

* ``format_prompt`` / ``format_example``: an instruction record (``instruction``,
  ``input``, ``output``) as text in the Alpaca prompt format (Taori et al., 2023), with or
  without its fixed opening sentence (``PromptStyle``).
* ``split_entries``: seeded training, validation and test splits.
* ``InstructionDataset``: each record tokenized as prompt, response and one end-of-text
  token, keeping those that fit a model's context (or truncating them).
* ``collate_instructions``: a batch padded to its longest example, targets shifted by
  one, padding (and, as an option, the prompt) replaced by ``IGNORE_INDEX`` so that the
  loss skips it. ``companion.train.NextTokenTask`` then trains on these batches unchanged.
* ``generate_response`` and ``evaluate_instructions``: the model's greedy answer to a
  prompt, whether it ended with the end-of-text token, and the reference-based scores
  of ``companion.metrics`` over a split.

Shape letters used in this module:

* ``B``: batch size
* ``T``: tokens per sequence (the longest example of the batch, minus one)
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from companion.data import DATASETS, fetch
from companion.generate import generate
from companion.losses import IGNORE_INDEX
from companion.metrics import rouge_l, token_f1
from companion.model import GPTModel
from companion.tokenizers import encode_text

__all__ = [
    "ALPACA_PREAMBLE",
    "PROMPT_STYLES",
    "Evaluation",
    "InstructionData",
    "InstructionDataset",
    "InstructionExample",
    "PromptStyle",
    "Response",
    "Splits",
    "collate_instructions",
    "encode_example",
    "eos_id_of",
    "evaluate_instructions",
    "format_example",
    "format_prompt",
    "generate_response",
    "instruction_loader",
    "load_records",
    "prepare_instruction_data",
    "run_key",
    "split_entries",
]

PromptStyle = Literal["alpaca", "compact"]
"""``"alpaca"``: the Alpaca template, opening with ``ALPACA_PREAMBLE``; ``"compact"``: the
same sections without that sentence (it is the same in every example and costs tokens
that a model with a short context cannot spare)."""

PROMPT_STYLES: tuple[str, ...] = ("alpaca", "compact")

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
"""The sentence that opens every Alpaca prompt."""

TooLong = Literal["drop", "truncate", "error"]
_KEYS = ("instruction", "input", "output")


# --------------------------------------------------------------------------- #
# The prompt format
# --------------------------------------------------------------------------- #
def _check_entry(entry: Mapping[str, Any], *, needs_output: bool) -> None:
    if not isinstance(entry, Mapping):
        raise TypeError(f"an instruction record must be a dict, got {type(entry).__name__}")
    keys = ("instruction", "output") if needs_output else ("instruction",)
    missing = [k for k in keys if k not in entry]
    if missing:
        raise ValueError(f"the instruction record lacks {missing}; it has {sorted(entry)}")
    for key in _KEYS:
        if key in entry and not isinstance(entry[key], str):
            raise TypeError(f"the record's {key!r} must be a string, got {type(entry[key]).__name__}")


def _check_style(style: str) -> None:
    if style not in PROMPT_STYLES:
        raise ValueError(f"style={style!r} is unknown; choose one of {PROMPT_STYLES}")


def format_prompt(entry: Mapping[str, str], style: PromptStyle = "alpaca") -> str:
    """The prompt for a record, ending where the model's response starts (chapter 7,
    "The prompt format").

    ``### Instruction:``, the instruction, an ``### Input:`` section when the record's
    ``input`` is not empty, and ``### Response:`` followed by a newline; the ``"alpaca"``
    style opens with ``ALPACA_PREAMBLE``. Sections are separated by a blank line.

    Raises:
        ValueError: ``style`` is unknown, or the record has no ``"instruction"``.
    """
    _check_style(style)
    _check_entry(entry, needs_output=False)
    parts = [ALPACA_PREAMBLE] if style == "alpaca" else []
    parts.append(f"### Instruction:\n{entry['instruction']}")
    if entry.get("input"):
        parts.append(f"### Input:\n{entry['input']}")
    parts.append("### Response:\n")
    return "\n\n".join(parts)


def format_example(entry: Mapping[str, str], style: PromptStyle = "alpaca") -> str:
    """The prompt followed by the record's ``output``: one training text (chapter 7)."""
    _check_entry(entry, needs_output=True)
    return format_prompt(entry, style) + entry["output"]


def load_records(
    source: str | Path, check: Callable[[Mapping[str, Any]], None] | None = None
) -> tuple[list[dict[str, str]], str]:
    """Instruction records from a course data file (``"instruction-data"``) or a JSON file.

    ``check(record)`` refuses a record with ``ValueError`` or ``TypeError``; the default
    needs ``instruction``, ``input`` and ``output`` strings (chapter 8 passes its own, for
    preference pairs).

    Returns:
        ``(records, sha256)``: the list of records and the SHA-256 of the file's bytes
        (to tell runs on different data apart).

    Raises:
        ValueError: The file is not UTF-8 JSON, or not a list of records with string
            fields (the message names the file).
        FileNotFoundError: ``source`` is neither a course data file nor a file.
    """
    path = fetch(str(source), progress=False) if str(source) in DATASETS else Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{source} is neither a course data file ({', '.join(DATASETS)}) nor a file")
    raw = path.read_bytes()
    try:
        records = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(
            f"the data file {path} is not UTF-8 text ({err.reason} at byte {err.start}); convert it to UTF-8"
        ) from err
    except json.JSONDecodeError as err:
        raise ValueError(
            f"the data file {path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
            "it must hold a JSON list of {\"instruction\", \"input\", \"output\"} records"
        ) from err
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path} must hold a non-empty JSON list of instruction records")
    for i, record in enumerate(records):
        try:
            if check is None:
                _check_entry(record, needs_output=True)
            else:
                check(record)
        except (TypeError, ValueError) as err:
            raise ValueError(f"record {i} of {path}: {err}") from None
    return records, hashlib.sha256(raw).hexdigest()


def run_key(settings: Mapping[str, Any]) -> str:
    """A short hash of JSON-able settings: two runs with the same key are the same run."""
    payload = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- #
# Splits
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Splits:
    """Training, validation and test records (see ``split_entries``)."""

    train: list[dict[str, str]]
    val: list[dict[str, str]]
    test: list[dict[str, str]]


def split_entries(
    entries: Sequence[Mapping[str, str]],
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 123,
) -> Splits:
    """Shuffle the records with a seed and cut them into three disjoint splits (chapter 7).

    The order comes from ``random.Random(seed)``, which is the same on every machine and
    Python version, so every reader gets the same test split. The test and validation
    splits hold ``round(n * fraction)`` records; training gets the rest.

    Raises:
        ValueError: A fraction is out of range, or a split would be empty.
    """
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= fraction < 1:
            raise ValueError(f"{name}={fraction!r} must be in [0, 1)")
    n = len(entries)
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    if n - n_test - n_val < 1 or (test_fraction > 0 and n_test == 0) or (val_fraction > 0 and n_val == 0):
        raise ValueError(
            f"{n} records cannot be split into {1 - val_fraction - test_fraction:.0%} training, "
            f"{val_fraction:.0%} validation and {test_fraction:.0%} test with every split non-empty"
        )
    order = list(range(n))
    random.Random(seed).shuffle(order)
    picked = [dict(entries[i]) for i in order]
    return Splits(
        train=picked[n_test + n_val :],
        val=picked[n_test : n_test + n_val],
        test=picked[:n_test],
    )


# --------------------------------------------------------------------------- #
# Tokenized examples
# --------------------------------------------------------------------------- #
def eos_id_of(tokenizer: Any) -> int:
    """The id of the tokenizer's ``<|endoftext|>`` token (``eot_token``).

    Raises:
        ValueError: The tokenizer has none.
    """
    try:
        return int(tokenizer.eot_token)
    except AttributeError:
        raise ValueError(
            f"{type(tokenizer).__name__} has no <|endoftext|> token (eot_token); pass eos_id explicitly"
        ) from None


def _encode_data(tokenizer: Any, text: str) -> list[int]:
    """The ids of a text that is data: special tokens' text stays ordinary text (where the
    tokenizer can tell them apart, as ``BPETokenizer`` and tiktoken can)."""
    ordinary = getattr(tokenizer, "encode_ordinary", None)
    return list(ordinary(text)) if ordinary is not None else encode_text(tokenizer, text)


@dataclass(frozen=True)
class InstructionExample:
    """One tokenized record.

    Attributes:
        ids: The prompt's tokens, the response's, then the end-of-text token.
        prompt_length: How many of ``ids`` belong to the prompt.
    """

    ids: tuple[int, ...]
    prompt_length: int


def encode_example(
    entry: Mapping[str, str], tokenizer: Any, *, style: PromptStyle = "alpaca", eos_id: int | None = None
) -> InstructionExample:
    """Tokenize a record as prompt + response + end-of-text (chapter 7).

    The prompt and the response are encoded separately and joined, so the prompt's
    tokens are exactly those the model reads when it answers the same prompt later.
    A record is data, not markup: a special token's text inside it (a literal
    ``<|endoftext|>`` in an output) is encoded as ordinary text, so the only
    end-of-text token is the one appended here (``encode_ordinary``).
    """
    prompt = _encode_data(tokenizer, format_prompt(entry, style))
    _check_entry(entry, needs_output=True)
    response = _encode_data(tokenizer, entry["output"])
    eos = eos_id_of(tokenizer) if eos_id is None else eos_id
    return InstructionExample(ids=(*prompt, *response, eos), prompt_length=len(prompt))


class InstructionDataset(Dataset[InstructionExample]):
    """Instruction records tokenized once, the ones that fit kept (chapter 7, "A dataset").

    An example of ``n`` tokens gives ``n - 1`` inputs (each token predicts the next), so
    it fits a model whose context is ``context_length`` tokens when
    ``n - 1 <= context_length``.

    Args:
        entries: Records with ``instruction``, ``input`` and ``output``.
        tokenizer: Any course tokenizer.
        style: The prompt style.
        context_length: The model's context; ``None`` keeps every example whole.
        too_long: What to do with an example that does not fit: ``"drop"`` it (the
            default: every kept example ends with its end-of-text token), ``"truncate"``
            it to its first ``context_length + 1`` tokens (its end, and the end-of-text
            token, are lost), or raise an ``"error"``.
        eos_id: The end-of-text id; ``None`` takes the tokenizer's.

    Attributes:
        examples: The kept examples, in the order of ``entries``.
        entries: The records they came from.
        dropped: How many records did not fit and were dropped.
        truncated: How many were truncated.

    Raises:
        ValueError: ``too_long="error"`` and an example does not fit, or a bad argument.
    """

    def __init__(
        self,
        entries: Iterable[Mapping[str, str]],
        tokenizer: Any,
        *,
        style: PromptStyle = "alpaca",
        context_length: int | None = None,
        too_long: TooLong = "drop",
        eos_id: int | None = None,
    ) -> None:
        if too_long not in ("drop", "truncate", "error"):
            raise ValueError(f"too_long={too_long!r} must be 'drop', 'truncate' or 'error'")
        if context_length is not None and (isinstance(context_length, bool) or context_length < 1):
            raise ValueError(f"context_length={context_length!r} must be a positive integer or None")
        eos = eos_id_of(tokenizer) if eos_id is None else eos_id
        self.examples: list[InstructionExample] = []
        self.entries: list[dict[str, str]] = []
        self.dropped = 0
        self.truncated = 0
        for i, entry in enumerate(entries):
            example = encode_example(entry, tokenizer, style=style, eos_id=eos)
            if context_length is not None and len(example.ids) - 1 > context_length:
                if too_long == "error":
                    raise ValueError(
                        f"record {i} has {len(example.ids)} tokens with its end-of-text token, more than "
                        f"context_length + 1 = {context_length + 1}; drop or truncate it (too_long=...)"
                    )
                if too_long == "drop":
                    self.dropped += 1
                    continue
                keep = context_length + 1
                example = InstructionExample(example.ids[:keep], min(example.prompt_length, keep))
                self.truncated += 1
            self.examples.append(example)
            self.entries.append(dict(entry))

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> InstructionExample:
        return self.examples[index]


# --------------------------------------------------------------------------- #
# Batches
# --------------------------------------------------------------------------- #
def collate_instructions(
    batch: Sequence[InstructionExample],
    *,
    pad_id: int,
    mask_prompt: bool = False,
    ignore_index: int = IGNORE_INDEX,
    max_length: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Pad a batch of examples and make next-token inputs and targets (chapter 7,
    "Batches: padding, shifting, masking").

    Each example's inputs are its tokens but the last and its targets its tokens but the
    first (the inputs shifted by one). Rows shorter than the batch's longest are padded:
    inputs with ``pad_id``, targets with ``ignore_index``, so that the loss skips the
    padding. The last real target of every row is its end-of-text token, which is how
    the model learns to stop. With ``mask_prompt``, the targets that are prompt tokens
    are ``ignore_index`` too, and only the response (and its end-of-text token) is
    trained on.

    Args:
        batch: Examples from an ``InstructionDataset``.
        pad_id: The input id of padded positions (GPT models often reuse
            ``<|endoftext|>``; the model never has to predict it there).
        mask_prompt: Also leave the prompt out of the loss.
        ignore_index: The target id the loss skips (``-100``, PyTorch's default).
        max_length: Cut both tensors to at most this many columns (a model's context).

    Returns:
        ``(inputs, targets)``, each ``(B, T)`` long, ``T`` the longest example's length
        minus one (at most ``max_length``).

    Raises:
        ValueError: The batch is empty or an example has fewer than two tokens.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    if any(len(ex.ids) < 2 for ex in batch):
        raise ValueError("every example needs at least two tokens (one input and one target)")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length={max_length!r} must be a positive integer or None")
    B, T = len(batch), max(len(ex.ids) for ex in batch) - 1
    inputs = torch.full((B, T), pad_id, dtype=torch.long)  # (B, T)
    targets = torch.full((B, T), ignore_index, dtype=torch.long)  # (B, T)
    for row, ex in enumerate(batch):
        ids = torch.tensor(ex.ids, dtype=torch.long)  # (n,)
        n = ids.numel() - 1
        inputs[row, :n] = ids[:-1]
        targets[row, :n] = ids[1:]  # shifted by one
        if mask_prompt:  # targets that are prompt tokens (none for a prompt of 0 or 1 tokens)
            targets[row, : max(ex.prompt_length - 1, 0)] = ignore_index
    if max_length is not None:
        inputs, targets = inputs[:, :max_length], targets[:, :max_length]
    return inputs, targets


def instruction_loader(
    dataset: InstructionDataset,
    *,
    batch_size: int,
    pad_id: int,
    shuffle: bool = False,
    drop_last: bool = False,
    mask_prompt: bool = False,
    max_length: int | None = None,
) -> DataLoader[InstructionExample]:
    """A ``DataLoader`` that batches a dataset with ``collate_instructions``: it yields
    ``(inputs, targets)``, each ``(B, T)``.

    ``companion.train.train`` draws the order of a shuffled loader from its own seed,
    so this loader needs no generator.

    Raises:
        ValueError: ``drop_last`` with fewer examples than ``batch_size`` (no batch).
    """
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"{len(dataset)} examples make no full batch of {batch_size}; use drop_last=False or a smaller batch"
        )
    collate: Callable[[Sequence[InstructionExample]], tuple[Tensor, Tensor]] = functools.partial(
        collate_instructions, pad_id=pad_id, mask_prompt=mask_prompt, max_length=max_length
    )
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, collate_fn=collate)


@dataclass
class InstructionData:
    """Everything a fine-tuning run needs from the records (see ``prepare_instruction_data``).

    Attributes:
        splits: The records of each split, before any was dropped.
        train_set, val_set, test_set: The examples of each split that fit.
        train_loader: Shuffled batches of ``train_set`` (last partial batch dropped).
        val_loader: Batches of ``val_set`` in order.
    """

    splits: Splits
    train_set: InstructionDataset
    val_set: InstructionDataset
    test_set: InstructionDataset
    train_loader: DataLoader[InstructionExample]
    val_loader: DataLoader[InstructionExample]


def prepare_instruction_data(
    entries: Sequence[Mapping[str, str]],
    tokenizer: Any,
    context_length: int,
    *,
    style: PromptStyle = "alpaca",
    batch_size: int = 8,
    mask_prompt: bool = False,
    too_long: TooLong = "drop",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 123,
) -> InstructionData:
    """Split the records, tokenize each split for a model's context, and make loaders.

    The splits are drawn before any record is dropped, so the test records are the
    same whatever model (context) is fine-tuned; the datasets then keep those that fit.
    Padding reuses the end-of-text id.

    Raises:
        ValueError: The training split keeps fewer examples than ``batch_size``.
    """
    splits = split_entries(entries, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    sets = [
        InstructionDataset(part, tokenizer, style=style, context_length=context_length, too_long=too_long)
        for part in (splits.train, splits.val, splits.test)
    ]
    pad = eos_id_of(tokenizer)
    kept, given = len(sets[0]), len(splits.train)
    if kept < batch_size and sets[0].dropped:
        raise ValueError(
            f"only {kept} of the {given} training records fit a context of {context_length} tokens (the other "
            f"{sets[0].dropped} are longer and were dropped), fewer than one batch of {batch_size}; use "
            "too_long='truncate', shorter records, a model with a longer context, or a smaller batch_size"
        )
    if kept < batch_size:
        raise ValueError(
            f"the {kept} training records make no full batch of {batch_size}; use a batch_size of at most {kept}"
        )
    train_loader = instruction_loader(sets[0], batch_size=batch_size, pad_id=pad, shuffle=True, drop_last=True,
                                      mask_prompt=mask_prompt)
    val_loader = instruction_loader(sets[1], batch_size=batch_size, pad_id=pad, mask_prompt=mask_prompt)
    return InstructionData(splits, sets[0], sets[1], sets[2], train_loader, val_loader)


# --------------------------------------------------------------------------- #
# Responses and their evaluation
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Response:
    """A model's answer to one prompt.

    Attributes:
        text: The generated text before the end-of-text token, without surrounding
            whitespace.
        stopped: Whether the model produced the end-of-text token (else it ran out of
            ``max_new_tokens``).
        tokens: Tokens generated before the end-of-text token.
    """

    text: str
    stopped: bool
    tokens: int


def generate_response(
    model: GPTModel,
    tokenizer: Any,
    entry: Mapping[str, str] | str,
    *,
    style: PromptStyle = "alpaca",
    max_new_tokens: int | None = None,
    eos_id: int | None = None,
) -> Response:
    """The model's greedy answer to an instruction (chapter 7, "Responses").

    Args:
        model: A ``GPTModel``.
        tokenizer: Its tokenizer.
        entry: A record (its ``output``, if any, is not shown to the model) or an
            instruction as a string (with no input).
        style: The prompt style the model was fine-tuned with.
        max_new_tokens: Most tokens to generate; ``None`` fills the context, so the
            whole prompt stays in view while the model answers.
        eos_id: Where an answer ends; ``None`` takes the tokenizer's end-of-text id.

    Raises:
        ValueError: ``max_new_tokens`` is None and the prompt leaves no room in the context.
    """
    record = {"instruction": entry, "input": ""} if isinstance(entry, str) else entry
    prompt = _encode_data(tokenizer, format_prompt(record, style))  # as encode_example encodes it
    eos = eos_id_of(tokenizer) if eos_id is None else eos_id
    if max_new_tokens is None:
        max_new_tokens = model.config.context_length - len(prompt)
        if max_new_tokens < 1:
            raise ValueError(
                f"the prompt has {len(prompt)} tokens and fills the model's context of "
                f"{model.config.context_length}; give max_new_tokens to let it scroll out of view"
            )
    device = next(model.parameters()).device
    idx = torch.tensor([prompt], dtype=torch.long, device=device)  # (1, T)
    new = generate(model, idx, max_new_tokens, eos_id=eos)[0, len(prompt) :].tolist()
    stopped = eos in new
    if stopped:
        new = new[: new.index(eos)]
    return Response(text=tokenizer.decode(new).strip(), stopped=stopped, tokens=len(new))


@dataclass
class Evaluation:
    """Responses to a list of records, scored against the records' outputs.

    Attributes:
        rows: One dict per record: ``instruction``, ``input``, ``reference``,
            ``response``, ``stopped``, ``rouge_l`` and ``token_f1`` (F-measures).
        rouge_l: Mean ROUGE-L F-measure.
        token_f1: Mean token F1.
        stop_rate: Share of responses that ended with the end-of-text token.
    """

    rows: list[dict[str, Any]]
    rouge_l: float
    token_f1: float
    stop_rate: float


def evaluate_instructions(
    model: GPTModel,
    tokenizer: Any,
    entries: Sequence[Mapping[str, str]],
    *,
    style: PromptStyle = "alpaca",
    max_new_tokens: int | None = None,
    progress: bool = False,
) -> Evaluation:
    """Answer every record greedily and score the answers (chapter 7, "Evaluation").

    Reference-based and offline: each response is compared with the record's
    ``output`` by ROUGE-L and token F1 (``companion.metrics``).

    Raises:
        ValueError: ``entries`` is empty.
    """
    if not entries:
        raise ValueError("no records to evaluate")
    rows = []
    for entry in tqdm(entries, desc="answering", disable=not progress):
        response = generate_response(model, tokenizer, entry, style=style, max_new_tokens=max_new_tokens)
        reference = entry["output"]
        rows.append({
            "instruction": entry["instruction"],
            "input": entry.get("input", ""),
            "reference": reference,
            "response": response.text,
            "stopped": response.stopped,
            "rouge_l": rouge_l(response.text, reference).fmeasure,
            "token_f1": token_f1(response.text, reference).fmeasure,
        })
    n = len(rows)
    return Evaluation(
        rows=rows,
        rouge_l=sum(r["rouge_l"] for r in rows) / n,
        token_f1=sum(r["token_f1"] for r in rows) / n,
        stop_rate=sum(r["stopped"] for r in rows) / n,
    )
