"""The output head and loss alone: readable against fused, forward + backward (issue 20).

    OMP_NUM_THREADS=1 python bench/bench_head.py 2048 384 64,128,256 3

Arguments: tokens N, width C, the chunk sizes to try, rounds. Vocabulary 50,257. Prints
head steps/s (median of interleaved rounds) for ``F.cross_entropy(h @ W.T, t)`` and for
``linear_cross_entropy`` at each chunk size.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import interleave, median

from companion.fused import linear_cross_entropy


def main() -> None:
    n, c, v = int(sys.argv[1]), int(sys.argv[2]), 50257
    chunks = [int(x) for x in sys.argv[3].split(",")]
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    h = torch.randn(n, c).requires_grad_()
    w = (torch.randn(v, c) * 0.02).requires_grad_()
    t = torch.randint(0, v, (n,))

    def task(fn: Callable[[], torch.Tensor]) -> Callable[[], float]:
        def measure() -> float:
            start = time.perf_counter()
            for _ in range(3):
                h.grad = w.grad = None
                fn().backward()
            return 3 / (time.perf_counter() - start)
        return measure

    tasks = {"readable": task(lambda: F.cross_entropy(h @ w.t(), t))}
    for chunk in chunks:
        tasks[f"fused, chunk {chunk}"] = task(lambda chunk=chunk: linear_cross_entropy(h, w, t, chunk=chunk))
    for fn in tasks.values():
        fn()  # warm up
    rates = interleave(tasks, rounds)
    print(f"N={n} C={c} V={v}: " + ", ".join(f"{k} {median(r):.2f}" for k, r in rates.items()) + " head steps/s")


if __name__ == "__main__":
    main()
