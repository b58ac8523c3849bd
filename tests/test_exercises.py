"""Every exercise check passes the reference, calls the stub "not attempted", and rejects wrong answers.

A check that cannot fail is a defect: each wrong answer below is a mistake a reader
plausibly makes (an off-by-one, a missing bias correction, the wrong axis), and the
test asserts that the check rejects it with a message that points at the mistake.
"""

from __future__ import annotations

import collections
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion.exercises import (
    NOT_ATTEMPTED,
    PASSED,
    appa,
    appb,
    ch01,
    ch02,
    ch03,
    ch04,
    ch05,
    ch06,
    ch07,
    ch08,
    chapter_exercises,
    check_exercise,
    get_exercise,
    run_check,
    show_solution,
)
from companion.exercises.runner import check_file

CHAPTERS = ["ch01", "ch02", "ch03", "ch04", "ch05", "ch06", "ch07", "ch08", "ch09", "appa", "appb"]
ALL = [name for chapter in CHAPTERS for name in chapter_exercises(chapter)]


def rejects(name: str, answer: Any, *phrases: str) -> None:
    """The check of ``name`` fails on ``answer`` with a message holding every phrase."""
    with pytest.raises(AssertionError) as info:
        run_check(get_exercise(name), answer)
    message = str(info.value)
    assert message.startswith(f"{name}: "), message
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in {message!r}"


def test_every_chapter_has_at_least_two_exercises() -> None:
    for chapter in CHAPTERS:
        assert len(chapter_exercises(chapter)) >= 2, chapter
    for chapter in ["ch02", "ch03", "ch04", "ch05"]:
        assert len(chapter_exercises(chapter)) >= 3, chapter


