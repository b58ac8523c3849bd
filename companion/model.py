"""The GPT model: layer normalization, GELU, feed-forward, transformer block, GPT.

Chapter 4, "Implementing a GPT model from scratch", builds these pieces one at a
time; this module holds their finished forms. Module and parameter names follow the
book (``tok_emb``, ``trf_blocks.0.att.W_query``, ``norm1.scale``, ...), so a
``state_dict`` saved from the chapter's own classes loads here, and
``companion.weights`` maps OpenAI's GPT-2 weights onto the same names.

``GPTModel`` also takes a ``ModelCache`` (one ``KVCache`` per block) so that
generation (chapter 5) can feed only the new tokens at each step.

Shape letters used in this module:

* ``B``: batch size
* ``T``: tokens in the current input
* ``C``: channels, the embedding width (``emb_dim``)
* ``V``: vocabulary size (``vocab_size``)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from companion.attention import KVCache, MultiHeadAttention
from companion.config import AttentionImpl, GPTConfig
from companion.fused import HeadImpl, check_head_impl, linear_cross_entropy

__all__ = [
    "GELU",
    "FeedForward",
    "GPTModel",
    "LayerImpl",
    "LayerNorm",
    "ModelCache",
    "TransformerBlock",
    "attention_maps",
    "eval_mode",
    "init_gpt2_weights",
    "num_parameters",
]


LayerImpl = Literal["manual", "fused"]
"""How ``LayerNorm`` and ``GELU`` compute: ``"manual"``, the formulas of chapter 4 written
out with elementwise tensor operations, or ``"fused"``, PyTorch's single kernels
``F.layer_norm`` and ``F.gelu(approximate="tanh")``. Both compute the same function (a
test checks it to float32 rounding); the fused kernels read and write each activation
once instead of once per operation, which makes training about 1.4 times faster on a CPU.
"""

_LAYER_IMPLS: tuple[str, ...] = ("manual", "fused")


def _check_layer_impl(impl: str) -> LayerImpl:
    if impl not in _LAYER_IMPLS:
        raise ValueError(f"impl={impl!r} is unknown; choose 'manual' (chapter 4's formulas) or 'fused' (PyTorch's kernels)")
    return impl  # type: ignore[return-value]


class _LayerSwitch(nn.Module):
    """A layer with two computations of the same function, chosen by ``impl``."""

    _impl: LayerImpl

    @property
    def impl(self) -> LayerImpl:
        """Which computation ``forward`` uses: ``"manual"`` or ``"fused"``."""
        return self._impl

    @impl.setter
    def impl(self, value: LayerImpl) -> None:
        self._impl = _check_layer_impl(value)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in evaluation mode (no dropout) for a block, then restore its mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class LayerNorm(_LayerSwitch):
    """Layer normalization (chapter 4,
    "Layer normalisation: keeping activations in range").

    Each vector is shifted to mean 0 and scaled to variance 1 over its last dimension,
    then multiplied by the learned ``scale`` and offset by the learned ``shift``. The
    variance is the biased one (divide by ``C``, not ``C - 1``), as in GPT-2 and
    ``torch.nn.LayerNorm``.

    Args:
        emb_dim: Size of the last dimension (``C``).
        eps: Added to the variance so that a constant vector does not divide by zero.
        impl: ``"fused"`` (``F.layer_norm``, the default) or ``"manual"`` (the formula
            step by step, as chapter 4 writes it); see ``LayerImpl``. Changeable later
            through the ``impl`` attribute.
    """

    def __init__(self, emb_dim: int, eps: float = 1e-5, impl: LayerImpl = "fused") -> None:
        super().__init__()
        self.eps = eps
        self.impl = impl
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def extra_repr(self) -> str:
        return f"{self.scale.shape[0]}, eps={self.eps}, impl={self.impl!r}"

    def forward(self, x: Tensor) -> Tensor:
        """Normalize ``x`` ``(..., C)``; returns the same shape."""
        if self.impl == "fused":
            return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)  # (..., C)
        mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
        var = x.var(dim=-1, keepdim=True, correction=0)  # (..., 1), biased
        norm_x = (x - mean) / torch.sqrt(var + self.eps)  # (..., C)
        return self.scale * norm_x + self.shift  # (..., C)


class GELU(_LayerSwitch):
    """GELU activation, tanh approximation (chapter 4,
    "GELU and the feed-forward network").

    ``0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))``: the form GPT-2 was trained with
    (Hugging Face calls it ``"gelu_new"``; PyTorch ``F.gelu(x, approximate="tanh")``).

    Args:
        impl: ``"fused"`` (``F.gelu(x, approximate="tanh")``, the default) or
            ``"manual"`` (the formula above, operation by operation); see ``LayerImpl``.
    """

    def __init__(self, impl: LayerImpl = "fused") -> None:
        super().__init__()
        self.impl = impl

    def extra_repr(self) -> str:
        return f"impl={self.impl!r}"

    def forward(self, x: Tensor) -> Tensor:
        """Apply GELU elementwise; ``x`` may have any shape."""
        if self.impl == "fused":
            return F.gelu(x, approximate="tanh")
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


class FeedForward(nn.Module):
    """The position-wise feed-forward network (chapter 4): widen 4 times, GELU, narrow back.

    ``layers`` is ``Sequential(Linear(C, 4C), GELU(), Linear(4C, C))``; each token's
    vector is transformed on its own. ``layer_impl`` picks the GELU's computation
    (``LayerImpl``).
    """

    def __init__(self, cfg: GPTConfig, *, layer_impl: LayerImpl = "fused") -> None:
        super().__init__()
        C = cfg.emb_dim
        self.layers = nn.Sequential(
            nn.Linear(C, 4 * C),
            GELU(layer_impl),
            nn.Linear(4 * C, C),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Transform ``x`` ``(B, T, C)``; returns ``(B, T, C)``."""
        return self.layers(x)  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


