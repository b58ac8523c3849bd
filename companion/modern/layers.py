"""The pieces today's open models changed in GPT-2's block (chapter 9).

* ``RMSNorm``: layer norm without the mean and the shift (Zhang and Sennrich, 2019).
* ``rope_angles`` and ``apply_rope``: rotary position embeddings (Su et al., 2021),
  which turn each query and key by an angle proportional to its position, so that
  their dot product depends only on the distance between the two.
* ``SwiGLU``: a gated feed-forward network (Shazeer, 2020); ``GELUFeedForward`` is
  GPT-2's, with a configurable width and optional biases, for comparison.
* ``GroupedQueryAttention``: several query heads share one key/value head
  (Ainslie et al., 2023), which shrinks the KV cache; with ``qk_norm`` each head's
  queries and keys are RMS-normalised first (as Qwen3 does).

Shape letters: ``B`` batch, ``T`` new tokens, ``S`` positions attended to (cached
plus new), ``C`` width (``emb_dim``), ``H`` query heads, ``G`` key/value heads,
``D`` channels per head, ``F`` feed-forward width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion.attention import KVCache, causal_mask, scaled_dot_product_attention
from companion.config import AttentionImpl
from companion.model import GELU

__all__ = ["GELUFeedForward", "GroupedQueryAttention", "RMSNorm", "SwiGLU", "apply_rope", "rope_angles"]


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (chapter 9, "RMSNorm").

    ``x / sqrt(mean(x²) + eps) * scale``: layer norm without subtracting the mean and
    without a shift. Computed in float32 whatever the input's dtype, as Llama and Qwen3
    do, and returned in the input's dtype.

    Args:
        dim: Size of the last dimension.
        eps: Added to the mean square.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    def extra_repr(self) -> str:
        return f"{self.scale.shape[0]}, eps={self.eps}"

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x`` ``(..., dim)``; returns the same shape and dtype."""
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # (..., dim)
        return self.scale * x32.to(x.dtype)


def rope_angles(n_positions: int, head_dim: int, theta: float = 10_000.0) -> tuple[Tensor, Tensor]:
    """Cosines and sines of RoPE's angles for positions ``0..n_positions-1`` (chapter 9,
    "Rotary position embeddings").

    Channel pair ``i`` (channels ``i`` and ``i + D/2``) turns by ``theta ** (-2i/D)``
    radians per position: the first pairs fast, the last ones slowly.

    Returns:
        ``(cos, sin)``, each ``(n_positions, D)`` float32 (every angle twice, once per
        channel of its pair).
    """
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)  # (D/2,)
    positions = torch.arange(n_positions, dtype=torch.int64).float()  # (P,)
    angles = torch.outer(positions, inv_freq)  # (P, D/2)
    angles = torch.cat([angles, angles], dim=-1)  # (P, D)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate every channel pair ``(x[i], x[i + D/2])`` of ``x`` ``(..., T, D)`` by its angle.

    ``cos`` and ``sin`` are ``(T, D)`` rows of ``rope_angles`` for the positions of
    ``x``'s tokens. Returns the same shape and dtype as ``x``.
    """
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]  # (..., T, D/2) each
    rotated_half = torch.cat([-x2, x1], dim=-1)  # (..., T, D): the pair turned by 90 degrees
    out = x.float() * cos + rotated_half.float() * sin  # (..., T, D)
    return out.to(x.dtype)


class SwiGLU(nn.Module):
    """The gated feed-forward network of Llama and Qwen3 (chapter 9, "SwiGLU").

    ``W_down(silu(W_gate x) * W_up x)``: one branch decides, channel by channel, how
    much of the other passes. Three matrices of ``C × F`` instead of GPT-2's two.
    """

    def __init__(self, emb_dim: int, hidden_dim: int, bias: bool = False) -> None:
        super().__init__()
        self.W_gate = nn.Linear(emb_dim, hidden_dim, bias=bias)
        self.W_up = nn.Linear(emb_dim, hidden_dim, bias=bias)
        self.W_down = nn.Linear(hidden_dim, emb_dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """Transform ``x`` ``(B, T, C)``; returns ``(B, T, C)``."""
        return self.W_down(F.silu(self.W_gate(x)) * self.W_up(x))  # (B, T, F) -> (B, T, C)


class GELUFeedForward(nn.Module):
    """GPT-2's feed-forward network (chapter 4) with a chosen width and optional biases.

    ``layers`` is ``Sequential(Linear(C, F), GELU(), Linear(F, C))``, the same parameter
    names as ``companion.model.FeedForward``.
    """

    def __init__(self, emb_dim: int, hidden_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(emb_dim, hidden_dim, bias=bias), GELU(), nn.Linear(hidden_dim, emb_dim, bias=bias)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Transform ``x`` ``(B, T, C)``; returns ``(B, T, C)``."""
        return self.layers(x)  # (B, T, F) -> (B, T, C)


