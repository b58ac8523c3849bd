"""A small training run for tests/test_distributed.py, started with or without torchrun.

    python tests/ddp_script.py OUT [--steps N] [--stop-after K] [--fail-rank R --fail-at K]
    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_script.py OUT ...

It trains a tiny GPT on fixed random tokens with ``companion.train.train`` (which joins the
process group itself under torchrun), checkpointing into ``OUT/run`` every 4 steps, and rank
0 writes the final weights to ``OUT/final.safetensors`` and a summary to ``OUT/summary.json``.
``--stop-after K`` kills every process after step K (``os._exit``: no cleanup, like a machine
that goes down); ``--fail-rank R --fail-at K`` makes rank R raise an exception at step K.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from companion import distributed
from companion.config import GPTConfig
from companion.data import SlidingWindowDataset
from companion.model import GPTModel
from companion.train import train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--stop-after", type=int, default=None)
    parser.add_argument("--fail-rank", type=int, default=None)
    parser.add_argument("--fail-at", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=96, context_length=16, emb_dim=32, n_heads=4, n_layers=2))
    ids = torch.randint(0, 96, (600,), generator=torch.Generator().manual_seed(1))
    loader = DataLoader(SlidingWindowDataset(ids, 16, stride=3), batch_size=args.batch_size, shuffle=True, drop_last=True)

    def callback(step: int, history: object) -> None:
        rank = int(os.environ.get("RANK", "0"))
        if args.stop_after is not None and step == args.stop_after:
            os._exit(17)
        if args.fail_rank is not None and rank == args.fail_rank and step == args.fail_at:
            raise RuntimeError(f"rank {rank} fails on purpose at step {step}")

    start = time.perf_counter()
    history = train(model, loader, max_steps=args.steps, lr=3e-3, warmup_steps=2, min_lr=3e-4, eval_every=4,
                    checkpoint_dir=args.out / "run", progress=False, callback=callback, seed=5)
    seconds = time.perf_counter() - start
    if int(os.environ.get("RANK", "0")) == 0:
        save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "out_head.weight"
                   or not model.config.tie_embeddings}, str(args.out / "final.safetensors"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        (args.out / "summary.json").write_text(json.dumps({
            "world_size": world, "steps": history.steps, "batch_losses": history.batch_losses,
            "seconds": seconds, "tokens_per_second": history.tokens_seen[-1] / seconds,
        }))
    assert not distributed.world().distributed  # train() left the process group it joined


if __name__ == "__main__":
    main()