@pytest.mark.parametrize("name", ALL)
def test_the_reference_passes(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_check(get_exercise(name), get_exercise(name).reference) == PASSED
    check_exercise(name, get_exercise(name).reference)
    assert capsys.readouterr().out == f"{name}: passed\n"


def _stub(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError


class _StubTask:
    def loss(self, model: Any, batch: Any) -> Any:
        raise NotImplementedError

    def evaluate(self, model: Any, loader: Any, max_batches: Any) -> Any:
        raise NotImplementedError


@pytest.mark.parametrize("name", ALL)
def test_the_stub_is_not_attempted(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    stub = _StubTask if name == "ch06-last-position" else _stub
    assert run_check(get_exercise(name), stub) == NOT_ATTEMPTED
    check_exercise(name, stub)
    assert capsys.readouterr().out == (
        f"{name}: not attempted yet.\n  (The check, run on the reference solution instead: passed.)\n")


@pytest.mark.parametrize("name", ALL)
def test_show_solution_is_the_reference_the_check_runs(name: str) -> None:
    # The solution drop-down shows what show_solution returns: it must be the code of the
    # very function the check runs, executable on its own (given the module's imports).
    solution = show_solution(name)
    reference = get_exercise(name).reference
    module = __import__(reference.__module__, fromlist=["_"])
    namespace = {key: value for key, value in vars(module).items() if key != reference.__name__}
    exec(compile(repr(solution), f"<solution {name}>", "exec"), namespace)
    assert reference.__name__ in namespace
    assert solution._repr_markdown_() == f"```python\n{solution!r}\n```"


def test_every_solution_drop_down_shows_its_exercise() -> None:
    # A notebook's solution cell names the exercise whose check cell precedes it.
    book = Path(__file__).resolve().parents[1] / "book"
    shown = []
    for path in sorted(book.glob("*.ipynb")):
        last_check = None
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            source = "".join(cell["source"])
            assert "{literalinclude}" not in source, f"{path.name}: use show_solution()"
            if cell["cell_type"] != "code":
                continue
            if source.startswith("show_solution("):
                name = source.split('"')[1]
                assert name == last_check, f"{path.name}: {name} shown after {last_check}'s check"
                shown.append(name)
            elif "check_exercise(" in source:
                last_check = source.split("check_exercise(")[-1].split('"')[1]
    assert sorted(shown) == sorted(ALL)


def test_unknown_names_are_refused() -> None:
    with pytest.raises(KeyError, match="ch05-adamw"):
        get_exercise("ch05-adam")
    with pytest.raises(KeyError, match="no exercises for chapter"):
        chapter_exercises("ch99")


# ----------------------------------------------------------------------------- chapter 1
def test_ch01_sentence_prob_rejects_natural_log() -> None:
    def natural_log(sentence: list[str]) -> float:
        return ch01.sentence_log_prob(sentence) * math.log(2)

    rejects("ch01-sentence-prob", natural_log, "['i', 'had']", "log2")


def test_ch01_sentence_prob_rejects_zero_for_unseen_pairs() -> None:
    def unseen_is_zero(sentence: list[str]) -> float:
        value = ch01.sentence_log_prob(sentence)
        return 0.0 if value == -math.inf else value

    rejects("ch01-sentence-prob", unseen_is_zero, "-math.inf")


def test_ch01_two_words_rejects_a_bigram_model() -> None:
    def bigram(words: list[str], context: tuple[str, str]) -> dict[str, float]:
        counts = collections.Counter(b for a, b in zip(words, words[1:]) if a == context[1])
        total = sum(counts.values())
        return {w: n / total for w, n in counts.items()} if total else {}

    rejects("ch01-two-words", bigram, "'a b' is followed by c, d, c")


def test_ch01_two_words_rejects_an_off_by_one() -> None:
    def skips_one(words: list[str], context: tuple[str, str]) -> dict[str, float]:
        counts = collections.Counter(d for a, b, _, d in zip(words, words[1:], words[2:], words[3:]) if (a, b) == context)
        total = sum(counts.values())
        return {w: n / total for w, n in counts.items()} if total else {}

    rejects("ch01-two-words", skips_one, "only the words right after")


# ----------------------------------------------------------------------------- chapter 2
def test_ch02_windows_rejects_an_off_by_one() -> None:
    rejects("ch02-windows", lambda n, ctx, stride: max(0, (n - ctx) // stride + 1), "context_length + 1 tokens")


def test_ch02_alibi_rejects_signed_distances() -> None:
    def signed(n: int, slope: float) -> Tensor:
        pos = torch.arange(n)
        return -(pos.unsqueeze(1) - pos.unsqueeze(0)) * slope

    rejects("ch02-alibi", signed, "|i - j|")


def test_ch02_alibi_rejects_integers() -> None:
    def integers(n: int, slope: float) -> Tensor:
        pos = torch.arange(n)
        return -(pos.unsqueeze(1) - pos.unsqueeze(0)).abs() * int(slope)

    rejects("ch02-alibi", integers, "floats")


def test_ch02_pad_batch_rejects_unshifted_targets() -> None:
    def unshifted(sequences: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
        inputs, targets = ch02.pad_batch(sequences, pad_id)
        return inputs, torch.where(targets == -100, targets, inputs)

    rejects("ch02-pad-batch", unshifted, "shifted by one")


def test_ch02_pad_batch_rejects_padding_left_as_targets() -> None:
    def pad_targets(sequences: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
        inputs, targets = ch02.pad_batch(sequences, pad_id)
        return inputs, targets.masked_fill(targets == -100, pad_id)

    rejects("ch02-pad-batch", pad_targets, "-100 wherever the target is padding")


def test_ch02_pad_batch_rejects_masking_by_value() -> None:
    def by_value(sequences: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
        inputs, targets = ch02.pad_batch(sequences, pad_id)
        return inputs, targets.masked_fill(targets == pad_id, -100)

    rejects("ch02-pad-batch", by_value, "mask by length, not by value")


# ----------------------------------------------------------------------------- chapter 3
def test_ch03_window_rejects_an_off_by_one() -> None:
    def one_too_many(T: int, window: int) -> Tensor:
        i, j = torch.arange(T).unsqueeze(1), torch.arange(T).unsqueeze(0)
        return (j > i) | (j < i - window)

    rejects("ch03-window", one_too_many, "T=5, window=2")


def test_ch03_window_rejects_a_mask_without_the_future() -> None:
    def no_future(T: int, window: int) -> Tensor:
        i, j = torch.arange(T).unsqueeze(1), torch.arange(T).unsqueeze(0)
        return j <= i - window

    rejects("ch03-window", no_future, "T=5, window=2")


def test_ch03_padded_mask_rejects_the_plain_causal_mask() -> None:
    def causal_only(lengths: Tensor, T: int) -> Tensor:
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        return mask.expand(len(lengths), T, T)

    rejects("ch03-padded-mask", causal_only, "keys 2 and 3 (padding)")


def test_ch03_padded_mask_rejects_hiding_padded_queries_entirely() -> None:
    def hides_rows(lengths: Tensor, T: int) -> Tensor:
        mask = ch03.padded_causal_mask(lengths, T)
        padded_query = torch.arange(T).view(1, T, 1) >= lengths.view(-1, 1, 1)  # (B, T, 1)
        return mask | padded_query

    rejects("ch03-padded-mask", hides_rows, "NaN")


def test_ch03_split_heads_rejects_the_wrong_axis() -> None:
    def straight_view(x: Tensor, num_heads: int) -> Tensor:
        B, T, C = x.shape
        return x.view(B, num_heads, T, C // num_heads)

    rejects("ch03-split-heads", straight_view, "view as (B, T, H, D), then swap T and H")


# ----------------------------------------------------------------------------- chapter 4
def test_ch04_count_rejects_ignoring_tied_embeddings() -> None:
    def untied(cfg: Any) -> int:
        return ch04.gpt_parameters(cfg.replace(tie_embeddings=False))

    rejects("ch04-count", untied, "GPT-2 small", "tie_embeddings=True", "a difference of +38,597,376")


def test_ch04_count_rejects_a_forgotten_bias() -> None:
    def no_out_bias(cfg: Any) -> int:
        return ch04.gpt_parameters(cfg) - cfg.n_layers * cfg.emb_dim

    rejects("ch04-count", no_out_bias, "GPT-2 small", "a difference of -9,216")


def test_ch04_layer_norm_rejects_the_unbiased_variance() -> None:
    def unbiased(x: Tensor, scale: Tensor, shift: Tensor, eps: float = 1e-5) -> Tensor:
        return scale * (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + eps) + shift

    rejects("ch04-layer-norm", unbiased, "not C - 1")


def test_ch04_layer_norm_rejects_the_wrong_axis() -> None:
    def first_axis(x: Tensor, scale: Tensor, shift: Tensor, eps: float = 1e-5) -> Tensor:
        mean, var = x.mean(0, keepdim=True), x.var(0, keepdim=True, correction=0)
        return scale * (x - mean) / torch.sqrt(var + eps) + shift

    rejects("ch04-layer-norm", first_axis, "mean 0 over its last dimension")


def test_ch04_gelu_rejects_the_exact_erf_form_and_a_missing_cube() -> None:
    rejects("ch04-gelu", lambda x: F.gelu(x), "tanh approximation")
    rejects("ch04-gelu", lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * x)), "at x =")


# ----------------------------------------------------------------------------- chapter 5
def test_ch05_adamw_rejects_a_missing_bias_correction() -> None:
    def no_correction(w: Tensor, grad: Tensor, m: Tensor, v: Tensor, t: int, *, lr: float,
                      betas: tuple[float, float], eps: float, weight_decay: float) -> None:
        m.mul_(betas[0]).add_((1 - betas[0]) * grad)
        v.mul_(betas[1]).add_((1 - betas[1]) * grad**2)
        w -= lr * (m / (v.sqrt() + eps) + weight_decay * w)

    rejects("ch05-adamw", no_correction, "step 1 differs", "bias correction")


def test_ch05_adamw_rejects_l2_regularisation() -> None:
    def l2(w: Tensor, grad: Tensor, m: Tensor, v: Tensor, t: int, *, lr: float,
           betas: tuple[float, float], eps: float, weight_decay: float) -> None:
        ch05.adamw_step(w, grad + weight_decay * w, m, v, t, lr=lr, betas=betas, eps=eps, weight_decay=0.0)

    rejects("ch05-adamw", l2, "weight_decay=0.1", "decoupled")


def test_ch05_load_gpt2_rejects_an_untransposed_projection() -> None:
    def forgets_transpose(model: Any, state: dict[str, Tensor]) -> Any:
        ch05.load_gpt2_by_hand(model, state)
        with torch.no_grad():
            for i, block in enumerate(model.trf_blocks):
                block.att.out_proj.weight.copy_(state[f"transformer.h.{i}.attn.c_proj.weight"])
        return model

    rejects("ch05-load-gpt2", forgets_transpose, "att.out_proj.weight differs", "transpose")


def test_ch05_top_p_rejects_dropping_the_token_that_crosses_p() -> None:
    def strict(logits: Tensor, p: float) -> Tensor:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        drop_sorted = torch.softmax(sorted_logits, dim=-1).cumsum(-1) > p
        return logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))

    rejects("ch05-top-p", strict, "p=0.4", "the one that crosses p included")


def test_ch05_top_p_rejects_results_left_in_sorted_order() -> None:
    def sorted_order(logits: Tensor, p: float) -> Tensor:
        sorted_logits, _ = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        return sorted_logits.masked_fill(probs.cumsum(-1) - probs >= p, float("-inf"))

    rejects("ch05-top-p", sorted_order, "p=0.4")


def test_ch05_top_p_rejects_the_wrong_axis() -> None:
    def first_axis(logits: Tensor, p: float) -> Tensor:
        sorted_logits, order = torch.sort(logits, dim=0, descending=True)
        probs = torch.softmax(sorted_logits, dim=0)
        drop = probs.cumsum(0) - probs >= p
        return logits.masked_fill(drop.scatter(0, order, drop), float("-inf"))

    rejects("ch05-top-p", first_axis, "each row is filtered on its own")


# ----------------------------------------------------------------------------- chapter 6
class _FirstPosition(ch06.LastPositionTask):
    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        inputs, labels = batch
        return F.cross_entropy(model(inputs)[:, 0], labels)


class _MeanOfBatchAccuracies(ch06.LastPositionTask):
    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, max_batches: int | None) -> dict[str, float]:
        was_training = model.training
        model.eval()
        losses, accuracies = [], []
        for i, (inputs, labels) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            logits = model(inputs)[:, -1]
            losses.append(F.cross_entropy(logits, labels, reduction="sum").item())
            accuracies.append((logits.argmax(-1) == labels).float().mean().item())
        model.train(was_training)
        count = sum(len(y) for _, y in list(loader)[: max_batches or None])
        return {"loss": sum(losses) / count, "accuracy": sum(accuracies) / len(accuracies)}


class _NoEvalMode(ch06.LastPositionTask):
    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, max_batches: int | None) -> dict[str, float]:
        was_training = model.training
        model.train()
        total = correct = count = 0.0
        for i, (inputs, labels) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            logits = model(inputs)[:, -1]
            total += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += int((logits.argmax(-1) == labels).sum())
            count += len(labels)
        model.train(was_training)
        return {"loss": total / count, "accuracy": correct / count}


class _IgnoresMaxBatches(ch06.LastPositionTask):
    def evaluate(self, model: nn.Module, loader: Any, max_batches: int | None) -> dict[str, float]:
        return super().evaluate(model, loader, None)


class _LeavesEvalMode(ch06.LastPositionTask):
    def evaluate(self, model: nn.Module, loader: Any, max_batches: int | None) -> dict[str, float]:
        result = super().evaluate(model, loader, max_batches)
        model.eval()
        return result


@pytest.mark.parametrize(("task", "phrase"), [
    (_FirstPosition, "position T - 1"),
    (_MeanOfBatchAccuracies, "not the mean of per-batch accuracies"),
    (_NoEvalMode, "in evaluation mode"),
    (_IgnoresMaxBatches, "max_batches=1"),
    (_LeavesEvalMode, "leave the model in training mode"),
])
def test_ch06_last_position_rejects(task: type, phrase: str) -> None:
    rejects("ch06-last-position", task, phrase)


def test_ch06_threshold_rejects_an_inclusive_threshold_and_swapped_counts() -> None:
    def inclusive(prob: Tensor, labels: Tensor, threshold: float) -> tuple[int, int]:
        flagged = prob >= threshold
        return int((flagged & (labels == 1)).sum()), int((flagged & (labels == 0)).sum())

    rejects("ch06-threshold", inclusive, "threshold 0.7", "strictly")
    rejects("ch06-threshold", lambda p, y, t: ch06.caught_and_flagged(p, y, t)[::-1], "threshold 0.5")


# ----------------------------------------------------------------------------- chapter 7
def test_ch07_rouge_n_rejects_sets_instead_of_counts_and_a_wrong_tokenization() -> None:
    import re

    def grams(text: str, n: int, split: Any) -> list[tuple[str, ...]]:
        w = split(text)
        return [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]

    def as_sets(answer: str, reference: str, n: int) -> float:  # each n-gram counted once
        a = set(grams(answer, n, lambda t: re.findall(r"[a-z0-9]+", t.lower())))
        r = set(grams(reference, n, lambda t: re.findall(r"[a-z0-9]+", t.lower())))
        if not a & r:
            return 0.0
        p, q = len(a & r) / len(a), len(a & r) / len(r)
        return 2 * p * q / (p + q)

    rejects("ch07-rouge-n", as_sets, "counts once (the smaller count)")

    def split_on_spaces(answer: str, reference: str, n: int) -> float:
        a = collections.Counter(grams(answer, n, str.split))
        r = collections.Counter(grams(reference, n, str.split))
        common = sum((a & r).values())
        if not common:
            return 0.0
        p, q = common / sum(a.values()), common / sum(r.values())
        return 2 * p * q / (p + q)

    rejects("ch07-rouge-n", split_on_spaces, "case and punctuation")


def test_ch07_nearest_rejects_comparing_instructions_only_and_returning_the_prompt() -> None:
    from companion.finetune.instruction import format_prompt
    from companion.metrics import token_f1

    def instruction_only(record: dict, train: list) -> str:
        return max(train, key=lambda t: token_f1(t["instruction"], record["instruction"]).fmeasure)["output"]

    rejects("ch07-nearest", instruction_only, "the input decides")

    def the_prompt(record: dict, train: list) -> str:
        prompt = format_prompt(record, "compact")
        best = max(train, key=lambda t: token_f1(format_prompt(t, "compact"), prompt).fmeasure)
        return format_prompt(best, "compact")

    rejects("ch07-nearest", the_prompt, "should answer 'Paris.'")
    assert ch07.nearest_answer({"instruction": "Give a synonym for glad.", "input": ""},
                               [{"instruction": "Give a synonym for happy.", "input": "", "output": "Glad."}]) == "Glad."


# ----------------------------------------------------------------------------- appendix A
def test_ch09_count_rejects_forgetting_the_tied_head_and_grouped_keys() -> None:
    from companion.exercises.ch09 import count_params

    def untied_always(cfg):  # type: ignore[no-untyped-def]
        return count_params(cfg.replace(tie_embeddings=False))

    def keys_as_wide_as_queries(cfg):  # type: ignore[no-untyped-def]
        return count_params(cfg.replace(n_kv_heads=None))

    rejects("ch09-count", untied_always, "a tied head", "counted once")
    rejects("ch09-count", keys_as_wide_as_queries, "n_kv_heads=2", "+2,048")


def test_ch09_rotate_rejects_absolute_angles_and_interleaved_pairs() -> None:
    import torch

    from companion.exercises.ch09 import rotate

    def interleaved(x: torch.Tensor, position: int, theta: float = 10_000.0) -> torch.Tensor:
        D = x.shape[-1]
        angle = position * theta ** (-torch.arange(D // 2, dtype=torch.float32) * 2 / D)
        even, odd = x[0::2], x[1::2]
        out = torch.empty_like(x)
        out[0::2] = even * torch.cos(angle) - odd * torch.sin(angle)
        out[1::2] = odd * torch.cos(angle) + even * torch.sin(angle)
        return out

    rejects("ch09-rotate", interleaved, "pair i is channels i and i + D/2")
    rejects("ch09-rotate", lambda x, position, theta=10_000.0: x * (1 + position), "keeps the vector's length")
    rejects("ch09-rotate", lambda x, position, theta=10_000.0: rotate(x, position + 1, theta),
            "position 0 must leave the vector unchanged")


def test_ch09_repeat_kv_rejects_tiling_instead_of_grouping() -> None:
    rejects("ch09-repeat-kv", lambda k, n_heads: k.repeat(1, n_heads // k.shape[1], 1, 1),
            "query head 1 must see key head 0")


def test_appa_broadcast_rejects_lining_up_from_the_left() -> None:
    def from_the_left(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
        n = max(len(a), len(b))
        return appa.broadcast_shape(tuple(a) + (1,) * (n - len(a)), tuple(b) + (1,) * (n - len(b)))

    rejects("appa-broadcast", from_the_left, "line the shapes up from the right")


def test_appa_broadcast_rejects_never_refusing() -> None:
    def never_refuses(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
        n = max(len(a), len(b))
        a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
        return tuple(max(x, y) for x, y in zip(a, b))

    rejects("appa-broadcast", never_refuses, "expected a ValueError")


def test_appa_accumulate_rejects_dividing_by_the_number_of_micro_batches() -> None:
    def by_count(model: nn.Module, xs: Tensor, ys: Tensor, micro: int) -> None:
        model.zero_grad()
        chunks = range(0, len(xs), micro)
        for start in chunks:
            (appa.batch_loss(model, xs[start:start + micro], ys[start:start + micro]) / len(chunks)).backward()

    rejects("appa-accumulate", by_count, "[3, 3, 2]", "share of the rows")


def test_appa_accumulate_rejects_stale_gradients() -> None:
    def no_zeroing(model: nn.Module, xs: Tensor, ys: Tensor, micro: int) -> None:
        for start in range(0, len(xs), micro):
            rows = slice(start, start + micro)
            (appa.batch_loss(model, xs[rows], ys[rows]) * len(xs[rows]) / len(xs)).backward()

    rejects("appa-accumulate", no_zeroing, "start from zero gradients")


# ----------------------------------------------------------------------------- appendix B
def test_appb_zero_start_rejects_swapped_gradients() -> None:
    rejects("appb-zero-start", lambda layer, x: appb.first_gradients(layer, x)[::-1], "gradient of A")


def test_appb_zero_start_rejects_accumulated_gradients() -> None:
    def no_reset(layer: Any, x: Tensor) -> tuple[Tensor, Tensor]:
        layer(x).square().mean().backward()
        return layer.lora_A.grad.clone(), layer.lora_B.grad.clone()

    rejects("appb-zero-start", no_reset, "a second call (reset the gradients")


def test_appb_adapter_rejects_the_whole_state_dict() -> None:
    rejects("appb-adapter", lambda model: dict(model.state_dict()), "frozen tensors")


def test_appb_adapter_rejects_live_parameters() -> None:
    def live(model: nn.Module) -> dict[str, Tensor]:
        return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}

    rejects("appb-adapter", live, "not copies")


# ----------------------------------------------------------------------------- the command line
ANSWERS = '''
import torch

def adamw_step(w, grad, m, v, t, *, lr, betas, eps, weight_decay):  # no bias correction
    m.mul_(betas[0]).add_((1 - betas[0]) * grad)
    v.mul_(betas[1]).add_((1 - betas[1]) * grad**2)
    w -= lr * (m / (v.sqrt() + eps) + weight_decay * w)

def load_gpt2_by_hand(model, hf_state):
    raise NotImplementedError

from companion.exercises.ch05 import top_p_filter
'''


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_check_command_on_a_python_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from companion.cli import main

    answers = tmp_path / "answers.py"
    answers.write_text(ANSWERS, encoding="utf-8")
    assert main(["check", "ch05", str(answers)]) == 1
    lines = _lines(capsys)
    assert len(lines) == 3
    assert lines[0].startswith("ch05-adamw: failed — lr=0.001") and "bias correction" in lines[0]
    assert lines[1] == "ch05-load-gpt2: not attempted"
    assert lines[2] == "ch05-top-p: passed"


def test_check_command_on_a_notebook(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from companion.cli import main

    cells = [
        "from companion.exercises import check_exercise",
        "def sentence_log_prob(sentence):\n    raise NotImplementedError",
        'check_exercise("ch01-sentence-prob", sentence_log_prob)',
        "def next_word_probabilities(words, context):\n    return {}",
        'check_exercise("ch01-two-words", next_word_probabilities)',  # raises: the run goes on
        "x = 1",
    ]
    notebook = {"cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "source": c, "outputs": [],
                           "execution_count": None} for i, c in enumerate(cells)],
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "mine.ipynb"
    path.write_text(json.dumps(notebook), encoding="utf-8")
    assert main(["check", "ch01", str(path)]) == 1
    lines = _lines(capsys)
    assert lines[0] == "ch01-sentence-prob: not attempted"
    assert lines[1].startswith("ch01-two-words: failed — in 'a b c a b d a b c x b c'")


def test_check_command_refuses_unknown_chapters_and_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from companion.cli import main

    assert main(["check", "ch99", str(tmp_path / "x.py")]) == 2
    assert "no exercises for chapter 'ch99'" in capsys.readouterr().err
    assert main(["check", "ch05", str(tmp_path / "missing.py")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_check_file_reports_a_file_that_raises(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('oops')\n", encoding="utf-8")
    results = check_file("appa", broken)
    assert [r.status for r in results] == ["failed", "failed"]
    assert "RuntimeError: oops" in results[0].reason


def test_results_are_one_line_each() -> None:
    from companion.exercises.runner import Result

    assert Result("x", "failed", "a\n  b\n").line() == "x: failed — a b"
    assert Result("x", "passed").line() == "x: passed"



# ----------------------------------------------------------------------------- the notebooks
BOOK = Path(__file__).resolve().parents[1] / "book"
NOTEBOOKS = {"ch01": "ch01_understanding_llms", "ch02": "ch02_working_with_text", "ch03": "ch03_attention",
             "ch04": "ch04_gpt_model", "ch05": "ch05_pretraining", "ch06": "ch06_finetune_classification",
             "ch07": "ch07_finetune_instructions", "ch08": "ch08_alignment",
             "ch09": "ch09_modern_architectures",
             "appa": "appendix_a_pytorch", "appb": "appendix_lora"}


def _defined_names(source: str) -> set[str]:
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:  # a cell with IPython magic (%pip) defines nothing we look for
        return set()
    return {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_each_notebook_checks_every_exercise_on_an_untouched_stub(chapter: str) -> None:
    import re

    notebook = json.loads((BOOK / f"{NOTEBOOKS[chapter]}.ipynb").read_text(encoding="utf-8"))
    code = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    checked = [m.groups() for src in code for m in re.finditer(r'check_exercise\("([\w-]+)", (\w+)\)', src)]
    exercises = chapter_exercises(chapter)
    assert [name for name, _ in checked] == list(exercises), "one check cell per exercise, in the book's order"
    for name, answer in checked:
        assert answer == exercises[name].answer
        # the last definition of the answer before its check is the stub
        defining = [src for src in code if answer in _defined_names(src)]
        assert defining, f"{name}: no cell defines {answer}"
        assert "raise NotImplementedError" in defining[-1], f"{name}: the last {answer} is not the stub"
        for src in code:  # no cell imports the reference under the reader's name
            assert f"import {answer}\n" not in src and f"import {answer})" not in src, src


def test_ch08_dpo_loss_rejects_the_usual_mistakes() -> None:
    def naive(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, beta: float) -> Tensor:
        return -torch.log(torch.sigmoid(beta * ((pc - rc) - (pr - rr)))).mean()

    rejects("ch08-dpo-loss", naive, "F.logsigmoid")
    rejects("ch08-dpo-loss", lambda pc, pr, rc, rr, beta: ch08.dpo_loss(pr, pc, rr, rc, beta), "rejected")
    rejects("ch08-dpo-loss", lambda pc, pr, rc, rr, beta: ch08.dpo_loss(pc, pr, rc, rr, 1.0), "beta is missing")
    rejects("ch08-dpo-loss", lambda pc, pr, rc, rr, beta: -F.logsigmoid(beta * (pc - pr)).mean(),
            "reference is missing")


def test_ch08_advantages_rejects_batch_normalisation_and_missing_eps() -> None:
    rejects("ch08-advantages", lambda r: (r - r.mean()) / (r.std(correction=0) + 1e-4), "whole batch")
    rejects("ch08-advantages", lambda r: r - r.mean(dim=1, keepdim=True), "standard deviation")
    rejects("ch08-advantages",
            lambda r: (r - r.mean(dim=1, keepdim=True)) / r.std(dim=1, correction=0, keepdim=True), "NaN")


def test_ch08_kl_rejects_the_swapped_sign_and_the_plain_log_ratio() -> None:
    rejects("ch08-kl", lambda logp, ref: ch08.kl_estimate(ref, logp), "wrong sign")
    rejects("ch08-kl", lambda logp, ref: logp - ref, "never negative")


@pytest.mark.parametrize("notebook", sorted(p.name for p in BOOK.glob("*.ipynb")))
def test_no_chapter_reads_a_file_outside_book(notebook: str) -> None:
    # On Colab, and in CI's second run, a chapter runs from a copy of book/ with companion
    # installed: a path into the repository (../bench, ../companion) is not there.
    cells = json.loads((BOOK / notebook).read_text(encoding="utf-8"))["cells"]
    for cell in cells:
        source = "".join(cell["source"])
        assert '"../' not in source and "'../" not in source, f"{notebook}: {source[:200]}"
