"""The course model fine-tuned on checkable instructions, as a recipe (chapter 7).

``TaskRecipe`` is a whole fine-tuning run as data: the pretrained course model it starts
from, the task families and how many generated examples of each, the prompt template and
the training options. Like a pretraining ``Recipe`` its ``cache_key`` hashes all of it,
so ``companion.pretrained("shakespeare-tasks")`` loads weights shipped with the package
(or cached) only if they were made by exactly this recipe, and trains it otherwise.

Maintainers re-make the shipped weights after changing the recipe with
``python -m companion.finetune.task_model ship shakespeare-tasks``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from companion.course_models import RECIPES as PRETRAINING_RECIPES
from companion.course_models import Pretrained, pretrained, ship
from companion.data import DATASETS, read_text
from companion.finetune.instruction import (
    PROMPT_STYLES,
    InstructionDataset,
    eos_id_of,
    instruction_loader,
)
from companion.finetune.tasks import FAMILIES, TaskItems, evaluate_tasks, make_tasks
from companion.model import num_parameters
from companion.train import TrainOptions, train

__all__ = ["RECIPES", "TASKS_FORMAT", "TaskRecipe", "task_items"]

TASKS_FORMAT = 3
"""Part of every task recipe's cache key: bump it when a change to the task generator or
the fine-tuning code changes what a recipe produces."""

_RUN_ONLY = ("progress", "checkpoint_dir", "checkpoint_every", "resume")
"""Training options that say how a run is carried out, not what it produces."""


def task_items(base: str, *, seed: int = 0) -> TaskItems:
    """The words of the tasks: from the training split of the text the base model was
    pretrained on (so the model has read every word), those its tokenizer writes as one
    token, split into training and held-out words with ``seed``."""
    recipe = PRETRAINING_RECIPES[base]
    text = read_text(recipe.data, progress=False)
    tokenizer = pretrained(base, progress=False).tokenizer
    return TaskItems.from_text(text[: int(len(text) * (1 - recipe.val_fraction))], tokenizer=tokenizer, seed=seed)


@dataclass(frozen=True)
class TaskRecipe:
    """A fine-tuning run on the task families of ``companion.finetune.tasks``, as data.

    Attributes:
        name: The model's name (its folder in the cache and in the package).
        base: The pretrained course model it starts from (a name in
            ``companion.course_models.RECIPES``).
        families: The task families to learn.
        n_per_family: Generated training examples per family.
        words_seed: Seeds the split of the words into training and held-out words.
        data_seed: Seeds the generated examples.
        style: The prompt template (``"compact"`` or ``"alpaca"``).
        batch_size: Examples per step; the prompt is masked from the loss.
        options: The training options (the run-only ones, such as ``progress``, are not
            part of the recipe).
        test_per_family: Test examples per family measured after training and recorded in
            ``info``: on held-out items with held-out phrasings (``held_out_accuracy``), and
            on held-out items with the training phrasings (``held_out_items_accuracy``).
        description: One line for people.
    """

    name: str
    base: str = "shakespeare-small"
    families: tuple[str, ...] = tuple(FAMILIES)
    n_per_family: int = 4_000
    words_seed: int = 0
    data_seed: int = 1
    style: str = "compact"
    batch_size: int = 16
    options: TrainOptions = field(default_factory=lambda: TrainOptions(
        max_steps=6_000, lr=3e-3, min_lr=3e-4, warmup_steps=50, eval_every=500, seed=1))
    test_per_family: int = 50
    description: str = ""

    def __post_init__(self) -> None:
        if self.base not in PRETRAINING_RECIPES:
            raise ValueError(f"base={self.base!r} is not a pretrained course model; known: {', '.join(PRETRAINING_RECIPES)}")
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown or not self.families:
            raise ValueError(f"families={self.families!r}: choose among {', '.join(FAMILIES)}")
        if self.style not in PROMPT_STYLES:
            raise ValueError(f"style={self.style!r} is unknown; choose one of {PROMPT_STYLES}")
        for name in ("n_per_family", "batch_size", "test_per_family"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if not isinstance(self.options, TrainOptions) or self.options.max_steps is None:
            raise ValueError("options must be TrainOptions with max_steps set")
        object.__setattr__(self, "families", tuple(self.families))

    def to_dict(self) -> dict[str, Any]:
        """The recipe as JSON data (the run-only training options left out)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["families"] = list(self.families)
        data["options"] = {k: v for k, v in self.options.to_dict().items() if k not in _RUN_ONLY}
        return data

    def cache_key(self) -> str:
        """A hash of everything that affects the fine-tuned model: the recipe, the base
        model's recipe key and the text the words come from."""
        fields = self.to_dict()
        del fields["name"], fields["description"]
        base = PRETRAINING_RECIPES[self.base]
        payload = json.dumps({"format": TASKS_FORMAT, "recipe": fields, "base": base.cache_key(),
                              "words": DATASETS[base.data].sha256 if base.data in DATASETS else base.data_sha256()},
                             sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def run(self, *, progress: bool = True) -> Pretrained:
        """Fine-tune the base model on generated tasks and measure it on held-out ones."""
        base = pretrained(self.base, progress=progress)
        model, tokenizer = base.model, base.tokenizer
        items = task_items(self.base, seed=self.words_seed)
        records = make_tasks(items, self.n_per_family, families=self.families, seed=self.data_seed)
        val_records = make_tasks(items, 10, split="test", phrasings="all", families=self.families,
                                 seed=self.data_seed + 1)
        T, pad = base.config.context_length, eos_id_of(tokenizer)
        sets = [InstructionDataset(r, tokenizer, style=self.style,  # type: ignore[arg-type]
                                   context_length=T, too_long="error") for r in (records, val_records)]
        train_loader = instruction_loader(sets[0], batch_size=self.batch_size, pad_id=pad, shuffle=True,
                                          drop_last=True, mask_prompt=True)
        val_loader = instruction_loader(sets[1], batch_size=self.batch_size, pad_id=pad, mask_prompt=True)
        started = time.perf_counter()
        history = train(model, train_loader, val_loader, self.options.replace(progress=progress))
        seconds = time.perf_counter() - started
        model.eval()
        seed = self.data_seed + 2
        test = make_tasks(items, self.test_per_family, split="test", families=self.families, seed=seed)
        result = evaluate_tasks(model, tokenizer, test, style=self.style)  # type: ignore[arg-type]
        new_items = make_tasks(items, self.test_per_family, split="test", phrasings="train",
                               families=self.families, seed=seed)
        items_only = evaluate_tasks(model, tokenizer, new_items, style=self.style)  # type: ignore[arg-type]
        info = {
            "recipe": self.name,
            "recipe_key": self.cache_key(),
            "base": self.base,
            "prompt_style": self.style,
            "held_out_accuracy": result.accuracy,
            "held_out_mean": result.mean,
            "held_out_items_accuracy": items_only.accuracy,
            "held_out_items_mean": items_only.mean,
            "val_loss": history.val_loss[-1] if history.val_loss else None,
            "train_seconds": seconds,
            "steps": history.steps[-1] if history.steps else 0,
            "parameters": num_parameters(model),
        }
        return Pretrained(model, tokenizer, base.config, {**info, "source": "trained", "path": None}, history)


RECIPES: Mapping[str, TaskRecipe] = MappingProxyType({
    recipe.name: recipe
    for recipe in (
        TaskRecipe(
            name="shakespeare-tasks",
            description=(
                "shakespeare-small fine-tuned on the checkable instruction families of chapter 7 "
                "(prompt masked, compact template)."
            ),
        ),
    )
})
"""The fine-tuned course models, by name (read-only)."""


if __name__ == "__main__":  # python -m companion.finetune.task_model ship NAME
    if len(sys.argv) != 3 or sys.argv[1] != "ship" or sys.argv[2] not in RECIPES:
        sys.exit(f"usage: python -m companion.finetune.task_model ship NAME  (NAME: {', '.join(RECIPES)})")
    torch.manual_seed(0)
    record = ship(RECIPES[sys.argv[2]])
    print(f"    {sys.argv[2]!r}: ShippedModel(\n        recipe_key={record.recipe_key!r},\n        sha256={{")
    for filename, digest in record.sha256.items():
        print(f"            {filename!r}: {digest!r},")
    print("        },\n    ),")
