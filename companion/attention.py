"""Causal self-attention: the mask, the readable computation, and multi-head attention.

Chapter 3, "Coding attention mechanisms", builds these pieces one at a time; this
module holds their finished forms:

* ``causal_mask`` marks the positions a token may not look at (the future).
* ``scaled_dot_product_attention`` is the computation written out step by step:
  scores, mask, softmax, dropout, weighted sum.
* ``MultiHeadAttention`` projects the input to queries, keys and values, splits them
  into heads, attends, and merges the heads again. One switch, ``impl``, picks the
  readable path above (``"manual"``) or PyTorch's fused
  ``torch.nn.functional.scaled_dot_product_attention`` (``"sdpa"``); both compute the
  same function, and a test checks that they agree.
* ``KVCache`` keeps one layer's keys and values during generation (chapter 5), so
  that each new token is processed once instead of re-reading the whole text.

Shape letters used in this module:

* ``B``: batch size
* ``T``: tokens in the current input (one row of queries each)
* ``S``: positions attended to (keys and values): ``T`` without a cache, the cached
  tokens plus ``T`` with one
* ``C``: channels, the width of the projections (``d_out``)
* ``H``: attention heads
* ``D``: channels per head, ``C // H``
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion.config import AttentionImpl

__all__ = [
    "CacheOverflowError",
    "KVCache",
    "MultiHeadAttention",
    "causal_mask",
    "scaled_dot_product_attention",
]

_IMPLS: tuple[str, ...] = get_args(AttentionImpl)


def causal_mask(T: int, device: torch.device | str | None = None) -> Tensor:
    """Return the causal mask: ``True`` above the diagonal, at the positions to hide.

    Row ``t`` describes query token ``t``: it may look at keys ``0..t`` (``False``) and
    must not see keys ``t+1..T-1`` (``True``). Built in chapter 3,
    "Causal attention: hiding the future".

    When ``P`` tokens come before the current ``T`` (a KV cache), the mask for the new
    queries is rows ``P..P+T-1`` of the larger mask: ``causal_mask(P + T)[P:]``,
    of shape ``(T, P + T)``.

    Args:
        T: Number of tokens.
        device: Where to create the mask; ``None`` for PyTorch's default device.

    Returns:
        A bool tensor of shape ``(T, T)``.
    """
    return torch.ones(T, T, dtype=torch.bool, device=device).triu(diagonal=1)


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: Tensor | None = None,
    dropout: Callable[[Tensor], Tensor] | None = None,
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Attention written out step by step (chapter 3,
    "Self-attention with trainable weights").

    ``softmax(q @ kᵀ / √D)`` gives, for each query, weights over the keys that sum to
    1; the output is the weighted sum of the values. Leading dimensions (batch, heads)
    are carried along unchanged.

    Args:
        q: Queries, ``(..., T, D)``.
        k: Keys, ``(..., S, D)``.
        v: Values, ``(..., S, D)``.
        mask: Bool tensor broadcastable to ``(..., T, S)``, ``True`` where a query may
            NOT look (as ``causal_mask`` returns it). Every row must leave at least
            one key visible. Note that ``torch.nn.functional.scaled_dot_product_attention``
            uses the opposite convention for a bool ``attn_mask`` (``True`` = attend).
        dropout: Applied to the attention weights before they weight the values, e.g.
            an ``nn.Dropout`` module (which is a no-op in eval mode); ``None`` for none.
        return_weights: Also return the attention weights.

    Returns:
        The output ``(..., T, D)``; with ``return_weights=True`` the pair
        ``(output, weights)``, where ``weights`` ``(..., T, S)`` are taken before
        dropout, so each row sums to 1 and masked positions are exactly 0.
    """
    d_k = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., T, D) @ (..., D, S) -> (..., T, S)
    if mask is not None:
        # exp(-inf) = 0: a hidden position gets exactly zero weight after the softmax.
        scores = scores.masked_fill(mask, float("-inf"))  # (..., T, S)
    weights = torch.softmax(scores, dim=-1)  # (..., T, S), each row sums to 1
    dropped = dropout(weights) if dropout is not None else weights  # (..., T, S)
    out = dropped @ v  # (..., T, S) @ (..., S, D) -> (..., T, D)
    if return_weights:
        return out, weights
    return out


class CacheOverflowError(ValueError):
    """A KV cache was asked to hold more positions than its ``max_length``."""


