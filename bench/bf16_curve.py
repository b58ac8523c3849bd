"""bfloat16 autocast against float32 over a long run of chapter 5's recipe (issue 20).

    OMP_NUM_THREADS=1 python bench/bf16_curve.py --steps 1000      # writes bench/bf16_curve.md

Trains ``shakespeare-small`` (chapter 5's recipe, its schedule compressed to ``--steps``)
with ``companion.train.train`` several times from the same seed, the same batches and the
same schedule, changing only the precision:

* ``fp32``: the reference;
* ``bf16, head fp32``: ``precision="bf16"`` with the output head's matrix product kept in
  float32 (autocast off around it), so the logits are not rounded to bfloat16's 8 bits
  before the softmax;
* ``bf16``: ``precision="bf16"`` as autocast does it, logits in bfloat16.

It reports the largest gap between each bfloat16 curve and float32's (the batch losses
averaged over windows of ``--window`` steps, and the validation losses every 100 steps);
the band of issue 20 is 0.03 nats/token. Results are written after every run, so a run
cut short still leaves the finished ones. On a CPU without native bfloat16 the bf16 runs
are emulated and slow (about 12x float32's time on an AVX2 machine).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion.course_models import RECIPES, prepare_data
from companion.model import GPTModel
from companion.optim import configure_optimizer
from companion.precision import native_bf16
from companion.train import train

HERE = Path(__file__).resolve().parent


class _Fp32Head(nn.Module):
    """The output head's product in float32 even under autocast (same weight)."""

    def __init__(self, head: nn.Linear) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return F.linear(x.float(), self.head.weight)


def run(variant: str, steps: int, partial: Any = None) -> dict[str, Any]:
    recipe = RECIPES["shakespeare-small"]
    data = prepare_data(recipe, progress=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = GPTModel(recipe.config)
    optimizer = configure_optimizer(model, lr=recipe.lr, weight_decay=recipe.weight_decay, betas=recipe.betas)
    if variant == "bf16, head fp32":
        model.out_head = _Fp32Head(model.out_head)  # type: ignore[assignment]
    precision = "fp32" if variant == "fp32" else "bf16"
    options = recipe.train_options(max_steps=steps, progress=False, precision=precision)
    start = time.perf_counter()

    def callback(step: int, history: Any) -> None:
        if partial is not None and step % 50 == 0:
            partial({"batch_losses": history.batch_losses, "steps": history.steps, "val_loss": history.val_loss,
                     "seconds": time.perf_counter() - start})

    history = train(model, data.train_loader, data.val_loader, options, optimizer=optimizer, callback=callback)
    return {"batch_losses": history.batch_losses, "steps": history.steps, "val_loss": history.val_loss,
            "seconds": time.perf_counter() - start}


def smooth(values: list[float], window: int) -> list[float]:
    return [sum(values[i:i + window]) / window for i in range(0, len(values) - window + 1, window)]


def report(results: dict[str, dict[str, Any]], steps: int, window: int) -> str:
    lines = [f"# bfloat16 autocast against float32: {steps} steps of chapter 5's recipe", "",
             "Written by `OMP_NUM_THREADS=1 python bench/bf16_curve.py --steps "
             f"{steps}`; native bfloat16 on this machine: {native_bf16()}; torch {torch.__version__}, "
             f"{torch.backends.cpu.get_cpu_capability()}.", ""]
    ref = results.get("fp32")
    lines += ["| run | seconds | final val loss | largest gap, train loss (windows of "
              f"{window}) | largest gap, val loss | mean gap, train loss |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, res in results.items():
        if ref is None or name == "fp32":
            gaps = ("-", "-", "-")
        else:
            a, b = smooth(ref["batch_losses"], window), smooth(res["batch_losses"], window)
            a = a[: len(b)]  # a run cut short is compared over its steps so far
            if not b:
                continue
            diffs = [abs(x - y) for x, y in zip(a, b, strict=True)]
            val = [abs(x - y) for x, y in zip(ref["val_loss"], res["val_loss"], strict=False)]
            gaps = (f"{max(diffs):.3f}", f"{max(val):.3f}" if val else "-", f"{sum(diffs) / len(diffs):.3f}")
        done = len(res["batch_losses"])
        label = name if done == steps else f"{name} (stopped at step {done})"
        final = f"{res['val_loss'][-1]:.3f}" if res["val_loss"] else "-"
        lines.append(f"| {label} | {res['seconds']:.0f} | {final} | {gaps[0]} | {gaps[1]} | {gaps[2]} |")
    lines += ["", f"Train loss, mean of every {window} steps:", ""]
    for name, res in results.items():
        lines.append(f"- {name}: " + " ".join(f"{x:.3f}" for x in smooth(res["batch_losses"], window)))
    lines += ["", "Validation loss every 100 steps:", ""]
    for name, res in results.items():
        lines.append(f"- {name}: " + " ".join(f"{x:.3f}" for x in res["val_loss"]))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="bf16 autocast against fp32 over a long run")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--variants", default="fp32,bf16, head fp32,bf16")
    parser.add_argument("--out", type=Path, default=HERE / "bf16_curve.md")
    parser.add_argument("--reuse", type=Path, help="a JSON written by an earlier run: its finished runs are kept")
    args = parser.parse_args(argv)
    names = [v.strip() for v in args.variants.replace("bf16, head", "bf16; head").split(",")]
    names = [n.replace("bf16; head", "bf16, head") for n in names]
    results: dict[str, dict[str, Any]] = {}
    if args.reuse is not None:
        earlier = json.loads(args.reuse.read_text(encoding="utf-8"))
        results.update({k: v for k, v in earlier.items() if k in names and len(v["batch_losses"]) == args.steps})

    def write(name: str, result: dict[str, Any]) -> None:
        results[name] = result
        args.out.write_text(report(results, args.steps, args.window), encoding="utf-8")
        args.out.with_suffix(".json").write_text(json.dumps(results), encoding="utf-8")

    for name in names:
        if name in results:
            continue
        write(name, run(name, args.steps, partial=lambda result, name=name: write(name, result)))
        print(f"{name}: done in {results[name]['seconds']:.0f} s", flush=True)
    print(report(results, args.steps, args.window))


if __name__ == "__main__":
    main()
