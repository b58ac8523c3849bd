"""``ModernGPT``: GPT-2's model with each of today's changes behind a config switch (chapter 9).

The same interface as ``GPTModel`` (``model(idx, cache=..., last_only=...)``,
``new_cache()``, ``config.context_length``), so ``companion.generate``, the chat and the
training loop take either model. Parameter names follow ``GPTModel``'s (``tok_emb``,
``trf_blocks.0.att.W_query``, ``norm1.scale``, ``out_head``), and with
``ModernConfig.gpt2_style`` the model *is* a ``GPTModel``: ``ModernGPT.from_gpt`` copies
one's weights and gives the same logits.

Shape letters: ``B`` batch, ``T`` tokens, ``C`` width, ``V`` vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from companion.attention import KVCache
from companion.model import GPTModel, LayerNorm, ModelCache
from companion.modern.config import ModernConfig
from companion.modern.layers import GELUFeedForward, GroupedQueryAttention, RMSNorm, SwiGLU, rope_angles

__all__ = ["ModernBlock", "ModernGPT"]


def _norm(cfg: ModernConfig, dim: int) -> nn.Module:
    return RMSNorm(dim, cfg.norm_eps) if cfg.norm == "rmsnorm" else LayerNorm(dim, eps=cfg.norm_eps)


class ModernBlock(nn.Module):
    """One pre-norm transformer block built from a ``ModernConfig`` (chapter 9).

    ``x + drop(att(norm1(x)))``, then ``x + drop(ff(norm2(x)))``, as in chapter 4;
    which norm, attention and feed-forward network is up to the config.
    """

    def __init__(self, cfg: ModernConfig) -> None:
        super().__init__()
        self.att = GroupedQueryAttention(
            cfg.emb_dim, cfg.n_heads, cfg.kv_heads, cfg.kv_dim, dropout=cfg.drop_rate, qkv_bias=cfg.qkv_bias,
            bias=cfg.bias, qk_norm=cfg.qk_norm, norm_eps=cfg.norm_eps, impl=cfg.attn_impl,
        )
        self.ff: nn.Module
        if cfg.ffn == "swiglu":
            self.ff = SwiGLU(cfg.emb_dim, cfg.ffn_dim, bias=cfg.bias)
        else:
            self.ff = GELUFeedForward(cfg.emb_dim, cfg.ffn_dim, bias=cfg.bias)
        self.norm1 = _norm(cfg, cfg.emb_dim)
        self.norm2 = _norm(cfg, cfg.emb_dim)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x: Tensor, *, rope: tuple[Tensor, Tensor] | None = None,
                cache: KVCache | None = None) -> Tensor:
        """Transform ``x`` ``(B, T, C)``; returns ``(B, T, C)``."""
        x = x + self.drop_shortcut(self.att(self.norm1(x), rope=rope, cache=cache))  # (B, T, C)
        return x + self.drop_shortcut(self.ff(self.norm2(x)))  # (B, T, C)


class ModernGPT(nn.Module):
    """A decoder-only language model built from a ``ModernConfig`` (chapter 9).

    Token embeddings (plus learned position embeddings when
    ``positions="learned"``), ``n_layers`` ``ModernBlock``s, a final norm and the
    output head. With rotary positions the angles for every position up to
    ``context_length`` are computed once (non-persistent buffers ``rope_cos`` and
    ``rope_sin``, never saved).

    Initialisation is GPT-2's (``N(0, 0.02²)``, the residual projections scaled down
    by ``√(2·n_layers)``, norms 1); seed ``torch`` before construction.

    Args:
        cfg: A ``ModernConfig`` or a dict of its fields.
    """

    rope_cos: Tensor
    rope_sin: Tensor

    def __init__(self, cfg: ModernConfig | Mapping[str, Any]) -> None:
        super().__init__()
        if not isinstance(cfg, ModernConfig):
            cfg = ModernConfig.from_dict(cfg)
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim) if cfg.positions == "learned" else None
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.ModuleList(ModernBlock(cfg) for _ in range(cfg.n_layers))
        self.final_norm = _norm(cfg, cfg.emb_dim)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.out_head.weight = self.tok_emb.weight
        if cfg.positions == "rope":
            cos, sin = rope_angles(cfg.context_length, cfg.kv_dim, cfg.rope_theta)  # (ctx, D) each
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        if self.tok_emb.weight.device.type != "meta":
            self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02) -> None:
        """Draw every weight afresh as GPT-2 does (see ``companion.model.init_gpt2_weights``)."""
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        done: set[int] = set()
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)) and id(module.weight) not in done:
                residual = name.endswith(("att.out_proj", "ff.W_down", "ff.layers.2"))
                module.weight.normal_(0.0, residual_std if residual else std)
                done.add(id(module.weight))
                bias = getattr(module, "bias", None)
                if isinstance(bias, Tensor):
                    bias.zero_()
            elif isinstance(module, (RMSNorm, LayerNorm)):
                module.scale.fill_(1.0)
                if isinstance(module, LayerNorm):
                    module.shift.zero_()

    def forward(self, idx: Tensor, *, cache: ModelCache | None = None, last_only: bool = False) -> Tensor:
        """Next-token logits after every position of ``idx`` ``(B, T)``: ``(B, T, V)``.

        ``cache`` and ``last_only`` work as in ``GPTModel.forward``: with a cache, ``idx``
        holds only the tokens after the cached ones.

        Raises:
            ValueError: ``idx`` is not ``(B, T)``, holds an id outside the vocabulary, or
                (with the cache) passes ``context_length`` tokens.
        """
        if not isinstance(idx, Tensor) or idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError("idx must be a (B, T) tensor of integer token ids; for one text use "
                             "torch.tensor([ids])")
        T = idx.shape[1]
        past = 0 if cache is None else len(cache)
        ctx, V = self.config.context_length, self.config.vocab_size
        if past + T > ctx:
            raise ValueError(f"{past} cached + {T} new tokens exceed context_length={ctx}; "
                             f"crop the input to its last {ctx - past} tokens (idx[:, -{ctx - past}:])")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= V):
            raise ValueError(f"a token id in {int(idx.min())}..{int(idx.max())} is outside the vocabulary "
                             f"0..{V - 1}: encode with this model's own tokenizer")
        x = self.tok_emb(idx)  # (B, T, C)
        rope = None
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(past, past + T, device=idx.device))  # (B, T, C)
        else:
            rope = (self.rope_cos[past : past + T], self.rope_sin[past : past + T])  # (T, D) each
        x = self.drop_emb(x)
        for i, block in enumerate(self.trf_blocks):
            x = block(x, rope=rope, cache=None if cache is None else cache.layers[i])  # (B, T, C)
        if last_only:
            x = x[:, -1:]  # (B, 1, C)
        return self.out_head(self.final_norm(x))  # (B, T, V)

    def new_cache(self) -> ModelCache:
        """An empty ``ModelCache``: per layer, room for ``context_length`` positions of
        the ``n_kv_heads`` key/value heads."""
        return ModelCache([KVCache(self.config.context_length) for _ in self.trf_blocks])

    @classmethod
    def from_gpt(cls, gpt: GPTModel) -> ModernGPT:
        """A ``ModernGPT`` with ``ModernConfig.gpt2_style`` holding ``gpt``'s weights
        (the two compute the same function; chapter 9 checks it)."""
        model = cls(ModernConfig.gpt2_style(gpt.config))
        model.load_state_dict(gpt.state_dict())
        return model
