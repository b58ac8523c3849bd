"""Tests for companion.finetune.instruction and the ``finetune-instructions`` command.

Most tests use a byte-level tokenizer with no merges (every UTF-8 byte is one token and
``<|endoftext|>`` is 256), so that token counts can be worked out by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from companion.checkpoint import load_checkpoint, save_checkpoint
from companion.cli import main
from companion.config import GPTConfig
from companion.finetune.instruction import (
    ALPACA_PREAMBLE,
    InstructionDataset,
    InstructionExample,
    collate_instructions,
    encode_example,
    eos_id_of,
    evaluate_instructions,
    format_example,
    format_prompt,
    generate_response,
    instruction_loader,
    prepare_instruction_data,
    split_entries,
)
from companion.losses import IGNORE_INDEX
from companion.metrics import rouge_l
from companion.model import GPTModel
from companion.tokenizers import BPETokenizer
from companion.train import NextTokenTask, train

EOS = 256
BYTES = BPETokenizer([], special_tokens={"<|endoftext|>": EOS})
"""One token per UTF-8 byte, and <|endoftext|> = 256."""

BYTE_CFG = GPTConfig(vocab_size=257, context_length=96, emb_dim=32, n_heads=2, n_layers=1, drop_rate=0.0)

RECORDS = [
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    {"instruction": "Reverse the word.", "input": "cat", "output": "tac"},
    {"instruction": "Say hi.", "input": "", "output": "hi"},
    {"instruction": "Name a colour.", "input": "", "output": "red"},
    {"instruction": "Double it.", "input": "4", "output": "8"},
    {"instruction": "Spell it backwards.", "input": "dog", "output": "god"},
    {"instruction": "Give the plural.", "input": "mouse", "output": "mice"},
    {"instruction": "Upper-case it.", "input": "ok", "output": "OK"},
    {"instruction": "Repeat it twice.", "input": "la", "output": "la la"},
    {"instruction": "Count the letters.", "input": "abc", "output": "3"},
]


# --------------------------------------------------------------------------- #
# The prompt format
# --------------------------------------------------------------------------- #
def test_alpaca_prompt_with_and_without_input() -> None:
    with_input = {"instruction": "Reverse the word.", "input": "cat", "output": "tac"}
    assert format_prompt(with_input, "alpaca") == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nReverse the word.\n\n### Input:\ncat\n\n### Response:\n"
    )
    no_input = {"instruction": "Say hi.", "input": "", "output": "hi"}
    assert format_prompt(no_input, "alpaca") == f"{ALPACA_PREAMBLE}\n\n### Instruction:\nSay hi.\n\n### Response:\n"
    assert format_prompt(no_input, "compact") == "### Instruction:\nSay hi.\n\n### Response:\n"
    assert format_example(with_input, "compact") == "### Instruction:\nReverse the word.\n\n### Input:\ncat\n\n### Response:\ntac"
    # an entry without "input" at all is a prompt without an input section
    assert format_prompt({"instruction": "Say hi."}, "compact") == format_prompt(no_input, "compact")


def test_prompt_format_rejects_bad_records_and_styles() -> None:
    with pytest.raises(ValueError, match="style='chatml' is unknown"):
        format_prompt(RECORDS[0], "chatml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"lacks \['instruction'\]"):
        format_prompt({"input": "x"})
    with pytest.raises(ValueError, match=r"lacks \['output'\]"):
        format_example({"instruction": "x", "input": ""})
    with pytest.raises(TypeError, match="'input' must be a string"):
        format_prompt({"instruction": "x", "input": None})  # type: ignore[dict-item]


# --------------------------------------------------------------------------- #
# Splits
# --------------------------------------------------------------------------- #
def test_splits_are_disjoint_complete_and_seeded() -> None:
    records = [{"instruction": f"task {i}", "input": "", "output": str(i)} for i in range(103)]
    splits = split_entries(records, val_fraction=0.1, test_fraction=0.2, seed=5)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (72, 10, 21)
    outputs = [r["output"] for part in (splits.train, splits.val, splits.test) for r in part]
    assert sorted(outputs, key=int) == [str(i) for i in range(103)]  # each record exactly once
    again = split_entries(records, val_fraction=0.1, test_fraction=0.2, seed=5)
    assert again == splits
    other = split_entries(records, val_fraction=0.1, test_fraction=0.2, seed=6)
    assert other.test != splits.test
    # shuffled: the test split is not simply the first or last records
    assert [r["output"] for r in splits.test] != [str(i) for i in range(21)]
    assert [r["output"] for r in splits.test] != [str(i) for i in range(82, 103)]


def test_split_fractions_are_checked() -> None:
    with pytest.raises(ValueError, match="must be in"):
        split_entries(RECORDS, test_fraction=1.0)
    with pytest.raises(ValueError, match="every split non-empty"):
        split_entries(RECORDS[:2], val_fraction=0.1, test_fraction=0.1)


# --------------------------------------------------------------------------- #
# Tokenized examples and the dataset
# --------------------------------------------------------------------------- #
def test_encode_example_is_prompt_then_response_then_eos() -> None:
    record = RECORDS[1]
    example = encode_example(record, BYTES, style="compact")
    prompt = format_prompt(record, "compact")
    assert example.prompt_length == len(prompt.encode())
    assert example.ids[-1] == EOS and EOS not in example.ids[:-1]
    assert len(example.ids) == len(format_example(record, "compact").encode()) + 1
    assert BYTES.decode(list(example.ids[:-1])) == format_example(record, "compact")
    assert eos_id_of(BYTES) == EOS


def test_dataset_drops_truncates_or_refuses_long_examples() -> None:
    lengths = [len(encode_example(r, BYTES, style="compact").ids) for r in RECORDS]
    context = sorted(lengths)[5] - 1  # the 6 shortest fit exactly (n - 1 <= context)
    fitting = sum(n - 1 <= context for n in lengths)
    kept = InstructionDataset(RECORDS, BYTES, style="compact", context_length=context)
    assert len(kept) == fitting and kept.dropped == len(RECORDS) - fitting and kept.truncated == 0
    assert all(ex.ids[-1] == EOS for ex in kept.examples)
    assert kept.entries == [r for r, n in zip(RECORDS, lengths, strict=True) if n - 1 <= context]

    cut = InstructionDataset(RECORDS, BYTES, style="compact", context_length=context, too_long="truncate")
    assert len(cut) == len(RECORDS) and cut.truncated == len(RECORDS) - fitting
    assert max(len(ex.ids) for ex in cut.examples) == context + 1

    with pytest.raises(ValueError, match="more than context_length"):
        InstructionDataset(RECORDS, BYTES, style="compact", context_length=context, too_long="error")
    whole = InstructionDataset(RECORDS, BYTES, style="alpaca")
    assert [len(ex.ids) for ex in whole.examples] == [len(encode_example(r, BYTES).ids) for r in RECORDS]


# --------------------------------------------------------------------------- #
# The collate function
# --------------------------------------------------------------------------- #
def test_collate_pads_shifts_and_masks_padding() -> None:
    batch = [InstructionExample((1, 2, 3, 4, 9), prompt_length=2), InstructionExample((5, 6, 9), prompt_length=1)]
    inputs, targets = collate_instructions(batch, pad_id=0)
    assert inputs.tolist() == [[1, 2, 3, 4], [5, 6, 0, 0]]
    assert targets.tolist() == [[2, 3, 4, 9], [6, 9, -100, -100]]  # each row's end-of-text is kept
    assert inputs.dtype == targets.dtype == torch.long


def test_collate_masks_the_prompt_when_asked() -> None:
    batch = [
        InstructionExample((1, 2, 3, 4, 5, 9), prompt_length=3),  # prompt 1 2 3, response 4 5
        InstructionExample((6, 7, 9), prompt_length=2),  # prompt 6 7, empty response
    ]
    inputs, targets = collate_instructions(batch, pad_id=9, mask_prompt=True)
    assert inputs.tolist() == [[1, 2, 3, 4, 5], [6, 7, 9, 9, 9]]
    # targets 2 and 3 are prompt tokens; 4, 5 and the end-of-text remain
    assert targets.tolist() == [[-100, -100, 4, 5, 9], [-100, 9, -100, -100, -100]]
    unmasked = collate_instructions(batch, pad_id=9)[1]
    assert unmasked.tolist() == [[2, 3, 4, 5, 9], [7, 9, -100, -100, -100]]


def test_collate_max_length_and_errors() -> None:
    batch = [InstructionExample((1, 2, 3, 4, 9), 2), InstructionExample((5, 6, 9), 1)]
    inputs, targets = collate_instructions(batch, pad_id=0, max_length=2)
    assert inputs.tolist() == [[1, 2], [5, 6]] and targets.tolist() == [[2, 3], [6, 9]]
    with pytest.raises(ValueError, match="empty batch"):
        collate_instructions([], pad_id=0)
    with pytest.raises(ValueError, match="at least two tokens"):
        collate_instructions([InstructionExample((9,), 0)], pad_id=0)


def test_padded_batch_loss_equals_the_loss_of_each_example_alone(make_model: Callable[..., GPTModel]) -> None:
    """Padding changes nothing: the batch's loss is the token-weighted mean of the
    examples' losses computed one at a time without any padding."""
    model = make_model(BYTE_CFG).eval()
    dataset = InstructionDataset(RECORDS[:4], BYTES, style="compact")
    totals, counts = 0.0, 0
    with torch.no_grad():
        for ex in dataset.examples:
            ids = torch.tensor([ex.ids])  # (1, n)
            logits = model(ids[:, :-1])
            totals += F.cross_entropy(logits[0], ids[0, 1:], reduction="sum").item()
            counts += len(ex.ids) - 1
        for pad_id in (0, EOS):
            batch = collate_instructions(dataset.examples, pad_id=pad_id)
            loss = NextTokenTask().loss(model, batch).item()
            assert loss == pytest.approx(totals / counts, rel=1e-5)


