"""Low-rank adaptation (LoRA) of linear layers (appendix "LoRA: fine-tuning a few parameters").

LoRA {Hu et al. 2021, arXiv:2106.09685} fine-tunes a pretrained linear layer ``y = x Wᵀ + b``
without changing ``W``: it learns a low-rank update ``ΔW = (α / r) · B A`` and computes

    y = x Wᵀ + b + (α / r) · (x Aᵀ) Bᵀ

with ``A`` of shape ``(r, in)`` and ``B`` of shape ``(out, r)``, ``r`` (the rank) much
smaller than ``in`` and ``out``. Only ``A`` and ``B`` are trained: ``r · (in + out)``
numbers instead of ``in · out``. ``B`` starts at zero, so the adapted model starts as
exactly the pretrained one; after training, ``ΔW`` can be added into ``W`` and the model
is a plain one again, as fast as before.

* ``LoRALinear``: a linear layer with a frozen weight and a trainable low-rank update.
* ``apply_lora``: replace chosen ``nn.Linear`` layers of a model (by name pattern) with
  ``LoRALinear`` layers, and freeze every other parameter except those the caller names.
* ``merge_lora``: add each update into its weight and put plain ``nn.Linear`` layers back.
* ``LORA_TARGETS`` (name patterns for a ``GPTModel``) and ``count_parameters``.

Shape letters used in this module:

* ``in``, ``out``: a linear layer's input and output widths
* ``r``: the rank of the update
* ``...``: any leading dimensions (``B, T`` for a GPT's activations)
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LORA_TARGETS",
    "LoRALinear",
    "ParameterCount",
    "apply_lora",
    "count_parameters",
    "lora_layers",
    "merge_lora",
]

LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "attention-qv": ("trf_blocks.*.att.W_query", "trf_blocks.*.att.W_value"),
    "attention": (
        "trf_blocks.*.att.W_query",
        "trf_blocks.*.att.W_key",
        "trf_blocks.*.att.W_value",
        "trf_blocks.*.att.out_proj",
    ),
    "blocks": ("trf_blocks.*.att.*", "trf_blocks.*.ff.layers.*"),
}
"""Name patterns of a ``GPTModel``'s linear layers, by the name ``apply_lora`` accepts.

* ``"attention-qv"``: the query and value projections, as Hu et al. adapt in GPT-3.
* ``"attention"``: all four projections of every attention layer.
* ``"blocks"``: every linear layer of the transformer blocks (attention and
  feed-forward); not the output head.
