"""Pretraining: the loss, evaluation, the learning-rate schedule and the training loop.

Chapter 5, "Pretraining on unlabelled data", builds these pieces one at a time; this
module holds their finished forms:

* ``cross_entropy_loss`` and ``batch_loss``: how wrong the next-token predictions are,
  in nats per token; ``perplexity`` turns a loss into an effective number of choices.
* ``evaluate`` (mean loss over a loader) and ``evaluate_text`` (loss of a whole text,
  per token and per character, the measure that compares tokenizers).
* ``lr_schedule``: linear warmup, then cosine decay, as a pure function of the step.
* ``configure_optimizer``: AdamW with weight decay on the matrices only.
* ``train``: the loop. It returns a ``TrainHistory`` and can write resumable
  checkpoints (``companion.checkpoint``).

Reproducibility. ``train`` draws everything random from its ``seed``: the order of the
training windows (its own ``torch.Generator``, one permutation per epoch, so the batch
of step ``k`` is a function of ``(seed, k)`` alone) and dropout (the global generator,
seeded inside ``torch.random.fork_rng`` so the caller's random state is left as it
was). Two runs with the same arguments on the same CPU give bitwise-equal losses, and a
run resumed from a checkpoint continues with exactly the batches, learning rates,
optimizer moments and dropout masks the uninterrupted run would have used.

Shape letters used in this module:

* ``B``: batch size
* ``T``: tokens per sequence
* ``V``: vocabulary size
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler
from tqdm.auto import tqdm

from companion.data import TextEncoder, _encode

if TYPE_CHECKING:  # imported lazily at run time: checkpoint and generate import this module
    from companion.model import GPTModel

__all__ = [
    "IGNORE_INDEX",
    "TextLoss",
    "TrainHistory",
    "batch_loss",
    "configure_optimizer",
    "cross_entropy_loss",
    "evaluate",
    "evaluate_text",
    "lr_schedule",
    "perplexity",
    "train",
]

IGNORE_INDEX = -100
"""Target id that the loss skips (padding in chapters 6 and 7), as in PyTorch."""

Batch = tuple[Tensor, Tensor]


# --------------------------------------------------------------------------- #
# Losses
# --------------------------------------------------------------------------- #
def cross_entropy_loss(logits: Tensor, targets: Tensor, *, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Mean cross-entropy of next-token predictions, in nats per token (chapter 5,
    "Measuring how wrong a model is: cross-entropy").

    For every position, the negative log of the probability the model gives to the
    correct next token, averaged over all positions whose target is not
    ``ignore_index``. Batch and time are flattened first, because
    ``F.cross_entropy`` wants the classes in dimension 1.

    Args:
        logits: ``(B, T, V)`` unnormalised scores.
        targets: ``(B, T)`` the correct next-token ids; ``ignore_index`` marks positions
            that do not count (chapters 6 and 7 pad with it).
        ignore_index: The id to skip (default ``-100``, PyTorch's).

    Returns:
        A scalar tensor. ``NaN`` when every target is ignored (nothing to average).

    Raises:
        ValueError: The shapes do not fit together.
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"logits must be (B, T, V) and targets (B, T) with the same B and T; got logits "
            f"{tuple(logits.shape)} and targets {tuple(targets.shape)}"
        )
    # (B, T, V) -> (B*T, V) and (B, T) -> (B*T,)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=ignore_index)


def _device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without any)."""
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def batch_loss(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    device: torch.device | str | None = None,
) -> Tensor:
    """Loss of one batch (chapter 5, "Measuring how wrong a model is: cross-entropy").

    Args:
        model: Maps ``(B, T)`` ids to ``(B, T, V)`` logits.
        inputs: ``(B, T)`` input ids.
        targets: ``(B, T)`` target ids (the inputs shifted by one).
        device: Where to compute; ``None`` takes the model's device.

    Returns:
        The scalar mean loss, with a graph for ``backward()`` when grad is enabled.
    """
    device = _device_of(model) if device is None else torch.device(device)
    inputs, targets = inputs.to(device), targets.to(device)
    return cross_entropy_loss(model(inputs), targets)


def perplexity(loss: float | Tensor) -> float:
    """``exp(loss)``: the number of equally likely tokens that would give this loss.

    A model that hesitated uniformly between ``k`` tokens at every step would have loss
    ``ln k`` and perplexity ``k`` (chapter 5,
    "Measuring how wrong a model is: cross-entropy").
    """
    return math.exp(float(loss))


