"""Training: the options of a run, what is trained (a task), and the loop.

Chapter 5, "A training loop" and "A model that really learns", writes the loop by hand;
``train`` is its finished form, and chapters 6 and 7 fine-tune with the same function:

* The learning-rate schedule and the optimizer come from ``companion.optim``.
* ``TrainOptions``: every setting of a run in one validated object.
* A *task* says what one batch's loss is and how to evaluate: ``NextTokenTask`` for
  pretraining and instruction fine-tuning (chapters 5 and 7),
  ``companion.finetune.classification.ClassificationTask`` for a classifier (chapter 6).
* ``train``: the loop. It returns a ``TrainHistory`` and can write resumable checkpoints
  (``companion.checkpoint``). Started by ``torchrun`` it trains on several processes
  with ``DistributedDataParallel`` (``companion.distributed``), unchanged.

Reproducibility. ``train`` draws everything random from ``options.seed``: the order of
the training examples (its own ``torch.Generator``, one permutation per epoch, so the
batch of step ``k`` is a function of ``(seed, k)`` alone) and dropout (the global
generator, seeded inside ``torch.random.fork_rng`` so the caller's random state is left
as it was). Two runs with the same arguments on the same machine give bitwise-equal
losses, and a run resumed from a checkpoint continues with exactly the batches,
learning rates, optimizer moments and dropout masks the uninterrupted run would have
used.

Several processes. Every process computes the same global batch of step ``k`` and
keeps its own share of the rows (``B / N`` each; when ``B`` is not a multiple of ``N`` each
process's loss is weighted by its share); DDP averages the gradients, so ``N`` processes
take the step one process would take on the whole batch. Only rank 0 shows
progress, evaluates, samples and writes checkpoints; the others wait for it at a
barrier after each checkpoint. The history is complete on rank 0.

Shape letters used in this module:

* ``B``: batch size
* ``T``: tokens per sequence
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import filelock
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler
from tqdm.auto import tqdm

from companion import distributed
from companion.history import TrainHistory
from companion.losses import Batch, batch_loss, device_of, evaluate
from companion.model import GPTModel
from companion.optim import configure_optimizer, lr_schedule
from companion.precision import PRECISIONS, Precision, autocast, check_precision

__all__ = [
    "NextTokenTask",
    "NonFiniteLossError",
    "RunFolderBusyError",
    "Task",
    "TrainOptions",
    "greedy_sampler",
    "train",
]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite: the run diverged."""


class RunFolderBusyError(RuntimeError):
    """Another training run is writing checkpoints to the same folder."""


# --------------------------------------------------------------------------- #
# Options
# --------------------------------------------------------------------------- #
def _positive_int(name: str, value: Any, *, allow_none: bool = True, allow_zero: bool = False) -> None:
    if value is None and allow_none:
        return
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        what = "an integer >= 0" if allow_zero else "a positive integer"
        raise ValueError(f"{name}={value!r} must be {what}" + (" or None" if allow_none else ""))


def _positive_float(name: str, value: Any, *, allow_none: bool, allow_zero: bool = False, hint: str = "") -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}={value!r} must be a finite number {bound}{hint}")