"""


def _check_lora_settings(rank: object, alpha: object, dropout: object) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank={rank!r} must be an integer >= 1 (typical ranks are 4 to 64)")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha={alpha!r} must be a finite number > 0; the update is scaled by alpha / rank")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout={dropout!r} must be a probability in [0, 1)")


class LoRALinear(nn.Module):
    """A linear layer with a frozen weight and a trainable low-rank update (appendix, "A LoRA layer").

    Computes ``y = x Wᵀ + b + (alpha / rank) · dropout(x) Aᵀ Bᵀ``. ``W`` and ``b`` are the
    base layer's own parameters (shared, not copied) with ``requires_grad`` switched off;
    ``A`` (``lora_A``) starts uniform in ``±1/√in`` (the initialisation of ``nn.Linear``,
    as Hugging Face ``peft`` uses) and ``B`` (``lora_B``) at zero, so a new layer computes
    exactly what the base layer computes.

    The parameters keep the base layer's names, ``weight`` and ``bias``, so a base model's
    ``state_dict`` holds the same keys as the adapted model's minus ``lora_A``/``lora_B``.

    Args:
        base: The pretrained ``nn.Linear`` (``in`` to ``out``).
        rank: ``r``, the rank of the update: ``1 <= rank <= min(in, out)``.
        alpha: Scales the update by ``alpha / rank``; keeping ``alpha`` fixed when trying
            other ranks keeps the update's size comparable.
        dropout: Dropout probability on the input of the update path (training mode only).

    Attributes:
        weight: ``W``, ``(out, in)``, frozen.
        bias: ``b``, ``(out,)``, frozen, or ``None``.
        lora_A: ``A``, ``(r, in)``.
        lora_B: ``B``, ``(out, r)``.
        scaling: ``alpha / rank``.

    Raises:
        TypeError: ``base`` is not an ``nn.Linear``.
        ValueError: ``rank``, ``alpha`` or ``dropout`` is out of range.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear adapts an nn.Linear, got {type(base).__name__}")
        _check_lora_settings(rank, alpha, dropout)
        if rank > min(base.in_features, base.out_features):
            raise ValueError(
                f"rank={rank} exceeds min(in_features, out_features)="
                f"{min(base.in_features, base.out_features)}: the update would not be low-rank"
            )
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.rank = rank
        self.alpha = float(alpha)
        self.scaling = self.alpha / rank
        self.weight = base.weight  # (out, in), the same Parameter as the base layer's
        self.bias = base.bias  # (out,) or None
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        device, dtype = base.weight.device, base.weight.dtype
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=device, dtype=dtype))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=device, dtype=dtype))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # uniform in ±1/√in
        self.dropout = nn.Dropout(dropout)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"rank={self.rank}, alpha={self.alpha:g}, bias={self.bias is not None}"
        )

    def forward(self, x: Tensor) -> Tensor:
        """Apply the layer to ``x`` ``(..., in)``; returns ``(..., out)``."""
        y = F.linear(x, self.weight, self.bias)  # (..., out): the frozen layer
        z = F.linear(self.dropout(x), self.lora_A)  # (..., r): down to the rank
        return y + self.scaling * F.linear(z, self.lora_B)  # (..., out): back up, scaled

    def delta_weight(self) -> Tensor:
        """The update ``ΔW = (alpha / rank) · B A``, ``(out, in)``, of rank at most ``r``."""
        return self.scaling * (self.lora_B @ self.lora_A)  # (out, r) @ (r, in) -> (out, in)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with weight ``W + ΔW`` (new tensors): the same function
        without dropout, at the cost of one matrix product."""
        layer = nn.Linear(
            self.in_features, self.out_features, bias=self.bias is not None,
            device=self.weight.device, dtype=self.weight.dtype,
        )
        layer.weight.copy_(self.weight + self.delta_weight())  # (out, in)
        if self.bias is not None:
            layer.bias.copy_(self.bias)  # (out,)
        return layer


@dataclass(frozen=True)
class ParameterCount:
    """How many of a model's parameters are trained (appendix, "Applying LoRA to a model").

    Attributes:
        trainable: Scalars with ``requires_grad``.
        total: All scalars (a tied weight counted once).
    """

    trainable: int
    total: int

    @property
    def share(self) -> float:
        """``trainable / total`` (0 for a model without parameters)."""
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"{self.trainable:,} of {self.total:,} parameters trainable ({self.share:.2%})"


def count_parameters(model: nn.Module) -> ParameterCount:
    """Count ``model``'s trainable and total parameters (a shared weight counted once)."""
    params = list(model.parameters())  # deduplicated: a tied weight appears once
    return ParameterCount(
        trainable=sum(p.numel() for p in params if p.requires_grad),
        total=sum(p.numel() for p in params),
    )


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _as_patterns(value: str | Iterable[str], what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return LORA_TARGETS.get(value, (value,))
    patterns = tuple(value)
    if not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"{what} must be name patterns (strings), got {patterns!r}")
    return patterns