def test_masked_prompt_loss_counts_only_response_tokens(make_model: Callable[..., GPTModel]) -> None:
    model = make_model(BYTE_CFG).eval()
    dataset = InstructionDataset(RECORDS[:3], BYTES, style="compact")
    inputs, targets = collate_instructions(dataset.examples, pad_id=EOS, mask_prompt=True)
    expected = sum(len(ex.ids) - ex.prompt_length for ex in dataset.examples)  # response + end-of-text
    assert int((targets != IGNORE_INDEX).sum()) == expected
    with torch.no_grad():
        logits = model(inputs)
    by_hand = torch.cat([
        -torch.log_softmax(logits[row, ex.prompt_length - 1 : len(ex.ids) - 1], dim=-1)
        .gather(-1, torch.tensor(ex.ids[ex.prompt_length :])[:, None])
        .squeeze(-1)
        for row, ex in enumerate(dataset.examples)
    ]).mean()
    assert NextTokenTask().loss(model, (inputs, targets)).item() == pytest.approx(by_hand.item(), rel=1e-5)


# --------------------------------------------------------------------------- #
# Fine-tuning, responses, evaluation
# --------------------------------------------------------------------------- #
def tiny_run(make_model: Callable[..., GPTModel], folder: Path | None, stop_after: int | None = None,
             steps: int = 8) -> tuple[GPTModel, list[float]]:
    model = make_model(BYTE_CFG, seed=3)
    dataset = InstructionDataset(RECORDS, BYTES, style="compact", context_length=BYTE_CFG.context_length)
    loader = instruction_loader(dataset, batch_size=3, pad_id=EOS, shuffle=True, drop_last=True, mask_prompt=True)

    def interrupt(step: int, history: object) -> None:
        if step == stop_after:
            raise KeyboardInterrupt

    history = train(model, loader, loader, max_steps=steps, lr=3e-3, eval_every=2, checkpoint_dir=folder,
                    checkpoint_every=2 if folder else None, callback=interrupt, progress=False)
    return model, history.batch_losses


