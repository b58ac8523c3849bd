"""Training precision: float32, or bfloat16 autocast where the hardware computes it natively.

Chapter 5, "A model that really learns", trains in float32, as every chapter does. A
processor with native bfloat16 arithmetic (x86 with AVX512-BF16 or AMX; ARMv8.6 and
Apple's M2 and later; most CUDA GPUs since Ampere) multiplies bfloat16 matrices two to
three times faster than float32 ones, and reads half the bytes. ``torch.autocast`` runs
the matrix products in bfloat16 and keeps what needs the range or the precision in
float32: the weights and their optimizer state, the layer norms, the softmax and the
loss. A processor *without* native bfloat16 emulates it, about a hundred times slower,
so bfloat16 is only worth choosing where ``native_bf16`` says so.

* ``Precision``: ``"auto"`` (bfloat16 where native, float32 elsewhere), ``"fp32"``,
  ``"bf16"``.
* ``native_bf16(device)``: whether the device computes bfloat16 natively.
* ``resolve_precision(precision, device)``: ``"fp32"`` or ``"bf16"``.
* ``autocast(precision, device)``: the context a training step's forward pass runs in.

Library code never changes the default itself: ``TrainOptions.precision`` is ``"fp32"``,
so a chapter's training computes the same bits on every machine; the command line's
``--precision`` defaults to ``"auto"``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import subprocess
from collections.abc import Iterator
from typing import Literal, get_args

import torch

__all__ = ["PRECISIONS", "Precision", "autocast", "check_precision", "native_bf16", "resolve_precision"]

Precision = Literal["auto", "fp32", "bf16"]
"""How a training step computes: ``"fp32"``, ``"bf16"`` autocast, or ``"auto"`` (bf16 where native)."""

PRECISIONS: tuple[str, ...] = get_args(Precision)

# oneDNN's instruction-set caps (ONEDNN_MAX_CPU_ISA) that still include bfloat16 instructions
_BF16_ISA_WORDS = ("BF16", "AMX", "FP16", "AVX10", "ALL")


def check_precision(precision: object) -> Precision:
    """``precision`` if it is one of ``PRECISIONS``; else a ``ValueError`` naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision={precision!r} is unknown; choose 'auto' (bfloat16 where the hardware has it), "
            "'fp32' or 'bf16'"
        )
    return precision  # type: ignore[return-value]


def x86_flags_have_bf16(cpuinfo: str) -> bool:
    """Whether ``/proc/cpuinfo`` text lists AVX512-BF16 or AMX-BF16 on its ``flags`` lines."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            if {"avx512_bf16", "amx_bf16"} & flags:
                return True
    return False


def arm_features_have_bf16(cpuinfo: str) -> bool:
    """Whether ``/proc/cpuinfo`` text of an ARM processor lists ``bf16`` on its ``Features`` lines."""
    for line in cpuinfo.splitlines():
        if line.startswith("Features") and "bf16" in line.partition(":")[2].split():
            return True
    return False


def _lowered_by_environment() -> bool:
    """Whether PyTorch or oneDNN were told to use an instruction set without bfloat16."""
    aten = os.environ.get("ATEN_CPU_CAPABILITY", "").lower()
    if aten and not aten.startswith("avx512") and aten not in ("sve256", "sve"):
        return True
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        cap = os.environ.get(name, "").upper()
        if cap and not any(word in cap for word in _BF16_ISA_WORDS):
            return True
    return False


@functools.lru_cache(maxsize=1)
def _cpu_has_bf16() -> bool:
    machine = platform.machine().lower()
    if platform.system() == "Darwin" and machine == "arm64":
        try:
            found = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True,
                                   text=True, timeout=5, check=False)
        except (OSError, subprocess.SubprocessError):
            return False
        return found.stdout.strip() == "1"
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            cpuinfo = file.read()
    except OSError:
        return False
    if machine in ("x86_64", "amd64", "i686", "i386"):
        return x86_flags_have_bf16(cpuinfo) and torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    if machine in ("aarch64", "arm64"):
        return arm_features_have_bf16(cpuinfo)
    return False


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively (not by emulation).

    CPU: AVX512-BF16 or AMX on x86 (read from ``/proc/cpuinfo``, and only if PyTorch's own
    kernels use AVX-512), ``bf16`` on Linux ARM, ``FEAT_BF16`` on Apple silicon; never when
    ``ATEN_CPU_CAPABILITY`` or ``ONEDNN_MAX_CPU_ISA`` lower the instruction set below it.
    CUDA: ``torch.cuda.is_bf16_supported()``. Other devices (MPS): ``False``.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return not _lowered_by_environment() and _cpu_has_bf16()
    return False


def resolve_precision(precision: Precision, device: torch.device | str = "cpu") -> Literal["fp32", "bf16"]:
    """The precision to train in: ``"auto"`` becomes ``"bf16"`` where native, else ``"fp32"``."""
    precision = check_precision(precision)
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


@contextlib.contextmanager
def autocast(precision: Precision, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the enclosed forward pass in ``precision`` (``"auto"`` resolved for ``device``).

    ``"bf16"``: ``torch.autocast(device.type, dtype=torch.bfloat16)``; ``"fp32"``: nothing
    changes. The backward pass follows the forward pass's dtypes on its own.
    """
    device = torch.device(device)
    if resolve_precision(precision, device) == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield
