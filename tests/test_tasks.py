"""The checkable instruction families of chapter 7: generator, held-out splits, checker, baselines."""

from __future__ import annotations

import pytest

from companion.finetune.tasks import (
    FAMILIES,
    LEADS,
    TaskItems,
    check_answer,
    copy_baseline,
    evaluate_tasks,
    expected_answer,
    held_out_numbers,
    items_of,
    lookup_baseline,
    make_tasks,
    per_family,
    strip_lead,
)
from companion.runs.task_model import RECIPES, TaskRecipe
from companion.train import TrainOptions

WORDS = [f"{chr(97 + i)}{chr(97 + j)}ish" for i in range(8) for j in range(8)]
TEXT = " ".join(WORDS * 10)
"""A text of 64 distinct made-up words, each occurring ten times."""


@pytest.fixture(scope="module")
def items() -> TaskItems:
    return TaskItems.from_text(TEXT, min_count=5)


@pytest.mark.parametrize(("family", "text", "answer"), [
    ("first", "7 3 9", "The first number is 7."),
    ("last", "7 3 9", "The last number is 9."),
    ("repeat", "42", "Twice: 42 42"),
    ("reverse", "7 3 9 0", "Reversed: 0 9 3 7"),
    ("count", "king horse crown", "There are 3 words."),
    ("larger", "37 52", "The larger number is 52."),
    ("larger", "91 19", "The larger number is 91."),
    ("smaller", "37 52", "The smaller number is 37."),
    ("sort", "7 2 9 0", "Sorted: 0 2 7 9"),
])
def test_each_family_answers_by_hand_examples(family: str, text: str, answer: str) -> None:
    assert FAMILIES[family].answer(text.split()) == answer


def test_items_split_the_words_without_overlap(items: TaskItems) -> None:
    assert not set(items.train_words) & set(items.test_words)
    n = len(items.train_words) + len(items.test_words)
    assert n == 64 and len(items.test_words) == round(64 * 0.2)
    assert TaskItems.from_text(TEXT, min_count=5) == items  # seeded


def test_items_need_enough_words() -> None:
    with pytest.raises(ValueError, match="at least 8 training and 8 held-out words"):
        TaskItems.from_text("king horse crown " * 20)
    with pytest.raises(ValueError, match="test_fraction"):
        TaskItems.from_text(TEXT, test_fraction=1.5)


def test_training_records_use_training_words_and_phrasings(items: TaskItems) -> None:
    records = make_tasks(items, 30, seed=3)
    assert len(records) == 30 * len(FAMILIES)
    assert {r["family"] for r in records} == set(FAMILIES)
    train_words = set(items.train_words)
    for r in records:
        family = FAMILIES[r["family"]]
        phrasing, _, listed = r["instruction"].rpartition(": ")
        assert strip_lead(phrasing) in family.phrasings and r["input"] == ""
        assert listed.split() == items_of(r) and r["output"] == family.answer(listed.split())
        if family.kind == "words":
            assert set(listed.split()) <= train_words
        else:
            assert not held_out_numbers([int(x) for x in listed.split()])
            assert {"digits": 2, "number": 1, "pair": 2}[family.kind] <= len(listed.split()) <= 5


def test_test_records_use_only_held_out_words_numbers_and_phrasings(items: TaskItems) -> None:
    records = make_tasks(items, 30, split="test", seed=4)
    test_words = set(items.test_words)
    for r in records:
        family = FAMILIES[r["family"]]
        phrasing, _, listed = r["instruction"].rpartition(": ")
        assert phrasing in family.held_out_phrasings and phrasing not in family.phrasings
        if family.kind == "words":
            assert set(listed.split()) <= test_words
        else:
            assert held_out_numbers([int(x) for x in listed.split()])
    train = make_tasks(items, 200, seed=5)
    seen = {r["instruction"].rpartition(": ")[2] for r in train}
    assert not any(r["instruction"].rpartition(": ")[2] in seen for r in records)


def test_about_one_number_list_in_five_is_held_out() -> None:
    import random

    rng = random.Random(0)
    pairs = [rng.sample(range(10, 100), 2) for _ in range(5000)]
    share = sum(held_out_numbers(p) for p in pairs) / len(pairs)
    assert 0.15 < share < 0.25