class TransformerBlock(nn.Module):
    """One transformer block (chapter 4, "The transformer block").

    Pre-LayerNorm with shortcut connections, as in GPT-2: ``x + drop(att(norm1(x)))``,
    then ``x + drop(ff(norm2(x)))``. ``layer_impl`` picks the computation of its layer
    norms and GELU (``LayerImpl``); ``cfg.attn_impl`` that of its attention.
    """

    def __init__(self, cfg: GPTConfig, *, layer_impl: LayerImpl = "fused") -> None:
        super().__init__()
        self.att = MultiHeadAttention(
            d_in=cfg.emb_dim,
            d_out=cfg.emb_dim,
            context_length=cfg.context_length,
            dropout=cfg.drop_rate,
            num_heads=cfg.n_heads,
            qkv_bias=cfg.qkv_bias,
            impl=cfg.attn_impl,
        )
        self.ff = FeedForward(cfg, layer_impl=layer_impl)
        self.norm1 = LayerNorm(cfg.emb_dim, impl=layer_impl)
        self.norm2 = LayerNorm(cfg.emb_dim, impl=layer_impl)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x: Tensor, *, cache: KVCache | None = None) -> Tensor:
        """Transform ``x`` ``(B, T, C)``; returns ``(B, T, C)``.

        ``cache`` is this block's ``KVCache`` (see ``MultiHeadAttention.forward``).
        """
        shortcut = x
        x = self.norm1(x)  # (B, T, C)
        x = self.att(x, cache=cache)  # (B, T, C)
        x = self.drop_shortcut(x)
        x = x + shortcut  # (B, T, C)

        shortcut = x
        x = self.norm2(x)  # (B, T, C)
        x = self.ff(x)  # (B, T, C)
        x = self.drop_shortcut(x)
        return x + shortcut  # (B, T, C)


@dataclass(eq=False)
class ModelCache:
    """A ``KVCache`` for every transformer block of one model (chapter 5).

    Create it with ``model.new_cache()``, pass it to every ``model(idx, cache=cache)``
    call of one generation, and ``reset()`` it (or make a new one) for the next text.
    ``len(cache)`` is the number of tokens already processed.

    Attributes:
        layers: One cache per block, in block order.
    """

    layers: list[KVCache]

    def __len__(self) -> int:
        return len(self.layers[0]) if self.layers else 0

    @property
    def max_length(self) -> int:
        """Most tokens the cache can hold (the model's ``context_length``)."""
        return self.layers[0].max_length

    def reset(self) -> None:
        """Empty every layer's cache."""
        for layer in self.layers:
            layer.reset()


