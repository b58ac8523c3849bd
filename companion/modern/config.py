"""``ModernConfig``: one config for GPT-2's block, today's block, and each step between.

Chapter 9, "From GPT-2 to today's open models", changes GPT-2 one piece at a time.
Each change is a field here, so that GPT-2 (``ModernConfig.gpt2_style``), a Qwen3
model (``PRESETS["qwen3-0.6b"]``) and every ablation in between are the same type,
validated the way ``GPTConfig`` is: a bad value fails at once with a message that
names the field, the value and the fix.

======================  ===================  ===========================
field                   GPT-2                Llama 3 / Qwen3
======================  ===================  ===========================
``norm``                ``"layernorm"``      ``"rmsnorm"``
``positions``           ``"learned"``        ``"rope"``
``ffn``                 ``"gelu"``           ``"swiglu"``
``n_kv_heads``          ``n_heads``          fewer (grouped-query)
``qk_norm``             ``False``            ``True`` (Qwen3)
``bias``                ``True``             ``False``
``tie_embeddings``      ``True``             small models tie, large do not
======================  ===================  ===========================
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, get_args

from companion.config import AttentionImpl, GPTConfig

__all__ = ["PRESETS", "FFNKind", "ModernConfig", "NormKind", "PositionKind"]

NormKind = Literal["layernorm", "rmsnorm"]
PositionKind = Literal["learned", "rope"]
FFNKind = Literal["gelu", "swiglu"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "norm": get_args(NormKind),
    "positions": get_args(PositionKind),
    "ffn": get_args(FFNKind),
    "attn_impl": get_args(AttentionImpl),
}
_POSITIVE_INTS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers")
_OPTIONAL_INTS = ("n_kv_heads", "head_dim", "hidden_dim")
_BOOLS = ("qk_norm", "bias", "qkv_bias", "tie_embeddings")


@dataclass(frozen=True)
class ModernConfig:
    """Hyperparameters of a ``ModernGPT`` (chapter 9).

    The first five fields mean what they mean in ``GPTConfig``; the defaults of the rest
    describe a Llama/Qwen3-style block.

    Attributes:
        vocab_size, context_length, emb_dim, n_heads, n_layers: As in ``GPTConfig``.
            With rotary positions ``context_length`` only sizes the KV cache: nothing
            is learned per position.
        n_kv_heads: Key/value heads (grouped-query attention); must divide ``n_heads``.
            ``None``: as many as query heads (GPT-2's multi-head attention); 1:
            multi-query attention.
        head_dim: Channels per head. ``None``: ``emb_dim // n_heads``. Qwen3 sets it
            on its own (128 for a width of 1,024 and 16 heads).
        hidden_dim: Width of the feed-forward layer. ``None``: ``4 * emb_dim`` for
            GELU, and the same parameter count for SwiGLU (``8/3 * emb_dim``,
            rounded up to a multiple of 8), which has three matrices instead of two.
        norm: ``"layernorm"`` (GPT-2) or ``"rmsnorm"``.
        norm_eps: Added under the square root of every norm.
        positions: ``"learned"`` (GPT-2's position embedding) or ``"rope"``.
        rope_theta: RoPE's base: the slowest pair turns by ``theta ** (-(D-2)/D)``
            radians per position. 10,000 in the RoPE paper, 1,000,000 in Qwen3.
        ffn: ``"gelu"`` (GPT-2's two-matrix network) or ``"swiglu"``.
        qk_norm: RMS-normalise every head's queries and keys before attention (Qwen3).
        bias: Biases in the output projections and the feed-forward network
            (GPT-2 has them; Llama and Qwen3 have none).
        qkv_bias: Biases in the query, key and value projections.
        tie_embeddings: The output head reuses the token embedding matrix.
        drop_rate: Dropout probability (training mode only).
        attn_impl: ``"manual"`` (chapter 3's readable attention) or ``"sdpa"``.
    """

    vocab_size: int
    context_length: int
    emb_dim: int
    n_heads: int
    n_layers: int
    n_kv_heads: int | None = None
    head_dim: int | None = None
    hidden_dim: int | None = None
    norm: NormKind = "rmsnorm"
    norm_eps: float = 1e-6
    positions: PositionKind = "rope"
    rope_theta: float = 10_000.0
    ffn: FFNKind = "swiglu"
    qk_norm: bool = False
    bias: bool = False
    qkv_bias: bool = False
    tie_embeddings: bool = False
    drop_rate: float = 0.0
    attn_impl: AttentionImpl = "sdpa"

    def __post_init__(self) -> None:
        for name in _POSITIVE_INTS + _OPTIONAL_INTS:
            value = getattr(self, name)
            if value is None and name in _OPTIONAL_INTS:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name}={value!r} must be an int; pass a whole number such as {name}=4")
            if value <= 0:
                raise ValueError(f"{name}={value!r} must be positive; choose {name} >= 1")
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}={getattr(self, name)!r} is unknown; choose one of {choices}")
        for name in _BOOLS:
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}={getattr(self, name)!r} must be a bool; pass True or False")
        for name, low, high in (("norm_eps", 0.0, 1.0), ("rope_theta", 1.0, math.inf)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value < high:
                raise ValueError(f"{name}={value!r} must be a number in ({low}, {high})")
            object.__setattr__(self, name, float(value))
        rate = self.drop_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ValueError(f"drop_rate={rate!r} must be a probability in [0, 1)")
        object.__setattr__(self, "drop_rate", float(rate))

        if self.head_dim is None and self.emb_dim % self.n_heads:
            raise ValueError(
                f"emb_dim={self.emb_dim} is not divisible by n_heads={self.n_heads}; choose emb_dim "
                "a multiple of n_heads, or set head_dim explicitly"
            )
        if self.positions == "rope" and self.kv_dim % 2:
            raise ValueError(f"head_dim={self.kv_dim} is odd; RoPE turns pairs of channels: choose an even one")
        if self.n_heads % self.kv_heads:
            raise ValueError(
                f"n_kv_heads={self.n_kv_heads} does not divide n_heads={self.n_heads}; each key/value "
                "head must serve the same number of query heads: choose a divisor of n_heads"
            )

    # ----------------------------------------------------------- derived sizes
    @property
    def kv_heads(self) -> int:
        """Key/value heads actually used (``n_kv_heads``, or ``n_heads`` when ``None``)."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def kv_dim(self) -> int:
        """Channels per head (``head_dim``, or ``emb_dim // n_heads`` when ``None``)."""
        return self.emb_dim // self.n_heads if self.head_dim is None else self.head_dim

    @property
    def ffn_dim(self) -> int:
        """The feed-forward width actually used (see ``hidden_dim``)."""
        if self.hidden_dim is not None:
            return self.hidden_dim
        if self.ffn == "gelu":
            return 4 * self.emb_dim
        return -(-8 * self.emb_dim // 3 // 8) * 8  # 2/3 of 4C (three matrices), to a multiple of 8

    def kv_cache_bytes_per_token(self, bytes_per_value: int = 4) -> int:
        """Bytes the KV cache holds per token of text: keys and values of every layer."""
        return 2 * self.n_layers * self.kv_heads * self.kv_dim * bytes_per_value

    # ------------------------------------------------------------------ copies
    def replace(self, **changes: Any) -> ModernConfig:
        """A copy with some fields changed, validated like a new config."""
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict of JSON types."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModernConfig:
        """The inverse of ``to_dict`` (unknown keys are refused, by name)."""
        _check_names(data)
        return cls(**data)

    @classmethod
    def gpt2_style(cls, cfg: GPTConfig | Mapping[str, Any]) -> ModernConfig:
        """The ``ModernConfig`` of a ``GPTModel``: layer norm, learned positions, GELU,
        multi-head attention, biases (``ModernGPT.from_gpt`` copies its weights)."""
        if not isinstance(cfg, GPTConfig):
            cfg = GPTConfig.from_dict(cfg)
        return cls(
            vocab_size=cfg.vocab_size, context_length=cfg.context_length, emb_dim=cfg.emb_dim,
            n_heads=cfg.n_heads, n_layers=cfg.n_layers, norm="layernorm", norm_eps=1e-5,
            positions="learned", ffn="gelu", bias=True, qkv_bias=cfg.qkv_bias,
            tie_embeddings=cfg.tie_embeddings, drop_rate=cfg.drop_rate, attn_impl=cfg.attn_impl,
        )


def _check_names(names: Mapping[str, Any]) -> None:
    fields = [f.name for f in dataclasses.fields(ModernConfig)]
    unknown = sorted(set(names) - set(fields))
    if unknown:
        raise KeyError(f"unknown ModernConfig field(s) {', '.join(map(repr, unknown))}; "
                       f"valid fields are {', '.join(fields)}")


PRESETS: Mapping[str, ModernConfig] = MappingProxyType(
    {
        # Qwen3-0.6B as its config.json on the Hugging Face hub describes it; the
        # context is cut from 40,960 to 4,096 tokens to keep the KV cache small.
        "qwen3-0.6b": ModernConfig(
            vocab_size=151_936, context_length=4_096, emb_dim=1_024, n_heads=16, n_layers=28,
            n_kv_heads=8, head_dim=128, hidden_dim=3_072, norm_eps=1e-6, rope_theta=1_000_000.0,
            qk_norm=True, tie_embeddings=True,
        ),
    }
)
"""Named configurations, read-only."""
