"""Choose the recipe of ``pretrained("shakespeare-small")`` by measurement.

Chapter 5 trains a small GPT on tinyshakespeare inside a notebook that must finish in
about 4 minutes on 2 CPU cores, and reports the validation loss per character on the
held-out last 10% (every token of it scored once, windows of the context length,
``companion.train.evaluate_text``).

Each candidate is a ``companion.course_models.Recipe`` (so the bench measures exactly the
code path ``pretrained`` uses) trained for about the same wall-clock budget: a short
probe times a few steps, the step count is set to fill the budget, and the recipe is
then trained from scratch with its cosine schedule ending at that step. The table
reports what each reached.

    python bench/bench_shakespeare.py --list
    python bench/bench_shakespeare.py --budget 130 v1024-w128-l4-c64-b12-lr2e-3 v2048-w128-l4-c64-b12
    python bench/bench_shakespeare.py --probe            # only tokens/s of every candidate
    python bench/bench_shakespeare.py --steps 1000 v1024-w192-l4   # a fixed step count

The corpus is read from $COMPANION_DATA_DIR (or the usual data cache); point it at the
shared data folder on an offline machine. With --jsonl FILE each result is also
appended to FILE as a JSON line, so a search can be split over several runs and
tabulated again with --table --jsonl FILE. The search behind the shipped recipe is in
bench/shakespeare_results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from companion.config import GPTConfig
from companion.model import GPTModel, init_gpt2_weights, num_parameters
from companion.course_models import RECIPES, Recipe, prepare_data, train_recipe
from companion.train import batch_loss, configure_optimizer

BASE = RECIPES["shakespeare-small"]


def candidate(
    name: str,
    *,
    vocab: int = 1024,
    width: int = 192,
    layers: int = 4,
    heads: int | None = None,
    context: int = 128,
    batch: int = 32,
    lr: float = 2e-3,
    gpt2_init: bool = True,
    tie: bool = True,
    betas: tuple[float, float] = (0.9, 0.95),
) -> Recipe:
    """A recipe like the shipped one with some choices changed; steps are set later."""
    config = GPTConfig(
        vocab_size=vocab,
        context_length=context,
        emb_dim=width,
        n_heads=heads or max(1, width // 32),
        n_layers=layers,
        drop_rate=0.0,
        qkv_bias=False,
        tie_embeddings=tie,
    )
    return BASE.replace(name=name, config=config, batch_size=batch, lr=lr, min_lr=lr / 10,
                        gpt2_init=gpt2_init, betas=betas)


CANDIDATES: dict[str, Recipe] = {
    r.name: r
    for r in (
        # nanoGPT's CPU recipe for Shakespeare, character level: a BPE with no merges (256
        # bytes + <|endoftext|>; tinyshakespeare is ASCII, so a byte is a character), 4 layers
        # of 4 heads, 128 wide, context 64, batch 12, lr 1e-3 -> 1e-4, betas (0.9, 0.99)
        candidate("nanogpt-char-v257-w128-l4-c64-b12", vocab=257, width=128, heads=4, context=64, batch=12,
                  lr=1e-3, betas=(0.9, 0.99)),
        # the shipped recipe's shape with a 4,096-token vocabulary
        candidate("v4096-w128-l4-c64-b12-lr2e-3", vocab=4096, width=128, context=64, batch=12, lr=2e-3),
        # the TOOLCHAIN reference model (0.8M, context 64, batch 12) with a 1,024 BPE
        candidate("ref-v1024-w128-l4-c64-b12", width=128, context=64, batch=12, lr=1e-3),
        # vocabulary
        candidate("v512-w192-l4", vocab=512),
        candidate("v1024-w192-l4", vocab=1024),
        candidate("v2048-w192-l4", vocab=2048),
        candidate("v4096-w192-l4", vocab=4096),
        # width and depth
        candidate("v1024-w128-l4", width=128),
        candidate("v1024-w256-l4", width=256),
        candidate("v1024-w128-l6", width=128, layers=6),
        candidate("v1024-w192-l6", layers=6),
        candidate("v1024-w256-l3", width=256, layers=3),
        candidate("v1024-w192-l2", layers=2),
        candidate("v2048-w256-l4", vocab=2048, width=256),
        candidate("v2048-w128-l4", vocab=2048, width=128),
        candidate("v512-w128-l4", vocab=512, width=128),
        candidate("v1024-w128-l4-b16", width=128, batch=16),
        candidate("v2048-w128-l4-b16", vocab=2048, width=128, batch=16),
        candidate("v1024-w128-l6-b16", width=128, layers=6, batch=16),
        candidate("v1024-w160-l4", width=160, heads=5),
        candidate("v1024-w128-l4-lr3e-3", width=128, lr=3e-3),
        candidate("v1024-w128-l4-lr1e-3", width=128, lr=1e-3),
        # small batches, many steps (round 2)
        candidate("v2048-w128-l4-c64-b12", vocab=2048, width=128, context=64, batch=12, lr=1e-3),
        candidate("v512-w128-l4-c64-b12", vocab=512, width=128, context=64, batch=12, lr=1e-3),
        candidate("v1024-w128-l4-c64-b12-lr2e-3", width=128, context=64, batch=12, lr=2e-3),
        candidate("v1024-w192-l4-c64-b12", width=192, context=64, batch=12, lr=1e-3),
        candidate("v1024-w128-l6-c64-b12", width=128, layers=6, context=64, batch=12, lr=1e-3),
        candidate("v1024-w128-l4-c64-b24", width=128, context=64, batch=24, lr=1e-3),
        candidate("v1024-w128-l4-c64-b8", width=128, context=64, batch=8, lr=1e-3),
        candidate("v1024-w128-l4-c128-b8", width=128, context=128, batch=8, lr=1e-3),
        candidate("v1024-w128-l4-c32-b24", width=128, context=32, batch=24, lr=1e-3),
        # round 3, at the target budget
        candidate("v1024-w128-l4-c64-b12-lr3e-3", width=128, context=64, batch=12, lr=3e-3),
        candidate("v1024-w128-l4-c64-b8-lr2e-3", width=128, context=64, batch=8, lr=2e-3),
        candidate("v1024-w128-l4-c64-b16-lr3e-3", width=128, context=64, batch=16, lr=3e-3),
        candidate("v1024-w128-l4-c64-b12-lr2e-3-torchinit", width=128, context=64, batch=12, lr=2e-3,
                  gpt2_init=False),
        candidate("v1024-w128-l3-c64-b12-lr2e-3", width=128, layers=3, context=64, batch=12, lr=2e-3),
        # context and batch
        candidate("v1024-w192-l4-c64-b64", context=64, batch=64),
        candidate("v1024-w192-l4-c256-b16", context=256, batch=16),
        candidate("v1024-w192-l4-b16", batch=16),
        candidate("v1024-w192-l4-b64", batch=64),
        candidate("v2048-w192-l4-b16", vocab=2048, batch=16),
        # optimisation
        candidate("v1024-w192-l4-lr1e-3", lr=1e-3),
        candidate("v1024-w192-l4-lr3e-3", lr=3e-3),
        candidate("v1024-w192-l4-lr4e-3", lr=4e-3),
        candidate("v1024-w192-l4-torchinit", gpt2_init=False),
        candidate("v1024-w192-l4-untied", tie=False),
        candidate("v2048-w192-l4-lr3e-3", vocab=2048, lr=3e-3),
        candidate("v2048-w192-l4-b16-lr3e-3", vocab=2048, batch=16, lr=3e-3),
        candidate("v1024-w192-l4-b16-lr3e-3", batch=16, lr=3e-3),
    )
}


def seconds_per_step(recipe: Recipe, *, warmup: int = 5, timed: int = 15) -> float:
    """The mean time of ``timed`` training steps after ``warmup``."""
    data = prepare_data(recipe, progress=False)
    torch.manual_seed(0)
    model = init_gpt2_weights(GPTModel(recipe.config))
    optimizer = configure_optimizer(model, lr=recipe.lr)
    batches = iter(data.train_loader)
    start = 0.0
    for i in range(warmup + timed):
        if i == warmup:
            start = time.perf_counter()
        x, y = next(batches)
        loss = batch_loss(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return (time.perf_counter() - start) / timed


def run(recipe: Recipe, budget: float | None, steps: int | None) -> dict[str, Any]:
    """Train one candidate and return its row."""
    if steps is None:
        assert budget is not None
        per_step = seconds_per_step(recipe)
        # about 3% of the time goes to the periodic validation points
        steps = max(100, int(budget * 0.97 / per_step))
    recipe = recipe.replace(steps=steps, warmup_steps=min(recipe.warmup_steps, steps // 10))
    start = time.perf_counter()
    result = train_recipe(recipe, progress=False)
    total = time.perf_counter() - start
    info = result.info
    tokens_per_step = recipe.batch_size * recipe.config.context_length
    return {
        "name": recipe.name,
        "vocab": recipe.config.vocab_size,
        "width": recipe.config.emb_dim,
        "layers": recipe.config.n_layers,
        "context": recipe.config.context_length,
        "batch": recipe.batch_size,
        "lr": recipe.lr,
        "init": "gpt2" if recipe.gpt2_init else "torch",
        "tied": recipe.config.tie_embeddings,
        "params": info["parameters"],
        "tokens_per_s": tokens_per_step * steps / info["train_seconds"],
        "steps": steps,
        "val_loss": info["val_loss"],
        "val_nats_per_char": info["val_nats_per_char"],
        "train_seconds": info["train_seconds"],
        "total_seconds": total,
        "budget": budget,
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| recipe | budget s | params | tokens/s | steps | val loss/token | val nats/char | train s | total s |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    lines = [head]
    for r in sorted(rows, key=lambda r: (-(r["budget"] or 0), r["val_nats_per_char"])):
        lines.append(
            f"| {r['name']} | {r['budget'] or '-'} | {r['params'] / 1e6:.2f}M | {r['tokens_per_s']:,.0f} | {r['steps']:,} | "
            f"{r['val_loss']:.3f} | {r['val_nats_per_char']:.3f} | {r['train_seconds']:.0f} | "
            f"{r['total_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="candidates to train (default: none; see --list)")
    parser.add_argument("--budget", type=float, default=130.0, help="training seconds per candidate (default 130)")
    parser.add_argument("--steps", type=int, default=None, help="a fixed step count instead of a time budget")
    parser.add_argument("--shipped", action="store_true", help="also train the shipped shakespeare-small recipe as it is")
    parser.add_argument("--list", action="store_true", help="list the candidates and exit")
    parser.add_argument("--probe", action="store_true", help="print each candidate's seconds per step and exit")
    parser.add_argument("--jsonl", type=Path, default=None,
                        help="append each result as a JSON line to this file (e.g. bench/shakespeare_results.jsonl)")
    parser.add_argument("--table", action="store_true", help="print the table of every result in --jsonl and exit")
    args = parser.parse_args(argv)

    if args.list:
        for name, r in CANDIDATES.items():
            print(f"{name}: vocab {r.config.vocab_size}, width {r.config.emb_dim}, layers {r.config.n_layers}, "
                  f"context {r.config.context_length}, batch {r.batch_size}, lr {r.lr}")
        return 0
    if args.table:
        if args.jsonl is None:
            parser.error("--table needs --jsonl FILE")
        rows = [json.loads(line) for line in args.jsonl.read_text().splitlines() if line.strip()]
        print(table(rows))
        return 0
    unknown = [n for n in args.names if n not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidate(s) {unknown}; see --list")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    if args.probe:
        print("| recipe | params | s/step | tokens/s |\n| --- | ---: | ---: | ---: |")
        for name in args.names or list(CANDIDATES):
            r = CANDIDATES[name]
            per_step = seconds_per_step(r)
            params = num_parameters(GPTModel(r.config))
            print(f"| {name} | {params / 1e6:.2f}M | {per_step:.3f} | "
                  f"{r.batch_size * r.config.context_length / per_step:,.0f} |", flush=True)
        return 0

    jobs = [CANDIDATES[n] for n in args.names]
    if args.shipped:
        jobs.append(BASE)
    rows = []
    for recipe in jobs:
        steps = BASE.steps if recipe is BASE else args.steps
        row = run(recipe, None if steps else args.budget, steps)
        rows.append(row)
        if args.jsonl is not None:
            with args.jsonl.open("a") as file:
                file.write(json.dumps(row) + "\n")
        print(f"{row['name']}: {row['steps']} steps, {row['val_nats_per_char']:.3f} nats/char, "
              f"{row['train_seconds']:.0f} s", flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
