"""Tests for companion.cli, run in-process: ``main([...])`` returns the exit status."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from companion.checkpoint import load_checkpoint
from companion.cli import main
from companion.generate import generate_text

TEXT = (
    "MENENIUS: There was a time when all the body's members rebell'd against the belly.\n"
    "First Citizen: Well, sir, what answer made the belly?\n"
) * 12

TRAIN_OPTIONS = [
    "--out", "--model", "--data", "--val-fraction", "--tokenizer", "--vocab-size", "--context-length",
    "--emb-dim", "--n-heads", "--n-layers", "--dropout", "--steps", "--batch-size", "--lr", "--min-lr",
    "--warmup-steps", "--weight-decay", "--grad-clip", "--seed", "--eval-every", "--eval-batches",
    "--checkpoint-every", "--resume", "--no-resume", "--quiet", "--device", "--precision",
]
GENERATE_OPTIONS = [
    "--checkpoint", "--pretrained", "--prompt", "--max-tokens", "--temperature", "--top-k", "--top-p",
    "--seed", "--stop-at-eos", "--no-cache", "--weights",
]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def tiny_train_args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--model", "gpt2-small", "--data", str(corpus), "--tokenizer", "bpe", "--vocab-size", "280",
        "--n-layers", "1", "--emb-dim", "16", "--n-heads", "2", "--context-length", "16", "--dropout", "0",
        "--steps", "6", "--batch-size", "4", "--eval-every", "3", "--eval-batches", "2", "--lr", "3e-3",
        "--out", str(out), *extra,
    ]


@pytest.mark.parametrize(("command", "options"), [("train", TRAIN_OPTIONS), ("generate", GENERATE_OPTIONS)])
def test_help_mentions_every_option(command: str, options: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    for option in options:
        assert option in out, option
    assert "shakespeare-small" in out


def test_top_level_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "generate" in out


def test_train_then_generate(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(tiny_train_args(corpus, out)) == 0
    printed = capsys.readouterr().out
    assert "step      3/6" in printed and "step      6/6" in printed  # progress at every evaluation
    assert "done: 6 steps" in printed and str(out) in printed
    model, info = load_checkpoint(out)
    assert info["step"] == 6 and model.config.emb_dim == 16 and model.config.vocab_size == 280
    assert info["tokenizer"].vocab_size == 280
    assert info["extra"]["info"]["val_nats_per_char"] > 0

    assert main(["generate", "--checkpoint", str(out), "--prompt", "MENENIUS:", "--max-tokens", "8",
                 "--temperature", "0"]) == 0
    text = capsys.readouterr().out
    assert text == generate_text(model, info["tokenizer"], "MENENIUS:", 8) + "\n"
    args = ["generate", "--checkpoint", str(out), "--prompt", "First", "--max-tokens", "8", "--temperature",
            "1.0", "--top-k", "20", "--top-p", "0.9", "--seed", "4"]
    assert main(args) == 0
    sampled = capsys.readouterr().out
    assert main([*args, "--no-cache"]) == 0
    assert capsys.readouterr().out == sampled
    assert sampled == generate_text(model, info["tokenizer"], "First", 8, temperature=1.0, top_k=20,
                                    top_p=0.9, seed=4) + "\n"

    # the same command again resumes the finished run: nothing changes
    assert main(tiny_train_args(corpus, out, "--quiet")) == 0
    again, _ = load_checkpoint(out)
    assert all((a == b).all() for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    # other settings do not resume someone else's run
    assert main(tiny_train_args(corpus, out, "--quiet", "--seed", "9")) == 2
    assert "different run" in capsys.readouterr().err
    assert main(tiny_train_args(corpus, out, "--quiet", "--seed", "9", "--no-resume")) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "--checkpoint", "MISSING", "--prompt", "x"], "no checkpoint at"),
        (["generate", "--prompt", "x"], "one of the arguments --checkpoint --pretrained is required"),
        (["generate", "--pretrained", "nope", "--prompt", "x"], "unknown pretrained model 'nope'"),
        (["train", "--out", "OUT", "--steps", "0"], "argument --steps: must be at least 1, got 0"),
        (["train", "--out", "OUT", "--lr", "fast"], "argument --lr: expected a number, got 'fast'"),
        (["train", "--out", "OUT", "--dropout", "1"], "argument --dropout: must be in [0.0, 1.0)"),
        (["train", "--out", "OUT", "--model", "gpt5"], "unknown --model 'gpt5'"),
        (["train", "--out", "OUT", "--data", "no-such-corpus"], "neither a course data file"),
        (["train", "--out", "OUT", "--emb-dim", "30", "--n-heads", "4"], "not divisible by n_heads"),
        (["generate", "--checkpoint", "MISSING", "--prompt", "x", "--temperature", "-1"],
         "argument --temperature: must be in [0.0, inf)"),
        (["fly"], "invalid choice: 'fly'"),
    ],
)
def test_bad_input_exits_with_status_2(args: list[str], message: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(tmp_path / a) if a in ("MISSING", "OUT") else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "companion: error:" in err and message in err, err
    if "no checkpoint" in message:
        assert str(tmp_path) in err


def test_python_dash_m_companion(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["companion", "generate", "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("companion", run_name="__main__")
    assert exit_.value.code == 0
    assert "--temperature" in capsys.readouterr().out


def test_a_data_file_that_is_not_utf8_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Failure mode: a non-UTF-8 --data file ended in a message without the file's name."""
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("Ça va très bien, merci. ".encode("latin-1") * 50)
    assert main(tiny_train_args(bad, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert f"companion: error: the data file {bad} is not UTF-8 text" in err, err


def test_a_full_disk_is_reported_in_one_line(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Failure mode: `companion train` on a full disk exited with a traceback."""
    import companion.checkpoint as ckpt
    from safetensors import SafetensorError

    def disk_full(*args, **kwargs):
        raise SafetensorError("Error while serializing: No space left on device (os error 28)")

    monkeypatch.setattr(ckpt, "save_model", disk_full)
    assert main(tiny_train_args(corpus, tmp_path / "out", "--quiet")) == 1
    err = capsys.readouterr().err
    assert "companion: error: could not write the checkpoint" in err and "No space left" in err, err
    assert "Traceback" not in err


def test_a_negative_clip_is_refused_by_the_library_too(corpus: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*tiny_train_args(corpus, tmp_path / "out"), "--grad-clip", "-1"]) == 2
    assert "--grad-clip: must be in [0.0, inf)" in capsys.readouterr().err
