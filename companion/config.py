"""The GPT model's configuration: one frozen, validated object, with named presets.

Chapter 4, "The configuration", describes the model with a plain dict,
``GPT2_SMALL``. ``GPTConfig`` takes exactly those field names, so the
chapter's dict becomes a checked object with ``GPTConfig(**cfg)``, and every later
chapter passes that object around instead of a dict that can hold a typo.

What the object adds over a dict:

* It is frozen: a config never changes under a model built from it. ``replace``
  returns a changed, re-validated copy.
* It is validated on creation: a bad value fails at once, with a message that names
  the field, the value and the fix, not deep inside a matrix multiplication.
* It has presets: ``GPTConfig.from_preset("gpt2-small")`` and the ``PRESETS`` table.
* It is JSON-friendly: ``to_dict`` and ``from_dict`` round-trip through ``json``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, get_args

__all__ = ["PRESETS", "AttentionImpl", "GPTConfig", "list_presets"]

AttentionImpl = Literal["manual", "sdpa"]
"""The two attention paths: the readable one of chapter 3, and PyTorch's fused kernel."""

_ATTENTION_IMPLS: tuple[str, ...] = get_args(AttentionImpl)
_POSITIVE_INT_FIELDS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers")
_BOOL_FIELDS = ("qkv_bias", "tie_embeddings")


@dataclass(frozen=True)
class GPTConfig:
    """Hyperparameters of a GPT model (chapter 4, "The configuration").

    The first seven fields are the keys of chapter 4's ``GPT2_SMALL`` dict (the same keys
    as the configuration dicts of Raschka's *Build a Large Language Model (From
    Scratch)*), so ``GPTConfig(**GPT2_SMALL)`` works. The last two are additions.

    Attributes:
        vocab_size: Number of token ids (rows of the token embedding, columns of the
            output logits). 50,257 for GPT-2's tokenizer.
        context_length: Longest sequence the model can read (rows of the positional
            embedding).
        emb_dim: Width of every token's vector (``C`` in the shape comments).
        n_heads: Attention heads per layer (``H``); must divide ``emb_dim``.
        n_layers: Number of transformer blocks.
        drop_rate: Dropout probability used everywhere dropout is applied, in
            ``[0, 1)``. Only active in training mode.
        qkv_bias: Whether the query, key and value projections have a bias. GPT-2 has
            one; the training configuration of Raschka's book does not.
        tie_embeddings: Whether the output head reuses the token embedding matrix
            (GPT-2 does; chapter 4's own model and Raschka's keep a separate output matrix).
        attn_impl: ``"manual"`` for the step-by-step attention of chapter 3, which can
            also return the attention weights, or ``"sdpa"`` for
            ``torch.nn.functional.scaled_dot_product_attention`` (faster, same result).
    """

    vocab_size: int
    context_length: int
    emb_dim: int
    n_heads: int
    n_layers: int
    drop_rate: float = 0.0
    qkv_bias: bool = False
    tie_embeddings: bool = False
    attn_impl: AttentionImpl = "sdpa"

    def __post_init__(self) -> None:
        for name in _POSITIVE_INT_FIELDS:
            value = getattr(self, name)
            # bool is a subclass of int, but True is never a sensible layer count.
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(
                    f"{name}={value!r} must be an int, not {type(value).__name__}; "
                    f"pass a whole number such as {name}=12"
                )
            if value <= 0:
                raise ValueError(f"{name}={value!r} must be positive; choose {name} >= 1")

        if self.emb_dim % self.n_heads != 0:
            raise ValueError(
                f"emb_dim={self.emb_dim} is not divisible by n_heads={self.n_heads}; "
                "choose emb_dim a multiple of n_heads"
            )

        rate = self.drop_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)):
            raise TypeError(
                f"drop_rate={rate!r} must be a float, not {type(rate).__name__}; "
                "pass a probability such as drop_rate=0.1"
            )
        if not 0.0 <= rate < 1.0:  # also rejects NaN
            raise ValueError(
                f"drop_rate={rate!r} is outside [0, 1); choose a dropout probability "
                "from 0.0 (no dropout) up to but excluding 1.0"
            )
        # JSON and Hugging Face configs often hold 0 rather than 0.0: store a float.
        object.__setattr__(self, "drop_rate", float(rate))

        for name in _BOOL_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(
                    f"{name}={value!r} must be a bool, not {type(value).__name__}; "
                    f"pass {name}=True or {name}=False"
                )

        if self.attn_impl not in _ATTENTION_IMPLS:
            choices = " or ".join(repr(impl) for impl in _ATTENTION_IMPLS)
            raise ValueError(f"attn_impl={self.attn_impl!r} is unknown; choose {choices}")

    @property
    def head_dim(self) -> int:
        """Width of one attention head, ``emb_dim // n_heads`` (``D`` in shape comments)."""
        return self.emb_dim // self.n_heads

    # ----------------------------------------------------------------- copies
    def replace(self, **changes: Any) -> GPTConfig:
        """Return a copy with some fields changed, validated like a new config.

        Example: ``cfg.replace(context_length=256, drop_rate=0.0)``.

        Raises:
            KeyError: A name in ``changes`` is not a field (the message lists the fields).
        """
        _check_field_names(changes)
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict of JSON types (ints, a float, bools, a str)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GPTConfig:
        """Build a config from a dict such as ``to_dict()`` or a ``json.load`` result.

        Raises:
            KeyError: ``data`` has keys that are not fields, or lacks required ones;
                the message names them and lists the valid fields.
        """
        _check_field_names(data)
        fields = {field.name: field for field in dataclasses.fields(cls)}
        required = [
            name
            for name, field in fields.items()
            if field.default is dataclasses.MISSING and name not in data
        ]
        if required:
            raise KeyError(f"missing required GPTConfig field(s) {', '.join(map(repr, required))}")
        return cls(**data)

    # ----------------------------------------------------------------- presets
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GPTConfig:
        """Return a named preset from ``PRESETS``, with some fields overridden.

        Example: ``GPTConfig.from_preset("gpt2-small", context_length=256)``.

        Raises:
            KeyError: ``name`` is not a preset (the message lists the known ones).
        """
        try:
            preset = PRESETS[name]
        except KeyError:
            raise KeyError(
                f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}"
            ) from None
        return preset.replace(**overrides)