class _Mode:
    """Context manager: put a module in eval mode, then restore the mode it had."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.was_training = self.model.training
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[Batch], *, max_batches: int | None = None) -> float:
    """Mean loss per target token over a loader (chapter 5,
    "Training and validation losses").

    Runs in eval mode (no dropout) without gradients, and restores the mode the model
    was in. The mean is over tokens (targets equal to ``IGNORE_INDEX`` do not count),
    which equals the mean of the batch means when every batch holds as many tokens.

    Args:
        model: The model.
        loader: Yields ``(inputs, targets)`` batches, each ``(B, T)``.
        max_batches: Use only the first ``max_batches`` batches; ``None`` for all.

    Returns:
        The mean loss in nats per token; ``nan`` when the loader is empty.
    """
    device = _device_of(model)
    total, count = 0.0, 0
    with _Mode(model):
        for i, (inputs, targets) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            inputs, targets = inputs.to(device), targets.to(device)
            logits = model(inputs)  # (B, T, V)
            loss_sum = F.cross_entropy(
                logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
            )
            total += loss_sum.item()
            count += int((targets != IGNORE_INDEX).sum())
    return total / count if count else float("nan")


@dataclass(frozen=True)
class TextLoss:
    """How well a model predicts a text; see ``evaluate_text``.

    Attributes:
        loss_per_token: Mean loss in nats per predicted token.
        nats_per_char: Total loss divided by the characters those tokens spell. It does
            not depend on the tokenizer, so it compares models with different ones.
        bits_per_char: The same in bits (``nats_per_char / ln 2``).
        tokens: Tokens predicted (every token of the text but the first).
        chars: Characters those tokens spell.
    """

    loss_per_token: float
    nats_per_char: float
    bits_per_char: float
    tokens: int
    chars: int


@torch.no_grad()
def evaluate_text(
    model: GPTModel,
    tokenizer: Any,
    text: str,
    *,
    context_length: int | None = None,
    batch_size: int = 16,
) -> TextLoss:
    """Loss of a whole text, per token and per character (chapter 5,
    "A model that really learns").

    The text is encoded and cut into consecutive windows of ``context_length`` tokens
    (a stride equal to the context length); every token after the first is predicted
    exactly once, from the tokens before it in its window. The last window is aligned
    to the end of the text and scores only the tokens no earlier window scored. So the
    whole text counts, and the per-character loss divides the total by exactly the
    characters that were predicted.

    Per-token losses of two tokenizers cannot be compared (a token of a larger
    vocabulary spells more text); per-character losses can.

    Args:
        model: The model (eval mode is used and the previous mode restored).
        tokenizer: Has ``encode`` and ``decode`` (``BPETokenizer``, tiktoken).
        text: The text, e.g. the held-out validation split.
        context_length: Window length; ``None`` for the model's context length.
        batch_size: Windows per forward pass (memory only; the result is the same).

    Returns:
        A ``TextLoss``.

    Raises:
        ValueError: The text has fewer than two tokens.
    """
    ctx = context_length or model.config.context_length
    ids = torch.tensor(_encode(tokenizer, text), dtype=torch.long)  # (N,)
    n = ids.numel()
    if n < 2:
        raise ValueError(f"the text has {n} token(s); at least 2 are needed to predict one")
    device = _device_of(model)
    # Window k covers inputs ids[s : s+T] and targets ids[s+1 : s+T+1] and scores the
    # targets from position `first` on (earlier ones were scored by window k-1).
    windows: list[tuple[int, int]] = []  # (start, first scored position in the window)
    for start in range(0, n - 1, ctx):
        if start + ctx + 1 <= n:
            windows.append((start, 0))
        else:  # the tail: a full-length window ending at the text's end, if the text allows
            last = max(0, n - 1 - ctx)
            windows.append((last, start - last))
    total = 0.0
    with _Mode(model):
        for i in range(0, len(windows), batch_size):
            group = windows[i : i + batch_size]
            length = min(ctx, n - 1 - group[0][0])  # all windows but a short text's are ctx long
            inputs = torch.stack([ids[s : s + length] for s, _ in group]).to(device)  # (B, T)
            targets = torch.stack([ids[s + 1 : s + length + 1] for s, _ in group]).to(device)  # (B, T)
            for row, (_, first) in enumerate(group):
                targets[row, :first] = IGNORE_INDEX  # already scored
            logits = model(inputs)  # (B, T, V)
            total += F.cross_entropy(
                logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
            ).item()
    tokens = n - 1
    chars = len(tokenizer.decode(ids[1:].tolist()))
    return TextLoss(
        loss_per_token=total / tokens,
        nats_per_char=total / chars,
        bits_per_char=total / chars / math.log(2),
        tokens=tokens,
        chars=chars,
    )


# --------------------------------------------------------------------------- #
# Optimizer and schedule
# --------------------------------------------------------------------------- #
def lr_schedule(step: int, *, max_lr: float, warmup_steps: int, max_steps: int, min_lr: float | None) -> float:
    """The learning rate of step ``step`` (0-based): linear warmup, then cosine decay.

    * ``step < warmup_steps``: ``max_lr · (step + 1) / warmup_steps``, rising to
      ``max_lr`` at the last warmup step (the first step is never taken with lr 0).
    * then, with ``p = (step - warmup_steps) / (max_steps - warmup_steps)`` going from 0
      to 1: ``min_lr + (max_lr - min_lr) · (1 + cos(π·p)) / 2``, from ``max_lr`` down
      to ``min_lr``; ``min_lr`` from ``max_steps`` on.
    * ``min_lr=None``: constant ``max_lr`` after warmup (as chapter 5's first loop uses).

    A pure function, so it can be plotted and tested on its own (chapter 5,
    "A model that really learns").
    """
    if step < 0:
        raise ValueError(f"step={step} must be >= 0")
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if min_lr is None:
        return max_lr
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def configure_optimizer(
    model: nn.Module,
    *,
    lr: float = 4e-4,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only (chapter 5, "A training loop").

    As in GPT-2 and nanoGPT: every parameter with two or more dimensions (the linear
    layers' weights and both embeddings) decays; biases and the layer norms' ``scale``
    and ``shift`` do not, since pulling a scale towards zero is not a useful prior. A
    tied output head is one parameter and appears once.

    Args:
        model: The model whose parameters to optimize (those with ``requires_grad``).
        lr: Learning rate (``train`` overrides it every step with its schedule).
        weight_decay: Decoupled weight decay of the matrices.
        betas: Adam's moment decay rates.

    Returns:
        An ``AdamW`` with two parameter groups: decayed, then not decayed.
    """
    params = [p for p in model.parameters() if p.requires_grad]  # deduplicated (tied weights)
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
        betas=betas,
    )