@dataclass(eq=False)
class KVCache:
    """The keys and values one attention layer has computed so far (chapter 5).

    During generation each step feeds only the new tokens through the model. Every
    attention layer appends their keys and values to its cache and attends over the
    whole cache, which gives the same result as re-reading the full text.

    Storage for ``max_length`` positions is allocated on the first ``append`` (with the
    batch size, heads, dtype and device of the first keys), so later appends copy only
    the new positions.

    Attributes:
        max_length: Most positions the cache can hold: the model's ``context_length``,
            since there is no positional embedding beyond it.
        length: Positions currently held (``0`` when empty).
    """

    max_length: int
    length: int = field(default=0, init=False)
    _keys: Tensor | None = field(default=None, init=False, repr=False)  # (B, H, max_length, D)
    _values: Tensor | None = field(default=None, init=False, repr=False)  # (B, H, max_length, D)

    def __post_init__(self) -> None:
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int):
            raise TypeError(f"max_length={self.max_length!r} must be an int")
        if self.max_length <= 0:
            raise ValueError(f"max_length={self.max_length} must be positive")

    @property
    def k(self) -> Tensor | None:
        """The cached keys, ``(B, H, length, D)``; ``None`` before the first append."""
        return None if self._keys is None else self._keys[:, :, : self.length]

    @property
    def v(self) -> Tensor | None:
        """The cached values, ``(B, H, length, D)``; ``None`` before the first append."""
        return None if self._values is None else self._values[:, :, : self.length]

    def __len__(self) -> int:
        return self.length

    def append(self, k_new: Tensor, v_new: Tensor) -> tuple[Tensor, Tensor]:
        """Add the keys and values of ``T`` new positions; return all of them.

        Args:
            k_new: Keys of the new positions, ``(B, H, T, D)``.
            v_new: Values of the new positions, ``(B, H, T, D)``.

        Returns:
            ``(k, v)``, each ``(B, H, S, D)`` with ``S = length`` after the append.

        Raises:
            CacheOverflowError: The cache would hold more than ``max_length`` positions.
            ValueError: The new tensors do not match the shape, dtype or device of the
                ones already cached.
        """
        if k_new.shape != v_new.shape:
            raise ValueError(
                f"keys {tuple(k_new.shape)} and values {tuple(v_new.shape)} differ in shape"
            )
        B, H, T, D = k_new.shape
        if self.length + T > self.max_length:
            raise CacheOverflowError(
                f"KV cache holds {self.length} of {self.max_length} positions and cannot "
                f"take {T} more: the model sees at most context_length={self.max_length} "
                "tokens. Start a new cache (cache.reset()) and feed it only the last "
                "context_length tokens, or generate without a cache."
            )
        if self._keys is None or self._values is None:
            storage = (B, H, self.max_length, D)
            self._keys = k_new.new_empty(storage)  # (B, H, max_length, D)
            self._values = v_new.new_empty(storage)  # (B, H, max_length, D)
        elif (
            (self._keys.shape[0], self._keys.shape[1], self._keys.shape[3]) != (B, H, D)
            or k_new.dtype != self._keys.dtype
            or k_new.device != self._keys.device
        ):
            held = self._keys
            raise ValueError(
                f"new keys (B, H, T, D)={tuple(k_new.shape)} {k_new.dtype} on "
                f"{k_new.device} do not fit this cache, filled with (B, H, D)="
                f"{(held.shape[0], held.shape[1], held.shape[3])} {held.dtype} on "
                f"{held.device}; call reset() before reusing it for another batch"
            )
        end = self.length + T
        self._keys[:, :, self.length : end] = k_new
        self._values[:, :, self.length : end] = v_new
        self.length = end
        return self._keys[:, :, :end], self._values[:, :, :end]  # (B, H, S, D) each

    def reset(self) -> None:
        """Empty the cache and free its storage (the next append may use a new batch)."""
        self.length = 0
        self._keys = None
        self._values = None


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention (chapter 3, "Multi-head attention").

    The input is projected to queries, keys and values of width ``d_out``, which are
    split into ``num_heads`` heads of width ``d_out // num_heads``. Each head attends
    on its own; the heads' outputs are concatenated and mixed by ``out_proj``.

    Submodule and buffer names follow chapter 3 (and Raschka's book), so those modules'
    weights load unchanged:
    ``W_query``, ``W_key``, ``W_value``, ``out_proj``, ``dropout``, and the causal
    mask ``mask``, a non-persistent buffer (it moves with ``.to(device)`` but is never
    saved in a ``state_dict``: it can always be rebuilt).

    Args:
        d_in: Width of the input vectors.
        d_out: Width of queries, keys, values and output (``C``).
        context_length: Longest input (plus cached positions) the layer accepts.
        dropout: Dropout probability on the attention weights (training mode only).
        num_heads: Number of heads (``H``); must divide ``d_out``.
        qkv_bias: Give the query, key and value projections a bias.
        impl: ``"manual"`` (``scaled_dot_product_attention`` of this module, can return
            the weights) or ``"sdpa"`` (PyTorch's fused kernel). Changeable later
            through the ``impl`` attribute.
    """

    mask: Tensor

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        dropout: float,
        num_heads: int,
        qkv_bias: bool = False,
        impl: AttentionImpl = "sdpa",
    ) -> None:
        super().__init__()
        if d_out % num_heads != 0:
            raise ValueError(
                f"d_out={d_out} is not divisible by num_heads={num_heads}; "
                "choose d_out a multiple of num_heads"
            )
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.context_length = context_length
        self.impl = impl

        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", causal_mask(context_length), persistent=False)

    @property
    def impl(self) -> AttentionImpl:
        """Which attention path ``forward`` takes: ``"manual"`` or ``"sdpa"``."""
        return self._impl

    @impl.setter
    def impl(self, value: AttentionImpl) -> None:
        if value not in _IMPLS:
            raise ValueError(f"impl={value!r} is unknown; choose 'manual' or 'sdpa'")
        self._impl: AttentionImpl = value

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}, impl={self.impl!r}"

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Project ``x`` ``(B, T, d_in)`` to queries, keys and values split into heads.

        Returns ``(q, k, v)``, each ``(B, H, T, D)``.
        """
        B, T, _ = x.shape
        q = self.W_query(x)  # (B, T, C)
        k = self.W_key(x)  # (B, T, C)
        v = self.W_value(x)  # (B, T, C)
        # split C into H heads of D channels: (B, T, C) -> (B, T, H, D) -> (B, H, T, D),
        # so that each head attends on its own
        q = q.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        return q, k, v

    @torch.no_grad()
    def attention_weights(self, x: Tensor, *, causal: bool = True) -> Tensor:
        """The weights each head gives each position, on the readable path (chapter 3).

        Args:
            x: The layer's input, ``(B, T, d_in)`` (in a transformer block: the output
                of its first layer norm).
            causal: Apply the causal mask (what the layer computes). ``False`` shows
                where each head would look if it could see the future.

        Returns:
            Weights ``(B, H, T, T)``; each row sums to 1. No dropout is applied.
        """
        T = x.shape[1]
        if self.context_length < T:
            raise ValueError(f"{T} tokens exceed context_length={self.context_length}")
        q, k, v = self._heads(x)  # (B, H, T, D) each
        mask = self.mask[:T, :T] if causal else None
        _, weights = scaled_dot_product_attention(q, k, v, mask=mask, return_weights=True)
        return weights

    def forward(
        self,
        x: Tensor,
        *,
        cache: KVCache | None = None,
        return_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Attend from every token of ``x`` to itself and the tokens before it.

        Args:
            x: Input vectors, ``(B, T, d_in)``.
            cache: This layer's ``KVCache``. Without one, ``x`` is the whole text.
                With one, ``x`` holds only the tokens after the ``len(cache)`` cached
                ones; their keys and values are appended to the cache and each new
                token attends to every cached token and to the new ones up to itself.
            return_weights: Also return the attention weights (``"manual"`` path only).

        Returns:
            The output ``(B, T, C)``; with ``return_weights=True`` the pair
            ``(output, weights)`` with weights ``(B, H, T, S)`` (before dropout).

        Raises:
            ValueError: The cached plus new tokens exceed ``context_length``, or
                ``return_weights=True`` on the ``"sdpa"`` path.
        """
        B, T, _ = x.shape
        past = 0 if cache is None else len(cache)
        if past + T > self.context_length:
            raise ValueError(
                f"{past} cached + {T} new tokens exceed context_length="
                f"{self.context_length}; crop the input to its last "
                f"{self.context_length - past} tokens"
            )
        if return_weights and self.impl != "manual":
            raise ValueError(
                "attention weights are only computed on the manual path; set "
                "impl='manual' (or model.set_attention_impl('manual')) to get them"
            )

        q, k, v = self._heads(x)  # (B, H, T, D) each

        if cache is not None:
            k, v = cache.append(k, v)  # (B, H, S, D) each, S = past + T

        # The new queries sit at positions past..past+T-1 of the text, the keys at
        # 0..S-1: their mask is that block of the full causal mask. One new token
        # (T == 1, as in generation) is the last position: it may look at every key,
        # so it needs no mask at all.
        mask = self.mask[past : past + T, : past + T] if T > 1 else None  # (T, S), True = hidden

        weights: Tensor | None = None
        if self.impl == "manual":
            out, weights = scaled_dot_product_attention(
                q, k, v, mask=mask, dropout=self.dropout, return_weights=True
            )  # (B, H, T, D), (B, H, T, S)
        else:
            dropout_p = self.dropout.p if self.training else 0.0
            if past == 0 or mask is None:
                # The plain causal case (the fused kernel builds the mask itself), or
                # one new token that sees everything (is_causal=False: no mask).
                out = F.scaled_dot_product_attention(
                    q, k, v, dropout_p=dropout_p, is_causal=mask is not None
                )  # (B, H, T, D)
            else:
                # is_causal=True would align the mask to the top-left corner, wrong
                # when T < S; pass the block explicitly, inverted: for the fused
                # kernel a bool mask is True where a query MAY look.
                out = F.scaled_dot_product_attention(
                    q, k, v, attn_mask=~mask, dropout_p=dropout_p
                )  # (B, H, T, D)

        # Merge the heads back: (B, H, T, D) -> (B, T, H, D) -> (B, T, C).
        out = out.transpose(1, 2).contiguous().view(B, T, self.d_out)  # (B, T, C)
        out = self.out_proj(out)  # (B, T, C)
        if return_weights:
            assert weights is not None
            return out, weights
        return out
