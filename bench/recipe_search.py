"""Search for the recipe of ``pretrained("shakespeare-small")`` under a wall-clock budget.

Chapter 5's model must reach a low loss per character on the held-out last 10% of
tinyshakespeare within 4 minutes of training on 2 CPU cores. Every candidate here is a
``companion.course_models.Recipe`` (the code path ``pretrained`` and ``ship`` use), named
by a spec string of dash-separated fields::

    v1024-w128-l4-h4-c128-b16-lr3e-3          vocabulary, width, layers, heads, context,
                                              batch, peak learning rate
    ...-min0.1 -warm100 -wd0.1 -do0.1 -untied -b2_0.99 -clip0.5 -torchinit

``min`` is the end of the cosine decay as a fraction of the peak (default 0.1), ``warm``
the warmup steps (50), ``wd`` the weight decay (0.1), ``do`` dropout (0), ``b2`` AdamW's
second beta (0.95), ``clip`` the gradient-norm clip (1.0).

For each candidate a probe first times training steps through ``companion.train.train``
(the fastest of a few short runs, so that a neighbour's burst on the shared cores does
not shrink the budget), the step count is set to fill ``--budget`` seconds at that
rate, and the recipe is then trained from scratch with its cosine schedule ending at
that step. The final loss is measured on the whole held-out text
(``companion.losses.evaluate_text``, windows of the model's context). ``--steps N``
fixes the step count instead.

    python bench/recipe_search.py --budget 240 v1024-w128-l4-h4-c128-b16-lr3e-3
    python bench/recipe_search.py --probe v1024-w192-l4-h4-c128-b16-lr3e-3   # tokens/s only
    python bench/recipe_search.py --table                                      # the results so far
    python bench/recipe_search.py --lengths v1024                              # token lengths of
                                                                               # chapters 6 and 7's data

Results are appended, one JSON line per run, to ``bench/recipe_search_results.jsonl``
(``--jsonl`` to change). Run it under ``flock /tmp/heavy.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from companion.config import GPTConfig
from companion.course_models import RECIPES, Recipe, prepare_data, train_recipe
from companion.model import GPTModel, num_parameters
from companion.optim import configure_optimizer
from companion.train import train

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "recipe_search_results.jsonl"
BASE = RECIPES["shakespeare-small"]

_FIELD = re.compile(r"^(v|w|l|h|c|b|lr|min|warm|wd|do|b2_|clip)([0-9.e+-]+)$")


def parse(spec: str) -> Recipe:
    """The recipe a spec string names (see the module docstring); steps are set later."""
    values: dict[str, Any] = {"v": 1024, "w": 128, "l": 4, "h": None, "c": 128, "b": 16, "lr": 3e-3,
                              "min": 0.1, "warm": 50, "wd": 0.1, "do": 0.0, "b2_": 0.95, "clip": 1.0}
    untied = torchinit = False
    # split on dashes that start a field (not the minus of an exponent such as 3e-3)
    for part in re.split(r"-(?=[a-z])", spec):
        if part == "untied":
            untied = True
            continue
        if part == "torchinit":
            torchinit = True
            continue
        match = _FIELD.match(part)
        if match is None:
            raise SystemExit(f"cannot read {part!r} of the spec {spec!r}")
        values[match.group(1)] = float(match.group(2))
    width = int(values["w"])
    config = GPTConfig(
        vocab_size=int(values["v"]),
        context_length=int(values["c"]),
        emb_dim=width,
        n_heads=int(values["h"]) if values["h"] is not None else max(1, width // 32),
        n_layers=int(values["l"]),
        drop_rate=float(values["do"]),
        qkv_bias=False,
        tie_embeddings=not untied,
    )
    lr = float(values["lr"])
    return BASE.replace(
        name=spec, config=config, batch_size=int(values["b"]), lr=lr, min_lr=lr * float(values["min"]),
        warmup_steps=int(values["warm"]), weight_decay=float(values["wd"]), betas=(0.9, float(values["b2_"])),
        grad_clip=float(values["clip"]), gpt2_init=not torchinit, description="",
    )


def probe(recipe: Recipe, *, steps: int = 12, rounds: int = 3) -> float:
    """Seconds per training step: the fastest of ``rounds`` short runs of ``train``."""
    data = prepare_data(recipe.replace(steps=steps), progress=False)
    torch.manual_seed(recipe.seed)
    model = GPTModel(recipe.config)
    optimizer = configure_optimizer(model, lr=recipe.lr, weight_decay=recipe.weight_decay, betas=recipe.betas)
    options = recipe.train_options(max_steps=steps, eval_every=10**6, progress=False)
    train(model, data.train_loader, None, options.replace(max_steps=3), optimizer=optimizer)  # warm up
    times = []
    for _ in range(rounds):
        history = train(model, data.train_loader, None, options, optimizer=optimizer)
        times.append(history.elapsed / steps)
    return min(times)


def run(spec: str, budget: float | None, steps: int | None, jsonl: Path) -> dict[str, Any]:
    recipe = parse(spec)
    step_seconds = probe(recipe)
    tokens_per_s = recipe.batch_size * recipe.config.context_length / step_seconds
    if steps is None:
        assert budget is not None
        # evaluation points cost about eval_batches forward passes (a third of a step each)
        eval_share = recipe.eval_batches / 3 / recipe.eval_every
        steps = max(recipe.warmup_steps + 1, int(budget / (step_seconds * (1 + eval_share))))
    recipe = recipe.replace(steps=steps)
    start = time.perf_counter()
    result = train_recipe(recipe, progress=False)
    info = result.info
    row = {
        "name": spec,
        "params": num_parameters(result.model),
        "probe_tokens_per_s": round(tokens_per_s),
        "steps": steps,
        "tokens_seen": info["tokens_seen"],
        "val_loss": info["val_loss"],
        "val_nats_per_char": info["val_nats_per_char"],
        "train_seconds": info["train_seconds"],
        "total_seconds": time.perf_counter() - start,
        "budget": budget,
        "recipe": recipe.to_dict(),
        "history": {"steps": result.history.steps if result.history else [],
                    "val_loss": result.history.val_loss if result.history else [],
                    "train_loss": result.history.train_loss if result.history else []},
        "machine": f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()} {torch.get_num_threads()} threads",
        "torch": torch.__version__,
    }
    with jsonl.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def table(jsonl: Path) -> str:
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    lines = ["| candidate | params | tokens/s | steps | train s | budget | val nats/char |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        budget = "-" if r["budget"] is None else f"{r['budget']:.0f}"
        lines.append(f"| {r['name']} | {r['params']:,} | {r['probe_tokens_per_s']:,} | {r['steps']:,} | "
                     f"{r['train_seconds']:.0f} | {budget} | {r['val_nats_per_char']:.4f} |")
    return "\n".join(lines)


def token_lengths(spec: str) -> str:
    """Token-length percentiles of chapter 6's SMS messages and chapter 7's instruction data
    under the BPE of a spec's vocabulary (trained on the training split, as a recipe does)."""
    from companion.data import load_json, read_text
    from companion.tokenizers import BPETokenizer, encode_text

    recipe = parse(spec)
    data = prepare_data(recipe.replace(steps=1), progress=False)
    tokenizer = data.tokenizer
    assert isinstance(tokenizer, BPETokenizer)
    sms = [line.split("\t", 1)[1] for line in read_text("sms-spam", progress=False).splitlines() if "\t" in line]
    instructions = load_json("instruction-data", progress=False)

    def alpaca(entry: dict[str, str]) -> str:
        prompt = ("Below is an instruction that describes a task. Write a response that appropriately "
                  f"completes the request.\n\n### Instruction:\n{entry['instruction']}")
        if entry.get("input"):
            prompt += f"\n\n### Input:\n{entry['input']}"
        return prompt + f"\n\n### Response:\n{entry['output']}"

    out = [f"tokenizer: byte-level BPE, {recipe.config.vocab_size} tokens, trained on tinyshakespeare's first 90%",
           "| data | texts | p50 | p90 | p95 | p99 | max | chars/token |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, texts in (("SMS messages", sms), ("Alpaca prompt + response", [alpaca(e) for e in instructions])):
        lengths = [len(encode_text(tokenizer, t)) for t in texts]
        q = statistics.quantiles(lengths, n=100, method="inclusive")
        ratio = sum(map(len, texts)) / sum(lengths)
        out.append(f"| {name} | {len(texts):,} | {q[49]:.0f} | {q[89]:.0f} | {q[94]:.0f} | {q[98]:.0f} | "
                   f"{max(lengths)} | {ratio:.2f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("specs", nargs="*", help="candidates, e.g. v1024-w128-l4-h4-c128-b16-lr3e-3")
    parser.add_argument("--budget", type=float, default=240.0, help="training seconds per candidate")
    parser.add_argument("--steps", type=int, help="a fixed step count instead of a budget")
    parser.add_argument("--probe", action="store_true", help="only time the candidates' steps")
    parser.add_argument("--table", action="store_true", help="print the results so far as a table")
    parser.add_argument("--lengths", action="store_true", help="token lengths of the fine-tuning data")
    parser.add_argument("--jsonl", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.jsonl))
        return
    for spec in args.specs:
        if args.lengths:
            print(token_lengths(spec))
        elif args.probe:
            recipe = parse(spec)
            seconds = probe(recipe)
            with torch.device("meta"):
                n = num_parameters(GPTModel(recipe.config))
            print(f"{spec}: {n:,} parameters, {recipe.batch_size * recipe.config.context_length / seconds:,.0f} "
                  f"tokens/s, {seconds * 1e3:.1f} ms/step", flush=True)
        else:
            row = run(spec, None if args.steps else args.budget, args.steps, args.jsonl)
            print(f"{spec}: {row['params']:,} params, {row['steps']} steps in {row['train_seconds']:.0f} s "
                  f"-> {row['val_nats_per_char']:.4f} nats/char", flush=True)


if __name__ == "__main__":
    sys.exit(main())