# --------------------------------------------------------------------------- #
# The history
# --------------------------------------------------------------------------- #
@dataclass
class TrainHistory:
    """What ``train`` measured, JSON-ready (``to_dict`` / ``from_dict``).

    The first five lists have one entry per evaluation point (every ``eval_every``
    steps and after the last step).

    Attributes:
        steps: Optimizer steps completed at each point.
        tokens_seen: Training tokens (``inputs.numel()`` summed) processed by then.
        train_loss: Mean training-batch loss over the steps since the previous point
            (measured in training mode, so with dropout if the model has any).
        val_loss: Validation loss at the point (``evaluate``); ``None`` without a
            validation loader.
        lr: Learning rate of the last step before the point.
        batch_losses: The loss of every training step, in order.
        samples: Texts generated during training: ``{"step": int, "text": str}``.
        elapsed: Seconds spent training (evaluation included), summed over resumed runs.
    """

    steps: list[int] = field(default_factory=list)
    tokens_seen: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    batch_losses: list[float] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A dict of plain JSON types (``json.dumps`` works on it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainHistory:
        """The inverse of ``to_dict``.

        Raises:
            KeyError: ``data`` has a key that is not a field (the message lists them).
        """
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise KeyError(f"unknown TrainHistory field(s) {unknown}; fields are {sorted(known)}")
        return cls(**{key: (list(value) if isinstance(value, list) else value) for key, value in data.items()})


# --------------------------------------------------------------------------- #
# The batches of a run
# --------------------------------------------------------------------------- #
def _epoch_seed(seed: int, epoch: int) -> int:
    """A seed for epoch ``epoch``'s permutation, unrelated to ``torch.manual_seed(seed)``."""
    digest = hashlib.sha256(f"companion.train data order: seed {seed}, epoch {epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class _Batches:
    """The training batch of every step, as a function of ``(seed, step)``.

    For a ``DataLoader`` over a map-style dataset with its default sampler (the usual
    ``shuffle=True`` or ``False``), only the dataset, ``batch_size``, ``drop_last``,
    ``collate_fn`` and whether it shuffles are taken from the loader: epoch ``e`` visits
    the windows in the order ``torch.randperm(n, generator=...)`` seeded from
    ``(seed, e)`` (or in order without shuffling). Any other iterable is replayed in
    its own order, skipping the batches of steps already done when resuming, which is
    reproducible only if the iterable is.
    """

    def __init__(self, loader: Iterable[Batch], seed: int) -> None:
        self.loader = loader
        self.seed = seed
        self.indexed = (
            isinstance(loader, DataLoader)
            and type(loader.batch_sampler) is BatchSampler
            and (
                type(loader.sampler) is SequentialSampler
                or (type(loader.sampler) is RandomSampler and not loader.sampler.replacement)
            )
            and hasattr(loader.dataset, "__len__")
        )
        self.per_epoch: int | None
        if self.indexed:
            assert isinstance(loader, DataLoader) and loader.batch_size is not None
            self.n = len(loader.dataset)  # type: ignore[arg-type]
            self.batch_size = loader.batch_size
            self.shuffle = type(loader.sampler) is RandomSampler
            self.per_epoch = self.n // self.batch_size if loader.drop_last else -(-self.n // self.batch_size)
            self._epoch = -1
            self._order: Tensor | None = None
        else:
            self.per_epoch = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
            self._stream: Iterator[Batch] | None = None
            self._next_step = 0
        if self.per_epoch == 0:
            raise ValueError(
                "the training loader yields no batch (fewer windows than batch_size with "
                "drop_last=True?); use a smaller batch_size or more text"
            )

    def _order_of(self, epoch: int) -> Tensor:
        if epoch != self._epoch:
            if self.shuffle:
                generator = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
                self._order = torch.randperm(self.n, generator=generator)  # (n,)
            else:
                self._order = torch.arange(self.n)
            self._epoch = epoch
        assert self._order is not None
        return self._order

    def batch(self, step: int) -> Batch:
        """The batch of step ``step`` (0-based)."""
        if self.indexed:
            assert isinstance(self.loader, DataLoader) and self.per_epoch is not None
            epoch, k = divmod(step, self.per_epoch)
            order = self._order_of(epoch)
            indices = order[k * self.batch_size : (k + 1) * self.batch_size].tolist()
            dataset = self.loader.dataset
            return self.loader.collate_fn([dataset[i] for i in indices])
        if self._stream is None or step != self._next_step:
            self._stream = self._replay(skip=step)
        self._next_step = step + 1
        return next(self._stream)

    def _replay(self, skip: int) -> Iterator[Batch]:
        skipped = 0
        while True:
            empty = True
            for batch in self.loader:
                empty = False
                if skipped < skip:
                    skipped += 1
                    continue
                yield batch
            if empty:
                raise ValueError("the training loader yields no batch")


# --------------------------------------------------------------------------- #
# The loop
# --------------------------------------------------------------------------- #
SampleFn = Callable[["GPTModel"], str]
Callback = Callable[[int, TrainHistory], None]


def train(
    model: GPTModel,
    train_loader: Iterable[Batch],
    val_loader: Iterable[Batch] | None = None,
    *,
    max_steps: int | None = None,
    epochs: int | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float | None = None,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.999),
    warmup_steps: int = 0,
    min_lr: float | None = None,
    grad_clip: float | None = 1.0,
    eval_every: int = 100,
    eval_batches: int | None = None,
    sample_every: int | None = None,
    sample_fn: SampleFn | None = None,
    tokenizer: Any = None,
    sample_prompt: str | None = None,
    sample_tokens: int = 50,
    callback: Callback | None = None,
    progress: bool = True,
    seed: int = 123,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = True,
    checkpoint_extra: dict[str, Any] | None = None,
) -> TrainHistory:
    """Train a model on next-token prediction (chapter 5, "A model that really learns").

    Each step takes one batch, computes the loss, backpropagates, clips the gradients'
    global norm, sets the learning rate from ``lr_schedule`` and takes an optimizer
    step. Every ``eval_every`` steps (and after the last one) the validation loss is
    measured and a point is added to the history.

    Args:
        model: The model, trained in place (in training mode; the mode it had is
            restored at the end). Batches go to the device of its parameters.
        train_loader: Yields ``(inputs, targets)`` batches ``(B, T)``, usually from
            ``companion.data.create_dataloader``. For a ``DataLoader`` with its default
            sampler the loop draws the order itself from ``seed`` (see the module
            docstring), whatever generator the loader has.
        val_loader: Batches for the validation loss; ``None`` to skip it.
        max_steps: Optimizer steps to take in total. Give this or ``epochs``.
        epochs: Passes over the training loader (needs its length); the default when
            neither is given is one epoch.
        optimizer: An optimizer over the model's parameters; ``None`` builds
            ``configure_optimizer(model, lr=lr, weight_decay=weight_decay, betas=betas)``.
        lr: Peak learning rate of the schedule. ``None``: the given optimizer's own
            learning rate, or ``4e-4`` when it is built here.
        weight_decay: AdamW weight decay of the matrices (when the optimizer is built here).
        betas: AdamW's betas (when the optimizer is built here).
        warmup_steps: Steps of linear warmup.
        min_lr: Where the cosine decay ends at ``max_steps``; ``None`` keeps ``lr``
            constant after warmup. With several parameter groups, each group's rate is
            scaled by the same factor.
        grad_clip: Clip the gradients' global norm to this; ``None`` or 0 disables it.
        eval_every: Steps between evaluation points.
        eval_batches: Validation batches per evaluation; ``None`` for the whole loader.
        sample_every: Steps between generated samples, recorded in ``history.samples``;
            ``None`` for none.
        sample_fn: ``sample_fn(model) -> str`` makes a sample. It should not consume
            torch's global random state, or the run's dropout masks change.
        tokenizer: With ``sample_prompt``, makes the default sample: greedy decoding of
            ``sample_tokens`` tokens after the prompt. A ``BPETokenizer`` (or tiktoken's
            GPT-2 encoding) is also stored in the checkpoints.
        sample_prompt: The prompt of the default sample.
        sample_tokens: Tokens per default sample.
        callback: ``callback(step, history)`` after every step (``step`` counts completed
            steps), e.g. to print or to stop by raising an exception.
        progress: Show a ``tqdm`` progress bar; ``False`` shows nothing at all.
        seed: Seeds the data order and, inside ``torch.random.fork_rng``, dropout.
        checkpoint_dir: Save a resumable checkpoint (``companion.checkpoint``) there every
            ``checkpoint_every`` steps and after the last step, replacing the previous one.
        checkpoint_every: Steps between checkpoints; ``None`` means ``eval_every``.
        resume: When ``checkpoint_dir`` holds a checkpoint, continue from it: weights,
            optimizer moments, step, history, random state. ``False`` starts afresh
            (and overwrites it).
        checkpoint_extra: JSON-able data stored in every checkpoint's ``extra``.

    Returns:
        The ``TrainHistory`` (with the points of the resumed-from run, if any).

    Raises:
        ValueError: An argument is out of range, or the loader yields no batch.
    """
    from companion.checkpoint import load_checkpoint, save_checkpoint, set_rng_state

    if max_steps is not None and epochs is not None:
        raise ValueError(f"give max_steps or epochs, not both (got max_steps={max_steps}, epochs={epochs})")
    for name, value in (("eval_every", eval_every), ("sample_every", sample_every),
                        ("checkpoint_every", checkpoint_every), ("max_steps", max_steps),
                        ("epochs", epochs), ("sample_tokens", sample_tokens)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps={warmup_steps} must be >= 0")
    if checkpoint_every is not None and checkpoint_dir is None:
        raise ValueError("checkpoint_every needs checkpoint_dir: where should the checkpoints go?")
    if sample_every is not None and sample_fn is None and (tokenizer is None or sample_prompt is None):
        raise ValueError("sample_every needs sample_fn, or tokenizer and sample_prompt")

    batches = _Batches(train_loader, seed)
    if max_steps is None:
        if batches.per_epoch is None:
            raise ValueError("the training loader has no length: give max_steps instead of epochs")
        max_steps = (epochs or 1) * batches.per_epoch
    checkpoint_every = checkpoint_every or eval_every

    if optimizer is None:
        optimizer = configure_optimizer(model, lr=4e-4 if lr is None else lr,
                                        weight_decay=weight_decay, betas=betas)
    for group in optimizer.param_groups:  # the schedule scales each group's base rate
        group["initial_lr"] = group["lr"] if lr is None else lr
    max_lr = float(optimizer.param_groups[0]["initial_lr"])
    if min_lr is not None and not 0 <= min_lr <= max_lr:
        raise ValueError(f"min_lr={min_lr} must lie between 0 and the peak lr={max_lr}")

    if sample_fn is None and sample_every is not None:
        sample_fn = _greedy_sample(tokenizer, sample_prompt or "", sample_tokens)

    device = _device_of(model)
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    history = TrainHistory()
    step, tokens = 0, 0
    was_training = model.training
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        if checkpoint_dir is not None and resume and _has_checkpoint(checkpoint_dir):
            _, info = load_checkpoint(checkpoint_dir, model=model, optimizer=optimizer)
            step = int(info["step"] or 0)
            history = info["history"] or TrainHistory()
            tokens = int(info["extra"].get("tokens_seen", 0))
            if info["rng_state"] is not None:
                set_rng_state(info["rng_state"])

        def checkpoint() -> None:
            save_checkpoint(
                checkpoint_dir,  # type: ignore[arg-type]
                model,
                optimizer=optimizer,
                step=step,
                history=history,
                extra={**(checkpoint_extra or {}), "tokens_seen": tokens, "seed": seed,
                       "max_steps": max_steps},
                tokenizer=tokenizer if _savable_tokenizer(tokenizer) else None,
            )

        start_time = time.perf_counter()
        elapsed_before = history.elapsed
        last_point = history.steps[-1] if history.steps else 0
        bar = tqdm(total=max_steps, initial=step, desc="training", unit="step",
                   disable=not progress, dynamic_ncols=True)
        try:
            model.train()
            while step < max_steps:
                for group in optimizer.param_groups:
                    group["lr"] = _group_lr(step, group["initial_lr"], max_lr, min_lr, warmup_steps, max_steps)
                lr_now = optimizer.param_groups[0]["lr"]
                inputs, targets = batches.batch(step)
                loss = batch_loss(model, inputs, targets, device)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                optimizer.step()
                step += 1
                tokens += inputs.numel()
                history.batch_losses.append(loss.item())

                if step % eval_every == 0 or step == max_steps:
                    recent = history.batch_losses[last_point:step]
                    val = None if val_loader is None else evaluate(model, val_loader, max_batches=eval_batches)
                    history.steps.append(step)
                    history.tokens_seen.append(tokens)
                    history.train_loss.append(sum(recent) / len(recent))
                    history.val_loss.append(val)
                    history.lr.append(lr_now)
                    last_point = step
                    bar.set_postfix(train=f"{history.train_loss[-1]:.3f}",
                                    val="-" if val is None else f"{val:.3f}", refresh=False)
                if sample_every is not None and sample_fn is not None and step % sample_every == 0:
                    history.samples.append({"step": step, "text": sample_fn(model)})
                history.elapsed = elapsed_before + time.perf_counter() - start_time
                if checkpoint_dir is not None and (step % checkpoint_every == 0 or step == max_steps):
                    checkpoint()
                bar.update(1)
                if callback is not None:
                    callback(step, history)
        finally:
            bar.close()
            model.train(was_training)
    return history


def _group_lr(step: int, base: float, max_lr: float, min_lr: float | None, warmup: int, max_steps: int) -> float:
    """The scheduled rate of a group whose peak is ``base`` (``min_lr`` scaled alike)."""
    if min_lr is not None and base != max_lr:
        min_lr = min_lr * base / max_lr
    return lr_schedule(step, max_lr=base, warmup_steps=warmup, max_steps=max_steps, min_lr=min_lr)


def _has_checkpoint(path: str | Path) -> bool:
    from companion.checkpoint import find_checkpoint

    return find_checkpoint(path) is not None


def _savable_tokenizer(tokenizer: Any) -> bool:
    from companion.checkpoint import tokenizer_spec

    return tokenizer is not None and tokenizer_spec(tokenizer) is not None


def _greedy_sample(tokenizer: TextEncoder, prompt: str, n_tokens: int) -> SampleFn:
    """A ``sample_fn``: greedy continuation of ``prompt`` (no randomness consumed)."""

    def sample(model: GPTModel) -> str:
        from companion.generate import generate_text

        return generate_text(model, tokenizer, prompt, max_new_tokens=n_tokens)

    return sample

