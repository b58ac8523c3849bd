"""The GPTs a reader might pick instead of ``companion``, each built as its own users build it.

* ``transformers``: ``GPT2LMHeadModel`` from a ``GPT2Config`` (tied head, Hugging Face's
  initialisation, its default attention implementation);
* ``llms-from-scratch`` (Raschka's book as a package): ``ch04.GPTModel`` (the book's
  model: untied head, PyTorch's default initialisation) and its ``ch04.GPTModelFast``
  (PyTorch's LayerNorm, GELU and SDPA);

litgpt is left out: installing it would replace ``huggingface_hub`` 2.x, which
``transformers`` 5 needs, with 1.3 (checked with ``pip install --dry-run litgpt``).
nanoGPT is not on the package index, and its code is not copied here.

Every builder returns ``(model, logits_fn)``: ``logits_fn(idx)`` gives ``(B, T, V)`` logits,
so every model is trained with the same loss and the same optimizer call.
A peer that is not installed raises ``PeerMissing`` with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # its thread pool slows torch down


class PeerMissing(RuntimeError):
    """A peer package is not installed."""


@dataclass(frozen=True)
class Shape:
    """A GPT's shape: vocabulary, context, width, layers, heads."""

    V: int
    T: int
    C: int
    L: int
    H: int

    def __str__(self) -> str:
        return f"V{self.V} T{self.T} C{self.C} L{self.L} H{self.H}"


Built = tuple[nn.Module, Callable[[Tensor], Tensor]]


def hf_gpt2(shape: Shape) -> Built:
    """Hugging Face's ``GPT2LMHeadModel`` (tied), dropout off."""
    try:
        import transformers
    except ImportError as err:
        raise PeerMissing("transformers is not installed") from err
    transformers.utils.logging.set_verbosity_error()
    config = transformers.GPT2Config(
        vocab_size=shape.V, n_positions=shape.T, n_embd=shape.C, n_layer=shape.L, n_head=shape.H,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    model = transformers.GPT2LMHeadModel(config)
    return model, lambda idx: model(input_ids=idx).logits


def _lfs_config(shape: Shape) -> dict[str, object]:
    return {"vocab_size": shape.V, "context_length": shape.T, "emb_dim": shape.C, "n_heads": shape.H,
            "n_layers": shape.L, "drop_rate": 0.0, "qkv_bias": False}


def _lfs_model(class_name: str, shape: Shape) -> Built:
    """One of ``llms_from_scratch.ch04``'s models, built from its config dict as its users do."""
    try:
        from llms_from_scratch import ch04
    except ImportError as err:
        raise PeerMissing("llms-from-scratch is not installed (pip install --no-deps -r bench/requirements.txt)") from err
    model = getattr(ch04, class_name)(_lfs_config(shape))
    return model, model


def lfs_gpt(shape: Shape) -> Built:
    """``llms_from_scratch.ch04.GPTModel``: the book's model (untied head)."""
    return _lfs_model("GPTModel", shape)


def lfs_gpt_fast(shape: Shape) -> Built:
    """``llms_from_scratch.ch04.GPTModelFast``: the book's bonus model with PyTorch's fused layers."""
    return _lfs_model("GPTModelFast", shape)


PEERS_TIED: dict[str, Callable[[Shape], Built]] = {
    "HF GPT2LMHeadModel": hf_gpt2,
}
"""Tied-head peers, by the name the table shows."""

PEERS_UNTIED: dict[str, Callable[[Shape], Built]] = {
    "llms-from-scratch GPTModel": lfs_gpt,
    "llms-from-scratch GPTModelFast": lfs_gpt_fast,
}
"""Untied-head peers, by the name the table shows."""


def versions() -> dict[str, str]:
    """Installed versions of torch and the peers."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "llms-from-scratch", "tiktoken", "tokenizers"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found
