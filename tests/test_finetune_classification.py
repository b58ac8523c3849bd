"""Tests for companion.finetune.classification: the spam data, padding, the head, the task,
the metrics, classify, resuming a classification run, and the finetune-classifier command."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from companion.checkpoint import save_checkpoint
from companion.cli import main
from companion.config import GPTConfig
from companion.finetune.classification import (
    ClassificationDataset,
    ClassificationTask,
    Message,
    accuracy,
    balance_classes,
    class_probabilities,
    classification_logits,
    classify,
    confusion_matrix,
    deduplicate,
    last_token_positions,
    load_classifier,
    make_loaders,
    parse_sms_collection,
    predict,
    prepare_classifier,
    spam_splits,
    split_messages,
)
from companion.history import TrainHistory
from companion.model import GPTModel
from companion.tokenizers import BPETokenizer
from companion.train import train

CFG = GPTConfig(vocab_size=40, context_length=12, emb_dim=16, n_heads=2, n_layers=2, tie_embeddings=True)
PAD = 39


class LetterTokenizer:
    """a..z -> 1..26, space -> 27; <|endoftext|> is 39. Simple enough to know every id by heart."""

    eot_token = PAD

    def encode_ordinary(self, text: str) -> list[int]:
        assert set(text) <= set("abcdefghijklmnopqrstuvwxyz "), text
        return [27 if c == " " else ord(c) - 96 for c in text]


def tiny_classifier(seed: int = 0, train_blocks: int | None = None, drop_rate: float = 0.0) -> GPTModel:
    torch.manual_seed(seed)
    return prepare_classifier(GPTModel(CFG.replace(drop_rate=drop_rate)), 2, train_blocks=train_blocks)


def messages(n_ham: int, n_spam: int) -> list[Message]:
    def tag(i: int) -> str:  # a different short word for every i
        return "abcdefghij"[i % 10] * (1 + i // 10)

    ham = [Message(f"ham {tag(i)}", 0) for i in range(n_ham)]
    spam = [Message(f"spam text {tag(i)}", 1) for i in range(n_spam)]
    return [m for pair in zip(ham, spam, strict=False) for m in pair] + ham[n_spam:] + spam[n_ham:]


# --------------------------------------------------------------------------- #
# The data
# --------------------------------------------------------------------------- #
def test_the_collection_format_is_parsed_and_bad_lines_are_named() -> None:
    text = "ham\tSee you at 5\n\nspam\tWIN a prize!\tnow\n"
    assert parse_sms_collection(text) == [Message("See you at 5", 0), Message("WIN a prize!\tnow", 1)]
    with pytest.raises(ValueError, match="line 2 has no tab"):
        parse_sms_collection("ham\tok\nno tab here")
    with pytest.raises(ValueError, match="line 1 has the label 'eggs'"):
        parse_sms_collection("eggs\tok")
    with pytest.raises(ValueError, match="line 1 has an empty message"):
        parse_sms_collection("spam\t  ")


def test_deduplicate_keeps_the_first_of_each_text() -> None:
    data = [Message("a", 0), Message("b", 1), Message("a", 1), Message("c", 0), Message("b", 1)]
    assert deduplicate(data) == [Message("a", 0), Message("b", 1), Message("c", 0)]


def test_balancing_keeps_the_rarest_class_count_in_order_and_depends_on_the_seed() -> None:
    data = messages(30, 8)
    kept = balance_classes(data, seed=1)
    assert sum(m.label == 0 for m in kept) == sum(m.label == 1 for m in kept) == 8
    assert [m for m in data if m.label == 1] == [m for m in kept if m.label == 1]  # the rare class is whole
    assert kept == [m for m in data if m in kept]  # the input's order
    assert balance_classes(data, seed=1) == kept
    assert balance_classes(data, seed=2) != kept
    with pytest.raises(ValueError, match="no messages"):
        balance_classes([], seed=0)


def test_splits_are_stratified_disjoint_complete_and_seeded() -> None:
    data = messages(50, 50)
    splits = split_messages(data, (0.7, 0.1, 0.2), seed=3)
    for part, size in zip(splits, (35, 5, 10), strict=True):  # per class: round(0.7 * 50), round(0.1 * 50), rest
        assert sum(m.label == 0 for m in part) == sum(m.label == 1 for m in part) == size
    texts = [m.text for part in splits for m in part]
    assert sorted(texts) == sorted(m.text for m in data)  # every message once
    assert split_messages(data, (0.7, 0.1, 0.2), seed=3) == splits
    assert split_messages(data, (0.7, 0.1, 0.2), seed=4).test != splits.test
    assert [m.label for m in splits.train[:10]] != sorted(m.label for m in splits.train[:10])  # mixed classes
    with pytest.raises(ValueError, match="add up to 1"):
        split_messages(data, (0.7, 0.2, 0.2), seed=0)
    with pytest.raises(ValueError, match="too few"):
        split_messages(messages(4, 4), (0.7, 0.1, 0.2), seed=0)


def test_spam_splits_reads_a_file_in_the_collection_format(tmp_path: Path) -> None:
    path = tmp_path / "sms.tsv"
    lines = [f"ham\tcall me later {i}" for i in range(40)] + [f"spam\tfree prize {i}" for i in range(12)]
    path.write_text("\n".join([*lines, "ham\tcall me later 3"]), encoding="utf-8")  # one duplicate
    splits = spam_splits(seed=5, path=path)
    everything = [m for part in splits for m in part]
    assert len(everything) == 24 and sum(m.label for m in everything) == 12
    assert len({m.text for m in everything}) == 24


# --------------------------------------------------------------------------- #
# Padding and truncation
# --------------------------------------------------------------------------- #
def test_the_dataset_pads_with_endoftext_and_truncates_from_the_end() -> None:
    data = [Message("abc", 1), Message("a", 0), Message("abcdef", 0)]
    ds = ClassificationDataset(data, LetterTokenizer(), max_length=4)
    assert ds.pad_id == PAD and ds.max_length == 4 and len(ds) == 3 and ds.n_truncated == 1
    assert ds.inputs.tolist() == [[1, 2, 3, PAD], [1, PAD, PAD, PAD], [1, 2, 3, 4]]
    assert ds.lengths.tolist() == [3, 1, 4]
    ids, label = ds[0]
    assert ids.tolist() == [1, 2, 3, PAD] and label.item() == 1 and label.dim() == 0

    longest = ClassificationDataset(data, LetterTokenizer())
    assert longest.max_length == 6 and longest.n_truncated == 0
    assert longest.inputs[1].tolist() == [1] + [PAD] * 5
    assert ClassificationDataset(data, LetterTokenizer(), pad_id=0).inputs[1].tolist() == [1, 0, 0, 0, 0, 0]


def test_the_dataset_refuses_what_would_make_padding_ambiguous() -> None:
    with pytest.raises(ValueError, match="contains the padding id 3"):
        ClassificationDataset([Message("abc", 0)], LetterTokenizer(), pad_id=3)
    with pytest.raises(ValueError, match="encodes to no tokens"):
        ClassificationDataset([Message("", 0)], LetterTokenizer())
    with pytest.raises(ValueError, match="max_length"):
        ClassificationDataset([Message("ab", 0)], LetterTokenizer(), max_length=0)


def test_endoftext_inside_a_message_is_ordinary_text() -> None:
    bpe = BPETokenizer.train("hello there, hello again " * 20, 270)
    ds = ClassificationDataset([Message("hi <|endoftext|>", 1)], bpe)
    assert bpe.eot_token not in ds.inputs[0, : ds.lengths[0]].tolist()


def test_loaders_share_one_length_capped_by_the_context() -> None:
    splits = split_messages(messages(20, 20), seed=0)
    train_loader, val_loader, test_loader = make_loaders(splits, LetterTokenizer(), batch_size=4, context_length=5)
    assert {loader.dataset.max_length for loader in (train_loader, val_loader, test_loader)} == {5}
    assert len(train_loader) == 28 // 4 and next(iter(train_loader))[0].shape == (4, 5)
    with pytest.raises(ValueError, match="exceeds the model's context_length"):
        make_loaders(splits, LetterTokenizer(), max_length=13, context_length=12)


# --------------------------------------------------------------------------- #
# The head and the task
# --------------------------------------------------------------------------- #
def test_the_new_head_has_the_class_count_and_only_chosen_layers_train() -> None:
    model = tiny_classifier(train_blocks=1)
    assert model.out_head.weight.shape == (2, 16) and model.out_head.bias is not None
    assert model.out_head.weight is not model.tok_emb.weight  # the tie is gone; the embedding stays
    assert model(torch.tensor([[1, 2, 3]])).shape == (1, 3, 2)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters()
                         if n.startswith(("out_head.", "final_norm.", "trf_blocks.1."))}
    head_only = {n for n, p in tiny_classifier(train_blocks=0).named_parameters() if p.requires_grad}
    assert head_only == {"out_head.weight", "out_head.bias", "final_norm.scale", "final_norm.shift"}
    assert all(p.requires_grad for p in tiny_classifier(train_blocks=None).parameters())
    with pytest.raises(ValueError, match="between 0 and 2"):
        prepare_classifier(GPTModel(CFG), 2, train_blocks=3)
    with pytest.raises(ValueError, match="num_classes"):
        prepare_classifier(GPTModel(CFG), 1)
    with pytest.raises(TypeError, match="GPTModel"):
        prepare_classifier(torch.nn.Linear(2, 2), 2)  # type: ignore[arg-type]


def test_padding_after_a_message_does_not_change_its_logits() -> None:
    model = tiny_classifier().eval()
    alone = model(torch.tensor([[5, 6, 7]]))[0, -1]
    padded = torch.tensor([[5, 6, 7, PAD, PAD, PAD], [5, 6, 7, 8, 9, PAD]])
    assert last_token_positions(padded, PAD).tolist() == [2, 4]
    torch.testing.assert_close(classification_logits(model, padded, PAD)[0], alone)
    with pytest.raises(ValueError, match="only padding"):
        last_token_positions(torch.tensor([[PAD, PAD]]), PAD)


def test_the_task_loss_equals_a_hand_computation() -> None:
    model = tiny_classifier(seed=3).eval()
    rows = [[4, 5, 6, PAD], [7, PAD, PAD, PAD], [1, 2, 3, 4]]
    labels = [1, 0, 1]
    hand = 0.0
    for row, label in zip(rows, labels, strict=True):  # each message alone, no padding
        real = [t for t in row if t != PAD]
        logits = model(torch.tensor([real]))[0, -1]
        hand -= (logits[label] - torch.logsumexp(logits, dim=0)).item() / len(rows)
    task = ClassificationTask(PAD)
    batch = (torch.tensor(rows), torch.tensor(labels))
    assert task.loss(model, batch).item() == pytest.approx(hand, rel=1e-5)

    loader = DataLoader(list(zip(batch[0], batch[1], strict=True)), batch_size=2)
    result = task.evaluate(model, loader, None)
    assert result["loss"] == pytest.approx(hand, rel=1e-5)
    predicted, true = predict(model, loader, pad_id=PAD)
    assert true.tolist() == labels
    assert result["accuracy"] == pytest.approx(sum(p == t for p, t in zip(predicted.tolist(), labels, strict=True)) / 3)
    assert task.evaluate(model, loader, 1)["loss"] == pytest.approx(
        F.cross_entropy(classification_logits(model, batch[0][:2], PAD), batch[1][:2]).item(), rel=1e-5)


# --------------------------------------------------------------------------- #
# Metrics and classify
# --------------------------------------------------------------------------- #
def test_accuracy_and_confusion_matrix_on_known_answers() -> None:
    predictions = torch.tensor([0, 1, 1, 0, 1, 1])
    labels = torch.tensor([0, 1, 0, 0, 1, 0])
    assert accuracy(predictions, labels) == pytest.approx(4 / 6)
    # rows: true ham (3 right, 2 called spam), true spam (2 right)
    assert confusion_matrix(predictions, labels).tolist() == [[2, 2], [0, 2]]
    assert confusion_matrix(torch.tensor([2]), torch.tensor([0]), 3).tolist() == [[0, 0, 1], [0, 0, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="same length"):
        accuracy(predictions, labels[:3])
    with pytest.raises(ValueError, match="class ids"):
        confusion_matrix(torch.tensor([2]), torch.tensor([0]), 2)


def test_classify_gives_the_label_of_the_last_token_logits() -> None:
    model = tiny_classifier(seed=1)
    tokenizer = LetterTokenizer()
    for text in ["abc", "hello", "z"]:
        probabilities = class_probabilities(text, model, tokenizer)
        logits = model.eval()(torch.tensor([tokenizer.encode_ordinary(text)]))[0, -1]
        torch.testing.assert_close(probabilities, torch.softmax(logits, dim=-1))
        assert classify(text, model, tokenizer) == ("ham", "spam")[int(logits.argmax())]
        assert classify(text, model, tokenizer, labels=["no", "yes"]) in {"no", "yes"}
    long_text = "abcdefghijklmnopqrstuvwxyz"  # 26 tokens: cut to the first 5, or to the context of 12
    cut = torch.tensor([tokenizer.encode_ordinary(long_text)[:5]])
    torch.testing.assert_close(class_probabilities(long_text, model, tokenizer, max_length=5),
                               torch.softmax(model(cut)[0, -1], dim=-1))
    assert class_probabilities(long_text, model, tokenizer).shape == (2,)
    with pytest.raises(ValueError, match="empty"):
        classify("", model, tokenizer)
    with pytest.raises(ValueError, match="3 labels"):
        classify("abc", model, tokenizer, labels=["a", "b", "c"])


# --------------------------------------------------------------------------- #
# Resuming a classification run
# --------------------------------------------------------------------------- #
class Crash(Exception):
    pass


def classification_run(folder: Path | None, *, crash_at: int | None = None, seed: int = 0):
    splits = split_messages(messages(24, 24), seed=0)
    train_loader, val_loader, _ = make_loaders(splits, LetterTokenizer(), batch_size=4, context_length=12)
    model = tiny_classifier(seed=seed, train_blocks=1, drop_rate=0.2)

    def callback(step: int, history: TrainHistory) -> None:
        if step == crash_at:
            raise Crash

    history = train(model, train_loader, val_loader, task=ClassificationTask(PAD), max_steps=10, eval_every=3,
                    eval_train_batches=2, lr=3e-3, min_lr=3e-4, warmup_steps=2, progress=False, seed=9,
                    checkpoint_dir=folder, checkpoint_every=4 if folder else None, callback=callback,
                    checkpoint_extra={"classifier": {"num_classes": 2}})
    return model, history


def test_a_resumed_classification_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    model_a, history_a = classification_run(None)
    assert set(history_a.metrics) == {"val_accuracy", "train_accuracy"} and len(history_a.steps) == 4
    with pytest.raises(Crash):
        classification_run(tmp_path / "run", crash_at=6)  # the last checkpoint is from step 4
    model_b, history_b = classification_run(tmp_path / "run", seed=7)  # weights must come from the checkpoint
    assert history_b.batch_losses == history_a.batch_losses
    assert history_b.val_loss == history_a.val_loss and history_b.metrics == history_a.metrics
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values(), strict=True):
        assert torch.equal(a, b), name

    loaded, info = load_classifier(tmp_path / "run")  # a replaced head round-trips
    assert info["step"] == 10 and not loaded.training
    ids = torch.tensor([[3, 4, 5, 6]])
    torch.testing.assert_close(loaded(ids), model_a.eval()(ids), rtol=0, atol=0)


def test_load_classifier_refuses_a_plain_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "plain", GPTModel(CFG))
    with pytest.raises(ValueError, match="not a classifier"):
        load_classifier(tmp_path / "plain")


# --------------------------------------------------------------------------- #
# The command line
# --------------------------------------------------------------------------- #
HAM = ["see you at the station at six", "can you call me when you get home", "ok thanks, dinner was great",
       "running late, sorry, be there soon", "happy birthday! hope you have a lovely day"]
SPAM = ["WINNER! claim your free prize now, call 09061234567", "URGENT: your mobile won 2000 cash, txt WIN to 80086",
        "FREE entry to win a holiday, reply YES now", "you have won a free ringtone, text TONE to 85555",
        "claim your cash prize today, call 08001234567 now"]


@pytest.fixture
def tiny_base(tmp_path: Path) -> tuple[Path, Path]:
    """A small pretrained-looking base checkpoint (with its BPE) and a data file."""
    lines = [f"ham\t{text} {i}" for i in range(6) for text in HAM] + [f"spam\t{text} {i}" for i in range(3)
                                                                      for text in SPAM]
    data = tmp_path / "sms.tsv"
    data.write_text("\n".join(lines), encoding="utf-8")
    bpe = BPETokenizer.train(" ".join(HAM + SPAM) * 3, 300)
    torch.manual_seed(0)
    base = GPTModel(GPTConfig(vocab_size=300, context_length=24, emb_dim=16, n_heads=2, n_layers=2))
    save_checkpoint(tmp_path / "base", base, tokenizer=bpe)
    return tmp_path / "base", data


def cli_args(base: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["finetune-classifier", "--checkpoint", str(base), "--data", str(data), "--out", str(out), "--steps", "6",
            "--batch-size", "4", "--eval-every", "3", "--lr", "3e-3", "--train-blocks", "1", *extra]


def test_the_command_fine_tunes_resumes_and_refuses_another_run(tiny_base, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    base, data = tiny_base
    out = tmp_path / "clf"
    assert main(cli_args(base, data, out, "--quiet")) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and str(out) in printed
    model, info = load_classifier(out)
    assert info["step"] == 6 and info["extra"]["classifier"]["train_blocks"] == 1
    assert info["tokenizer"] is not None and model.out_head.out_features == 2

    assert main(cli_args(base, data, out)) == 0  # resumes a finished run: no step taken, same weights
    assert "resumed from step 6" in capsys.readouterr().out
    again, _ = load_classifier(out)
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    assert main(cli_args(base, data, out, "--lr", "1e-3")) == 2  # other settings: refused
    assert "different run" in capsys.readouterr().err
    assert main(cli_args(base, data, out, "--lr", "1e-3", "--no-resume", "--steps", "3", "--quiet")) == 0
    assert load_classifier(out)[1]["step"] == 3


def test_the_command_names_a_bad_base(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["finetune-classifier", "--model", "nothing", "--out", str(tmp_path / "o")]) == 2
    assert "neither a course model" in capsys.readouterr().err
    assert main(["finetune-classifier", "--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_the_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["finetune-classifier", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ["--out", "--model", "--checkpoint", "--data", "--train-blocks", "--epochs", "--steps", "--batch-size", "--lr",
                   "--min-lr", "--max-length", "--seed", "--eval-every", "--checkpoint-every", "--resume",
                   "--no-resume", "--quiet"]:
        assert option in out, option


def test_base_models_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import companion.weights
    from companion.runs.base import load_base_model

    tiny = GPTModel(CFG)
    monkeypatch.setattr(companion.weights, "load_pretrained_gpt2", lambda name, **kw: tiny)  # no download
    model, tokenizer = load_base_model("gpt2-small")
    assert model is tiny and tokenizer.eot_token == 50256  # GPT-2's own tokenizer
    with pytest.raises(ValueError, match="gpt2-small"):
        load_base_model("gpt2-small-book")  # a preset without published weights


# --------------------------------------------------------------------------- #
# Issue 18: data a classifier cannot learn from, and clear errors
# --------------------------------------------------------------------------- #
def test_a_data_file_with_one_class_is_refused_with_the_counts(tiny_base, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """It used to fine-tune and report 'training 1.000, validation 1.000, test accuracy 1.000'."""
    base, _ = tiny_base
    ham_only = tmp_path / "ham_only.tsv"
    ham_only.write_text("\n".join(f"ham\t{text} {i}" for i in range(6) for text in HAM), encoding="utf-8")
    with pytest.raises(ValueError, match=rf"the data file {ham_only} has no spam message \(ham 30, spam 0 after"):
        spam_splits(path=ham_only)
    assert main(cli_args(base, ham_only, tmp_path / "clf", "--quiet")) == 2
    err = capsys.readouterr().err
    assert "has no spam message (ham 30, spam 0" in err and "accuracy" not in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"only one class \(class 0: 30\)"):
        split_messages([m for m in messages(30, 0)], (0.7, 0.1, 0.2), seed=0)


def test_class_probabilities_refuses_a_max_length_that_is_not_positive() -> None:
    """max_length=0 used to mean the whole context and a negative one dropped the last tokens."""
    model = tiny_classifier().eval()
    for bad in (0, -1, -3, 2.5):
        with pytest.raises(ValueError, match=rf"max_length={bad!r} must be a positive number of tokens"):
            class_probabilities("abcdef", model, LetterTokenizer(), max_length=bad)
        with pytest.raises(ValueError, match="must be a positive number of tokens"):
            classify("abcdef", model, LetterTokenizer(), max_length=bad)


def test_data_file_errors_name_the_file(tmp_path: Path) -> None:
    latin = tmp_path / "latin1.tsv"
    latin.write_bytes("ham\tcafé\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"the data file {latin} is not UTF-8 text .* at byte 7"):
        spam_splits(path=latin)
    broken = tmp_path / "broken.tsv"
    broken.write_text("ham\tfine\nspam but no tab\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"the data file {broken}: line 2 has no tab"):
        spam_splits(path=broken)


def test_a_label_outside_the_head_is_named() -> None:
    """Label 5 with a 2-class head used to end in a bare IndexError from cross_entropy."""
    data = ClassificationDataset([Message("abc", 0), Message("ab", 5)], LetterTokenizer(), max_length=4)
    batch = (data.inputs, data.labels)
    task = ClassificationTask(PAD)
    with pytest.raises(ValueError, match=r"holds the label 5, but the classifier has 2 classes \(labels 0 to 1\)"):
        task.loss(tiny_classifier(), batch)
    with pytest.raises(ValueError, match=r"holds the label 5"):
        task.evaluate(tiny_classifier(), [batch], None)
    with pytest.raises(ValueError, match=r"message 1 has the label -1; a label is a class id"):
        ClassificationDataset([Message("abc", 0), Message("ab", -1)], LetterTokenizer())


def test_a_batch_larger_than_the_training_set_is_named() -> None:
    """It used to fail with 'eval_every=0 must be a positive integer'."""
    splits = split_messages(messages(20, 20), (0.7, 0.1, 0.2), seed=0)
    with pytest.raises(ValueError, match=r"batch_size=100000 is more than the 28 training messages.*at most 28"):
        make_loaders(splits, LetterTokenizer(), batch_size=100_000)


def test_num_classes_of_the_wrong_type_is_named(tmp_path: Path) -> None:
    """A string num_classes used to be reported as 'no classifier settings'."""
    model = tiny_classifier()
    save_checkpoint(tmp_path / "clf", model, extra={"classifier": {"num_classes": "2"}})
    with pytest.raises(ValueError, match=r"its settings give num_classes='2', which must be a whole number >= 2"):
        load_classifier(tmp_path / "clf")
