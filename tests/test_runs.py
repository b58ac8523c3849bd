"""Tests for companion.runs' shared pieces: flags made from dataclass fields, the resume
guard, and that each run's defaults are spelled once (its TrainOptions)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from companion.checkpoint import save_checkpoint
from companion.config import GPTConfig
from companion.model import GPTModel
from companion.runs import flags
from companion.runs.common import check_resume, run_key
from companion.runs.flags import UsageError
from companion.train import TrainOptions


@dataclass(frozen=True)
class Settings:
    """Settings of a pretend run, to test the flags.

    Attributes:
        precision: The arithmetic of the forward pass. Chosen per machine.
        steps: Optimizer steps.
        rate: The learning rate.
        clip: A clip; ``None`` for none.
        fast: Take the fast path.
        betas: Two numbers.
        warmup: Steps of warmup (0 allowed).
        order: How the examples are ordered.
    """

    precision: str = field(default="auto", metadata={"choices": ("auto", "fp32", "bf16")})
    steps: int = 10
    rate: float = 1e-3
    clip: float | None = None
    fast: bool = True
    betas: tuple[float, float] = (0.9, 0.95)
    warmup: int = field(default=0, metadata={"min": 0, "help": "warmup steps"})
    order: Literal["fixed", "shuffled"] = "shuffled"

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


NAMES = ("precision", "steps", "rate", "clip", "fast", "betas", "warmup", "order")


def parser_for(defaults: object = Settings()) -> argparse.ArgumentParser:
    parser = _Parser(prog="x")
    flags.add_option_flags(parser, Settings, NAMES, defaults=defaults)
    return parser


def test_every_kind_of_field_gets_its_flag() -> None:
    parser = parser_for()
    args = parser.parse_args(["--precision", "bf16", "--steps", "3", "--rate", "2e-3", "--clip", "none",
                              "--no-fast", "--betas", "0.8", "0.9", "--warmup", "0", "--order", "fixed"])
    got = flags.options_from_args(args, Settings(), NAMES)
    assert got == Settings(precision="bf16", steps=3, rate=2e-3, clip=None, fast=False, betas=(0.8, 0.9), warmup=0,
                          order="fixed")
    assert flags.options_from_args(parser.parse_args([]), Settings(), NAMES) == Settings()  # the defaults
    assert flags.options_from_args(parser.parse_args(["--clip", "0.5"]), Settings(), NAMES).clip == 0.5


@pytest.mark.parametrize(("argv", "message"), [
    (["--precision", "fp16"], "invalid choice: 'fp16'"),
    (["--order", "random"], "invalid choice: 'random'"),
    (["--steps", "0"], "must be at least 1, got 0"),
    (["--warmup", "-1"], "must be at least 0, got -1"),
    (["--rate", "0"], "must be in (0.0, inf)"),
    (["--rate", "fast"], "expected a number, got 'fast'"),
    (["--betas", "0.9"], "expected 2 arguments"),
])
def test_bad_values_are_refused_with_a_clear_message(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as error:
        parser_for().parse_args(argv)
    assert message in str(error.value)


def test_the_help_comes_from_the_field_and_shows_the_run_s_default() -> None:
    text = parser_for(Settings(rate=5e-4)).format_help()
    assert "the arithmetic of the forward pass (default auto)" in " ".join(text.split())
    assert "the learning rate (default 5e-4)" in " ".join(text.split())
    assert "warmup steps (default 0)" in " ".join(text.split())
    assert "--fast, --no-fast" in text


def test_without_defaults_a_flag_left_out_keeps_the_run_s_value() -> None:
    parser = _Parser(prog="x")
    flags.add_option_flags(parser, Settings, NAMES)  # no defaults: the flags override
    args = parser.parse_args(["--steps", "4"])
    assert not hasattr(args, "rate")
    assert flags.options_from_args(args, Settings(rate=7e-3), NAMES) == Settings(steps=4, rate=7e-3)


def test_every_train_option_but_the_folder_can_be_a_flag() -> None:
    """A new TrainOptions field (say ``precision: str`` with ``metadata["choices"]``) gets its flag."""
    names = [f.name for f in dataclasses.fields(TrainOptions) if f.name != "checkpoint_dir"]
    parser = _Parser(prog="x")
    flags.add_option_flags(parser, TrainOptions, names, defaults=TrainOptions())
    args = parser.parse_args(["--steps", "5", "--grad-clip", "0", "--min-lr", "none", "--betas", "0.9", "0.95"])
    options = flags.options_from_args(args, TrainOptions(), names)
    assert options == TrainOptions(max_steps=5, grad_clip=None, min_lr=None, betas=(0.9, 0.95))
    assert "--steps" in parser.format_help() and "--max-steps" not in parser.format_help()


def test_each_run_spells_its_default_learning_rate_once(capsys: pytest.CaptureFixture[str]) -> None:
    from companion.cli import main
    from companion.finetune.classification import CHAPTER_OPTIONS
    from companion.runs import dpo, grpo, instruct

    for command, options in (("finetune-instructions", instruct.OPTIONS), ("finetune-classifier", CHAPTER_OPTIONS),
                             ("dpo", dpo.OPTIONS), ("grpo", grpo.OPTIONS)):
        assert main([command, "--help"]) == 0
        assert f"peak learning rate (default {flags._shown(options.lr)})" in " ".join(capsys.readouterr().out.split())


def test_the_pretraining_recipe_holds_its_training_options() -> None:
    from companion.runs.pretrain import RECIPES, Recipe

    recipe = RECIPES["shakespeare-small"]
    assert isinstance(recipe.options, TrainOptions) and recipe.options.lr == recipe.lr == 2e-3
    assert recipe.steps == recipe.options.max_steps == 3_100
    assert recipe.replace(lr=1e-3).options == recipe.options.replace(lr=1e-3)
    with pytest.raises(TypeError, match="unknown recipe field"):
        recipe.replace(learning_rate=1e-3)
    with pytest.raises(ValueError, match="a recipe's options set only"):
        Recipe(name="x", config=recipe.config, options=recipe.options.replace(sample_every=5))
    assert "options" not in recipe.to_dict() and recipe.to_dict()["steps"] == 3_100  # the flat, keyed form


def test_the_recipe_is_recorded_as_the_shipped_checkpoint_records_it() -> None:
    """Same keys in the same order, same values: checkpoints written now read as before."""
    import json

    from companion.course_models import SHIPPED_DIR
    from companion.runs.pretrain import RECIPES, Recipe

    shipped = json.loads((SHIPPED_DIR / "shakespeare-small" / "checkpoint.json").read_text())["extra"]["recipe"]
    recipe = RECIPES["shakespeare-small"]
    assert json.dumps(recipe.to_dict()) == json.dumps(shipped)
    assert Recipe.from_dict(shipped) == recipe


# --------------------------------------------------------------------------- resume guard
def test_the_resume_guard(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    assert check_resume(folder, "k", resume=True) is False  # nothing there: start
    model = GPTModel(GPTConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=1))
    save_checkpoint(folder, model, step=3, extra={"run_key": "k", "nested": {"run_key": "n"}})
    assert check_resume(folder, "k") is True
    assert check_resume(folder, "n", key_of=lambda extra: extra["nested"]["run_key"]) is True
    assert check_resume(folder, "other", resume=False) is False  # afresh: it will be overwritten
    with pytest.raises(UsageError, match=r"different run .*; pass --no-resume"):
        check_resume(folder, "other", hint="pass --no-resume", error=UsageError)
    with pytest.raises(ValueError, match="different run"):
        check_resume(folder, "other")
    assert run_key({"a": 1, "b": [2]}) == run_key({"b": [2], "a": 1}) != run_key({"a": 2, "b": [2]})


@pytest.mark.parametrize(("flag", "limit", "checkpointed", "fused"), [
    (None, 10**9, False, False),  # a course-sized model: the fast path
    (None, 1, True, True),  # a model at or over the limit: both memory savers
    (True, 10**9, True, False),  # asked for: checkpointing; the head follows the size
    (False, 1, False, True),
])
def test_instruct_saves_memory_on_large_models(monkeypatch: pytest.MonkeyPatch, flag: bool | None, limit: int,
                                               checkpointed: bool, fused: bool) -> None:
    from companion.runs import instruct

    monkeypatch.setattr(instruct, "LOW_MEMORY_PARAMS", limit)
    model = GPTModel(GPTConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=1))
    instruct.set_memory_savers(model, flag)
    assert model.checkpoint_activations is checkpointed
    assert model.head_impl == ("fused" if fused else "manual")


def test_instruct_refuses_checkpointing_a_model_without_it() -> None:
    from companion.modern.config import ModernConfig
    from companion.modern.model import ModernGPT
    from companion.runs import instruct

    model = ModernGPT(ModernConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=1))
    with pytest.raises(UsageError, match="--no-checkpoint-activations"):
        instruct.set_memory_savers(model, True)
    instruct.set_memory_savers(model, None)  # small: nothing asked, nothing refused


def test_instruct_does_not_refuse_a_large_model_without_checkpointing(monkeypatch: pytest.MonkeyPatch) -> None:
    from companion.modern.config import ModernConfig
    from companion.modern.model import ModernGPT
    from companion.runs import instruct

    monkeypatch.setattr(instruct, "LOW_MEMORY_PARAMS", 1)  # "large": the default is by size
    instruct.set_memory_savers(ModernGPT(ModernConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=2,
                                                      n_layers=1)), None)
