"""Generation speed with and without the KV cache (companion.generate).

Builds a model from a preset with random weights (GPT-2's initialisation), then times
``generate`` (greedy) from a short prompt, with and without the cache, and prints a
markdown table of tokens per second (median over the runs). It also checks that both
paths produced the same tokens.

    python bench/bench_generate.py                       # gpt2-small, 64 new tokens, 3 runs
    python bench/bench_generate.py --new-tokens 100 --runs 5
    python bench/bench_generate.py --preset gpt2-small --context-length 128   # past the context
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch

from companion.config import PRESETS, GPTConfig
from companion.generate import generate
from companion.model import GPTModel, init_gpt2_weights, num_parameters


def tokens_per_second(model: GPTModel, idx: torch.Tensor, new_tokens: int, *, use_cache: bool,
                      runs: int) -> tuple[float, list[float], torch.Tensor]:
    """Median tokens/s over ``runs`` timed runs (after one short warm-up run)."""
    generate(model, idx, 2, use_cache=use_cache)  # warm-up
    rates = []
    out = idx
    for _ in range(runs):
        start = time.perf_counter()
        out = generate(model, idx, new_tokens, use_cache=use_cache)
        rates.append(new_tokens / (time.perf_counter() - start))
    return statistics.median(rates), rates, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="gpt2-small", choices=list(PRESETS),
                        help="model shape (default gpt2-small, 124M parameters)")
    parser.add_argument("--context-length", type=int, default=None,
                        help="override the preset's context length (a short one exercises the fallback)")
    parser.add_argument("--prompt-tokens", type=int, default=4, help="tokens in the prompt (default 4)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens to generate (default 64)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per setting; the median is shown (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    overrides = {"drop_rate": 0.0}
    if args.context_length:
        overrides["context_length"] = args.context_length
    cfg = GPTConfig.from_preset(args.preset, **overrides)
    torch.manual_seed(0)
    model = init_gpt2_weights(GPTModel(cfg)).eval()
    idx = torch.randint(0, cfg.vocab_size, (1, args.prompt_tokens), generator=torch.Generator().manual_seed(0))

    print(f"{args.preset}: {num_parameters(model) / 1e6:.1f}M parameters, context {cfg.context_length}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}; "
          f"prompt {args.prompt_tokens} tokens, {args.new_tokens} new tokens, median of {args.runs} runs")
    rows = []
    outputs = {}
    for use_cache in (False, True):
        median, rates, out = tokens_per_second(model, idx, args.new_tokens, use_cache=use_cache, runs=args.runs)
        outputs[use_cache] = out
        rows.append((use_cache, median, rates))
    same = torch.equal(outputs[False], outputs[True])
    base = rows[0][1]
    print()
    print("| KV cache | tokens/s (median) | runs | speed-up |")
    print("| --- | ---: | --- | ---: |")
    for use_cache, median, rates in rows:
        runs = ", ".join(f"{r:.1f}" for r in rates)
        print(f"| {'yes' if use_cache else 'no'} | {median:.1f} | {runs} | {median / base:.1f}× |")
    print()
    print(f"same tokens with and without the cache: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
