"""Decoding with fewer bytes: int8 and bfloat16 weights against float32 on a shipped model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from companion import pretrained
from companion.cli import main
from companion.generate import generate
from companion.quantize import for_decoding


@pytest.fixture(scope="module")
def shipped():  # type: ignore[no-untyped-def]
    return pretrained("shakespeare-small")


def _teacher_forced(model, ids):  # type: ignore[no-untyped-def]
    with torch.no_grad():
        logits = model(ids[:, :-1]).float()  # (1, T, V)
    loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
    return float(loss), logits.argmax(-1)


@pytest.mark.parametrize(("weights", "loss_band", "agreement"), [("int8", 0.01, 0.9), ("bf16", 0.01, 0.95)])
def test_quality_against_float32_on_held_out_text(shipped, weights: str, loss_band: float,  # type: ignore[no-untyped-def]
                                                  agreement: float) -> None:
    text = "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun."
    ids = torch.tensor([shipped.tokenizer.encode(text)])
    before = [p.clone() for p in shipped.model.parameters()]
    small = for_decoding(shipped.model, weights)  # type: ignore[arg-type]
    ref_loss, ref_top = _teacher_forced(shipped.model, ids)
    loss, top = _teacher_forced(small, ids)
    assert abs(loss - ref_loss) / ref_loss < loss_band  # perplexity within about 1%
    assert (top == ref_top).float().mean() >= agreement  # top-1 agreement under teacher forcing
    assert all(torch.equal(a, b) for a, b in zip(before, shipped.model.parameters(), strict=True))  # a copy
    out = generate(small, ids[:, :5], 8)
    assert out.shape == (1, 13)


def test_formats_change_what_is_stored(shipped) -> None:  # type: ignore[no-untyped-def]
    assert all(p.dtype == torch.bfloat16 for p in for_decoding(shipped.model, "bf16").parameters())
    int8 = for_decoding(shipped.model, "int8")
    assert not any(type(m) is torch.nn.Linear for m in int8.modules())  # every linear layer replaced
    assert all(p.dtype == torch.float32 for p in for_decoding(shipped.model, "fp32").parameters())


def test_bad_format_is_named(shipped) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="weights='int4' is unknown"):
        for_decoding(shipped.model, "int4")  # type: ignore[arg-type]


def test_generate_command_takes_weights(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["generate", "--pretrained", "shakespeare-small", "--prompt", "ROMEO:", "--max-tokens", "5",
            "--temperature", "0"]
    assert main([*args, "--weights", "int8"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")
