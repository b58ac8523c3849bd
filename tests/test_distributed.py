"""The trainer under PyTorch DDP: ``torchrun --standalone --nproc_per_node=2`` on the CPU (gloo).

Each test starts real processes with ``python -m torch.distributed.run`` (what the
``torchrun`` command runs) on tests/ddp_script.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("ddp_script.py")
TOLERANCE = 1e-4
"""Two processes average two half-batch gradients where one process takes the mean over the
whole batch: the same number, summed in another order. After 12 AdamW steps the weights
agree to about 1e-6 here; the test allows 1e-4."""


def launch(out: Path, *args: str, processes: int = 2, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SCRIPT.parent.parent)}
    command = [sys.executable, str(SCRIPT), str(out), *args]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={processes}", str(SCRIPT), str(out), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "final.safetensors"))


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_two_processes_on_half_batches_take_the_steps_of_one_on_the_whole(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    single = launch(one, processes=1)
    assert single.returncode == 0, single.stderr
    double = launch(two, processes=2)
    assert double.returncode == 0, double.stderr
    diff = max_difference(final_weights(one), final_weights(two))
    assert diff < TOLERANCE, f"the weights differ by up to {diff:.2e}"
    a, b = json.loads((one / "summary.json").read_text()), json.loads((two / "summary.json").read_text())
    assert (a["world_size"], b["world_size"]) == (1, 2)
    assert a["steps"] == b["steps"] == [4, 8, 12]
    # the logged loss of the two-process run is the mean of the two halves' losses
    assert b["batch_losses"] == pytest.approx(a["batch_losses"], abs=1e-4)


def test_a_batch_that_does_not_split_evenly_still_takes_the_whole_batchs_step(tmp_path: Path) -> None:
    """7 rows on 2 processes: 4 and 3 rows, each process's loss weighted by its share."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert launch(one, "--batch-size", "7", "--steps", "6", processes=1).returncode == 0
    double = launch(two, "--batch-size", "7", "--steps", "6", processes=2)
    assert double.returncode == 0, double.stderr
    diff = max_difference(final_weights(one), final_weights(two))
    assert diff < TOLERANCE, f"the weights differ by up to {diff:.2e}"


def test_a_killed_run_resumed_under_ddp_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert launch(straight).returncode == 0
    killed = launch(resumed, "--stop-after", "9")
    assert killed.returncode != 0
    assert not (resumed / "final.safetensors").exists()
    meta = json.loads((resumed / "run" / "checkpoint.json").read_text())
    assert meta["step"] == 8  # the last checkpoint before the kill
    again = launch(resumed)
    assert again.returncode == 0, again.stderr
    a, b = final_weights(straight), final_weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a), f"differ by up to {max_difference(a, b):.2e}"
    history = json.loads((resumed / "summary.json").read_text())
    assert history["steps"] == [4, 8, 12]


def test_a_rank_that_raises_ends_the_whole_job_within_seconds(tmp_path: Path) -> None:
    start = time.monotonic()
    result = launch(tmp_path / "fails", "--fail-rank", "1", "--fail-at", "3", "--steps", "500", timeout=120)
    seconds = time.monotonic() - start
    assert result.returncode != 0
    assert "rank 1 fails on purpose at step 3" in result.stderr
    assert seconds < 60, f"the job took {seconds:.0f} s to end"
    assert not (tmp_path / "fails" / "final.safetensors").exists()