class GroupedQueryAttention(nn.Module):
    """Causal attention where ``H / G`` query heads share each key/value head (chapter 9,
    "Grouped-query attention").

    With ``G == H`` this is chapter 3's ``MultiHeadAttention`` (the same parameter
    names); with ``G == 1``, multi-query attention. Only the ``G`` key/value heads are
    cached, so the cache shrinks by ``H / G``.

    Args:
        emb_dim: Width of the input and output (``C``).
        n_heads: Query heads (``H``).
        n_kv_heads: Key/value heads (``G``), a divisor of ``H``.
        head_dim: Channels per head (``D``); ``H * D`` need not equal ``C``.
        dropout: Dropout on the attention weights (training mode only).
        qkv_bias: Biases in the query, key and value projections.
        bias: A bias in the output projection.
        qk_norm: RMS-normalise each head's queries and keys (``q_norm``, ``k_norm``).
        norm_eps: The epsilon of those norms.
        impl: ``"manual"`` (the readable path of chapter 3) or ``"sdpa"``.
    """

    def __init__(self, emb_dim: int, n_heads: int, n_kv_heads: int, head_dim: int, *, dropout: float = 0.0,
                 qkv_bias: bool = False, bias: bool = False, qk_norm: bool = False, norm_eps: float = 1e-6,
                 impl: AttentionImpl = "sdpa") -> None:
        super().__init__()
        if n_heads % n_kv_heads:
            raise ValueError(f"n_kv_heads={n_kv_heads} must divide n_heads={n_heads}")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.impl: AttentionImpl = impl
        self.W_query = nn.Linear(emb_dim, n_heads * head_dim, bias=qkv_bias)
        self.W_key = nn.Linear(emb_dim, n_kv_heads * head_dim, bias=qkv_bias)
        self.W_value = nn.Linear(emb_dim, n_kv_heads * head_dim, bias=qkv_bias)
        self.out_proj = nn.Linear(n_heads * head_dim, emb_dim, bias=bias)
        self.q_norm = RMSNorm(head_dim, norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(head_dim, norm_eps) if qk_norm else None
        self.dropout = nn.Dropout(dropout)

    def extra_repr(self) -> str:
        return f"n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, head_dim={self.head_dim}, impl={self.impl!r}"

    def forward(self, x: Tensor, *, rope: tuple[Tensor, Tensor] | None = None,
                cache: KVCache | None = None) -> Tensor:
        """Attend from each token of ``x`` ``(B, T, C)`` to itself and the tokens before it.

        Args:
            x: The new tokens' vectors.
            rope: ``(cos, sin)``, each ``(T, D)``, for the new tokens' positions, or
                ``None`` for no rotation (learned positions).
            cache: This layer's ``KVCache``: the new keys and values ``(B, G, T, D)`` are
                appended and the queries attend to everything it holds.

        Returns:
            ``(B, T, C)``.
        """
        B, T, _ = x.shape
        H, G, D = self.n_heads, self.n_kv_heads, self.head_dim
        q = self.W_query(x).view(B, T, H, D)  # (B, T, H, D)
        k = self.W_key(x).view(B, T, G, D)  # (B, T, G, D)
        v = self.W_value(x).view(B, T, G, D).transpose(1, 2)  # (B, G, T, D)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)  # each head's vector on its own
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, H, T, D), (B, G, T, D)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        past = 0
        if cache is not None:
            past = len(cache)
            k, v = cache.append(k, v)  # (B, G, S, D) each
        # positions past..past+T-1 look at keys 0..S-1; one new token sees them all
        mask = causal_mask(past + T, device=x.device)[past:] if T > 1 else None  # (T, S), True = hidden
        if self.impl == "manual":
            k, v = k.repeat_interleave(H // G, dim=1), v.repeat_interleave(H // G, dim=1)  # (B, H, S, D)
            out = scaled_dot_product_attention(q, k, v, mask=mask, dropout=self.dropout)
            assert isinstance(out, Tensor)
        else:
            p = self.dropout.p if self.training else 0.0
            if past == 0 or mask is None:
                out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=mask is not None,
                                                     enable_gqa=G != H)
            else:  # the fused kernel's bool mask is True where a query MAY look
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=~mask, dropout_p=p, enable_gqa=G != H)
        out = out.transpose(1, 2).reshape(B, T, H * D)  # (B, H, T, D) -> (B, T, H*D)
        return self.out_proj(out)  # (B, T, C)
