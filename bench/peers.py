"""The GPTs a reader might pick instead of ``companion``, each built as its own users build it.

* ``transformers``: ``GPT2LMHeadModel`` from a ``GPT2Config`` (tied head, Hugging Face's
  initialisation, its default attention implementation);
* ``llms-from-scratch`` (Raschka's book as a package): ``ch04.GPTModel`` (the book's
  model: untied head, PyTorch's default initialisation) and its ``ch04.GPTModelFast``
  (PyTorch's LayerNorm, GELU and SDPA);

* nanoGPT (Karpathy's): its ``model.GPT`` (tied head) with its own ``configure_optimizers``
  (on the CPU, PyTorch's multi-tensor AdamW) and its own loss (``model(idx, targets)``).
  It is not on the package index and its code is not copied here: clone it and point
  ``NANOGPT_DIR`` at the clone (``git clone https://github.com/karpathy/nanoGPT``).
  At GPT-2's vocabulary it is built as its ``train.py`` builds it, with ``vocab_size``
  50,304 ("padded up to nearest multiple of 64 for efficiency", its config says); the
  tokens/s still count the same 50,257-token batches.

litgpt is left out: installing it would replace ``huggingface_hub`` 2.x, which
``transformers`` 5 needs, with 1.3 (checked with ``pip install --dry-run litgpt``).

Every builder returns ``(model, logits_fn)``: ``logits_fn(idx)`` gives ``(B, T, V)`` logits,
so every model is trained with the same loss and the same optimizer call.
A peer that is not installed raises ``PeerMissing`` with the reason.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
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


@dataclass
class PeerRun:
    """How a peer's users train it, where that differs from ``logits_fn`` and fused AdamW."""

    optimizer: Callable[[float], torch.optim.Optimizer] | None = None  # lr -> its own optimizer
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None  # (idx, targets) -> its own loss


PEER_RUNS: dict[str, PeerRun] = {}
"""Filled by the builders of peers that bring their own optimizer or loss."""


def nanogpt(shape: Shape) -> Built:
    """nanoGPT's ``GPT`` from the clone at ``NANOGPT_DIR``, dropout off, as its train.py builds it."""
    folder = os.environ.get("NANOGPT_DIR")
    if not folder:
        raise PeerMissing("NANOGPT_DIR is not set (git clone https://github.com/karpathy/nanoGPT, then "
                          "NANOGPT_DIR=that folder)")
    path = Path(folder) / "model.py"
    if not path.is_file():
        raise PeerMissing(f"NANOGPT_DIR={folder!r} has no model.py; point it at a clone of karpathy/nanoGPT")
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    vocab = 50304 if shape.V == 50257 else shape.V  # train.py's default for GPT-2's tokens
    config = module.GPTConfig(block_size=shape.T, vocab_size=vocab, n_layer=shape.L, n_head=shape.H,
                              n_embd=shape.C, dropout=0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its parameter count
        model = module.GPT(config)

    def optimizer(lr: float) -> Any:
        with contextlib.redirect_stdout(io.StringIO()):  # and its optimizer groups
            return model.configure_optimizers(0.1, lr, (0.9, 0.95), "cpu")

    PEER_RUNS["nanoGPT"] = PeerRun(optimizer=optimizer, loss_fn=lambda idx, targets: model(idx, targets)[1])
    return model, lambda idx: model(idx, idx)[0]  # logits of every position need targets in nanoGPT


PEERS_TIED: dict[str, Callable[[Shape], Built]] = {
    "HF GPT2LMHeadModel": hf_gpt2,
    "nanoGPT": nanogpt,
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
    folder = os.environ.get("NANOGPT_DIR")
    if folder:
        import subprocess

        head = subprocess.run(["git", "-C", folder, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        found["nanoGPT"] = f"commit {head.stdout.strip()}" if head.returncode == 0 else f"model.py in {folder}"
    else:
        found["nanoGPT"] = "not installed (NANOGPT_DIR)"
    return found
