"""Chapter 6's checked exercises: a task that classifies from the last position, and a threshold's counts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion.exercises.core import Exercise

__all__ = ["EXERCISES", "LastPositionTask", "caught_and_flagged"]

Batch = tuple[Tensor, Tensor]


# ---------------------------------------------------------------- reference solutions
class LastPositionTask:
    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        inputs, labels = batch
        return F.cross_entropy(model(inputs)[:, -1], labels)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable[Batch],
                 max_batches: int | None) -> dict[str, float]:
        was_training = model.training
        model.eval()
        total = correct = count = 0.0
        for i, (inputs, labels) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            logits = model(inputs)[:, -1]  # (B, 2)
            total += F.cross_entropy(logits, labels,
                                     reduction="sum").item()
            correct += int((logits.argmax(-1) == labels).sum())
            count += len(labels)
        model.train(was_training)
        return {"loss": total / count, "accuracy": correct / count}


def caught_and_flagged(spam_prob: Tensor, labels: Tensor,
                       threshold: float) -> tuple[int, int]:
    # (N,): what the filter moves away
    flagged = spam_prob > threshold
    # spam, rightly flagged
    caught = int((flagged & (labels == 1)).sum())
    # ham, wrongly flagged
    false_alarms = int((flagged & (labels == 0)).sum())
    return caught, false_alarms


# ---------------------------------------------------------------- checks
def _tiny_classifier() -> tuple[nn.Module, list[Batch], int]:
    """A random 2-class GPT with dropout, and three padded batches of 4, 4 and 2 messages."""
    from companion.config import GPTConfig
    from companion.finetune.classification import prepare_classifier
    from companion.model import GPTModel

    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=50, context_length=12, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.3)
    model = prepare_classifier(GPTModel(cfg), 2, train_blocks=None)
    pad_id = 49
    gen = torch.Generator().manual_seed(1)
    batches = []
    for size in (4, 4, 2):
        inputs = torch.randint(0, pad_id, (size, 10), generator=gen)
        for row in range(size):
            length = int(torch.randint(3, 11, (1,), generator=gen))
            inputs[row, length:] = pad_id
        batches.append((inputs, torch.zeros(size, dtype=torch.long)))
    # labels chosen so that 2 + 2 + 2 of the 10 are right: accuracy 0.6 over messages,
    # while the mean of the three batches' accuracies (0.5, 0.5, 1) would be 0.667
    model.eval()
    with torch.no_grad():
        labelled = []
        for (inputs, _), n_right in zip(batches, (2, 2, 2)):
            predicted = model(inputs)[:, -1].argmax(-1)
            labels = predicted.clone()
            labels[n_right:] = 1 - predicted[n_right:]
            labelled.append((inputs, labels))
    model.train()
    return model, labelled, pad_id


def _by_hand(model: nn.Module, batches: list[Batch]) -> tuple[float, float]:
    with torch.no_grad():
        logits = torch.cat([model(x)[:, -1] for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    loss = F.cross_entropy(logits, labels).item()
    return loss, (logits.argmax(-1) == labels).float().mean().item()


def check_last_position_task(task_class: Any) -> None:
    model, batches, _ = _tiny_classifier()
    task = task_class()
    model.eval()
    inputs, labels = batches[0]
    with torch.no_grad():
        expected = F.cross_entropy(model(inputs)[:, -1], labels)
        got = task.loss(model, (inputs, labels))
    assert torch.is_tensor(got) and got.dim() == 0, f"loss should return a scalar tensor, got {got!r}"
    assert torch.allclose(got, expected, atol=1e-6), (
        f"loss: expected the mean cross-entropy of the logits at position T - 1 of every row ({expected:.4f}), got {got:.4f}")
    model.train()  # evaluate must switch dropout off, and switch it back on after
    result = task.evaluate(model, batches, None)
    assert model.training, "evaluate must leave the model in training mode, as it found it"
    assert set(result) == {"loss", "accuracy"}, f"evaluate should return the keys 'loss' and 'accuracy', got {sorted(result)}"
    model.eval()
    loss, accuracy = _by_hand(model, batches)
    assert abs(result["loss"] - loss) < 1e-5, (
        f"evaluate(..., None) over 10 messages in batches of 4, 4, 2: expected the mean loss per message {loss:.5f}, "
        f"got {result['loss']:.5f} (in evaluation mode, each message counted once)")
    assert abs(result["accuracy"] - accuracy) < 1e-6, (
        f"evaluate(..., None): 6 of the 10 messages are classified right, so the accuracy is {accuracy:.3f}; got "
        f"{result['accuracy']:.3f} (count right answers over all messages, not the mean of per-batch accuracies)")
    first = task.evaluate(model, batches, 1)
    loss1, accuracy1 = _by_hand(model, batches[:1])
    assert abs(first["loss"] - loss1) < 1e-5 and abs(first["accuracy"] - accuracy1) < 1e-6, (
        f"evaluate(..., max_batches=1) should read only the first batch: expected loss {loss1:.5f}, accuracy "
        f"{accuracy1:.3f}; got {first['loss']:.5f}, {first['accuracy']:.3f}")


def check_caught_and_flagged(fn: Any) -> None:
    prob = torch.tensor([0.9, 0.2, 0.7, 0.4, 0.7, 0.05, 0.99])
    labels = torch.tensor([1, 0, 1, 1, 0, 0, 1])
    for threshold, expected in [(0.5, (3, 1)), (0.7, (2, 0)), (0.1, (4, 2)), (0.99, (0, 0))]:
        got = fn(prob, labels, threshold)
        assert tuple(int(n) for n in got) == expected, (
            f"probabilities {prob.tolist()}, labels {labels.tolist()} (1 = spam), threshold {threshold}: expected "
            f"{expected[0]} spam caught and {expected[1]} ham flagged, got {tuple(got)} "
            "(a message is flagged when its probability is above the threshold, strictly)")


EXERCISES = {
    "ch06-last-position": Exercise("ch06-last-position", "LastPositionTask", LastPositionTask,
                                   check_last_position_task,
                                   "a training task that classifies from the last position, loss and accuracy"),
    "ch06-threshold": Exercise("ch06-threshold", "caught_and_flagged", caught_and_flagged, check_caught_and_flagged,
                               "spam caught and ham flagged at a threshold"),
}
