"""Tests for companion.train: the options, the batches of every step, tasks, and the loop."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import REPEATED_TEXT
from torch.utils.data import DataLoader

from companion.config import GPTConfig
from companion.data import SlidingWindowDataset
from companion.generate import generate_text
from companion.losses import batch_loss, evaluate
from companion.optim import lr_schedule
from companion.tokenizers import BPETokenizer
from companion.train import (
    NextTokenTask,
    NonFiniteLossError,
    RunFolderBusyError,
    TrainOptions,
    greedy_sampler,
    train,
)


class RecordingTask(NextTokenTask):
    """Next-token prediction that remembers every batch it was given."""

    def __init__(self) -> None:
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def loss(self, model, batch):
        self.batches.append((batch[0].clone(), batch[1].clone()))
        return super().loss(model, batch)


# ------------------------------------------------------------------ options
@pytest.mark.parametrize(
    "changes, message",
    [
        ({"grad_clip": -1.0}, "grad_clip=-1.0 must be a finite number > 0"),
        ({"grad_clip": 0.0}, "grad_clip=0.0"),
        ({"grad_clip": float("nan")}, "grad_clip=nan"),
        ({"lr": float("inf")}, "lr=inf must be a finite number > 0"),
        ({"lr": -1e-3}, "lr=-0.001"),
        ({"lr": 0}, "lr=0"),
        ({"min_lr": 1e-2, "lr": 1e-3}, "min_lr=0.01 must not exceed lr=0.001"),
        ({"max_steps": 2, "epochs": 1}, "max_steps or epochs, not both"),
        ({"eval_every": 0}, "eval_every=0"),
        ({"warmup_steps": -1}, "warmup_steps=-1"),
        ({"max_steps": 2.5}, "max_steps=2.5"),
        ({"betas": (0.9, 1.5)}, "betas="),
        ({"checkpoint_every": 1}, "checkpoint_every needs checkpoint_dir"),
    ],
)
def test_bad_options_are_refused_with_their_name(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainOptions(**changes)


def test_options_replace_validates_and_names_unknown_fields() -> None:
    options = TrainOptions(max_steps=10, lr=1e-3)
    assert options.replace(lr=2e-3).lr == 2e-3 and options.lr == 1e-3
    with pytest.raises(ValueError, match="grad_clip"):
        options.replace(grad_clip=-1.0)
    with pytest.raises(TypeError, match=r"unknown training option\(s\) \['learning_rate'\]"):
        options.replace(learning_rate=1e-3)
    assert options.to_dict()["betas"] == [0.9, 0.999]


def test_a_negative_clip_is_refused_by_train_before_any_step(make_model, random_loaders) -> None:
    """Failure mode: grad_clip=-1.0 used to be accepted, and the loss climbed."""
    model = make_model()
    before = [p.detach().clone() for p in model.parameters()]
    train_loader, _ = random_loaders()
    with pytest.raises(ValueError, match="grad_clip=-1.0"):
        train(model, train_loader, max_steps=5, grad_clip=-1.0, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_a_diverging_run_stops_with_the_step(make_model, random_loaders) -> None:
    """Failure mode: lr=1e6 used to run on in NaN without a word."""
    train_loader, _ = random_loaders()
    with pytest.raises(NonFiniteLossError, match=r"became (nan|inf) at step \d+ \(learning rate 1e\+06\)"):
        train(make_model(), train_loader, max_steps=50, lr=1e6, grad_clip=None, progress=False)


# ------------------------------------------------------------------ batches
def test_the_batch_of_a_step_depends_only_on_the_seed_and_the_step(make_model, random_loaders) -> None:
    train_loader, _ = random_loaders()
    per_epoch, n = len(train_loader), len(train_loader.dataset)
    task = RecordingTask()
    train(make_model(), train_loader, max_steps=2 * per_epoch + 3, seed=5, task=task, progress=False)
    run = task.batches
    windows = {tuple(train_loader.dataset[i][0].tolist()): i for i in range(n)}
    for epoch in range(2):  # each epoch visits every window at most once
        seen = [windows[tuple(x.tolist())] for xb, _ in run[epoch * per_epoch : (epoch + 1) * per_epoch] for x in xb]
        assert len(seen) == len(set(seen)) == per_epoch * train_loader.batch_size
    first = [windows[tuple(x.tolist())] for x in run[0][0]]
    assert first != [windows[tuple(x.tolist())] for x in run[per_epoch][0]]  # a new order each epoch
    other = RecordingTask()
    train(make_model(), train_loader, max_steps=1, seed=6, task=other, progress=False)
    assert not torch.equal(other.batches[0][0], run[0][0])  # another seed, another order
    # the loader's own shuffling does not matter: the loop draws the order from the seed
    torch.manual_seed(1234)
    again = RecordingTask()
    train(make_model(), train_loader, max_steps=3, seed=5, task=again, progress=False)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(again.batches, run[:3], strict=True))


def test_plain_iterables_are_replayed_in_their_order(make_model, random_loaders) -> None:
    _, val_loader = random_loaders()
    as_list = [(x.clone(), y.clone()) for x, y in val_loader]
    task = RecordingTask()
    train(make_model(), as_list, max_steps=len(as_list) + 2, task=task, progress=False)
    expected = as_list + as_list[:2]  # wraps around
    assert all(torch.equal(a[0], b[0]) for a, b in zip(task.batches, expected, strict=True))
    with pytest.raises(ValueError, match="no batch"):
        train(make_model(), [], max_steps=1, progress=False)


# ------------------------------------------------------------------ the loop
def test_training_is_deterministic_and_leaves_the_global_rng_alone(make_model, random_loaders) -> None:
    train_loader, val_loader = random_loaders()
    options = TrainOptions(max_steps=12, eval_every=5, lr=3e-3, warmup_steps=2, min_lr=3e-4, progress=False, seed=3)
    model = make_model(drop_rate=0.1)
    torch.manual_seed(99)
    before = torch.get_rng_state()
    h1 = train(model, train_loader, val_loader, options)
    assert torch.equal(torch.get_rng_state(), before)
    h2 = train(make_model(drop_rate=0.1), train_loader, val_loader, options)
    assert h1.batch_losses == h2.batch_losses and len(h1.batch_losses) == 12
    assert h1.val_loss == h2.val_loss
    h3 = train(make_model(drop_rate=0.1), train_loader, val_loader, options, seed=4)
    assert h3.batch_losses != h1.batch_losses

    assert h1.steps == [5, 10, 12]
    assert h1.tokens_seen == [s * 4 * 16 for s in h1.steps]
    assert h1.train_loss[0] == pytest.approx(sum(h1.batch_losses[:5]) / 5)
    assert h1.train_loss[2] == pytest.approx(sum(h1.batch_losses[10:12]) / 2)
    assert h1.lr == [lr_schedule(s - 1, max_lr=3e-3, warmup_steps=2, max_steps=12, min_lr=3e-4) for s in h1.steps]
    assert all(v is not None and v > 0 for v in h1.val_loss)
    assert h1.elapsed > 0


def test_training_learns_a_repetitive_text(make_model) -> None:
    tokenizer = BPETokenizer.train(REPEATED_TEXT, 300)
    ids = tokenizer.encode(REPEATED_TEXT)
    data = DataLoader(SlidingWindowDataset(ids, 16, stride=1), batch_size=8, shuffle=True, drop_last=True)
    model = make_model(GPTConfig(vocab_size=300, context_length=16, emb_dim=32, n_heads=4, n_layers=2))
    start = evaluate(model, data, max_batches=5)
    history = train(model, data, data, max_steps=60, eval_every=30, eval_batches=5, lr=1e-2, progress=False,
                    sample_every=30, sample_fn=greedy_sampler(tokenizer, "First", 8))
    assert start > 5.0 and history.val_loss[-1] < start - 2.0
    assert [s["step"] for s in history.samples] == [30, 60]
    # the last sample is the greedy continuation of the trained model
    assert history.samples[-1]["text"] == generate_text(model, tokenizer, "First", 8)
    assert history.samples[-1]["text"].startswith("First")


def test_epochs_gradient_clipping_and_callback(make_model, random_loaders, monkeypatch: pytest.MonkeyPatch) -> None:
    train_loader, _ = random_loaders()
    calls: list[float] = []
    original = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm, *args, **kwargs):
        calls.append(max_norm)
        return original(parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    seen: list[int] = []
    history = train(make_model(), train_loader, epochs=2, grad_clip=0.5, progress=False,
                    callback=lambda step, h: seen.append(step))
    assert len(history.batch_losses) == 2 * len(train_loader)
    assert seen == list(range(1, 2 * len(train_loader) + 1))
    assert calls == [0.5] * len(seen)
    assert history.val_loss == [None] * len(history.steps)
    calls.clear()
    train(make_model(), train_loader, max_steps=3, grad_clip=None, progress=False)
    assert calls == []


def test_gradient_clipping_bounds_the_global_norm(make_model) -> None:
    model = make_model()
    x = torch.randint(0, 64, (2, 16))
    batch_loss(model, x, x).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
    norm = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters()))
    assert norm.item() == pytest.approx(1e-3, rel=1e-3)


def test_the_optimizer_given_keeps_its_rate_unless_lr_is_given(make_model, random_loaders) -> None:
    train_loader, _ = random_loaders()
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    history = train(model, train_loader, max_steps=2, eval_every=1, optimizer=opt, progress=False)
    assert history.lr == [0.05, 0.05]
    history = train(model, train_loader, max_steps=2, eval_every=1, optimizer=opt, lr=0.01, progress=False)
    assert history.lr == [0.01, 0.01]


def test_progress_false_prints_nothing(make_model, random_loaders, capfd: pytest.CaptureFixture[str]) -> None:
    train_loader, val_loader = random_loaders()
    train(make_model(), train_loader, val_loader, max_steps=3, eval_every=1, progress=False)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    train(make_model(), train_loader, val_loader, max_steps=3, eval_every=1, progress=True)
    out, err = capfd.readouterr()
    assert "3/3" in err


def test_a_task_with_metrics_fills_the_history(make_model, random_loaders) -> None:
    class WithAccuracy(NextTokenTask):
        def evaluate(self, model, loader, max_batches):
            return {**super().evaluate(model, loader, max_batches), "accuracy": 0.25}

    train_loader, val_loader = random_loaders()
    history = train(make_model(), train_loader, val_loader, max_steps=4, eval_every=2, eval_train_batches=1,
                    task=WithAccuracy(), progress=False)
    assert history.metrics == {"val_accuracy": [0.25, 0.25], "train_accuracy": [0.25, 0.25]}
    assert all(v is not None for v in history.val_loss)


def test_bad_arguments_to_train_are_reported(make_model, random_loaders) -> None:
    train_loader, _ = random_loaders()
    model = make_model()
    with pytest.raises(ValueError, match="sample_every needs a sample_fn"):
        train(model, train_loader, max_steps=2, sample_every=1, progress=False)
    with pytest.raises(ValueError, match="min_lr"):
        train(model, train_loader, max_steps=2, lr=1e-3, min_lr=1e-2, progress=False)
    with pytest.raises(ValueError, match="no length"):
        train(model, iter([]), progress=False)
    with pytest.raises(TypeError, match="unknown training option"):
        train(model, train_loader, max_step=2, progress=False)


# ------------------------------------------------------------------ one writer per folder
_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import torch
    from torch.utils.data import DataLoader
    from companion.config import GPTConfig
    from companion.data import SlidingWindowDataset
    from companion.model import GPTModel
    from companion.train import train

    out, ready = Path(sys.argv[1]), Path(sys.argv[2])
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=64, context_length=16, emb_dim=32, n_heads=4, n_layers=1))
    data = DataLoader(SlidingWindowDataset(torch.randint(0, 64, (200,)), 16, 4), batch_size=4)

    def wait(step, history):
        ready.touch()
        while not (ready.parent / "stop").exists():
            time.sleep(0.05)

    train(model, data, max_steps=2, checkpoint_dir=out, progress=False, callback=wait)
    """
)


