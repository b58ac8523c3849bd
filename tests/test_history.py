"""Tests for companion.history: TrainHistory round-trips through JSON and rejects bad data."""

from __future__ import annotations

import json

import pytest

from companion.history import TrainHistory


def test_history_round_trips_through_json() -> None:
    history = TrainHistory(steps=[1, 2], tokens_seen=[8, 16], train_loss=[3.5, 3.25], val_loss=[None, 3.0],
                           lr=[1e-3, 5e-4], metrics={"val_accuracy": [None, 0.75]}, batch_losses=[3.5, 3.25],
                           samples=[{"step": 2, "text": "hi"}], elapsed=1.5)
    again = TrainHistory.from_dict(json.loads(json.dumps(history.to_dict())))
    assert again == history
    with pytest.raises(KeyError, match="unknown TrainHistory field"):
        TrainHistory.from_dict({"loss": []})




@pytest.mark.parametrize(
    "field, value",
    [
        ("steps", "garbage"),
        ("steps", [1, "two"]),
        ("train_loss", [True]),
        ("val_loss", {"a": 1}),
        ("metrics", ["val_accuracy"]),
        ("metrics", {"val_accuracy": "high"}),
        ("samples", ["text"]),
        ("elapsed", "three"),
    ],
)
def test_fields_of_the_wrong_type_are_rejected_with_their_name(field: str, value: object) -> None:
    with pytest.raises(TypeError, match=field.split("[")[0]):
        TrainHistory.from_dict({field: value})


def test_a_history_that_is_not_a_dict_is_rejected() -> None:
    with pytest.raises(TypeError, match="must be a dict"):
        TrainHistory.from_dict("garbage")


def test_unequal_per_point_lists_are_refused_with_their_lengths() -> None:
    """Issue 18: such a history used to load, and resuming from it crashed with a bare ZeroDivisionError."""
    data = TrainHistory(steps=[1, 2], tokens_seen=[8, 16], train_loss=[3.5, 3.25], val_loss=[None, 3.0],
                        lr=[1e-3, 1e-3], metrics={"val_accuracy": [0.5, 0.75]}).to_dict()
    TrainHistory.from_dict(data)  # equal lengths load
    data["train_loss"] = [3.5]
    with pytest.raises(ValueError, match=r"lengths differ \(steps 2, tokens_seen 2, train_loss 1, val_loss 2, lr 2"):
        TrainHistory.from_dict(data)
    data["train_loss"] = [3.5, 3.25]
    data["metrics"]["val_accuracy"] = [0.5]
    with pytest.raises(ValueError, match=r"metrics\['val_accuracy'\] 1"):
        TrainHistory.from_dict(data)