@dataclass(frozen=True)
class TrainOptions:
    """Every setting of a training run, validated when it is made (chapter 5).

    Attributes:
        max_steps: Optimizer steps to take in total. Give this or ``epochs``.
        epochs: Passes over the training loader (needs its length); one epoch when
            neither is given.
        lr: Peak learning rate of the schedule. ``None``: the optimizer's own rate, or
            ``4e-4`` when ``train`` builds the optimizer.
        min_lr: Where the cosine decay ends at the last step; ``None`` keeps ``lr``
            after the warmup.
        warmup_steps: Steps of linear warmup.
        weight_decay: AdamW weight decay of the matrices (when ``train`` builds the optimizer).
        betas: AdamW's betas (when ``train`` builds the optimizer).
        grad_clip: Clip the gradients' global norm to this; ``None`` for no clipping.
        eval_every: Steps between evaluation points (and one after the last step).
        eval_batches: Validation batches per evaluation; ``None`` for the whole loader.
        eval_train_batches: Also evaluate the task's metrics on this many training
            batches at each point (e.g. the training accuracy of a classifier); ``None``
            for none.
        sample_every: Steps between generated samples (needs a ``sample_fn``).
        seed: Seeds the data order and dropout.
        progress: Show a ``tqdm`` progress bar (on rank 0).
        checkpoint_dir: Save a resumable checkpoint there every ``checkpoint_every``
            steps and after the last step, replacing the previous one.
        checkpoint_every: Steps between checkpoints; ``None`` means ``eval_every``.
        resume: When ``checkpoint_dir`` holds a checkpoint, continue from it; ``False``
            starts afresh (and overwrites it).
        precision: ``"fp32"`` (default: the same bits on every machine), ``"bf16"``
            (autocast: matrix products in bfloat16, weights and optimizer in float32), or
            ``"auto"`` (bf16 where the hardware has it natively); see ``companion.precision``.
    """

    max_steps: int | None = None
    epochs: int | None = None
    lr: float | None = None
    min_lr: float | None = None
    warmup_steps: int = 0
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 1.0
    eval_every: int = 100
    eval_batches: int | None = None
    eval_train_batches: int | None = None
    sample_every: int | None = None
    seed: int = 123
    progress: bool = True
    checkpoint_dir: str | Path | None = None
    checkpoint_every: int | None = None
    resume: bool = True
    precision: Precision = field(
        default="fp32",
        metadata={"choices": PRECISIONS, "help": "fp32, bf16 autocast, or auto: bf16 where the hardware has it"},
    )

    def __post_init__(self) -> None:
        for name in ("max_steps", "epochs", "eval_batches", "eval_train_batches", "sample_every", "checkpoint_every"):
            _positive_int(name, getattr(self, name))
        _positive_int("eval_every", self.eval_every, allow_none=False)
        _positive_int("warmup_steps", self.warmup_steps, allow_none=False, allow_zero=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed={self.seed!r} must be an integer")
        if self.max_steps is not None and self.epochs is not None:
            raise ValueError(f"give max_steps or epochs, not both (got max_steps={self.max_steps}, epochs={self.epochs})")
        _positive_float("lr", self.lr, allow_none=True, hint="; a typical AdamW rate is 1e-4 to 1e-3")
        _positive_float("min_lr", self.min_lr, allow_none=True, allow_zero=True)
        if self.lr is not None and self.min_lr is not None and self.min_lr > self.lr:
            raise ValueError(f"min_lr={self.min_lr} must not exceed lr={self.lr}")
        _positive_float("weight_decay", self.weight_decay, allow_none=False, allow_zero=True)
        _positive_float(
            "grad_clip", self.grad_clip, allow_none=True, hint=" (the largest gradient norm allowed); None disables clipping"
        )
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise ValueError(f"betas={self.betas!r} must be two numbers in [0, 1), e.g. (0.9, 0.95)")
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        if self.checkpoint_every is not None and self.checkpoint_dir is None:
            raise ValueError("checkpoint_every needs checkpoint_dir: where should the checkpoints go?")
        check_precision(self.precision)

    def replace(self, **changes: Any) -> TrainOptions:
        """A copy with some fields changed, validated again.

        Raises:
            TypeError: A name is not a field (the message lists the fields).
        """
        known = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise TypeError(f"unknown training option(s) {unknown}; the options are {', '.join(known)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON data (a path as a string).

        ``precision`` is left out at its default, ``"fp32"``: the options of every run made
        before it existed, and the recipe keys hashed from them, stay as they were.
        """
        data = dataclasses.asdict(self)
        if data["precision"] == "fp32":
            del data["precision"]
        data["betas"] = list(self.betas)
        if data["checkpoint_dir"] is not None:
            data["checkpoint_dir"] = str(data["checkpoint_dir"])
        return data


# --------------------------------------------------------------------------- #
# Tasks: what one batch's loss is, and how to evaluate
# --------------------------------------------------------------------------- #
class Task(Protocol):
    """What ``train`` trains: the loss of one batch, and the evaluation of a loader.

    ``loss`` receives the model as ``train`` runs it (wrapped in
    ``DistributedDataParallel`` on several processes: call it, do not read its
    attributes). ``evaluate`` receives the model itself and returns named numbers; the
    one called ``"loss"`` becomes the history's ``val_loss``, the others its
    ``metrics`` (``"val_<name>"``, and ``"train_<name>"`` on training batches).
    """

    def loss(self, model: nn.Module, batch: Batch) -> Tensor: ...

    def evaluate(self, model: nn.Module, loader: Iterable[Batch], max_batches: int | None) -> dict[str, float]: ...


class NextTokenTask:
    """Next-token prediction (chapters 5 and 7): mean cross-entropy over the target tokens.

    Targets equal to ``IGNORE_INDEX`` (-100) do not count, which is how chapter 7's
    padding and masked instructions stay out of the loss.
    """

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        inputs, targets = batch
        return batch_loss(model, inputs, targets, device_of(model))

    def evaluate(self, model: nn.Module, loader: Iterable[Batch], max_batches: int | None) -> dict[str, float]:
        return {"loss": evaluate(model, loader, max_batches=max_batches)}


SampleFn = Callable[[Any], str]
Callback = Callable[[int, TrainHistory], None]


def greedy_sampler(tokenizer: Any, prompt: str, n_tokens: int = 50) -> SampleFn:
    """A ``sample_fn`` for ``train``: the greedy continuation of ``prompt`` (no randomness used)."""
    from companion.generate import generate_text

    def sample(model: GPTModel) -> str:
        return generate_text(model, tokenizer, prompt, max_new_tokens=n_tokens)

    return sample


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


def _shard(batch: Batch, world: distributed.World) -> Batch:
    """This process's rows of a global batch: the ``rank``-th of ``size`` near-equal slices."""
    if not world.distributed:
        return batch
    rows = batch[0].shape[0]
    if rows < world.size:
        raise ValueError(
            f"a batch of {rows} rows cannot be shared by {world.size} processes; "
            "use a batch size of at least the number of processes (a multiple of it keeps them equal)"
        )
    return tuple(t.tensor_split(world.size)[world.rank] for t in batch)  # type: ignore[return-value]


# --------------------------------------------------------------------------- #
# The loop
# --------------------------------------------------------------------------- #
@contextlib.contextmanager
def _run_lock(folder: str | Path | None, world: distributed.World) -> Iterator[None]:
    """Hold ``.<folder name>.lock`` next to the checkpoint folder while training (rank 0).

    The folder's path is resolved first: a folder reached through a symbolic link has the
    same lock as the folder itself.
    """
    if folder is None or not world.is_main:
        yield
        return
    target = Path(folder).expanduser().resolve()  # one lock per real folder, however it is reached
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(target.parent / f".{target.name}.lock"), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise RunFolderBusyError(
            f"another training run is writing checkpoints to {target} (it holds {lock.lock_file}); "
            "wait for it to finish, or give this run another checkpoint folder"
        ) from None
    try:
        yield
    finally:
        lock.release()


class _Run:
    """The state of one call of ``train``: the model, the optimizer, the step, the history."""

    def __init__(
        self,
        model: nn.Module,
        train_loader: Iterable[Batch],
        val_loader: Iterable[Batch] | None,
        options: TrainOptions,
        task: Task,
        optimizer: torch.optim.Optimizer | None,
        sample_fn: SampleFn | None,
        tokenizer: Any,
        checkpoint_extra: Mapping[str, Any] | None,
    ) -> None:
        if options.sample_every is not None and sample_fn is None:
            raise ValueError("sample_every needs a sample_fn (for example greedy_sampler(tokenizer, prompt))")
        self.model, self.options, self.task = model, options, task
        self.train_loader, self.val_loader = train_loader, val_loader
        self.sample_fn, self.tokenizer = sample_fn, tokenizer
        self.extra = dict(checkpoint_extra or {})
        self.world = distributed.world()
        self.batches = _Batches(train_loader, options.seed)
        if options.max_steps is not None:
            self.max_steps = options.max_steps
        elif self.batches.per_epoch is None:
            raise ValueError("the training loader has no length: give max_steps instead of epochs")
        else:
            self.max_steps = (options.epochs or 1) * self.batches.per_epoch
        self.checkpoint_every = options.checkpoint_every or options.eval_every

        if optimizer is None:
            optimizer = configure_optimizer(
                model, lr=4e-4 if options.lr is None else options.lr,
                weight_decay=options.weight_decay, betas=options.betas,
            )
        for group in optimizer.param_groups:  # the schedule scales each group's base rate
            group["initial_lr"] = group["lr"] if options.lr is None else options.lr
        self.optimizer = optimizer
        self.max_lr = float(optimizer.param_groups[0]["initial_lr"])
        if options.min_lr is not None and options.min_lr > self.max_lr:
            raise ValueError(f"min_lr={options.min_lr} must not exceed the peak lr={self.max_lr}")

        self.device = device_of(model)
        self.runner: nn.Module = model
        if self.world.distributed:
            ids = [self.device.index or 0] if self.device.type == "cuda" else None
            self.runner = DistributedDataParallel(model, device_ids=ids)
        self.history = TrainHistory()
        self.step = 0
        self.tokens = 0
        self.last_point = 0

    # -- resuming and saving ------------------------------------------------
    def resume(self) -> None:
        """Continue from the checkpoint in ``checkpoint_dir``, if there is one and resuming is on."""
        from companion.checkpoint import find_checkpoint, load_checkpoint, read_checkpoint_info, set_rng_state

        folder = self.options.checkpoint_dir
        if folder is None or not self.options.resume or find_checkpoint(folder) is None:
            return
        saved = read_checkpoint_info(folder)  # checked before the model and optimizer are touched
        step = int(saved["step"] or 0)
        if step > self.max_steps:
            raise ValueError(
                f"the checkpoint in {folder} is at step {step}, past this run's last step ({self.max_steps}), "
                f"so there is nothing to train. Give max_steps above {step} to train further, resume=False to "
                "start afresh (it overwrites the checkpoint), or load it with load_checkpoint to use it as it is"
            )
        history = saved["history"] or TrainHistory()
        if step and len(history.batch_losses) != step:
            raise ValueError(
                f"the checkpoint in {folder} is at step {step} but its history holds {len(history.batch_losses)} "
                "batch losses, one per step: it was not written by train (or was edited), so training cannot "
                "continue from it. Pass resume=False to start afresh, or choose another checkpoint_dir"
            )
        _, info = load_checkpoint(folder, model=self.model, optimizer=self.optimizer)
        self.step, self.history = step, info["history"] or TrainHistory()
        self.tokens = int(info["extra"].get("tokens_seen", 0))
        self.last_point = self.history.steps[-1] if self.history.steps else 0
        saved_size = info["extra"].get("world_size")  # None: not written by train
        if saved_size is not None and saved_size != self.world.size and self.world.is_main:
            warnings.warn(
                f"resuming the checkpoint in {folder}, written by {saved_size} process(es), with "
                f"{self.world.size}: every step still takes the same global batch, but it is shared into "
                f"{self.world.size} shard(s) instead of {saved_size}, so the dropout masks and the rounding "
                f"differ and the weights will not match an uninterrupted {saved_size}-process run exactly. "
                f"Resume with {saved_size} process(es) to reproduce it.",
                stacklevel=4,
            )
        if info["rng_state"] is not None:
            set_rng_state(info["rng_state"], rank=self.world.rank)

    def save(self) -> None:
        """Write a checkpoint (rank 0), with every process's random state; then all wait."""
        from companion.checkpoint import get_rng_state, save_checkpoint, tokenizer_spec

        states = distributed.all_gather_objects(get_rng_state())
        if self.world.is_main:
            rng = dict(states[0])
            for rank, state in enumerate(states[1:], start=1):
                rng.update({f"rank{rank}.{key}": value for key, value in state.items()})
            savable = self.tokenizer is not None and tokenizer_spec(self.tokenizer) is not None
            save_checkpoint(
                self.options.checkpoint_dir,  # type: ignore[arg-type]
                self.model,
                optimizer=self.optimizer,
                step=self.step,
                history=self.history,
                extra={**self.extra, "tokens_seen": self.tokens, "seed": self.options.seed,
                       "max_steps": self.max_steps, "world_size": self.world.size},
                tokenizer=self.tokenizer if savable else None,
                rng_state=rng,
            )
        distributed.barrier()

    # -- one step, one evaluation point ---------------------------------------
    def take_step(self) -> float:
        """One optimizer step on this step's batch; returns the loss (averaged over processes)."""
        options = self.options
        for group in self.optimizer.param_groups:
            group["lr"] = _group_lr(self.step, group["initial_lr"], self.max_lr, options.min_lr,
                                    options.warmup_steps, self.max_steps)
        batch = self.batches.batch(self.step)  # the global batch, the same on every process
        self.tokens += batch[0].numel()
        rows = batch[0].shape[0]
        batch = tuple(t.to(self.device) for t in _shard(batch, self.world))  # type: ignore[assignment]
        with autocast(options.precision, self.device):
            loss = self.task.loss(self.runner, batch)
        if self.world.distributed and rows % self.world.size:
            # Unequal shares (the last batch of an epoch, or a batch size that is not a multiple of
            # the number of processes): weight each process's mean by its share of the rows, so that
            # the average DDP takes is the mean over the whole batch.
            loss = loss * (batch[0].shape[0] * self.world.size / rows)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        value = float(distributed.mean_across(loss.detach()))
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"the training loss became {value} at step {self.step + 1} (learning rate "
                f"{self.optimizer.param_groups[0]['lr']:.3g}): the run diverged. Lower the learning "
                "rate, keep gradient clipping on (grad_clip=1.0), or check the data for bad values."
            )
        if options.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), options.grad_clip)
        self.optimizer.step()
        self.step += 1
        self.history.batch_losses.append(value)
        return value

    def add_point(self) -> None:
        """Evaluate (rank 0) and append a point to the history."""
        history, options = self.history, self.options
        recent = history.batch_losses[self.last_point : self.step]
        history.steps.append(self.step)
        history.tokens_seen.append(self.tokens)
        history.train_loss.append(sum(recent) / len(recent))
        history.lr.append(self.optimizer.param_groups[0]["lr"])
        self.last_point = self.step
        if not self.world.is_main:
            history.val_loss.append(None)
            return
        results = {}
        if self.val_loader is not None:
            results = {f"val_{k}": v for k, v in self.task.evaluate(self.model, self.val_loader, options.eval_batches).items()}
        if options.eval_train_batches is not None:
            measured = self.task.evaluate(self.model, self.train_loader, options.eval_train_batches)
            results.update({f"train_{k}": v for k, v in measured.items() if k != "loss"})
        history.val_loss.append(results.pop("val_loss", None))
        for name, value in results.items():
            column = history.metrics.setdefault(name, [None] * (len(history.steps) - 1))
            column.append(value)
        for column in history.metrics.values():  # a metric missing at this point
            if len(column) < len(history.steps):
                column.append(None)

    # -- the loop -------------------------------------------------------------
    def run(self, callback: Callback | None) -> None:
        options = self.options
        start, elapsed_before = time.perf_counter(), self.history.elapsed
        bar = tqdm(total=self.max_steps, initial=self.step, desc="training", unit="step",
                   disable=not (options.progress and self.world.is_main), dynamic_ncols=True)
        was_training = self.model.training
        try:
            self.model.train()
            while self.step < self.max_steps:
                self.take_step()
                step = self.step
                if step % options.eval_every == 0 or step == self.max_steps:
                    self.add_point()
                    val = self.history.val_loss[-1]
                    bar.set_postfix(train=f"{self.history.train_loss[-1]:.3f}",
                                    val="-" if val is None else f"{val:.3f}", refresh=False)
                if options.sample_every is not None and step % options.sample_every == 0 and self.world.is_main:
                    assert self.sample_fn is not None
                    self.history.samples.append({"step": step, "text": self.sample_fn(self.model)})
                self.history.elapsed = elapsed_before + time.perf_counter() - start
                if options.checkpoint_dir is not None and (step % self.checkpoint_every == 0 or step == self.max_steps):
                    self.save()
                bar.update(1)
                if callback is not None:
                    callback(step, self.history)
        finally:
            bar.close()
            self.model.train(was_training)