def test_a_second_trainer_on_the_same_folder_is_refused(tmp_path: Path, make_model, random_loaders) -> None:
    """Failure mode: two trainers on one folder used to corrupt each other's checkpoints."""
    out, ready = tmp_path / "run", tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out), str(ready)])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert holder.poll() is None, "the first trainer died"
            assert time.monotonic() < deadline, "the first trainer never started"
            time.sleep(0.05)
        train_loader, _ = random_loaders()
        model = make_model()
        before = [p.detach().clone() for p in model.parameters()]
        with pytest.raises(RunFolderBusyError, match=r"another training run is writing checkpoints to .*run"):
            train(model, train_loader, max_steps=2, checkpoint_dir=out, progress=False)
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    finally:
        (tmp_path / "stop").touch()
        assert holder.wait(timeout=60) == 0
    # once the first run is over the folder is free again, and its checkpoint is whole
    history = train(make_model(), random_loaders()[0], max_steps=3, checkpoint_dir=out, resume=False, progress=False)
    assert history.steps[-1] == 3
    assert math.isfinite(history.batch_losses[-1])


# --------------------------------------------------------------------- issue 18
def test_a_run_folder_reached_through_a_symlink_shares_its_lock(tmp_path: Path, make_model, random_loaders) -> None:
    import filelock

    real = tmp_path / "run"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    with filelock.FileLock(str(tmp_path / ".run.lock"), timeout=0):  # a trainer on the real folder
        with pytest.raises(RunFolderBusyError, match=r"another training run is writing checkpoints to .*run"):
            train(make_model(), random_loaders()[0], max_steps=1, checkpoint_dir=tmp_path / "alias", progress=False)


