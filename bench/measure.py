"""Measurements for ``bench/run.py``: probes of the machine, interleaved timing, training steps.

Absolute speeds on a shared machine drift by up to 2x within minutes, so every
comparison here is *interleaved*: the contenders take turns, round after round (the
order rotating), and each reports the median of its rounds. Only ratios taken in one
run mean anything; the probes are repeated during the run to show the drift.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# --------------------------------------------------------------------------- #
# Probes of the machine
# --------------------------------------------------------------------------- #
def matmul_gflops(n: int = 2048, seconds: float = 1.0) -> float:
    """Float32 ``n x n`` matrix products per second, in GFLOP/s (the practical peak)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def matvec_passes(numel: int, width: int = 768, seconds: float = 1.5) -> tuple[float, float]:
    """Matrix-vector products over ``numel`` float32 weights: ``(passes/s, GB/s read)``.

    A batch-1 decoding step must read every weight once, so ``passes/s`` is the
    machine's ceiling for tokens/s of a model with ``numel`` weights.
    """
    weight = torch.randn(numel // width, width)
    x = torch.randn(1, width)
    F.linear(x, weight)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        F.linear(x, weight)
        count += 1
    rate = count / (time.perf_counter() - start)
    return rate, rate * weight.numel() * 4 / 1e9


@dataclass
class Probes:
    """The probes taken during a run: matmul GFLOP/s and decoding passes/s, with labels."""

    matmul: list[tuple[str, float]] = field(default_factory=list)
    matvec: list[tuple[str, float, float]] = field(default_factory=list)
    numel: int = 124_439_808 - 1024 * 768  # GPT-2 small without its position table

    def take(self, label: str) -> None:
        self.matmul.append((label, matmul_gflops()))
        self.matvec.append((label, *matvec_passes(self.numel)))

    @property
    def peak_gflops(self) -> float:
        """The median matmul probe: the practical float32 peak used for MFU."""
        return statistics.median(v for _, v in self.matmul)

    @property
    def decode_limit(self) -> float:
        """The median matrix-vector passes/s over GPT-2 small's weights (tokens/s ceiling)."""
        return statistics.median(v for _, v, _ in self.matvec)


# --------------------------------------------------------------------------- #
# Interleaving
# --------------------------------------------------------------------------- #
def interleave(tasks: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run every task once per round, rotating the order; returns each task's results."""
    names = list(tasks)
    results: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(tasks[name]())
    return results


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --------------------------------------------------------------------------- #
# Training steps
# --------------------------------------------------------------------------- #
def matmul_params(model: nn.Module) -> int:
    """Weights that take part in a matrix product per token: every ``nn.Linear`` weight
    (the output head included, counted once even when tied) plus HF's ``Conv1D``."""
    seen: set[int] = set()
    total = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if weight is None or weight.dim() != 2 or isinstance(module, nn.Embedding) or id(weight) in seen:
            continue
        seen.add(id(weight))
        total += weight.numel()
    return total


def flops_per_token(model: nn.Module, n_layers: int, context: int, width: int) -> float:
    """Training FLOPs per token: ``6·N`` for the matrix products plus ``12·L·T·C`` for
    attention scores and weighted sums (forward and backward, as in the PaLM paper's
    appendix B; the causal half is counted too)."""
    return 6 * matmul_params(model) + 12 * n_layers * context * width


def training_task(
    forward: Callable[[Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
    batch: tuple[Tensor, Tensor],
    *,
    bf16: bool = False,
    seconds: float = 2.0,
    targets_in_forward: bool = False,
) -> Callable[[], float]:
    """A task for ``interleave``: a few training steps, returning tokens/s.

    One step is forward, cross-entropy, backward and ``optimizer.step()``, as every
    model's users write it (``targets_in_forward``: ``forward(inputs, targets=targets)``
    returns the loss itself, as companion's fused head does). Two warm-up steps are taken now; the number of steps per
    measurement is set so one measurement lasts about ``seconds``.
    """
    inputs, targets = batch

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if targets_in_forward:
                loss = forward(inputs, targets=targets)  # type: ignore[call-arg]
            else:
                logits = forward(inputs)
                loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    step()
    n = max(1, round(seconds / (time.perf_counter() - start)))

    def measure() -> float:
        start = time.perf_counter()
        for _ in range(n):
            step()
        return inputs.numel() * n / (time.perf_counter() - start)

    return measure
