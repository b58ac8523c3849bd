"""Training precision: detection of native bfloat16, the option, and what autocast changes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from companion import precision
from companion.config import GPTConfig
from companion.course_models import RECIPES
from companion.model import GPTModel
from companion.precision import arm_features_have_bf16, native_bf16, resolve_precision, x86_flags_have_bf16
from companion.train import TrainOptions, train

SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"
ICE_LAKE = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
GRAVITON2 = "processor\t: 0\nFeatures\t: fp asimd dotprod\n"


def test_cpuinfo_flags_are_read() -> None:
    assert x86_flags_have_bf16(SAPPHIRE_RAPIDS)
    assert not x86_flags_have_bf16(ICE_LAKE)
    assert not x86_flags_have_bf16(GRAVITON3)  # an ARM Features line is not an x86 flags line
    assert arm_features_have_bf16(GRAVITON3)
    assert not arm_features_have_bf16(GRAVITON2)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("ATEN_CPU_CAPABILITY", "avx2"), ("ATEN_CPU_CAPABILITY", "default"), ("ONEDNN_MAX_CPU_ISA", "AVX2"),
     ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")],
)
def test_a_lowered_instruction_set_means_no_native_bf16(monkeypatch: pytest.MonkeyPatch, variable: str,
                                                         value: str) -> None:
    monkeypatch.setattr(precision, "_cpu_has_bf16", lambda: True)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert native_bf16("cpu")
    monkeypatch.setenv(variable, value)  # CI's second run, "another machine"
    assert not native_bf16("cpu")
    assert resolve_precision("auto", "cpu") == "fp32"


def test_auto_follows_the_hardware_and_explicit_choices_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda device="cpu": True)
    assert resolve_precision("auto") == "bf16"
    monkeypatch.setattr(precision, "native_bf16", lambda device="cpu": False)
    assert resolve_precision("auto") == "fp32"
    assert resolve_precision("bf16") == "bf16"
    assert resolve_precision("fp32") == "fp32"
    assert native_bf16("meta") is False


def test_bad_precision_is_named() -> None:
    with pytest.raises(ValueError, match="precision='fp16' is unknown; choose 'auto'"):
        TrainOptions(precision="fp16")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="precision='half'"):
        resolve_precision("half")  # type: ignore[arg-type]


def test_the_option_carries_its_choices_for_the_command_line() -> None:
    field = {f.name: f for f in dataclasses.fields(TrainOptions)}["precision"]
    assert field.default == "fp32"
    assert tuple(field.metadata["choices"]) == ("auto", "fp32", "bf16")
    assert "precision" not in TrainOptions().to_dict()  # recipe keys hashed from the options stay as they were
    assert TrainOptions(precision="bf16").to_dict()["precision"] == "bf16"
    assert TrainOptions(**TrainOptions().to_dict()) == TrainOptions()


def test_shipped_recipes_train_in_float32_whatever_the_machine() -> None:
    for recipe in RECIPES.values():
        assert recipe.train_options().precision == "fp32"


CFG = GPTConfig(vocab_size=64, context_length=8, emb_dim=16, n_heads=2, n_layers=1)


def _run(precision_name: str) -> tuple[list[float], GPTModel]:
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, 64, (4, 9), generator=gen)
    torch.manual_seed(0)
    model = GPTModel(CFG)
    history = train(model, [(data[:, :-1], data[:, 1:])], max_steps=3, lr=1e-3, progress=False,
                    eval_every=3, precision=precision_name)
    return history.batch_losses, model


def test_fp32_is_the_default_bit_for_bit() -> None:
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, 64, (4, 9), generator=gen)
    torch.manual_seed(0)
    model = GPTModel(CFG)
    default = train(model, [(data[:, :-1], data[:, 1:])], max_steps=3, lr=1e-3, progress=False, eval_every=3)
    assert default.batch_losses == _run("fp32")[0]


def test_bf16_autocasts_the_step_and_keeps_float32_weights() -> None:
    fp32, _ = _run("fp32")
    bf16, model = _run("bf16")
    assert bf16 != fp32  # the products really ran in bfloat16
    assert max(abs(a - b) for a, b in zip(bf16, fp32, strict=True)) < 0.05
    assert all(p.dtype == torch.float32 for p in model.parameters())