def _shown(names: Sequence[str], limit: int = 8) -> str:
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def apply_lora(
    model: nn.Module,
    targets: str | Iterable[str] = "attention-qv",
    *,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    trainable: Iterable[str] = (),
) -> list[str]:
    """Put LoRA on chosen linear layers of ``model`` and freeze the rest (appendix, "Applying LoRA to a model").

    Every ``nn.Linear`` whose dotted module name matches one of ``targets`` is replaced,
    in place, by a ``LoRALinear`` around it. Then every parameter is frozen
    (``requires_grad=False``) except the new ``lora_A``/``lora_B`` and the parameters
    matched by ``trainable`` (for example the new head of a classifier). An optimizer
    built afterwards by ``companion.optim.configure_optimizer`` trains only those.

    Patterns are shell-style wildcards matched against the whole name
    (``fnmatch``: ``*`` matches any characters, dots included), e.g.
    ``"trf_blocks.*.att.W_query"`` or ``"*.ff.layers.0"``.

    Args:
        model: The model to adapt, e.g. a ``GPTModel`` or a classifier built on one.
        targets: A key of ``LORA_TARGETS`` (``"attention-qv"``, ``"attention"``,
            ``"blocks"``), one pattern, or several patterns.
        rank: The rank ``r`` of every update.
        alpha: The updates are scaled by ``alpha / rank``.
        dropout: Dropout on the update paths' inputs.
        trainable: Patterns of parameters to keep training, matched against a
            parameter's name or the name of any module that holds it
            (``"out_head"`` matches ``out_head.weight`` and ``out_head.bias``).

    Returns:
        The names of the adapted layers, in the model's order.

    Raises:
        ValueError: A pattern matches no linear layer (or, in ``trainable``, no
            parameter), a layer already has LoRA, a target's weight is shared with
            another module (weight tying), or ``rank``, ``alpha``, ``dropout`` is out
            of range. The model is unchanged when an error is raised.
    """
    _check_lora_settings(rank, alpha, dropout)
    target_patterns = _as_patterns(targets, "targets")
    keep_patterns = (trainable,) if isinstance(trainable, str) else _as_patterns(trainable, "trainable")
    if not target_patterns:
        raise ValueError("targets is empty: name the linear layers to adapt, e.g. 'attention-qv'")

    modules = dict(model.named_modules())
    linears = [name for name, m in modules.items() if isinstance(m, nn.Linear)]
    chosen = [name for name in linears if _matches(name, target_patterns)]
    for pattern in target_patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in linears):
            adapted = [n for n, m in modules.items() if isinstance(m, LoRALinear) and fnmatch.fnmatchcase(n, pattern)]
            if adapted:
                raise ValueError(f"{_shown(adapted)} already has LoRA (pattern {pattern!r}); merge_lora first")
            raise ValueError(f"pattern {pattern!r} matches no nn.Linear of the model; its linear layers are {_shown(linears)}")

    # A tied weight (GPT-2's output head is the token embedding) would be changed for both uses.
    owners: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(name)
    for name in chosen:
        shared = owners[id(modules[name].weight)]
        if len(shared) > 1:
            raise ValueError(
                f"{name}.weight is shared with {', '.join(n for n in shared if n != name + '.weight')} "
                "(weight tying): LoRA would change both; adapt other layers or untie them first"
            )

    for name in chosen:
        base = modules[name]
        assert isinstance(base, nn.Linear)
        if rank > min(base.in_features, base.out_features):
            raise ValueError(
                f"rank={rank} exceeds {name}'s min(in_features, out_features)="
                f"{min(base.in_features, base.out_features)}: the update would not be low-rank"
            )

    param_names = [name for name, _ in model.named_parameters()]
    for pattern in keep_patterns:
        if not any(_param_matches(name, pattern) for name in param_names):
            raise ValueError(f"trainable pattern {pattern!r} matches no parameter; the parameters are {_shown(param_names)}")

    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        base = modules[name]
        assert isinstance(base, nn.Linear)
        setattr(parent, child, LoRALinear(base, rank=rank, alpha=alpha, dropout=dropout))

    for name, param in model.named_parameters():
        is_lora = name.endswith((".lora_A", ".lora_B"))
        param.requires_grad_(is_lora or any(_param_matches(name, p) for p in keep_patterns))
    return chosen


def _param_matches(name: str, pattern: str) -> bool:
    """Whether ``pattern`` matches the parameter ``name`` or a module that holds it."""
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The ``LoRALinear`` layers of ``model`` by name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its weight and put plain ``nn.Linear`` layers back (appendix, "Merging").

    Each ``LoRALinear`` is replaced by ``layer.merged()``: weight ``W + (alpha / rank) · B A``.
    The model then has its original structure and ``state_dict`` keys, so its weights
    load into a freshly built model of the same configuration, and it is as fast as
    before LoRA. Every parameter is trainable again, as in a newly built model.

    Args:
        model: A model adapted by ``apply_lora`` (changed in place).

    Returns:
        ``model``.

    Raises:
        ValueError: The model has no LoRA layer.
    """
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRALinear layer to merge; apply_lora adds them")
    modules = dict(model.named_modules())
    for name, layer in layers.items():
        parent_name, _, child = name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        setattr(parent, child, layer.merged())
    for param in model.parameters():
        param.requires_grad_(True)
    return model
