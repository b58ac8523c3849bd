"""Peak resident memory of the course's training, fine-tuning and decoding (issue 20).

    python bench/memory.py                 # every case, each in its own process
    python bench/memory.py --case NAME     # one case (what the parent runs)

Each case runs in a fresh Python process, so that its peak is its own: the process's
high-water mark of resident memory (``VmHWM``) after a few steps, and, for the training
steps, the rise of the high-water mark during one step over the memory resident just
before it (the step's own peak: activations, logits, gradients), measured by resetting
the mark through ``/proc/self/clear_refs`` (Linux). Weights are random at the shapes of
the named models: memory does not depend on the values.

Cases (B: batch, T: tokens per row; chapter 6 pads to the longest training message,
about 120 GPT-2 tokens; chapter 7's batches are padded to their longest example, taken
here as 256 tokens):

* the training step at V50257 T256 C384 L6 (B=8, tied), readable and fused head;
* training ``shakespeare-small`` (its recipe's batch of 8 x 128);
* fine-tuning GPT-2 124M as chapter 6 does (classification head, B=8, T=120);
* fine-tuning GPT-2 124M as chapter 7 does (next-token loss, B=8, T=256), readable and
  fused head, and fused head with activation checkpointing; and GPT-2 355M the same way
  (the next size up);
* decoding 200 tokens with GPT-2 124M (batch 1, KV cache).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "step V50257 T256 C384, readable head": ("step", {"head": "manual"}),
    "step V50257 T256 C384, fused head": ("step", {"head": "fused"}),
    "train shakespeare-small (B=8, T=128)": ("train", {"preset": "shakespeare-small", "B": 8, "T": 128,
                                                       "head": "manual"}),
    "fine-tune GPT-2 124M, chapter 6 (B=8, T=120)": ("classify", {"preset": "gpt2-small", "B": 8, "T": 120}),
    "fine-tune GPT-2 124M, chapter 7 (B=8, T=256), readable head": (
        "train", {"preset": "gpt2-small", "B": 8, "T": 256, "head": "manual"}),
    "fine-tune GPT-2 124M, chapter 7 (B=8, T=256), fused head": (
        "train", {"preset": "gpt2-small", "B": 8, "T": 256, "head": "fused"}),
    "fine-tune GPT-2 124M, chapter 7 (B=8, T=256), fused head, activation checkpointing": (
        "train", {"preset": "gpt2-small", "B": 8, "T": 256, "head": "fused", "checkpoint": True}),
    "fine-tune GPT-2 355M, chapter 7 (B=8, T=256), fused head": (
        "train", {"preset": "gpt2-medium", "B": 8, "T": 256, "head": "fused"}),
    "fine-tune GPT-2 355M, chapter 7 (B=8, T=256), fused head, activation checkpointing": (
        "train", {"preset": "gpt2-medium", "B": 8, "T": 256, "head": "fused", "checkpoint": True}),
    "decode 200 tokens, GPT-2 124M (batch 1)": ("decode", {"preset": "gpt2-small"}),
}


def _status(field: str) -> float:
    """A ``/proc/self/status`` memory field in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def run_case(name: str) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    from companion.config import GPTConfig
    from companion.generate import generate
    from companion.model import GPTModel
    from companion.optim import configure_optimizer

    kind, opts = CASES[name]
    torch.manual_seed(0)
    if kind == "step":
        cfg = GPTConfig(vocab_size=50257, context_length=256, emb_dim=384, n_heads=6, n_layers=6, tie_embeddings=True)
        B, T = 8, 256
    else:
        cfg = GPTConfig.from_preset(opts["preset"], drop_rate=0.0)
        B, T = opts.get("B", 1), opts.get("T", 10)
    model = GPTModel(cfg, head_impl=opts.get("head", "manual")).set_activation_checkpointing(opts.get("checkpoint", False))
    result: dict[str, float] = {}
    if kind == "decode":
        model.eval()
        generate(model, torch.randint(0, cfg.vocab_size, (1, 10)), 200)
        result["peak_mb"] = _status("VmHWM")
        return result
    if kind == "classify":
        model.out_head = torch.nn.Linear(cfg.emb_dim, 2)  # chapter 6's two classes
    optimizer = configure_optimizer(model, lr=1e-4, weight_decay=0.1)
    x = torch.randint(0, cfg.vocab_size, (B, T))
    y = torch.randint(0, cfg.vocab_size, (B, T)) if kind != "classify" else torch.randint(0, 2, (B,))

    def step() -> None:
        if kind == "classify":
            loss = F.cross_entropy(model(x)[:, -1, :], y)  # the last token's logits
        elif opts.get("head") == "fused":
            loss = model(x, targets=y)
        else:
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # the optimizer's state exists from here on
    optimizer.zero_grad(set_to_none=True)
    before = _status("VmRSS")
    _reset_peak()
    step()
    result["step_peak_mb"] = _status("VmHWM") - before
    step()
    result["peak_mb"] = max(_status("VmHWM"), before)
    result["resident_before_step_mb"] = before
    return result


def measure(name: str) -> dict[str, Any]:
    """Run one case in a fresh process; its figures, or ``{"error": ...}``."""
    child = subprocess.run([sys.executable, __file__, "--case", name], capture_output=True, text=True, cwd=ROOT)
    if child.returncode != 0:
        return {"error": (child.stderr.strip().splitlines() or ["failed"])[-1]}
    return dict(json.loads(child.stdout.strip().splitlines()[-1]))


def table(names: list[str] | None = None, progress: bool = False) -> str:
    rows = ["| case | peak resident MB | one step's own peak MB (above the resident before it) |",
            "| --- | ---: | ---: |"]
    results = {}
    for name in names or list(CASES):
        res = measure(name)
        results[name] = res
        if progress:
            print(f"  ({name}: {res})", file=sys.stderr, flush=True)
        if "error" in res:
            rows.append(f"| {name} | failed: {res['error']} | |")
            continue
        step = res.get("step_peak_mb")
        rows.append(f"| {name} | {res['peak_mb']:,.0f} | {'-' if step is None else f'{step:,.0f}'} |")
    readable = results.get("step V50257 T256 C384, readable head", {})
    fused = results.get("step V50257 T256 C384, fused head", {})
    if "step_peak_mb" in readable and "step_peak_mb" in fused:
        rows += ["", f"The fused head lowers the training step's own peak at V50257 T256 C384 by "
                 f"{1 - fused['step_peak_mb'] / readable['step_peak_mb']:.0%}, and the process's peak by "
                 f"{1 - fused['peak_mb'] / readable['peak_mb']:.0%}."]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description="peak resident memory, one process per case")
    parser.add_argument("--case", choices=list(CASES), help="run one case here and print its JSON")
    args = parser.parse_args()
    if args.case is not None:
        print(json.dumps(run_case(args.case)))
        return
    print(table(progress=True))


if __name__ == "__main__":
    main()
