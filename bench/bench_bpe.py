"""Benchmark the byte-level BPE of companion.tokenizers.

Trains with the fast trainer (incremental pair counts) and with the naive reference
(recount every pair after every merge) on the same inputs, checks that both learn the
same merges, and prints a markdown table. Then compares the encode throughput of
``BPETokenizer.from_gpt2()`` with tiktoken's GPT-2 encoding on tinyshakespeare.

    python bench/bench_bpe.py            # the full table (about a minute on 2 cores)
    python bench/bench_bpe.py --quick    # the-verdict only

The course texts are read from $COMPANION_SHARED_DATA, else from ../shared/data next to
the repository.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from companion.tokenizers import BPETokenizer, gpt2_tokenizer, train_bpe_naive

REPO_ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def data_dir(override: str | None) -> Path:
    """The folder with the course texts: --data, $COMPANION_SHARED_DATA, or ../shared/data."""
    folder = Path(override or os.environ.get("COMPANION_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")
    if not (folder / "the-verdict.txt").is_file():
        sys.exit(f"course texts not found in {folder}: pass --data DIR or set COMPANION_SHARED_DATA")
    return folder


def timed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, float]:
    """Run ``fn`` once and return (result, seconds)."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def training_row(name: str, text: str, vocab_size: int, max_naive_seconds: float) -> str:
    """Train both ways (the naive one only if its estimate fits) and format one table row."""
    fast, fast_s = timed(BPETokenizer.train, text, vocab_size)
    n_merges = vocab_size - 256 - 1
    # the naive trainer's cost is about one full recount of the text per merge
    _, one_merge_s = timed(train_bpe_naive, text, 256 + 1 + 1)
    estimate = one_merge_s * n_merges
    if estimate > max_naive_seconds:
        # chunks shrink as they merge, so one recount times n_merges is an upper bound
        naive_cell = f"skipped (est. ≤ {estimate:,.0f})"
        speedup_cell = f"≤ {estimate / fast_s:,.0f}× (est.)"
        same_cell = "not run"
    else:
        naive, naive_s = timed(train_bpe_naive, text, vocab_size)
        same = list(naive.merges.items()) == list(fast.merges.items())
        if not same:
            sys.exit(f"{name} at {vocab_size}: the fast and the naive trainer learned different merges")
        naive_cell = f"{naive_s:.2f}"
        speedup_cell = f"{naive_s / fast_s:,.0f}×"
        same_cell = "yes"
    size = f"{len(text.encode('utf-8')) / 1000:,.0f} kB"
    return f"| {name} ({size}) | {vocab_size:,} | {naive_cell} | {fast_s:.2f} | {speedup_cell} | {same_cell} |"


def encode_rows(text: str) -> list[str]:
    """Encode throughput of the from-scratch BPE with GPT-2's merges and of tiktoken."""
    megabytes = len(text.encode("utf-8")) / 1e6
    enc = gpt2_tokenizer()
    enc.encode(text[:1000])  # warm up
    reference, tiktoken_s = timed(enc.encode, text)
    ours = BPETokenizer.from_gpt2()
    cold, cold_s = timed(ours.encode, text)
    warm, warm_s = timed(ours.encode, text)
    if not cold == warm == reference:
        sys.exit("BPETokenizer.from_gpt2() and tiktoken disagree on tinyshakespeare")
    return [
        f"| tiktoken (Rust, 1 thread) | {megabytes / tiktoken_s:.1f} | reference |",
        f"| BPETokenizer.from_gpt2(), empty chunk cache | {megabytes / cold_s:.1f} | yes |",
        f"| BPETokenizer.from_gpt2(), warm chunk cache | {megabytes / warm_s:.1f} | yes |",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=(
            "Compare the fast BPE trainer (incremental pair counts) with the naive reference "
            "(recount all pairs every merge) on the course texts, check they learn identical "
            "merges, and measure encode throughput against tiktoken. Prints markdown tables."
        )
    )
    parser.add_argument("--data", metavar="DIR", help="folder with the course texts "
                        "(default: $COMPANION_SHARED_DATA, else ../shared/data)")
    parser.add_argument("--max-naive-seconds", type=float, default=120.0, metavar="S",
                        help="skip the naive trainer where its estimated time exceeds S seconds (default 120)")
    parser.add_argument("--quick", action="store_true", help="only the-verdict, no encode comparison")
    args = parser.parse_args(argv)

    folder = data_dir(args.data)
    verdict = (folder / "the-verdict.txt").read_text(encoding="utf-8")
    cases = [("the-verdict", verdict, 512), ("the-verdict", verdict, 1024)]
    if not args.quick:
        shakespeare = (folder / "tinyshakespeare.txt").read_text(encoding="utf-8")
        cases += [
            ("tinyshakespeare[:100k]", shakespeare[:100_000], 1024),
            ("tinyshakespeare", shakespeare, 4096),
        ]

    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPU(s); times in seconds.")
    print()
    print("| input | vocab size | naive s | fast s | speed-up | same merges |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, text, vocab_size in cases:
        print(training_row(name, text, vocab_size, args.max_naive_seconds), flush=True)

    if not args.quick:
        print()
        print("| encoder (GPT-2 merges, tinyshakespeare) | MB/s | same ids as tiktoken |")
        print("| --- | ---: | --- |")
        for row in encode_rows(shakespeare):
            print(row)


if __name__ == "__main__":
    main()
