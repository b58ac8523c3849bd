"""Check that CI's second notebook run really is "another machine" for floating point.

CI runs every notebook twice: as this machine is, and again with one thread and a lower
instruction set for PyTorch's own kernels (``ATEN_CPU_CAPABILITY``) and for the oneDNN and
MKL libraries it calls (``ONEDNN_MAX_CPU_ISA``, ``MKL_ENABLE_INSTRUCTIONS``). That second
run proves that stored outputs do not depend on this machine's arithmetic only if those
settings change the arithmetic. This script measures it: it trains the same small GPT
with the same seed twice, in two fresh processes (one per environment), and compares the
final weights.

    python .ci/float_env_check.py            # the lowered settings are read from the environment
                                             # variables named above, as CI exports them
    python .ci/float_env_check.py --each     # also each setting on its own

It prints the CPU capability each process used and the largest difference between the two
sets of weights, and exits with status 1 if the weights are bitwise equal (the second run
would then prove nothing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

LOWERED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")

TRAIN = r"""
import json, sys
import torch
from companion.config import GPTConfig
from companion.model import GPTModel
from companion.optim import configure_optimizer

torch.manual_seed(0)
cfg = GPTConfig(vocab_size=512, context_length=64, emb_dim=128, n_heads=4, n_layers=2)
model = GPTModel(cfg)
opt = configure_optimizer(model, lr=1e-3)
data = torch.randint(0, 512, (8, 65), generator=torch.Generator().manual_seed(1))
for _ in range(100):
    logits = model(data[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), data[:, 1:].flatten())
    opt.zero_grad()
    loss.backward()
    opt.step()
torch.save({k: v.clone() for k, v in model.state_dict().items()}, sys.argv[1])
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                  "loss": loss.item()}))
"""


def run(env: dict[str, str], out: Path) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", TRAIN, str(out)], env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    import torch

    lowered = {name: os.environ[name] for name in LOWERED if name in os.environ}
    if not lowered:
        print("set the lowered settings first, e.g. ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 "
              "MKL_ENABLE_INSTRUCTIONS=AVX2 OMP_NUM_THREADS=1", file=sys.stderr)
        return 2
    normal = {k: v for k, v in os.environ.items() if k not in LOWERED}
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "normal.pt", Path(tmp) / "lowered.pt"
        first = run(normal, a)
        second = run({**normal, **lowered}, b)
        wa = torch.load(a, weights_only=True)
        wb = torch.load(b, weights_only=True)
    diff = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    changed = sum(int(not torch.equal(wa[k], wb[k])) for k in wa)
    print(f"this machine:      capability {first['capability']}, {first['threads']} thread(s), final loss {first['loss']:.6f}")
    print(f"lowered ({', '.join(f'{k}={v}' for k, v in lowered.items())}):")
    print(f"                   capability {second['capability']}, {second['threads']} thread(s), final loss {second['loss']:.6f}")
    print(f"after 100 AdamW steps: {changed} of {len(wa)} tensors differ; largest difference {diff:.3e}")
    if "--each" in sys.argv[1:]:
        groups = {"threads": ("OMP_NUM_THREADS", "MKL_NUM_THREADS"), "PyTorch's kernels": ("ATEN_CPU_CAPABILITY",),
                  "oneDNN and MKL": ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")}
        for label, names in groups.items():
            alone = {k: v for k, v in lowered.items() if k in names}
            if not alone:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "alone.pt"
                run({**normal, **alone}, path)
                w = torch.load(path, weights_only=True)
            d = max((wa[k] - w[k]).abs().max().item() for k in wa)
            print(f"  {label:<18} alone ({', '.join(f'{k}={v}' for k, v in alone.items())}): largest difference {d:.3e}")
    if diff == 0.0:
        print("the lowered settings did not change the arithmetic: the second notebook run would prove nothing",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
