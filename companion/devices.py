"""Which device to compute on: one helper, used by the command line and the chapters.

Appendix A, "Devices", explains the choice: a CUDA GPU if there is one (under torchrun,
the one whose number is ``LOCAL_RANK``), else Apple's GPU through MPS, else the CPU.
Library code never picks a device itself: it takes the device of the tensors or the
model it is given (STYLE: devices are explicit).
"""

from __future__ import annotations

import os

import torch

__all__ = ["pick_device"]


def pick_device(prefer: str | None = None) -> torch.device:
    """The best device available: ``cuda`` (``cuda:<LOCAL_RANK>`` under torchrun), ``mps``, ``cpu``.

    Args:
        prefer: ``"cpu"``, ``"cuda"``, ``"mps"`` or ``None`` (pick the best available).

    Raises:
        ValueError: ``prefer`` names a device this machine does not have (the message says
            which are available).
    """
    available = ["cpu"]
    if torch.backends.mps.is_available():
        available.insert(0, "mps")
    if torch.cuda.is_available():
        available.insert(0, "cuda")
    choice = prefer or available[0]
    if choice not in available:
        raise ValueError(f"device {choice!r} is not available here; available: {', '.join(available)}")
    if choice == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device(choice)
