"""Forward-pass time of a GPT configuration on this machine, for both attention paths.

    python bench/bench_forward.py                      # gpt2-small, 256 and 1024 tokens
    python bench/bench_forward.py --preset gpt2-medium --tokens 128 --batch 2

Prints a markdown table: tokens, batch, median and fastest time per forward pass for the
readable ("manual") and fused ("sdpa") attention paths, and the ratio. Weights are random
(the time does not depend on their values); the model runs in eval mode without gradients.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from companion import GPTConfig, GPTModel


def time_forward(model: GPTModel, idx: torch.Tensor, repeats: int) -> list[float]:
    """Seconds per forward pass, ``repeats`` times after one warm-up pass."""
    with torch.no_grad():
        model(idx)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(idx)
            times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="gpt2-small", help="a GPTConfig preset name (default: gpt2-small)")
    parser.add_argument("--tokens", type=int, nargs="+", default=[256, 1024],
                        help="sequence lengths to time (default: 256 1024)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default: 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per setting (default: 5)")
    args = parser.parse_args(argv)

    cfg = GPTConfig.from_preset(args.preset)
    torch.manual_seed(0)
    model = GPTModel(cfg).eval()
    print(f"{args.preset}, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| tokens | batch | manual median (min) | sdpa median (min) | manual / sdpa |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for T in args.tokens:
        if cfg.context_length < T:
            raise SystemExit(f"--tokens {T} exceeds the context length {cfg.context_length} of {args.preset}")
        idx = torch.randint(0, cfg.vocab_size, (args.batch, T), generator=torch.Generator().manual_seed(1))
        result = {}
        for impl in ("manual", "sdpa"):
            model.set_attention_impl(impl)
            times = time_forward(model, idx, args.repeats)
            result[impl] = (statistics.median(times), min(times))
        (m_med, m_min), (s_med, s_min) = result["manual"], result["sdpa"]
        print(f"| {T} | {args.batch} | {m_med * 1e3:,.0f} ms ({m_min * 1e3:,.0f}) | {s_med * 1e3:,.0f} ms "
              f"({s_min * 1e3:,.0f}) | {m_med / s_med:.2f}x |")


if __name__ == "__main__":
    main()