def test_resuming_past_max_steps_is_an_error_not_a_silent_no_op(tmp_path: Path, make_model, random_loaders) -> None:
    loader = random_loaders()[0]
    train(make_model(), loader, max_steps=4, eval_every=2, checkpoint_dir=tmp_path / "run", progress=False)
    model = make_model()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"is at step 4, past this run's last step \(2\).*max_steps above 4"):
        train(model, loader, max_steps=2, eval_every=2, checkpoint_dir=tmp_path / "run", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # left as it was
    # the same number of steps is a finished run: it returns its history, as before
    history = train(make_model(), loader, max_steps=4, eval_every=2, checkpoint_dir=tmp_path / "run", progress=False)
    assert history.steps == [2, 4]


def test_resuming_with_another_number_of_processes_says_so(tmp_path: Path, make_model, random_loaders) -> None:
    import json

    loader = random_loaders()[0]
    train(make_model(), loader, max_steps=2, eval_every=2, checkpoint_dir=tmp_path / "run", progress=False)
    meta_file = tmp_path / "run" / "checkpoint.json"
    meta = json.loads(meta_file.read_text())
    assert meta["extra"]["world_size"] == 1
    meta["extra"]["world_size"] = 2  # as a two-process run writes it
    meta_file.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match=r"written by 2 process\(es\), with 1: .*not match an uninterrupted 2-process"):
        train(make_model(), loader, max_steps=4, eval_every=2, checkpoint_dir=tmp_path / "run", progress=False)


def test_a_checkpoint_whose_history_disagrees_with_its_step_is_refused(tmp_path: Path, make_model, random_loaders) -> None:
    import json

    loader = random_loaders()[0]
    train(make_model(), loader, max_steps=2, eval_every=2, checkpoint_dir=tmp_path / "run", progress=False)
    meta_file = tmp_path / "run" / "checkpoint.json"
    meta = json.loads(meta_file.read_text())
    meta["history"]["batch_losses"] = []
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"at step 2 but its history holds 0 batch losses"):
        train(make_model(), loader, max_steps=4, eval_every=2, checkpoint_dir=tmp_path / "run", progress=False)


def test_train_says_to_pass_the_model_of_a_pretrained(make_model, random_loaders) -> None:
    from companion.course_models import Pretrained

    model = make_model()
    result = Pretrained(model, None, model.config)
    with pytest.raises(TypeError, match=r"got a Pretrained; .*pass its \.model"):
        train(result, random_loaders()[0], max_steps=1, progress=False)  # type: ignore[arg-type]