class GPTModel(nn.Module):
    """A GPT model (chapter 4, "The complete GPT model"): token ids in, next-token logits out.

    Token and position embeddings are added, passed through ``n_layers`` transformer
    blocks and a final layer norm, and projected to one logit per vocabulary entry by
    ``out_head``. With ``cfg.tie_embeddings`` the output head shares its weight matrix
    with the token embedding (``out_head.weight is tok_emb.weight``), as in GPT-2.

    Initialisation: by default GPT-2's own scheme (``init_gpt2_weights``: every
    matrix drawn from ``N(0, 0.02²)``, the projections into the residual stream scaled
    down with depth), as GPT-2, nanoGPT and Hugging Face do. ``init="pytorch"`` keeps
    PyTorch's per-layer defaults instead (``nn.Linear`` uniform in ``±1/√fan_in``,
    ``nn.Embedding`` standard normal), as chapter 4's own classes have. Those defaults
    are a trap with a tied head: the standard-normal embedding becomes the output
    layer, the first logits spread by about ``√emb_dim``, and training starts far from
    ``ln(vocab_size)`` and runs many times slower. Seed with ``torch.manual_seed``
    before construction to get the same model every time.

    Two switches choose how the same function is computed, never what it is: the
    attention path (``cfg.attn_impl``, ``set_attention_impl``) and the layer norms'
    and GELUs' (``layer_impl``, ``set_layer_impl``). ``"manual"`` for both runs exactly
    the readable code of chapters 3 and 4; the defaults, ``"sdpa"`` and ``"fused"``,
    run PyTorch's fused kernels. A third, ``head_impl`` (``set_head_impl``), chooses how
    ``model(idx, targets=...)`` computes the loss: ``"manual"`` (default) makes every
    logit, ``"fused"`` never holds them all (``companion.fused``). A fourth,
    ``set_activation_checkpointing``, trades compute for memory in training.

    Args:
        cfg: A ``GPTConfig``, or a dict with its fields such as chapter 4's
            ``GPT2_SMALL``.
        init: ``"gpt2"`` (default) or ``"pytorch"``.
        layer_impl: ``"fused"`` (default) or ``"manual"``; see ``LayerImpl``.
        head_impl: ``"manual"`` (default) or ``"fused"``; see ``companion.fused.HeadImpl``.

    Attributes:
        config: The model's ``GPTConfig`` (kept up to date by ``set_attention_impl``).
        head_impl: How a forward pass given targets computes the loss.
        checkpoint_activations: Whether training keeps only each block's input and
            recomputes the block in the backward pass (``set_activation_checkpointing``).
    """

    def __init__(
        self,
        cfg: GPTConfig | Mapping[str, Any],
        *,
        init: Literal["gpt2", "pytorch"] = "gpt2",
        layer_impl: LayerImpl = "fused",
        head_impl: HeadImpl = "manual",
    ) -> None:
        super().__init__()
        self.head_impl = check_head_impl(head_impl)
        self.checkpoint_activations = False
        if init not in ("gpt2", "pytorch"):
            raise ValueError(f"init={init!r} is unknown; choose 'gpt2' (GPT-2's scheme) or 'pytorch' (its defaults)")
        if not isinstance(cfg, GPTConfig):
            cfg = GPTConfig.from_dict(cfg)
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        # A ModuleList (chapter 4 uses Sequential) because each block also takes its
        # own cache; the state_dict keys are the same: trf_blocks.{i}....
        self.trf_blocks = nn.ModuleList(TransformerBlock(cfg, layer_impl=layer_impl) for _ in range(cfg.n_layers))
        self.final_norm = LayerNorm(cfg.emb_dim, impl=layer_impl)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.out_head.weight = self.tok_emb.weight  # one Parameter, two names
        if init == "gpt2" and self.tok_emb.weight.device.type != "meta":
            init_gpt2_weights(self)

    def forward(
        self, idx: Tensor, *, cache: ModelCache | None = None, last_only: bool = False, targets: Tensor | None = None
    ) -> Tensor:
        """Return the logits for the next token after every position of ``idx`` (or, given targets, the loss).

        Args:
            idx: Token ids, ``(B, T)``, int64 (or int32).
            cache: From ``new_cache()``. Without it, ``idx`` is the whole text. With
                it, ``idx`` holds only the tokens after the ``len(cache)`` already
                processed ones: positions continue from there, and every block reads
                and extends its own cache.
            last_only: Compute the logits of the last position only, ``(B, 1, V)``:
                all that generation needs, and the output head is the largest matrix
                product of a small model.
            targets: ``(B, T)`` next-token ids (``-100``: not counted). Given, the model
                returns the mean cross-entropy instead of the logits, computed as
                ``head_impl`` says (training passes them; see ``companion.losses.batch_loss``).

        Returns:
            Logits ``(B, T, V)`` (``(B, 1, V)`` with ``last_only``); with ``targets``, the
            scalar mean loss in nats per token.

        Raises:
            ValueError: ``idx`` is not 2-D, or the cached plus new tokens exceed
                ``context_length`` (crop the input to its last ``context_length``
                tokens).
            TypeError: ``idx`` is not a tensor, or does not hold integer ids.
        """
        if not isinstance(idx, Tensor):
            raise TypeError(
                f"idx must be a (B, T) tensor of token ids, got a {type(idx).__name__}; convert it with "
                "torch.tensor([ids]) (one sequence: a batch of one)"
            )
        if idx.dim() != 2:
            raise ValueError(
                f"idx must be a (B, T) batch of token ids, got shape {tuple(idx.shape)}; "
                "for a single sequence add the batch dimension with idx.unsqueeze(0)"
            )
        if idx.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"idx must hold integer token ids (torch.long), got {idx.dtype}")
        T = idx.shape[1]
        ctx = self.config.context_length
        past = 0 if cache is None else len(cache)
        if past + T > ctx:
            if cache is None:
                raise ValueError(
                    f"input has T={T} tokens but the model's context_length is {ctx}; "
                    f"crop it to the last context_length tokens first: idx[:, -{ctx}:]"
                )
            raise ValueError(
                f"the cache holds {past} tokens and {T} new ones would exceed "
                f"context_length={ctx}; start a new cache and feed it only the last "
                f"context_length tokens (idx[:, -{ctx}:])"
            )
        if cache is not None and len(cache.layers) != len(self.trf_blocks):
            raise ValueError(
                f"the cache has {len(cache.layers)} layers but the model has "
                f"{len(self.trf_blocks)} blocks; create it with model.new_cache()"
            )

        x = self.embed(idx, past=past)  # (B, T, C)
        recompute = self.checkpoint_activations and cache is None and torch.is_grad_enabled()
        for i, block in enumerate(self.trf_blocks):
            if recompute:  # keep only x; the backward pass runs the block again (same dropout masks)
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)  # (B, T, C)
            else:
                x = block(x, cache=None if cache is None else cache.layers[i])  # (B, T, C)
        if last_only:
            x = x[:, -1:]  # (B, 1, C)
        x = self.final_norm(x)  # (B, T, C)
        if targets is not None:
            return self._loss(x, targets, idx.shape)
        return self.out_head(x)  # (B, T, V)

    def _loss(self, x: Tensor, targets: Tensor, shape: torch.Size) -> Tensor:
        """Mean cross-entropy of the head's logits of ``x`` ``(B, T, C)`` against ``targets`` ``(B, T)``."""
        if targets.shape != shape:
            raise ValueError(f"targets must have the inputs' shape {tuple(shape)}, got {tuple(targets.shape)}")
        head = self.out_head
        if self.head_impl == "fused" and type(head) is nn.Linear and getattr(head, "bias", None) is None:
            return linear_cross_entropy(x, head.weight, targets)  # never all (B, T, V) logits at once
        # the readable path, and any head the fused one cannot take (a LoRA-wrapped one, a bias)
        return F.cross_entropy(head(x).flatten(0, 1), targets.flatten(), ignore_index=-100)  # (B*T, V)

    def embed(self, idx: Tensor, *, past: int = 0) -> Tensor:
        """Token plus position embeddings of ``idx`` ``(B, T)``, after dropout: ``(B, T, C)``.

        ``past`` is the position of the first token (the number of tokens a cache
        already holds).

        Raises:
            ValueError: An id is outside ``0 .. vocab_size - 1`` (the message names it).
        """
        V = self.config.vocab_size
        low, high = torch.aminmax(idx) if idx.numel() else (torch.tensor(0), torch.tensor(0))
        if int(low) < 0 or int(high) >= V:
            bad = int(low) if int(low) < 0 else int(high)
            raise ValueError(
                f"token id {bad} is outside this model's vocabulary (ids 0..{V - 1}, vocab_size={V}). "
                "The ids probably come from another tokenizer: encode with the tokenizer the model was "
                "trained with (e.g. a course model's own .tokenizer rather than GPT-2's 50,257-token one)."
            )
        T = idx.shape[1]
        positions = torch.arange(past, past + T, device=idx.device)  # (T,)
        x = self.tok_emb(idx) + self.pos_emb(positions)  # (B, T, C) + (T, C) -> (B, T, C)
        return self.drop_emb(x)  # (B, T, C)

    def new_cache(self) -> ModelCache:
        """Return an empty ``ModelCache`` for this model (``context_length`` positions)."""
        return ModelCache(
            [KVCache(self.config.context_length) for _ in range(len(self.trf_blocks))]
        )

    def set_layer_impl(self, impl: LayerImpl) -> GPTModel:
        """Switch every ``LayerNorm`` and ``GELU`` to ``"manual"`` or ``"fused"``; returns the model.

        The weights are untouched (see ``LayerImpl``).
        """
        impl = _check_layer_impl(impl)
        for module in self.modules():
            if isinstance(module, (LayerNorm, GELU)):
                module.impl = impl
        return self

    def set_head_impl(self, impl: HeadImpl) -> GPTModel:
        """Compute the loss of ``model(idx, targets=...)`` the ``"manual"`` or ``"fused"`` way; returns the model.

        The weights are untouched; both compute the same loss and gradients (``companion.fused``).
        """
        self.head_impl = check_head_impl(impl)
        return self

    def set_activation_checkpointing(self, on: bool = True) -> GPTModel:
        """Keep only each block's input during training, and run the block again in backward; returns the model.

        A training step normally keeps every intermediate tensor of every block (the
        attention's queries, keys and values, its output, the feed-forward's hidden
        layer of ``4 * emb_dim`` channels, ...) until the backward pass uses it. With
        checkpointing on, a block keeps only its ``(B, T, C)`` input; the backward pass
        recomputes the block's forward from it, then goes back through it. That costs a
        second forward pass of the blocks (about a third more compute) and saves most
        of the activations' memory (Chen et al. 2016, "Training Deep Nets with Sublinear
        Memory Cost"). The gradients are the same: PyTorch replays the dropout's random
        numbers, and the same kernels compute the same values. Generation and evaluation
        (no gradients) are not affected.
        """
        if not isinstance(on, bool):
            raise TypeError(f"on must be True or False, got {on!r}")
        self.checkpoint_activations = on
        return self

    def set_attention_impl(self, impl: AttentionImpl) -> GPTModel:
        """Switch every attention layer to ``"manual"`` or ``"sdpa"``; returns the model.

        The weights are untouched: both paths compute the same function, so a model
        loaded or trained with one can be inspected with the other (for instance to
        read attention weights on the manual path).
        """
        self.config = self.config.replace(attn_impl=impl)  # validates impl
        for module in self.modules():
            if isinstance(module, MultiHeadAttention):
                module.impl = impl
        return self