def test_records_are_the_same_for_the_same_seed(items: TaskItems) -> None:
    assert make_tasks(items, 5, seed=1) == make_tasks(items, 5, seed=1)
    assert make_tasks(items, 5, seed=1) != make_tasks(items, 5, seed=2)
    only = make_tasks(items, 5, families=["count"], phrasings="all", seed=1)
    assert {r["family"] for r in only} == {"count"}


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n_per_family": 0}, "n_per_family"),
    ({"n_per_family": 2, "split": "val"}, "split"),
    ({"n_per_family": 2, "phrasings": "some"}, "phrasings"),
    ({"n_per_family": 2, "families": ["spell"]}, "unknown task families"),
])
def test_make_tasks_refuses_bad_arguments(items: TaskItems, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_tasks(items, **kwargs)


def test_check_answer_is_exact_up_to_surrounding_space() -> None:
    record = {"family": "reverse", "instruction": "Reverse: 1 2 3", "input": "", "output": "Reversed: 3 2 1"}
    assert expected_answer(record) == "Reversed: 3 2 1"
    assert check_answer(record, " Reversed: 3 2 1\n")
    assert not check_answer(record, "Reversed: 3 2 1.")
    assert not check_answer(record, "Reversed: 1 2 3")
    # the checker computes the answer from the items: a wrong stored output does not fool it
    assert not check_answer({**record, "output": "Reversed: 1 2 3"}, "Reversed: 1 2 3")


def test_per_family_and_the_baselines() -> None:
    records = [
        {"family": "sort", "instruction": "Sort: 1 2 3", "input": "", "output": "Sorted: 1 2 3"},
        {"family": "sort", "instruction": "Sort: 3 2 1", "input": "", "output": "Sorted: 1 2 3"},
        {"family": "first", "instruction": "First: 4 5", "input": "", "output": "The first number is 4."},
    ]
    assert per_family(records, [True, False, True]) == {"first": 1.0, "sort": 0.5}
    assert copy_baseline(records) == {"first": 0.0, "sort": 0.5}  # a sorted list copied is right
    assert lookup_baseline(records, records) == {"first": 1.0, "sort": 1.0}  # the answers are there
    assert lookup_baseline(records[1:2], records[:1]) == {"sort": 1.0}  # the same sorted answer
    assert lookup_baseline(records[2:], records[:2]) == {"first": 0.0}
    with pytest.raises(ValueError, match="3 records but 2 results"):
        per_family(records, [True, False])


def test_evaluate_tasks_checks_the_model_s_answers(items: TaskItems, make_model, monkeypatch) -> None:
    from companion.finetune import tasks
    from companion.finetune.instruction import Response
    from companion.tokenizers import BPETokenizer

    tokenizer = BPETokenizer.train(TEXT + " 0123456789 ", 300)
    records = make_tasks(items, 2, split="test", seed=0)

    def fake_answer(model, tokenizer, record, **kwargs):  # right for "repeat", wrong elsewhere
        right = expected_answer(record)
        return Response(right if record["family"] == "repeat" else "nope", True, 1)

    monkeypatch.setattr(tasks, "generate_response", fake_answer)
    result = evaluate_tasks(make_model(), tokenizer, records)
    assert result.accuracy["repeat"] == 1.0
    assert all(v == 0.0 for k, v in result.accuracy.items() if k != "repeat")
    assert result.mean == pytest.approx(1 / len(FAMILIES))
    assert all(row["correct"] == (row["family"] == "repeat") for row in result.rows)
    with pytest.raises(ValueError, match="no task records"):
        evaluate_tasks(make_model(), tokenizer, [])


def test_task_recipe_key_covers_what_changes_the_model() -> None:
    recipe = RECIPES["shakespeare-tasks"]
    key = recipe.cache_key()
    import dataclasses

    same = dataclasses.replace(recipe, description="other words",
                               options=recipe.options.replace(progress=False))
    assert same.cache_key() == key
    for change in ({"n_per_family": 10}, {"data_seed": 9}, {"families": ("first", "last")},
                   {"options": recipe.options.replace(lr=1e-2)}):
        assert dataclasses.replace(recipe, **change).cache_key() != key, change


@pytest.mark.parametrize(("change", "match"), [
    ({"base": "gpt5"}, "not a pretrained course model"),
    ({"families": ("first", "spell")}, "families"),
    ({"style": "chatml"}, "style"),
    ({"batch_size": 0}, "batch_size"),
    ({"options": TrainOptions(epochs=1)}, "max_steps"),
])
def test_task_recipes_are_validated(change: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TaskRecipe(name="x", **change)


def test_held_out_phrasings_are_new_sentences() -> None:
    for family in FAMILIES.values():
        assert len(family.phrasings) >= 3 and len(family.held_out_phrasings) >= 2
        lowered = {p.lower() for p in family.phrasings}
        assert not any(p.lower() in lowered for p in family.held_out_phrasings)


def test_items_can_keep_only_single_token_words() -> None:
    from companion.tokenizers import BPETokenizer

    tokenizer = BPETokenizer.train(TEXT, 300)
    kept = TaskItems.from_text(TEXT, tokenizer=tokenizer, min_count=5, test_fraction=0.5)
    for word in kept.train_words + kept.test_words:
        assert len(tokenizer.encode(" " + word)) == 1
    every = TaskItems.from_text(TEXT, min_count=5, test_fraction=0.5)
    assert len(kept.train_words) + len(kept.test_words) < len(every.train_words) + len(every.test_words)


def test_training_instructions_sometimes_open_with_a_lead(items: TaskItems) -> None:
    records = make_tasks(items, 100, seed=2)
    leads = [lead for lead in LEADS if lead]
    opened = [r for r in records if any(r["instruction"].startswith(lead) for lead in leads)]
    assert 0.4 < len(opened) / len(records) < 0.8
    assert strip_lead("Now, sort the numbers") == "Sort the numbers"
    assert strip_lead("Sort the numbers") == "Sort the numbers"
    test = make_tasks(items, 50, split="test", seed=2)
    assert not any(r["instruction"].startswith(lead) for r in test for lead in leads)