def train(
    model: nn.Module,
    train_loader: Iterable[Batch],
    val_loader: Iterable[Batch] | None = None,
    options: TrainOptions | None = None,
    *,
    task: Task | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    callback: Callback | None = None,
    sample_fn: SampleFn | None = None,
    tokenizer: Any = None,
    checkpoint_extra: Mapping[str, Any] | None = None,
    **option_changes: Any,
) -> TrainHistory:
    """Train a model (chapter 5, "A model that really learns"; chapters 6 and 7 fine-tune with it).

    Each step takes the step's batch, computes the task's loss, backpropagates, clips
    the gradients' global norm, sets the learning rate from ``lr_schedule`` and takes an
    optimizer step. Every ``eval_every`` steps (and after the last one) the task is
    evaluated on the validation loader and a point is added to the history.

    Args:
        model: The model, trained in place (in training mode; its mode is restored at
            the end). Batches go to the device of its parameters.
        train_loader: Yields batches ``(inputs, targets)``. For a ``DataLoader`` with its
            default sampler the loop draws the order itself from ``options.seed``, whatever
            generator the loader has, so a resumed run sees the same batches.
        val_loader: Batches to evaluate on; ``None`` to skip evaluation.
        options: The run's ``TrainOptions``.
        task: What to train: ``NextTokenTask()`` (the default) or a classification task.
        optimizer: An optimizer over the model's parameters; ``None`` builds
            ``configure_optimizer(model, lr=..., weight_decay=..., betas=...)`` from the options.
        callback: ``callback(step, history)`` after every step (``step`` counts completed
            steps), e.g. to print or to stop by raising an exception.
        sample_fn: ``sample_fn(model) -> str`` every ``options.sample_every`` steps
            (``greedy_sampler(tokenizer, prompt)`` makes one); it should not consume
            torch's global random state, or the run's dropout masks change.
        tokenizer: Stored in the checkpoints when it can be (a ``BPETokenizer`` or
            GPT-2's encoding), so a checkpoint can be used on its own.
        checkpoint_extra: JSON-able data stored in every checkpoint's ``extra``.
        **option_changes: Options given by name instead of (or on top of) ``options``,
            e.g. ``train(model, loader, max_steps=100, lr=1e-3)``.

    Returns:
        The ``TrainHistory`` (with the points of the resumed-from run, if any).

    Raises:
        TypeError: ``model`` is not a module (e.g. a ``Pretrained``: pass its ``.model``).
        ValueError: An option is out of range, the loader yields no batch, or the checkpoint
            to resume from is past ``max_steps`` or inconsistent.
        NonFiniteLossError: The loss became NaN or infinite (the message names the step).
        RunFolderBusyError: Another run holds the checkpoint folder.
    """
    given: Any = model  # typed as a module, but a reader may pass pretrained(...) itself
    if not isinstance(given, nn.Module):
        inner = getattr(given, "model", None)
        hint = (f"; this {type(given).__name__} holds one: pass its .model (and tokenizer=its .tokenizer)"
                if isinstance(inner, nn.Module) else "")
        raise TypeError(f"train needs the model itself (a torch.nn.Module), got a {type(given).__name__}{hint}")
    options = (options or TrainOptions()).replace(**option_changes)
    joined = distributed.join_from_environment()
    try:
        world = distributed.world()
        run = _Run(model, train_loader, val_loader, options, task or NextTokenTask(), optimizer,
                   sample_fn, tokenizer, checkpoint_extra)
        cuda = [run.device.index or 0] if run.device.type == "cuda" else []
        with _run_lock(options.checkpoint_dir, world), torch.random.fork_rng(devices=cuda):
            torch.manual_seed(options.seed + world.rank)
            run.resume()
            run.run(callback)
        return run.history
    finally:
        if joined:
            distributed.leave()


def _group_lr(step: int, base: float, max_lr: float, min_lr: float | None, warmup: int, max_steps: int) -> float:
    """The scheduled rate of a group whose peak is ``base`` (``min_lr`` scaled alike)."""
    if min_lr is not None and base != max_lr:
        min_lr = min_lr * base / max_lr
    return lr_schedule(step, max_lr=base, warmup_steps=warmup, max_steps=max_steps, min_lr=min_lr)
