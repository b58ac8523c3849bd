"""Fewer bytes per decoded token: a model's weights in bfloat16 or int8 for generation.

Chapter 5, "Generating text", decodes one token at a time, and a batch-1 decoding step
reads every weight of the model once: on a CPU that reading, not the arithmetic, sets
the speed. Reading fewer bytes is the way to go faster:

* ``"bf16"``: every weight in bfloat16, half the bytes. Whether it pays depends on the
  CPU: without native bfloat16 the matrix-vector kernels are slower per byte and the
  gain vanishes (bench/run.py measures it).
* ``"int8"``: every ``nn.Linear`` (the attention projections, the feed-forward layers
  and the output head) stored as 8-bit integers with one float scale per output row,
  a quarter of the bytes, multiplied by PyTorch's own int8 kernels (fbgemm on x86,
  qnnpack on ARM) after quantizing each input row on the fly
  (``torch.ao.quantization.quantize_dynamic``). Embeddings and layer norms stay float32.

``for_decoding(model, "int8")`` returns a new model for ``generate`` (the original is left
as it was); it cannot be trained, and its outputs differ from float32's in the last
digits: bench/decode_quality.py measures the perplexity change and how often the top
token stays the same.
"""

from __future__ import annotations

import copy
import warnings
from typing import Literal, get_args

import torch
from torch import nn

from companion.model import GPTModel

__all__ = ["WEIGHT_FORMATS", "WeightFormat", "for_decoding"]

WeightFormat = Literal["fp32", "bf16", "int8"]
"""How a decoding model stores its weights: float32, bfloat16, or int8 linear layers."""

WEIGHT_FORMATS: tuple[str, ...] = get_args(WeightFormat)


def for_decoding(model: GPTModel, weights: WeightFormat = "int8") -> GPTModel:
    """A copy of ``model`` in eval mode with its weights stored as ``weights``, for generation.

    Args:
        model: A float32 ``GPTModel`` on the CPU.
        weights: ``"fp32"`` (an unchanged copy), ``"bf16"`` or ``"int8"`` (see the module).

    Returns:
        A new model; ``generate(copy, ...)`` and ``copy(idx)`` work as with the original.

    Raises:
        ValueError: ``weights`` is not a known format, or ``"int8"`` was asked for a model
            that is not on the CPU (the int8 kernels are CPU kernels).
    """
    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"weights={weights!r} is unknown; choose 'fp32', 'bf16' or 'int8'")
    device = next(model.parameters()).device
    result = copy.deepcopy(model).eval()
    if weights == "bf16":
        return result.to(torch.bfloat16)
    if weights == "int8":
        if device.type != "cpu":
            raise ValueError(f"weights='int8' runs on the CPU only; the model is on {device}: move it with .cpu()")
        with warnings.catch_warnings():  # torch.ao.quantization announces its future move to torchao
            warnings.simplefilter("ignore")
            result = torch.ao.quantization.quantize_dynamic(result, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return result
