"""``companion dpo`` and ``companion grpo``: the whole runs, in-process on tiny settings:
the summary line, the checkpoint, resuming it, and refusing another run's folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from companion.checkpoint import read_checkpoint_info
from companion.cli import main

PAIRS = [{"instruction": f"Answer question {i}.", "input": "",
          "chosen": f"Gladly: the answer is {i}.", "rejected": f"Ugh, {i}, obviously."} for i in range(30)]


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(PAIRS), encoding="utf-8")
    return path


def test_dpo_command_trains_resumes_bit_exact_and_guards_its_folder(
        tmp_path: Path, pairs_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import companion.train

    def argv(out: Path) -> list[str]:
        return ["dpo", "--out", str(out), "--data", str(pairs_file), "--batch-size", "4", "--eval-every", "1",
                "--steps", "3", "--quiet"]

    assert main(argv(tmp_path / "straight")) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.match(r"held-out pairs: preference accuracy 50\.0% -> ([\d.]+)%, reward margin 0\.000 -> (-?[\d.]+);",
                     line)
    assert match, line

    # the same run, stopped after its second step (a checkpoint every step), then run again
    take_step = companion.train._Run.take_step

    def stop_at_third(run: companion.train._Run) -> float:
        if run.step == 2:
            raise KeyboardInterrupt
        return take_step(run)

    monkeypatch.setattr(companion.train._Run, "take_step", stop_at_third)
    with pytest.raises(KeyboardInterrupt):
        main(argv(tmp_path / "resumed"))
    assert read_checkpoint_info(tmp_path / "resumed")["step"] == 2
    monkeypatch.setattr(companion.train._Run, "take_step", take_step)
    assert main(argv(tmp_path / "resumed")) == 0
    straight = load_file(str(tmp_path / "straight" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert read_checkpoint_info(tmp_path / "resumed")["history"].steps == [1, 2, 3]

    assert main([*argv(tmp_path / "resumed"), "--beta", "0.5"]) == 2
    assert "holds a checkpoint of a different run" in capsys.readouterr().err


def test_dpo_command_refuses_records_without_a_rejected_answer(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "x", "input": "", "chosen": "y"}]), encoding="utf-8")
    assert main(["dpo", "--out", str(tmp_path / "o"), "--data", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "record 0 of" in err and "'rejected'" in err


def test_grpo_command_trains_and_reports_each_family(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "grpo"
    assert main(["grpo", "--out", str(out), "--families", "count,larger", "--prompts", "2", "--batch-size", "2",
                 "--group-size", "2", "--test-per-family", "2", "--steps", "2", "--quiet"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.match(r"held-out accuracy: count \d+% -> \d+%, larger \d+% -> \d+%; mean", line), line
    info = read_checkpoint_info(out)
    assert info["step"] == 2 and info["extra"]["grpo"]["families"] == ["count", "larger"]
    assert main(["grpo", "--out", str(out), "--families", "bogus"]) == 2
    assert "unknown task families ['bogus']" in capsys.readouterr().err
