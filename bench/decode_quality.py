"""How much int8 and bfloat16 weights change a model's predictions (issue 20).

    python bench/decode_quality.py          # prints a markdown table

For each shipped course model, on the held-out validation text of its recipe (the last
10% of tinyshakespeare, up to ``--tokens`` tokens), under teacher forcing: the loss per
token and the perplexity with float32 weights and with ``for_decoding(model, fmt)``'s,
the perplexity's relative change, and how often the most likely next token is the same
as float32's (top-1 agreement). GPT-2's own weights are not available offline here, so
the course's models stand in for it.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from companion.course_models import RECIPES, prepare_data, pretrained
from companion.quantize import for_decoding


def teacher_forced(model: torch.nn.Module, ids: torch.Tensor, context: int) -> tuple[float, torch.Tensor]:
    """Mean loss and the top-1 predictions over ``ids`` (N,), in windows of ``context`` tokens."""
    losses, tops = [], []
    with torch.no_grad():
        for start in range(0, len(ids) - 1, context):
            window = ids[start : start + context + 1].unsqueeze(0)  # (1, T+1)
            logits = model(window[:, :-1]).float()  # (1, T, V)
            losses.append(F.cross_entropy(logits[0], window[0, 1:], reduction="sum"))
            tops.append(logits[0].argmax(-1))
    top = torch.cat(tops)
    return float(sum(losses)) / len(top), top


def quality_table(tokens: int = 8192, models: tuple[str, ...] = ("shakespeare-small",)) -> str:
    rows = ["| model | weights | loss (nats/token) | perplexity | perplexity change | top-1 agreement |",
            "| --- | --- | ---: | ---: | ---: | ---: |"]
    for name in models:
        found = pretrained(name, progress=False)
        recipe = RECIPES["shakespeare-small"]
        text = prepare_data(recipe, progress=False).val_text
        ids = torch.tensor(found.tokenizer.encode(text)[: tokens + 1])
        context = found.model.config.context_length
        ref_loss, ref_top = teacher_forced(found.model, ids, context)
        rows.append(f"| {name} | fp32 | {ref_loss:.4f} | {math.exp(ref_loss):.3f} | - | - |")
        for fmt in ("bf16", "int8"):
            loss, top = teacher_forced(for_decoding(found.model, fmt), ids, context)  # type: ignore[arg-type]
            change = math.exp(loss) / math.exp(ref_loss) - 1
            rows.append(f"| {name} | {fmt} | {loss:.4f} | {math.exp(loss):.3f} | {change:+.2%} | "
                        f"{(top == ref_top).float().mean():.2%} |")
    return "\n".join(rows) + f"\n\n(teacher forcing over the first {tokens:,} tokens of the held-out text)"


def main() -> None:
    parser = argparse.ArgumentParser(description="int8 and bf16 weights against float32")
    parser.add_argument("--tokens", type=int, default=8192)
    args = parser.parse_args()
    print(quality_table(args.tokens))


if __name__ == "__main__":
    main()