def test_fine_tuning_resumes_exactly(make_model: Callable[..., GPTModel], tmp_path: Path) -> None:
    straight, straight_losses = tiny_run(make_model, None)
    with pytest.raises(KeyboardInterrupt):
        tiny_run(make_model, tmp_path / "run", stop_after=5)
    assert load_checkpoint(tmp_path / "run")[1]["step"] == 4
    resumed, resumed_losses = tiny_run(make_model, tmp_path / "run")
    assert resumed_losses == straight_losses
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_memorised_answer_stops_at_end_of_text(make_model: Callable[..., GPTModel]) -> None:
    torch.manual_seed(0)
    model = make_model(BYTE_CFG, seed=1)
    record = RECORDS[2]  # "Say hi." -> "hi"
    dataset = InstructionDataset([record] * 4, BYTES, style="compact")
    loader = instruction_loader(dataset, batch_size=4, pad_id=EOS)
    train(model, loader, max_steps=60, lr=1e-2, progress=False)

    response = generate_response(model, BYTES, record, style="compact")
    assert (response.text, response.stopped, response.tokens) == ("hi", True, 2)
    # a plain string is an instruction without input
    assert generate_response(model, BYTES, "Say hi.", style="compact") == response
    # with too few tokens allowed, it cannot reach its end-of-text token
    short = generate_response(model, BYTES, record, style="compact", max_new_tokens=1)
    assert (short.text, short.stopped) == ("h", False)

    other = {"instruction": "Say hi.", "input": "", "output": "hi there"}
    result = evaluate_instructions(model, BYTES, [record, other], style="compact")
    assert result.stop_rate == 1.0
    assert [row["rouge_l"] for row in result.rows] == [1.0, rouge_l("hi", "hi there").fmeasure]
    assert result.rouge_l == pytest.approx((1.0 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="no records"):
        evaluate_instructions(model, BYTES, [], style="compact")


def test_a_prompt_that_fills_the_context_is_refused(make_model: Callable[..., GPTModel]) -> None:
    model = make_model(BYTE_CFG.replace(context_length=16))
    with pytest.raises(ValueError, match="fills the model's context of 16"):
        generate_response(model, BYTES, RECORDS[0], style="compact")


def test_prepare_instruction_data_splits_before_dropping() -> None:
    records = [{"instruction": "x" * (i % 40), "input": "", "output": "y"} for i in range(50)]
    data = prepare_instruction_data(records, BYTES, 40, style="compact", batch_size=4, seed=1)
    assert data.splits == split_entries(records, seed=1)
    for part, dataset in ((data.splits.train, data.train_set), (data.splits.test, data.test_set)):
        assert len(dataset) + dataset.dropped == len(part)
        assert dataset.dropped > 0
    inputs, targets = next(iter(data.train_loader))
    assert inputs.shape[0] == 4 and inputs.shape[1] <= 40 and targets.shape == inputs.shape


# --------------------------------------------------------------------------- #
# The command line
# --------------------------------------------------------------------------- #
@pytest.fixture
def base_and_data(tmp_path: Path, make_model: Callable[..., GPTModel]) -> tuple[Path, Path]:
    base = tmp_path / "base"
    save_checkpoint(base, make_model(BYTE_CFG), tokenizer=BYTES)
    data = tmp_path / "records.json"
    data.write_text(json.dumps(RECORDS * 3), encoding="utf-8")
    return base, data


def cli_args(base: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["finetune-instructions", "--checkpoint", str(base), "--data", str(data), "--out", str(out),
            "--steps", "6", "--batch-size", "4", "--eval-every", "3", "--lr", "3e-3", "--quiet", *extra]


def test_cli_fine_tunes_evaluates_and_resumes(base_and_data: tuple[Path, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    base, data = base_and_data
    out = tmp_path / "run"
    assert main(cli_args(base, data, out)) == 0
    printed = capsys.readouterr().out
    assert "ROUGE-L" in printed and "before" in printed and "after" in printed
    model, info = load_checkpoint(out)
    assert info["step"] == 6 and info["tokenizer"] is not None
    assert info["extra"]["finetune"]["prompt_style"] == "compact"

    # the same run again resumes from its last checkpoint: nothing left to do, same weights
    assert main(cli_args(base, data, out)) == 0
    again, info2 = load_checkpoint(out)
    assert info2["step"] == 6
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # more steps continue from step 6
    assert main(cli_args(base, data, out, "--steps", "8", "--eval-examples", "0")) == 2
    assert "different run" in capsys.readouterr().err


def test_cli_resumed_run_equals_uninterrupted_run(base_and_data: tuple[Path, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    base, data = base_and_data
    assert main(cli_args(base, data, tmp_path / "a", "--eval-examples", "0")) == 0
    straight = load_checkpoint(tmp_path / "a")[0]

    import companion.train

    real_train = companion.train.train

    def interrupted_train(*args: Any, callback: Any = None, **kwargs: Any) -> Any:
        def stop(step: int, history: Any) -> None:
            if callback is not None:
                callback(step, history)
            if step == 4:
                raise KeyboardInterrupt  # as if the machine went down after step 4

        return real_train(*args, callback=stop, **kwargs)

    args = cli_args(base, data, tmp_path / "b", "--eval-examples", "0", "--checkpoint-every", "3")
    monkeypatch.setattr(companion.train, "train", interrupted_train)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    assert load_checkpoint(tmp_path / "b")[1]["step"] == 3
    monkeypatch.setattr(companion.train, "train", real_train)
    assert main(args) == 0
    resumed, info = load_checkpoint(tmp_path / "b")
    assert info["step"] == 6
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_cli_errors(base_and_data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, data = base_and_data
    assert main(cli_args(tmp_path / "nothing", data, tmp_path / "x")) == 2
    assert "companion: error:" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "x"}]), encoding="utf-8")
    assert main(cli_args(base, bad, tmp_path / "y")) == 2
    assert "lacks ['output']" in capsys.readouterr().err
    assert main(["finetune-instructions", "--help"]) == 0
    help_text = capsys.readouterr().out
    for option in ("--out", "--model", "--checkpoint", "--data", "--prompt-style", "--mask-instructions",
                   "--steps", "--batch-size", "--lr", "--resume", "--eval-examples"):
        assert option in help_text, option


# --------------------------------------------------------------------------- #
# Issue 18
# --------------------------------------------------------------------------- #
def test_a_literal_endoftext_in_a_record_is_ordinary_text() -> None:
    """Only the template's end-of-text token may end an example; one written in the data used to become EOS."""
    record = {"instruction": "Quote the marker.", "input": "", "output": "It is <|endoftext|> here."}
    example = encode_example(record, BYTES, style="compact")
    assert example.ids.count(EOS) == 1 and example.ids[-1] == EOS
    response = example.ids[example.prompt_length : -1]
    assert bytes(response).decode() == "It is <|endoftext|> here."
    prompt_record = {"instruction": "Say <|endoftext|> please.", "input": "", "output": "ok"}
    assert EOS not in encode_example(prompt_record, BYTES, style="compact").ids[:-1]


def test_generate_response_reads_the_prompt_as_training_encoded_it(make_model: Callable[..., GPTModel],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import companion.finetune.instruction as ins

    seen: list[list[int]] = []

    def fake_generate(model: Any, idx: torch.Tensor, max_new_tokens: int, **kwargs: Any) -> torch.Tensor:
        seen.append(idx[0].tolist())
        return torch.cat([idx, torch.tensor([[EOS]])], dim=1)

    monkeypatch.setattr(ins, "generate", fake_generate)
    record = {"instruction": "Say <|endoftext|> please.", "input": ""}
    response = generate_response(make_model(BYTE_CFG), BYTES, record, style="compact", max_new_tokens=1)
    assert response.stopped and response.text == ""
    assert seen == [list(encode_example({**record, "output": ""}, BYTES, style="compact").ids[:-1])]
    assert EOS not in seen[0]


def test_instruction_data_errors_name_the_file(tmp_path: Path) -> None:
    from companion.finetune.instruction import load_records

    malformed = tmp_path / "malformed.json"
    malformed.write_text('[{"instruction": "x", "output": "y"}\n{"instruction": "z"}]', encoding="utf-8")
    with pytest.raises(ValueError, match=rf"the data file {malformed} is not valid JSON \(Expecting ',' delimiter at "
                                         r"line 2, column 1\)"):
        load_records(malformed)
    latin = tmp_path / "latin1.json"
    latin.write_bytes('[{"instruction": "café", "output": "y"}]'.encode("latin-1"))
    with pytest.raises(ValueError, match=rf"the data file {latin} is not UTF-8 text \(invalid continuation byte"):
        load_records(latin)


def test_every_record_too_long_says_so() -> None:
    """It used to say 'use drop_last=False or a smaller batch'."""
    records = [{"instruction": "x" * 60, "input": "", "output": "y"} for _ in range(20)]
    with pytest.raises(ValueError, match=r"only 0 of the 16 training records fit a context of 40 tokens \(the other 16 "
                                         r"are longer and were dropped\).*too_long='truncate'"):
        prepare_instruction_data(records, BYTES, 40, style="compact", batch_size=4)


def test_masking_a_prompt_of_no_tokens_masks_nothing() -> None:
    """Found by tests/test_properties.py: prompt_length 0 used to mask every target but the last (a slice :-1)."""
    example = InstructionExample(ids=(5, 6, 7, EOS), prompt_length=0)
    _, targets = collate_instructions([example], pad_id=EOS, mask_prompt=True)
    assert targets.tolist() == [[6, 7, EOS]]
