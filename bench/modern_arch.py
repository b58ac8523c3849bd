"""GPT-2's block against today's block, and each change on its own, at an equal budget.

Chapter 9's experiment. Every variant is a ``companion.modern.ModernConfig`` trained by
the course's own loop (``companion.train.train``) on chapter 5's data and recipe
(``RECIPES["shakespeare-small"]``: tinyshakespeare, its 2,048-token BPE, 4 layers 128
wide, context 128, batches of 8, AdamW 2e-3 -> 2e-4 cosine), for the same number of
steps (the same tokens), and scored in nats per character on the whole held-out last
10% (``companion.losses.evaluate_text``).

* ``gpt2``: ``ModernConfig.gpt2_style`` of the recipe's config (layer norm, learned
  positions, GELU, multi-head attention, biases, tied head), the recipe's model.
* one change at a time on top of it: ``+rmsnorm``, ``+rope``, ``+swiglu``, ``+gqa``
  (2 key/value heads for 4 query heads), ``+qknorm``, ``-bias``, ``+untied``;
* ``modern``: all of them but the untied head (small Qwen3 and Llama 3.2 models tie).

**Equal parameters.** Changes that remove parameters (positions, K/V heads, biases)
or reshape the feed-forward network (SwiGLU) get the feed-forward width that brings the
model closest to the baseline's count; the table shows the counts. ``+untied`` adds a
2,048 x 128 output matrix and is the one variant left larger.

**Equal time.** Steps, not seconds, are fixed: on a machine shared with other jobs,
wall-clock budgets would measure the neighbours. The seconds each run took are
recorded, so the per-step cost of each change is visible; runs are interleaved (every
variant of seed 0, then of seed 1, ...) so that a busy period hits all variants.

    python bench/modern_arch.py --steps 300 --seeds 0 1 2 3    # appends to companion/modern/experiment.jsonl
    python bench/modern_arch.py --table                        # the table of bench/modern_arch.md
    python bench/modern_arch.py --probe                        # seconds per step of each variant
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from companion.course_models import RECIPES, prepare_data
from companion.losses import evaluate_text
from companion.model import num_parameters
from companion.modern.config import ModernConfig
from companion.modern.model import ModernGPT
from companion.optim import configure_optimizer
from companion.train import train

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "companion" / "modern" / "experiment.jsonl"
"""The recorded runs ship with the package, so that chapter 9 reads them anywhere (Colab too)."""
RECIPE = RECIPES["shakespeare-small"]
BASE = ModernConfig.gpt2_style(RECIPE.config)
ALL_MODERN = {"norm": "rmsnorm", "norm_eps": 1e-6, "positions": "rope", "ffn": "swiglu", "n_kv_heads": 2,
              "qk_norm": True, "bias": False}
VARIANTS: dict[str, dict[str, Any]] = {
    "gpt2": {},
    "+rmsnorm": {"norm": "rmsnorm", "norm_eps": 1e-6},
    "+rope": {"positions": "rope"},
    "+swiglu": {"ffn": "swiglu"},
    "+gqa": {"n_kv_heads": 2},
    "+qknorm": {"qk_norm": True},
    "-bias": {"bias": False},
    "+untied": {"tie_embeddings": False},
    "modern": ALL_MODERN,
}


def _params(cfg: ModernConfig) -> int:
    with torch.device("meta"):
        return num_parameters(ModernGPT(cfg))


def config_of(variant: str) -> ModernConfig:
    """The variant's config, its feed-forward width matched to the baseline's parameters."""
    cfg = BASE.replace(**VARIANTS[variant])
    if variant in ("gpt2", "+untied", "+qknorm"):  # +qknorm adds 2 x 32 scales a layer: keep the width
        return cfg
    target = _params(BASE)
    low, high = _params(cfg.replace(hidden_dim=8)), _params(cfg.replace(hidden_dim=16))
    per_unit = (high - low) / 8  # parameters per unit of feed-forward width
    hidden = 8 + round((target - low) / per_unit / 8) * 8
    return cfg.replace(hidden_dim=hidden)


def run(variant: str, seed: int, steps: int, data: Any, jsonl: Path) -> dict[str, Any]:
    cfg = config_of(variant)
    torch.manual_seed(seed)
    model = ModernGPT(cfg)
    recipe = RECIPE.replace(steps=steps, seed=seed)
    optimizer = configure_optimizer(model, lr=recipe.lr, weight_decay=recipe.weight_decay, betas=recipe.betas)
    options = recipe.train_options(eval_every=steps, eval_batches=4, progress=False)
    start = time.perf_counter()
    train(model, data.train_loader, None, options, optimizer=optimizer)
    seconds = time.perf_counter() - start
    final = evaluate_text(model, data.tokenizer, data.val_text)  # type: ignore[arg-type]
    row = {
        "variant": variant, "seed": seed, "steps": steps, "params": num_parameters(model),
        "ffn_dim": cfg.ffn_dim, "train_seconds": round(seconds, 1), "val_nats_per_char": final.nats_per_char,
        "config": cfg.to_dict(),
        "machine": f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()} {torch.get_num_threads()} threads",
        "torch": torch.__version__,
    }
    with jsonl.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def probe(data: Any, *, steps: int = 10, rounds: int = 3) -> str:
    """Seconds per training step of every variant: the fastest of ``rounds`` interleaved
    runs of ``steps`` steps (so that a neighbour's burst on shared cores counts less)."""
    best: dict[str, float] = {}
    models = {}
    for variant in VARIANTS:
        torch.manual_seed(0)
        models[variant] = ModernGPT(config_of(variant))
    options = RECIPE.train_options(max_steps=steps, eval_every=10**6, progress=False)
    for _ in range(rounds):
        for variant, model in models.items():
            optimizer = configure_optimizer(model, lr=RECIPE.lr)
            start = time.perf_counter()
            train(model, data.train_loader, None, options, optimizer=optimizer)
            best[variant] = min(best.get(variant, math.inf), (time.perf_counter() - start) / steps)
    base = best["gpt2"]
    lines = ["| variant | ms per step (fastest of 3) | relative to gpt2 |", "| --- | ---: | ---: |"]
    lines += [f"| {v} | {1000 * t:.0f} | {t / base:.2f} |" for v, t in best.items()]
    return "\n".join(lines)


def table(jsonl: Path) -> str:
    """Mean and spread over seeds per variant, and the paired difference to ``gpt2``."""
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    by: dict[str, dict[int, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["variant"], {})[r["seed"]] = r
    base = by.get("gpt2", {})
    lines = ["| variant | params | FFN width | seeds | train s (mean) | nats/char (mean ± sd) "
             "| vs gpt2 (mean ± sd, paired) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in VARIANTS:
        runs = by.get(name)
        if not runs:
            continue
        losses = [r["val_nats_per_char"] for r in runs.values()]
        sd = statistics.stdev(losses) if len(losses) > 1 else math.nan
        diffs = [runs[s]["val_nats_per_char"] - base[s]["val_nats_per_char"] for s in runs if s in base]
        diff = "-" if name == "gpt2" or not diffs else (
            f"{statistics.mean(diffs):+.4f} ± {statistics.stdev(diffs) if len(diffs) > 1 else math.nan:.4f}")
        first = next(iter(runs.values()))
        lines.append(f"| {name} | {first['params']:,} | {first['ffn_dim']} | {len(runs)} | "
                     f"{statistics.mean(r['train_seconds'] for r in runs.values()):.0f} | "
                     f"{statistics.mean(losses):.4f} ± {sd:.4f} | {diff} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps of every run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--table", action="store_true", help="print the results so far")
    parser.add_argument("--probe", action="store_true", help="only time a few steps of every variant")
    parser.add_argument("--jsonl", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.jsonl))
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    data = prepare_data(RECIPE.replace(steps=args.steps), progress=False)
    if args.probe:
        print(probe(data))
        return
    for seed in args.seeds:
        for variant in args.variants:
            row = run(variant, seed, args.steps, data, args.jsonl)
            print(f"{variant:<9} seed {seed}  {row['params']:>9,} params  {row['train_seconds']:>6.1f} s  "
                  f"{row['val_nats_per_char']:.4f} nats/char", flush=True)
    print(table(args.jsonl))


if __name__ == "__main__":
    main()
