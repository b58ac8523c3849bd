"""Fine-tuning a GPT to classify texts: the spam classifier of chapter 6.

Chapter 6, "Fine-tuning for classification", builds these pieces one at a time:

* **The data** ("The SMS Spam Collection"): ``read_sms_spam`` parses the tab-separated
  file into ``Message(text, label)`` pairs, ``deduplicate`` drops repeated messages,
  ``balance_classes`` keeps as many ham as spam messages (a seeded choice), and
  ``split_messages`` cuts train, validation and test sets per class (stratified,
  seeded). ``spam_splits`` does all of it.
* **Fixed-length batches** ("Padding and truncation"): ``ClassificationDataset``
  encodes each message, cuts it to ``max_length`` tokens and pads it to exactly that
  length with the tokenizer's ``<|endoftext|>`` id; ``make_loaders`` builds the three
  loaders.
* **The classifier** ("A new output head"): ``prepare_classifier`` replaces the output
  layer by a ``num_classes``-way one and chooses which layers train.
* **Training** ("Which token's output to use", "Fine-tuning"): ``ClassificationTask``
  tells ``companion.train.train`` the loss (cross-entropy of the logits at each
  message's *last real token*) and how to evaluate (loss and accuracy).
* **Measuring and using it** ("How good is it?"): ``predict``, ``accuracy``,
  ``confusion_matrix`` and ``classify``.
* **A saved classifier**: ``load_classifier``. The whole run (the ``finetune-classifier``
  command, ``finetune_spam_classifier``) is ``companion.runs.classify``, and the base model
  comes from ``companion.runs.base.load_base_model``.

Why the last real token: in a GPT every position attends only to itself and the
positions before it (the causal mask of chapter 3), so the last token of a message is
the only one whose output depends on the whole message. Padding comes after it and
cannot change it, so a message gets the same answer alone or padded in a batch.

Shape letters used in this module:

* ``N``: number of messages in a data set
* ``B``: batch size
* ``T``: tokens per padded message (``max_length``)
* ``C``: the model's embedding width
* ``K``: number of classes
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from companion.losses import Batch, device_of
from companion.model import GPTModel, eval_mode
from companion.train import TrainOptions

__all__ = [
    "CHAPTER_OPTIONS",
    "LABELS",
    "ClassificationDataset",
    "ClassificationTask",
    "Message",
    "Splits",
    "accuracy",
    "balance_classes",
    "class_probabilities",
    "classification_logits",
    "classify",
    "confusion_matrix",
    "deduplicate",
    "encode_message",
    "last_token_positions",
    "load_classifier",
    "make_loaders",
    "pad_token_id",
    "parse_sms_collection",
    "predict",
    "prepare_classifier",
    "read_sms_spam",
    "spam_splits",
    "split_messages",
]

LABELS: tuple[str, ...] = ("ham", "spam")
"""The SMS Spam Collection's labels; a label's class id is its index (ham 0, spam 1)."""


CHAPTER_OPTIONS = TrainOptions(epochs=6, lr=5e-4, min_lr=5e-5, weight_decay=0.1)
"""The training settings chapter 6 fine-tunes ``shakespeare-small`` with, every layer
training: six epochs, AdamW at 5e-4 decaying to 5e-5 along a cosine."""


class Message(NamedTuple):
    """One labelled text: ``text`` and its class id ``label`` (an index into ``LABELS``)."""

    text: str
    label: int


class Splits(NamedTuple):
    """Training, validation and test messages."""

    train: list[Message]
    val: list[Message]
    test: list[Message]


# --------------------------------------------------------------------------- #
# The data
# --------------------------------------------------------------------------- #
def parse_sms_collection(text: str, labels: Sequence[str] = LABELS) -> list[Message]:
    """Parse the SMS Spam Collection's format: one ``label<TAB>message`` per line.

    Chapter 6, "The SMS Spam Collection". Empty lines are skipped.

    Raises:
        ValueError: A line has no tab, an unknown label or an empty message (the
            message names the line).
    """
    ids = {name: i for i, name in enumerate(labels)}
    messages = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        label, tab, message = line.partition("\t")
        if not tab:
            raise ValueError(f"line {number} has no tab between the label and the message: {line!r:.60}")
        if label not in ids:
            raise ValueError(f"line {number} has the label {label!r}; the labels are {', '.join(labels)}")
        if not message.strip():
            raise ValueError(f"line {number} has an empty message")
        messages.append(Message(message, ids[label]))
    return messages


def read_sms_spam(path: str | os.PathLike[str] | None = None, *, progress: bool = False) -> list[Message]:
    """The SMS Spam Collection as ``Message``s, in the file's order (chapter 6).

    Args:
        path: A file in the collection's format; ``None`` for the course's copy
            (``companion.data.read_text("sms-spam")``, downloaded on first use).
        progress: Show a download progress bar.

    Raises:
        ValueError: The file is not UTF-8, or a line is malformed (the message names the
            file and the line).
    """
    if path is None:
        from companion.data import read_text

        return parse_sms_collection(read_text("sms-spam", progress=progress))
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"the data file {file} is not UTF-8 text ({err.reason} at byte {err.start}); convert it to UTF-8"
        ) from err
    try:
        return parse_sms_collection(text)
    except ValueError as err:
        raise ValueError(f"the data file {file}: {err}") from err


def deduplicate(messages: Sequence[Message]) -> list[Message]:
    """Keep the first occurrence of every text (chapter 6, "The SMS Spam Collection").

    A message that appears in both the training and the test set would be graded on a
    text the model has already seen; without duplicates that cannot happen.
    """
    seen: set[str] = set()
    unique = []
    for message in messages:
        if message.text not in seen:
            seen.add(message.text)
            unique.append(message)
    return unique


def _by_class(messages: Sequence[Message]) -> dict[int, list[Message]]:
    groups: dict[int, list[Message]] = {}
    for message in messages:
        groups.setdefault(message.label, []).append(message)
    return dict(sorted(groups.items()))


def balance_classes(messages: Sequence[Message], *, seed: int) -> list[Message]:
    """Keep as many messages of every class as the rarest class has (chapter 6).

    Which messages of the larger classes are kept is a seeded random choice; the result
    keeps the input's order.

    Raises:
        ValueError: ``messages`` is empty.
    """
    if not messages:
        raise ValueError("no messages to balance")
    groups = _by_class(messages)
    n = min(len(group) for group in groups.values())
    generator = torch.Generator().manual_seed(seed)
    kept: set[int] = set()
    for group in groups.values():
        for i in torch.randperm(len(group), generator=generator)[:n].tolist():
            kept.add(id(group[i]))
    return [m for m in messages if id(m) in kept]


def split_messages(
    messages: Sequence[Message], fractions: tuple[float, float, float] = (0.7, 0.1, 0.2), *, seed: int
) -> Splits:
    """Split messages into training, validation and test sets, class by class (chapter 6).

    Each class is shuffled with a seeded generator and cut in the given fractions
    (rounded), so every split has the classes in the same proportions as
    ``messages``. Each split is then shuffled, so that its classes are mixed.

    Raises:
        ValueError: The fractions are not three positive numbers adding up to 1, the
            messages hold fewer than two classes, or a class is too small to put a
            message in every split.
    """
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions={fractions} must be three positive numbers that add up to 1")
    groups = _by_class(messages)
    if len(groups) < 2:
        counts = ", ".join(f"class {label}: {len(group)}" for label, group in groups.items()) or "no messages"
        raise ValueError(
            f"the messages hold only one class ({counts}): a classifier cannot learn from them, and its "
            "accuracy would be 1.0 whatever it predicts. Give messages of at least two classes"
        )
    generator = torch.Generator().manual_seed(seed)
    parts: list[list[Message]] = [[], [], []]
    for label, group in groups.items():
        n_train, n_val = round(fractions[0] * len(group)), round(fractions[1] * len(group))
        if min(n_train, n_val, len(group) - n_train - n_val) < 1:
            raise ValueError(f"class {label} has only {len(group)} message(s): too few for three splits")
        order = torch.randperm(len(group), generator=generator).tolist()
        shuffled = [group[i] for i in order]
        parts[0] += shuffled[:n_train]
        parts[1] += shuffled[n_train : n_train + n_val]
        parts[2] += shuffled[n_train + n_val :]
    mixed = [[part[i] for i in torch.randperm(len(part), generator=generator).tolist()] for part in parts]
    return Splits(*mixed)


def spam_splits(
    *,
    seed: int = 123,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    balance: bool = True,
    path: str | os.PathLike[str] | None = None,
) -> Splits:
    """The chapter's data: read, deduplicate, balance (optional) and split the SMS collection.

    Args:
        seed: Seeds the balancing and the split.
        fractions: Shares of training, validation and test messages.
        balance: Keep as many ham as spam messages.
        path: Another file in the collection's format (``None``: the course's copy).

    Raises:
        ValueError: The file cannot be read or parsed (the message names it), or it has
            no message of some class (the message gives the counts).
    """
    messages = deduplicate(read_sms_spam(path))
    counts = [sum(m.label == i for m in messages) for i in range(len(LABELS))]
    if min(counts) == 0:
        source = "the SMS Spam Collection" if path is None else f"the data file {os.fspath(path)}"
        found = ", ".join(f"{name} {n}" for name, n in zip(LABELS, counts, strict=True))
        missing = " and ".join(name for name, n in zip(LABELS, counts, strict=True) if n == 0)
        raise ValueError(
            f"{source} has no {missing} message ({found} after removing duplicates): a classifier cannot "
            f"learn a class it never sees, and its accuracy would mean nothing. Give messages of every class "
            f"({', '.join(LABELS)})"
        )
    if balance:
        messages = balance_classes(messages, seed=seed)
    return split_messages(messages, fractions, seed=seed)


# --------------------------------------------------------------------------- #
# Fixed-length batches
# --------------------------------------------------------------------------- #
def pad_token_id(tokenizer: Any) -> int:
    """The id a classifier pads with: the tokenizer's ``<|endoftext|>`` (chapter 6).

    Raises:
        ValueError: The tokenizer has no ``<|endoftext|>`` token.
    """
    try:
        return int(tokenizer.eot_token)
    except AttributeError:
        raise ValueError(
            f"{type(tokenizer).__name__} has no <|endoftext|> token to pad with; pass pad_id explicitly"
        ) from None


def encode_message(tokenizer: Any, text: str) -> list[int]:
    """A message's ids, with any special token's text encoded as ordinary text.

    A message is data, not markup: a text that happens to contain ``<|endoftext|>``
    must not produce the padding id, so that padding can be told from text.
    """
    ordinary = getattr(tokenizer, "encode_ordinary", None)
    return list(ordinary(text)) if ordinary is not None else list(tokenizer.encode(text))


class ClassificationDataset(Dataset[tuple[Tensor, Tensor]]):
    """Labelled messages as fixed-length rows of token ids (chapter 6, "Padding and truncation").

    Each message is encoded (``encode_message``), cut to its first ``max_length`` tokens
    and padded at the end with ``pad_id`` to exactly ``max_length``, so that any batch
    of them stacks into one ``(B, T)`` tensor.

    Args:
        messages: The ``Message``s.
        tokenizer: Has ``encode_ordinary`` or ``encode``.
        max_length: Tokens per row (``T``); ``None`` for the longest message's length.
            A model can read at most its ``context_length`` tokens.
        pad_id: The padding id; ``None`` for the tokenizer's ``<|endoftext|>``
            (``pad_token_id``).

    Attributes:
        inputs: ``(N, T)`` token ids.
        labels: ``(N,)`` class ids.
        lengths: ``(N,)`` real tokens of each row (the rest is padding).
        max_length: ``T``.
        pad_id: The padding id.
        n_truncated: Messages that were longer than ``max_length``.

    Raises:
        ValueError: A message encodes to no tokens, or contains ``pad_id`` (padding
            could not be told from text), or ``max_length`` is not positive.
    """

    def __init__(
        self, messages: Sequence[Message], tokenizer: Any, *, max_length: int | None = None, pad_id: int | None = None
    ) -> None:
        if not messages:
            raise ValueError("no messages: a classification dataset needs at least one")
        self.pad_id = pad_token_id(tokenizer) if pad_id is None else pad_id
        encoded = [encode_message(tokenizer, m.text) for m in messages]
        for i, ids in enumerate(encoded):
            if not ids:
                raise ValueError(f"message {i} encodes to no tokens: {messages[i].text!r}")
            if self.pad_id in ids:
                raise ValueError(
                    f"message {i} contains the padding id {self.pad_id}, so padding could not be told "
                    "from text; pad with an id that no message uses, such as <|endoftext|>"
                )
        for i, message in enumerate(messages):
            if isinstance(message.label, bool) or not isinstance(message.label, int) or message.label < 0:
                raise ValueError(
                    f"message {i} has the label {message.label!r}; a label is a class id, an integer >= 0 "
                    "(an index into the labels, e.g. LABELS.index('spam'))"
                )
        longest = max(len(ids) for ids in encoded)
        self.max_length = longest if max_length is None else max_length
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 1:
            raise ValueError(f"max_length={max_length!r} must be a positive number of tokens")
        T = self.max_length
        self.n_truncated = sum(len(ids) > T for ids in encoded)
        rows = [ids[:T] + [self.pad_id] * (T - len(ids[:T])) for ids in encoded]
        self.inputs = torch.tensor(rows, dtype=torch.long)  # (N, T)
        self.labels = torch.tensor([m.label for m in messages], dtype=torch.long)  # (N,)
        self.lengths = torch.tensor([min(len(ids), T) for ids in encoded], dtype=torch.long)  # (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        """Row ``index``: its ids ``(T,)`` and its label (a 0-dimensional tensor)."""
        return self.inputs[index], self.labels[index]


Loaders = tuple[DataLoader[tuple[Tensor, Tensor]], DataLoader[tuple[Tensor, Tensor]], DataLoader[tuple[Tensor, Tensor]]]


def make_loaders(
    splits: Splits,
    tokenizer: Any,
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    context_length: int | None = None,
    pad_id: int | None = None,
) -> Loaders:
    """Training, validation and test loaders of a classification data set (chapter 6).

    All three pad (and truncate) to the same length: ``max_length`` if given, else the
    longest *training* message, but at most ``context_length`` (the model's). The
    training loader shuffles (``train`` draws the order from its own seed) and drops an
    incomplete last batch; the other two keep every message, in order.

    Raises:
        ValueError: ``max_length`` exceeds ``context_length``, or ``batch_size`` exceeds
            the number of training messages.
    """
    if max_length is not None and context_length is not None and max_length > context_length:
        raise ValueError(f"max_length={max_length} exceeds the model's context_length={context_length}")
    train_set = ClassificationDataset(splits.train, tokenizer, max_length=max_length, pad_id=pad_id)
    if context_length is not None and train_set.max_length > context_length:
        train_set = ClassificationDataset(splits.train, tokenizer, max_length=context_length, pad_id=pad_id)
    if len(train_set) < batch_size:
        raise ValueError(
            f"batch_size={batch_size} is more than the {len(train_set)} training messages, so no full batch can "
            f"be made (the last partial batch is dropped); use a batch size of at most {len(train_set)}"
        )
    T, pad = train_set.max_length, train_set.pad_id
    val_set = ClassificationDataset(splits.val, tokenizer, max_length=T, pad_id=pad)
    test_set = ClassificationDataset(splits.test, tokenizer, max_length=T, pad_id=pad)
    return (
        DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True),
        DataLoader(val_set, batch_size=batch_size, shuffle=False),
        DataLoader(test_set, batch_size=batch_size, shuffle=False),
    )


# --------------------------------------------------------------------------- #
# The classifier
# --------------------------------------------------------------------------- #
def prepare_classifier(model: GPTModel, num_classes: int = 2, *, train_blocks: int | None = 1) -> GPTModel:
    """Turn a pretrained GPT into a classifier, in place (chapter 6, "A new output head").

    The output head (``C`` to the vocabulary) is replaced by a new ``nn.Linear(C, K)``
    with a bias, initialised like GPT-2's layers (weights ``N(0, 0.02²)`` from torch's
    global generator, bias 0), so that the first predictions are close to uniform.
    Then every parameter is frozen except the new head, the final layer norm and the
    last ``train_blocks`` transformer blocks.

    Args:
        model: A ``GPTModel`` (a tied head is untied: the token embedding stays).
        num_classes: ``K``, at least 2.
        train_blocks: How many of the last transformer blocks train (0: only the head
            and the final norm); ``None`` trains every parameter, embeddings included.

    Returns:
        The same model, for chaining.

    Raises:
        TypeError: ``model`` is not a ``GPTModel``.
        ValueError: ``num_classes`` < 2, or ``train_blocks`` is not between 0 and the
            number of blocks.
    """
    if not isinstance(model, GPTModel):
        raise TypeError(f"model must be a GPTModel, got {type(model).__name__}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r} must be an integer >= 2")
    n_layers = len(model.trf_blocks)
    if train_blocks is not None and (
        isinstance(train_blocks, bool) or not isinstance(train_blocks, int) or not 0 <= train_blocks <= n_layers
    ):
        raise ValueError(f"train_blocks={train_blocks!r} must be between 0 and {n_layers} (the blocks), or None for all")
    reference = model.final_norm.scale
    head = nn.Linear(model.config.emb_dim, num_classes, device=reference.device, dtype=reference.dtype)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.02)
        head.bias.zero_()
    model.out_head = head
    for parameter in model.parameters():
        parameter.requires_grad_(train_blocks is None)
    if train_blocks is not None:
        trainable = [model.out_head, model.final_norm, *list(model.trf_blocks)[n_layers - train_blocks :]]
        for module in trainable:
            module.requires_grad_(True)
    return model


def last_token_positions(inputs: Tensor, pad_id: int) -> Tensor:
    """The index of each row's last real (non-padding) token (chapter 6).

    Args:
        inputs: ``(B, T)`` ids, each row a message followed by padding.
        pad_id: The padding id (it never occurs inside a message).

    Returns:
        ``(B,)`` indices.

    Raises:
        ValueError: A row is all padding.
    """
    lengths = (inputs != pad_id).sum(dim=1)  # (B,)
    if bool((lengths == 0).any()):
        raise ValueError("a row holds only padding: every message needs at least one token")
    return lengths - 1  # (B,)


def classification_logits(model: nn.Module, inputs: Tensor, pad_id: int) -> Tensor:
    """The class logits of a batch: the model's output at each row's last real token.

    Args:
        model: A classifier (``prepare_classifier``), or a ``DistributedDataParallel``
            wrapper of one; called, never inspected.
        inputs: ``(B, T)`` ids on the model's device.
        pad_id: The padding id.

    Returns:
        ``(B, K)`` logits.
    """
    logits = model(inputs)  # (B, T, K)
    positions = last_token_positions(inputs, pad_id)  # (B,)
    return logits[torch.arange(inputs.shape[0], device=logits.device), positions]  # (B, K)


def _check_labels(labels: Tensor, num_classes: int) -> None:
    """Raise a clear error for a label that is not a class of a ``num_classes``-way head."""
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"a batch holds the label {high if high >= num_classes else low}, but the classifier has "
            f"{num_classes} classes (labels 0 to {num_classes - 1}); give prepare_classifier num_classes "
            "equal to the number of labels in the data, or fix the data's labels"
        )


class ClassificationTask:
    """What ``companion.train.train`` needs to fine-tune a classifier (chapter 6, "Fine-tuning").

    The loss of a batch ``(inputs (B, T), labels (B,))`` is the mean cross-entropy of
    the class logits at each message's last real token; ``evaluate`` reports the mean
    loss per message and the accuracy (``history.val_loss`` and
    ``history.metrics["val_accuracy"]``, and ``"train_accuracy"`` with
    ``eval_train_batches``).

    Args:
        pad_id: The padding id of the batches (``ClassificationDataset.pad_id``).
    """

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """The mean cross-entropy of one batch (a scalar with a graph)."""
        inputs, labels = batch
        logits = classification_logits(model, inputs, self.pad_id)  # (B, K)
        _check_labels(labels, logits.shape[-1])
        return F.cross_entropy(logits, labels)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable[Batch], max_batches: int | None) -> dict[str, float]:
        """``{"loss": mean loss per message, "accuracy": share right}`` over the loader's
        first ``max_batches`` batches (all for ``None``), in eval mode."""
        device = device_of(model)
        total, correct, count = 0.0, 0, 0
        with eval_mode(model):
            for i, (inputs, labels) in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                inputs, labels = inputs.to(device), labels.to(device)
                logits = classification_logits(model, inputs, self.pad_id)  # (B, K)
                _check_labels(labels, logits.shape[-1])
                total += F.cross_entropy(logits, labels, reduction="sum").item()
                correct += int((logits.argmax(dim=-1) == labels).sum())
                count += len(labels)
        if count == 0:
            return {"loss": float("nan"), "accuracy": float("nan")}
        return {"loss": total / count, "accuracy": correct / count}


# --------------------------------------------------------------------------- #
# Measuring and using a classifier
# --------------------------------------------------------------------------- #
@torch.no_grad()
def predict(model: nn.Module, loader: Iterable[Batch], *, pad_id: int) -> tuple[Tensor, Tensor]:
    """Predicted and true classes of every message of a loader: two ``(N,)`` tensors."""
    device = device_of(model)
    predicted, true = [], []
    with eval_mode(model):
        for inputs, labels in loader:
            logits = classification_logits(model, inputs.to(device), pad_id)  # (B, K)
            predicted.append(logits.argmax(dim=-1).cpu())
            true.append(labels.cpu())
    if not true:
        raise ValueError("the loader yields no batch")
    return torch.cat(predicted), torch.cat(true)


def _check_pair(predictions: Tensor, labels: Tensor) -> None:
    if predictions.shape != labels.shape or predictions.dim() != 1 or predictions.numel() == 0:
        raise ValueError(
            f"predictions and labels must be two non-empty (N,) tensors of the same length, got "
            f"{tuple(predictions.shape)} and {tuple(labels.shape)}"
        )


def accuracy(predictions: Tensor, labels: Tensor) -> float:
    """The share of predictions equal to the labels (both ``(N,)``)."""
    _check_pair(predictions, labels)
    return (predictions == labels).float().mean().item()


def confusion_matrix(predictions: Tensor, labels: Tensor, num_classes: int | None = None) -> Tensor:
    """Counts of (true class, predicted class) pairs (chapter 6, "How good is it?").

    Returns:
        ``(K, K)`` int64: entry ``[i, j]`` counts messages of class ``i`` predicted as
        ``j``; the diagonal holds the right answers. ``K`` defaults to one more than the
        largest class seen.

    Raises:
        ValueError: Shapes differ, or a class id is negative or not below ``num_classes``.
    """
    _check_pair(predictions, labels)
    K = int(max(predictions.max(), labels.max())) + 1 if num_classes is None else num_classes
    if int(min(predictions.min(), labels.min())) < 0 or int(max(predictions.max(), labels.max())) >= K:
        raise ValueError(f"class ids must lie in 0..{K - 1}")
    pairs = labels.long() * K + predictions.long()  # (N,) one number per (true, predicted)
    return torch.bincount(pairs, minlength=K * K).reshape(K, K)


@torch.no_grad()
def class_probabilities(text: str, model: GPTModel, tokenizer: Any, *, max_length: int | None = None) -> Tensor:
    """The classifier's probability for each class of one text: ``(K,)``, summing to 1.

    The text is encoded (``encode_message``) and cut to its first ``max_length``
    tokens, as the training data was (give the training data's ``max_length``;
    ``None``: the model's ``context_length``). It is not padded: the answer at the last
    real token does not depend on padding.

    Raises:
        ValueError: The text encodes to no tokens, or ``max_length`` is not a positive integer.
    """
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise ValueError(
            f"max_length={max_length!r} must be a positive number of tokens (the training data's), or None "
            "for the model's context length"
        )
    ids = encode_message(tokenizer, text)
    if not ids:
        raise ValueError("the text is empty: there is nothing to classify")
    limit = min(max_length or model.config.context_length, model.config.context_length)
    inputs = torch.tensor([ids[:limit]], device=device_of(model))  # (1, T)
    with eval_mode(model):
        logits = model(inputs)[0, -1]  # (K,): the last token's
    return torch.softmax(logits.float(), dim=-1).cpu()


def classify(
    text: str, model: GPTModel, tokenizer: Any, *, max_length: int | None = None, labels: Sequence[str] = LABELS
) -> str:
    """The label a classifier gives a text, e.g. ``"spam"`` (chapter 6, "How good is it?").

    See ``class_probabilities`` for ``max_length``.
    """
    probabilities = class_probabilities(text, model, tokenizer, max_length=max_length)
    if len(labels) != len(probabilities):
        raise ValueError(f"the model has {len(probabilities)} classes but {len(labels)} labels were given")
    return labels[int(probabilities.argmax())]


# --------------------------------------------------------------------------- #
# Loading a saved classifier (the run itself is companion.runs.classify)
# --------------------------------------------------------------------------- #
def load_classifier(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> tuple[GPTModel, dict[str, Any]]:
    """Load a classifier saved by ``finetune_spam_classifier`` (or the CLI), in eval mode.

    A checkpoint's ``config.json`` describes the pretrained model, whose head maps to
    the vocabulary; the classifier's head size is in ``extra["classifier"]``. So the
    model is built from the config, given its classification head, and then loaded.

    Returns:
        ``(model, info)`` as ``companion.checkpoint.load_checkpoint`` returns them.

    Raises:
        ValueError: The checkpoint is not a classifier's.
    """
    from companion.checkpoint import load_checkpoint, read_checkpoint_info

    saved = read_checkpoint_info(path)
    settings = saved["extra"].get("classifier")
    if not isinstance(settings, dict):
        raise ValueError(f"{path} is not a classifier's checkpoint (its extra has no 'classifier' settings)")
    num_classes = settings.get("num_classes")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            f"{path} is a classifier's checkpoint, but its settings give num_classes={num_classes!r}, which must "
            "be a whole number >= 2 (written as 2, not \"2\"); its checkpoint.json was edited or damaged: "
            "save the classifier again"
        )
    config = saved["config"]
    with torch.random.fork_rng(devices=[]):  # the weights are replaced: keep the caller's random state
        model = prepare_classifier(GPTModel(config, init="pytorch"), settings["num_classes"], train_blocks=None)
    model, info = load_checkpoint(path, model=model.to(map_location), map_location=map_location)
    return model.eval(), info
