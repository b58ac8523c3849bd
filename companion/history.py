"""What a training run measured: ``TrainHistory`` (chapter 5, "A training loop").

The training loop (``companion.train``) fills one in, checkpoints store it as JSON
(``companion.checkpoint``), and ``companion.plots.plot_losses`` draws it. It lives in
its own module because all three need it and none of them should import another for it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["TrainHistory"]

_NUMBER = (int, float)


@dataclass
class TrainHistory:
    """What ``train`` measured, JSON-ready (``to_dict`` / ``from_dict``).

    The lists ``steps`` to ``lr`` and every list in ``metrics`` have one entry per
    evaluation point (every ``eval_every`` steps and after the last step).

    Attributes:
        steps: Optimizer steps completed at each point.
        tokens_seen: Training tokens (``inputs.numel()`` summed over the global batch)
            processed by then.
        train_loss: Mean training-batch loss over the steps since the previous point
            (measured in training mode, so with dropout if the model has any).
        val_loss: Validation loss at the point; ``None`` without a validation loader.
        lr: Learning rate of the last step before the point.
        metrics: Further measurements by name, e.g. ``"val_accuracy"`` and
            ``"train_accuracy"`` when fine-tuning a classifier (chapter 6).
        batch_losses: The loss of every training step, in order.
        samples: Texts generated during training: ``{"step": int, "text": str}``.
        elapsed: Seconds spent training (evaluation included), summed over resumed runs.
    """

    steps: list[int] = field(default_factory=list)
    tokens_seen: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    metrics: dict[str, list[float | None]] = field(default_factory=dict)
    batch_losses: list[float] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A dict of plain JSON types (``json.dumps`` works on it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> TrainHistory:
        """The inverse of ``to_dict``, checking every field's type.

        Raises:
            TypeError: ``data`` is not a dict, or a field has the wrong type (the message
                names it).
            KeyError: ``data`` has a key that is not a field (the message lists them).
            ValueError: The per-point lists (``steps`` to ``lr``, ``metrics``) that are not empty
                have unequal lengths.
        """
        if not isinstance(data, dict):
            raise TypeError(f"a TrainHistory must be a dict of its fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise KeyError(f"unknown TrainHistory field(s) {unknown}; fields are {sorted(known)}")

        def number_list(name: str, value: Any, optional: bool = False) -> list[Any]:
            ok = isinstance(value, list) and all(
                (optional and v is None) or (isinstance(v, _NUMBER) and not isinstance(v, bool)) for v in value
            )
            if not ok:
                raise TypeError(f"TrainHistory.{name} must be a list of numbers, got {value!r:.80}")
            return list(value)

        values: dict[str, Any] = {}
        for name, value in data.items():
            if name in ("steps", "tokens_seen", "train_loss", "lr", "batch_losses"):
                values[name] = number_list(name, value)
            elif name == "val_loss":
                values[name] = number_list(name, value, optional=True)
            elif name == "metrics":
                if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                    raise TypeError(f"TrainHistory.metrics must map names to lists, got {value!r:.80}")
                values[name] = {k: number_list(f"metrics[{k!r}]", v, optional=True) for k, v in value.items()}
            elif name == "samples":
                if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                    raise TypeError(f"TrainHistory.samples must be a list of dicts, got {value!r:.80}")
                values[name] = [dict(v) for v in value]
            else:  # elapsed
                if isinstance(value, bool) or not isinstance(value, _NUMBER) or not math.isfinite(value):
                    raise TypeError(f"TrainHistory.elapsed must be a number of seconds, got {value!r:.80}")
                values[name] = float(value)
        per_point = {name: len(values.get(name, [])) for name in ("steps", "tokens_seen", "train_loss", "val_loss", "lr")}
        per_point.update({f"metrics[{k!r}]": len(v) for k, v in values.get("metrics", {}).items()})
        if len({n for n in per_point.values() if n}) > 1:  # an empty list: not recorded (a hand-written loop)
            counts = ", ".join(f"{name} {n}" for name, n in per_point.items())
            raise ValueError(
                f"TrainHistory's lists of evaluation points must have one entry per point, but their lengths "
                f"differ ({counts}); the history was edited or damaged"
            )
        return cls(**values)
