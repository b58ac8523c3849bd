"""The search behind chapter 7's checkable instruction families (results: task_search.md).

Fine-tunes the shipped shakespeare-small on generated instruction families and reports exact
match per family on held-out items, with training phrasings and with held-out phrasings.
Three designs can be compared:

* ``words``: the word families of the first design (first, last, repeat, reverse, count on
  words of any length; larger, sort, next on numbers), answers as sentences.
* ``words-one-token``: the same, with only words the tokenizer writes as one token.
* ``package``: the families of ``companion.finetune.tasks`` as they ship.

    python bench/task_search.py --design words --steps 3000
    python bench/task_search.py --design package --steps 3000

Each run prints one line per test (held-out items with training phrasings; held-out items
with held-out phrasings) and a few wrong answers. About 10 to 15 minutes per 3,000 steps on
2 CPU cores with one thread.
"""

from __future__ import annotations

import argparse
import collections
import random
import re
import time

import torch

from companion import pretrained
from companion.data import read_text
from companion.finetune.instruction import InstructionDataset, eos_id_of, generate_response, instruction_loader
from companion.finetune.tasks import make_tasks
from companion.runs.task_model import task_items
from companion.train import TrainOptions, train

# ----------------------------------------------------------------- the first, word-based design
_PHRASINGS = {
    "first": ("What is the first word | Give the first word | Name the first word | Which word comes first | "
              "Tell me the first word | Write the first word of the list | Say the word that comes first | "
              "Find the first word | Please give the first word | Show me the word that comes first",
              "Tell me the word that comes first | Write the first word | Please name the first word of the list"),
    "last": ("What is the last word | Give the last word | Name the last word | Which word comes last | "
             "Tell me the last word | Write the last word of the list | Say the word that comes last | "
             "Find the last word | Please give the last word | Show me the word that comes last",
             "Tell me the word that comes last | Write the last word | Please name the last word of the list"),
    "repeat": ("Repeat the word twice | Say the word twice | Write the word two times | Give the word two times | "
               "Repeat this word two times | Write this word twice | Please say the word twice | "
               "Show me the word two times",
               "Say this word two times | Please repeat the word twice | Give this word twice"),
    "reverse": ("Reverse the order of the words | Write the words in reverse order | Give the words in reverse | "
                "List the words backwards | Say the words backwards | Reverse these words | "
                "Please write the words backwards | Show me the words in reverse order",
                "Write these words in reverse order | Please reverse the order of the words | "
                "Give the words backwards"),
    "count": ("How many words are there | Count the words | How many words does the list have | "
              "Give the number of words | Tell me how many words there are | Count these words | "
              "Please count the words | Say how many words you see",
              "Tell me the number of words | Please say how many words there are | How many words do you see"),
    "larger": ("Which number is larger | Give the larger number | Name the larger number | "
               "Which of the numbers is larger | Tell me the larger number | Write the larger of the numbers | "
               "Please give the larger number | Find the larger number",
               "Tell me which number is larger | Please name the larger of the numbers | Write the larger number"),
    "sort": ("Sort the numbers | Sort the numbers from smallest to largest | Put the numbers in order | "
             "Order these numbers | Write the numbers in order | Give the numbers sorted | "
             "Please sort these numbers | List the numbers in order",
             "Sort these numbers | Please put the numbers in order | Give the numbers in order"),
    "next": ("What number comes after | Give the next number after | Name the number after | "
             "Which number comes next after | Tell me the number after | Write the number that comes after | "
             "Please give the number after | Find the next number after",
             "Tell me the next number after | Please name the number that comes after | Write the next number after"),
}
_ANSWERS = {
    "first": lambda it: f"The first word is {it[0]}.",
    "last": lambda it: f"The last word is {it[-1]}.",
    "repeat": lambda it: f"Twice: {it[0]} {it[0]}",
    "reverse": lambda it: "Reversed: " + " ".join(reversed(it)),
    "count": lambda it: f"There are {len(it)} words.",
    "larger": lambda it: f"The larger number is {max(map(int, it))}.",
    "sort": lambda it: "Sorted: " + " ".join(map(str, sorted(map(int, it)))),
    "next": lambda it: f"The next number is {int(it[0]) + 1}.",
}


def _held(numbers: list[int]) -> bool:
    return sum((i + 3) * n for i, n in enumerate(numbers)) % 5 == 0