def num_parameters(
    model: nn.Module, *, exclude_tied: bool = True, trainable_only: bool = False
) -> int:
    """Count a model's parameters (chapter 4, "How big is it?").

    Args:
        model: Any module, e.g. a ``GPTModel``.
        exclude_tied: Count a parameter shared under two names once (GPT-2's tied
            output head and token embedding: 124,439,808 for GPT-2 small). With
            ``False`` every name counts, as if the head were a separate matrix
            (163,037,184 for GPT-2 small).
        trainable_only: Count only parameters with ``requires_grad``.

    Returns:
        The number of scalar parameters.
    """
    named = model.named_parameters(remove_duplicate=exclude_tied)
    return sum(p.numel() for _, p in named if p.requires_grad or not trainable_only)


_GPT2_INIT_STD = 0.02
_RESIDUAL_PROJECTIONS = ("att.out_proj.weight", "ff.layers.2.weight")


def init_gpt2_weights(model: GPTModel, *, std: float = _GPT2_INIT_STD) -> GPTModel:
    """Re-initialise a ``GPTModel`` the way GPT-2 was initialised (chapter 5,
    "Measuring how wrong a model is: cross-entropy").

    * every ``nn.Linear`` and ``nn.Embedding`` weight (token and position embeddings,
      the query/key/value and feed-forward matrices, the output head): ``N(0, std²)``;
    * every bias: zero; layer norms: ``scale`` 1, ``shift`` 0;
    * the two projections that write into the residual stream in each block
      (``att.out_proj`` and the second feed-forward layer ``ff.layers.2``):
      ``N(0, (std / √(2·n_layers))²)``. Each block adds two such outputs to the
      residual stream, so without the scaling its variance would grow with depth
      (Radford et al., 2019, section 2.3).

    PyTorch's defaults, which ``GPTModel`` keeps, give the embeddings standard-normal
    weights, 50 times larger than these. With GPT-2's scheme a fresh model's logits are
    close to zero and its first loss close to ``ln(vocab_size)``.

    The weights are drawn from torch's global random generator in module order: seed
    with ``torch.manual_seed`` first for a reproducible model. A tied output head
    (``cfg.tie_embeddings``) is drawn once, as the token embedding.

    Args:
        model: The model to initialise in place.
        std: Standard deviation of the ordinary weights (GPT-2: 0.02).

    Returns:
        The same model, for chaining: ``init_gpt2_weights(GPTModel(cfg))``.
    """
    residual_std = std / math.sqrt(2 * len(model.trf_blocks))
    done: set[int] = set()  # ids of parameters already drawn (a tied head is skipped)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                if id(module.weight) not in done:
                    residual = any(f"{name}.weight".endswith(r) for r in _RESIDUAL_PROJECTIONS)
                    module.weight.normal_(0.0, residual_std if residual else std)
                    done.add(id(module.weight))
                bias = getattr(module, "bias", None)
                if bias is not None:
                    bias.zero_()
            elif isinstance(module, LayerNorm):
                module.scale.fill_(1.0)
                module.shift.zero_()
    return model


@torch.no_grad()
def attention_maps(model: GPTModel, idx: Tensor, *, causal: bool = True) -> Tensor:
    """Every layer's and head's attention weights for a batch of texts (chapter 3,
    "What trained attention heads look at").

    Runs ``model`` in evaluation mode block by block; at each block the attention
    layer reports the weights it gives (``MultiHeadAttention.attention_weights``) for
    the block's own normalised input. With ``causal=False`` the causal mask is left out
    of that report, showing where each head would look if it could see the future; the
    model's computation itself is unchanged (always causal).

    Args:
        model: A ``GPTModel``.
        idx: Token ids, ``(B, T)``.
        causal: Apply the causal mask (what the model really computes).

    Returns:
        Weights of shape ``(L, B, H, T, T)``, ``L`` the number of blocks; each row sums to 1.
    """
    with eval_mode(model):
        x = model.embed(idx)  # (B, T, C)
        maps = []
        for block in model.trf_blocks:
            assert isinstance(block, TransformerBlock)
            maps.append(block.att.attention_weights(block.norm1(x), causal=causal))  # (B, H, T, T)
            x = block(x)  # (B, T, C)
        return torch.stack(maps)  # (L, B, H, T, T)
