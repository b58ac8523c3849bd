"""Where one training step's time goes: ``torch.profiler`` on companion's step (issue 20).

    OMP_NUM_THREADS=1 python bench/profile_step.py                 # V50257 T256 C384 L6 H6, fused head
    OMP_NUM_THREADS=1 python bench/profile_step.py --head manual   # the readable head
    python bench/profile_step.py --shape 4096,256,384,6,6

Builds the benchmark's tied model at one shape (batch 8, dropout 0, companion's fused AdamW),
takes two warm-up steps and three timed ones, then profiles one step and prints the
operators by their own CPU time. The shares to read: the matrix products (``aten::mm``,
``addmm``, ``addmm_``), the head's softmax work (``_log_softmax``, ``exp_``), attention and
GELU, and the head as a whole (``_LinearCrossEntropy``'s total).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from companion.config import GPTConfig
from companion.model import GPTModel
from companion.optim import configure_optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description="profile one training step")
    parser.add_argument("--shape", default="50257,256,384,6,6", help="V,T,C,L,H (default 50257,256,384,6,6)")
    parser.add_argument("--head", choices=("fused", "manual"), default="fused")
    parser.add_argument("--rows", type=int, default=15, help="operators to print")
    args = parser.parse_args()
    V, T, C, L, H = (int(x) for x in args.shape.split(","))
    cfg = GPTConfig(vocab_size=V, context_length=T, emb_dim=C, n_heads=H, n_layers=L, drop_rate=0.0,
                    qkv_bias=False, tie_embeddings=True)
    torch.manual_seed(0)
    model = GPTModel(cfg, head_impl=args.head)
    optimizer = configure_optimizer(model, lr=4e-4, weight_decay=0.1)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, V, (8, T), generator=gen), torch.randint(0, V, (8, T), generator=gen)

    def step() -> None:
        loss = model(x, targets=y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(3):
        step()
    seconds = (time.perf_counter() - start) / 3
    print(f"V{V} T{T} C{C} L{L} H{H}, {args.head} head, {torch.get_num_threads()} threads: "
          f"{seconds:.2f} s a step, {8 * T / seconds:,.0f} tokens/s")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