def _check_field_names(names: Mapping[str, Any]) -> None:
    """Raise a KeyError naming every key that is not a ``GPTConfig`` field."""
    fields = [field.name for field in dataclasses.fields(GPTConfig)]
    unknown = sorted(set(names) - set(fields))
    if unknown:
        raise KeyError(
            f"unknown GPTConfig field(s) {', '.join(map(repr, unknown))}; "
            f"valid fields are {', '.join(fields)}"
        )


def _gpt2(emb_dim: int, n_heads: int, n_layers: int) -> GPTConfig:
    """A configuration of OpenAI's GPT-2 (Radford et al., 2019) of the given size."""
    return GPTConfig(
        vocab_size=50_257,
        context_length=1_024,
        emb_dim=emb_dim,
        n_heads=n_heads,
        n_layers=n_layers,
        drop_rate=0.1,
        qkv_bias=True,
        tie_embeddings=True,
    )


PRESETS: Mapping[str, GPTConfig] = MappingProxyType(
    {
        # The four sizes OpenAI released; they load the published weights (weights.py).
        "gpt2-small": _gpt2(emb_dim=768, n_heads=12, n_layers=12),  # 124M parameters
        "gpt2-medium": _gpt2(emb_dim=1_024, n_heads=16, n_layers=24),  # 355M
        "gpt2-large": _gpt2(emb_dim=1_280, n_heads=20, n_layers=36),  # 774M
        "gpt2-xl": _gpt2(emb_dim=1_600, n_heads=25, n_layers=48),  # 1558M
        # The pretraining run of Raschka's book: GPT-2 small's shape, a short context
        # to keep training cheap, no query/key/value bias, an untied output head.
        "gpt2-small-book": _gpt2(emb_dim=768, n_heads=12, n_layers=12).replace(
            context_length=256, qkv_bias=False, tie_embeddings=False
        ),
        # The course's own small models (chapter 5), sized for a laptop CPU.
        # shakespeare-small: a 2,048-token BPE, 4 layers 128 wide, a context of 128 tokens;
        # 1.07M parameters. Its training recipe is companion.course_models.RECIPES[same
        # name], chosen by bench/recipe_search.py (see bench/recipe_search.md).
        "shakespeare-small": GPTConfig(
            vocab_size=2_048,
            context_length=128,
            emb_dim=128,
            n_heads=4,
            n_layers=4,
            drop_rate=0.0,
            qkv_bias=False,
            tie_embeddings=True,
        ),
        # verdict-tiny: chapter 5's overfitting demonstration on The Verdict (512-token BPE).
        "verdict-tiny": GPTConfig(
            vocab_size=512, context_length=64, emb_dim=256, n_heads=4, n_layers=2, drop_rate=0.1
        ),
    }
)
"""Named configurations, read-only; use ``GPTConfig.from_preset(name, **overrides)``."""


def list_presets() -> list[str]:
    """Return the names of the presets in ``PRESETS``, in the order they are defined."""
    return list(PRESETS)