def word_design(split: str, n: int, seed: int, one_token: bool, tokenizer) -> list[dict[str, str]]:
    text = read_text("tinyshakespeare")
    text = text[: int(0.9 * len(text))]
    counts = collections.Counter(re.findall(r"\b[a-z]{3,8}\b", text))
    words = sorted(w for w, c in counts.items() if c >= 8)
    if one_token:
        words = [w for w in words if len(tokenizer.encode(" " + w)) == 1]
    random.Random(0).shuffle(words)
    k = int(len(words) * 0.2)
    pool = words[k:] if split == "train" else words[:k]
    rng = random.Random(seed)
    records = []
    for family, (train_ph, test_ph) in _PHRASINGS.items():
        phrasings = [p.strip() for p in (train_ph if split != "held_out_phrasings" else test_ph).split("|")]
        for _ in range(n):
            if family in ("larger", "sort", "next"):
                while True:
                    if family == "sort":
                        nums = rng.sample(range(10), rng.randint(3, 5))
                    elif family == "next":
                        nums = [rng.randint(10, 98)]
                    else:
                        nums = rng.sample(range(10, 100), 2)
                    if _held(nums) == (split != "train"):
                        break
                listed = [str(x) for x in nums]
            elif family == "repeat":
                listed = [rng.choice(pool)]
            else:
                listed = rng.sample(pool, rng.randint(2, 5))
            records.append({"instruction": f"{rng.choice(phrasings)}: {' '.join(listed)}", "input": "",
                            "output": _ANSWERS[family](listed), "family": family})
    rng.shuffle(records)
    return records


def package_design(split: str, n: int, seed: int) -> list[dict[str, str]]:
    items = task_items("shakespeare-small")
    if split == "train":
        return make_tasks(items, n, seed=seed)
    phrasings = "train" if split == "held_out_items" else "held_out"
    return make_tasks(items, n, split="test", phrasings=phrasings, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--design", choices=("words", "words-one-token", "package"), default="package")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--per-family", type=int, default=4000)
    parser.add_argument("--test-per-family", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = pretrained("shakespeare-small", progress=False)
    model, tokenizer = base.model, base.tokenizer

    def records(split: str, n: int, seed: int) -> list[dict[str, str]]:
        if args.design == "package":
            return package_design(split, n, seed)
        return word_design(split, n, seed, args.design == "words-one-token", tokenizer)

    pad, T = eos_id_of(tokenizer), base.config.context_length
    train_set = InstructionDataset(records("train", args.per_family, 1), tokenizer, style="compact", context_length=T)
    val_set = InstructionDataset(records("held_out_items", 20, 2), tokenizer, style="compact", context_length=T)
    options = TrainOptions(max_steps=args.steps, lr=args.lr, min_lr=args.lr / 10, warmup_steps=50,
                           eval_every=max(args.steps // 5, 1), seed=1, progress=False)
    started = time.perf_counter()
    history = train(model, instruction_loader(train_set, batch_size=args.batch_size, pad_id=pad, shuffle=True,
                                              drop_last=True, mask_prompt=True),
                    instruction_loader(val_set, batch_size=args.batch_size, pad_id=pad, mask_prompt=True), options)
    print(f"{args.design}: {args.steps} steps in {time.perf_counter() - started:.0f} s; held-out loss "
          + " ".join(f"{v:.3f}" for v in history.val_loss))
    model.eval()
    for split in ("held_out_items", "held_out_phrasings"):
        test = records(split, args.test_per_family, 3)
        right: collections.Counter[str] = collections.Counter()
        total: collections.Counter[str] = collections.Counter()
        wrong = {}
        for record in test:
            answer = generate_response(model, tokenizer, record, style="compact", max_new_tokens=32).text
            ok = answer == record["output"]
            right[record["family"]] += ok
            total[record["family"]] += 1
            if not ok:
                wrong.setdefault(record["family"], (record["instruction"], record["output"], answer))
        accuracy = {f: right[f] / total[f] for f in total}
        print(f"{split}: mean {sum(accuracy.values()) / len(accuracy):.2f}  "
              + "  ".join(f"{f} {a:.2f}" for f, a in accuracy.items()))
        for family, example in wrong.items():
            print(f"    {family}: {example}")


if __name__ == "__main__":
    main()
