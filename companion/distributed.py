"""Several processes training one model: PyTorch's ``torch.distributed``, as the trainer uses it.

``torchrun --nproc_per_node=N script.py`` starts ``N`` copies of a script and gives each
its place in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``). ``companion.train.train`` reads them through this module: it joins the
process group on its own when started that way, wraps the model in
``DistributedDataParallel`` (which averages the gradients of all processes after every
``backward``), and lets only the first process (rank 0) print, evaluate and write
checkpoints. Appendix A, "Training on several processes", runs it.

Everything here also works in a single ordinary process, where the rank is 0 and the
world has size 1, so the trainer calls these functions unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "World",
    "all_gather_objects",
    "barrier",
    "join_from_environment",
    "leave",
    "mean_across",
    "pick_backend",
    "world",
]

DEFAULT_TIMEOUT = timedelta(minutes=10)
"""How long a process waits for the others at a collective before giving up."""


@dataclass(frozen=True)
class World:
    """Where this process stands among those training together.

    Attributes:
        rank: This process's number, ``0 .. size - 1``; rank 0 is the "main" process.
        size: How many processes train together (1 when not distributed).
        local_rank: The process's number on its own machine (picks its GPU).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that prints, evaluates and saves."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether more than one process trains."""
        return self.size > 1


def world() -> World:
    """This process's ``World``: from the process group if one is running, else rank 0 of 1."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return World()


def pick_backend() -> str:
    """``"nccl"`` when CUDA GPUs are available (the fast GPU-to-GPU library), else ``"gloo"`` (CPU)."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def join_from_environment(*, timeout: timedelta = DEFAULT_TIMEOUT) -> bool:
    """Join the process group described by torchrun's environment variables, if any.

    Does nothing when ``WORLD_SIZE`` is unset or 1, or when a group is already running.

    Returns:
        Whether this call started the process group (its caller should ``leave`` it).

    Raises:
        RuntimeError: ``WORLD_SIZE`` says there are several processes but
            ``torch.distributed`` is not available in this PyTorch build.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    backend = pick_backend()
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=timeout)
    return True


def leave() -> None:
    """Leave the process group (after training, or on an error, so no rank waits forever)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here (a no-op in a single process)."""
    if world().distributed:
        dist.barrier()


def mean_across(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over all processes (the tensor itself in a single process)."""
    if not world().distributed:
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / dist.get_world_size()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not world().distributed:
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
