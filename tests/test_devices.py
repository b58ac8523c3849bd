"""Tests for companion.devices.pick_device."""

from __future__ import annotations

import pytest
import torch

from companion.devices import pick_device


def test_the_cpu_is_always_available_and_the_best_device_is_picked() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    best = pick_device()
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert best.type == expected


def test_a_missing_device_names_the_available_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device 'cuda' is not available here; available: cpu"):
        pick_device("cuda")
    assert pick_device() == torch.device("cpu")


def test_under_torchrun_each_process_takes_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert pick_device() == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "3")  # more processes than GPUs: they share
    assert pick_device() == torch.device("cuda", 1)
