"""One benchmark run: companion against the GPTs a reader would pick instead.

    pip install --no-deps -r bench/requirements.txt     # the peers, without another torch
    flock /tmp/heavy.lock python bench/run.py          # about 30 minutes on 2 cores
    python bench/run.py --quick                         # fewer rounds and tokens
    python bench/run.py --notebooks --book              # also nbval per notebook, book build

Everything runs in this one process (notebooks and the book build as child processes),
alternating each measurement with its comparison, and prints one markdown report:

1. the machine, and probes of it taken at the start, middle and end: float32 matmul
   GFLOP/s (the practical peak for MFU) and matrix-vector passes/s over GPT-2 small's
   weights (the ceiling of batch-1 decoding);
2. training tokens/s and MFU at three shapes, tied and untied, against
   ``transformers``' ``GPT2LMHeadModel``, nanoGPT (from a clone named by ``NANOGPT_DIR``)
   and ``llms-from-scratch``'s models, with companion's fused head (its default path),
   its readable path and bfloat16 autocast (where the CPU has it natively) as extra rows;
3. bfloat16 autocast's loss curve against float32's on real text;
4. the trap: a tied model left at PyTorch's default initialisation;
5. generation tokens/s with the KV cache (GPT-2 small's shape, batch 1 and 8) against
   Hugging Face's ``generate``, identical tokens checked, and the share of the
   bandwidth ceiling reached; int8 and bfloat16 decoding weights, and their quality on
   held-out text (``bench/decode_quality.py``);
6. peak resident memory of training, fine-tuning and decoding (``bench/memory.py``);
7. the course's BPE: trainer against the naive reference and Hugging Face
   ``tokenizers``, encoder against tiktoken (identical ids checked);
8. optionally, ``pytest --nbval`` time per notebook and the book build time.

Floors (issue 20): float32 training with the fused head >= 1.15x the best peer at both
V50257 shapes; the default path >= 1.4x the best peer's where bfloat16 is native; batch-1
decoding >= 1.5x Hugging Face's float32 ``generate`` with perplexity within 1%; a training
step's peak at V50257 T256 C384 >= 40% below the readable head's; chapter 7's GPT-2 124M
fine-tuning within 4 GB.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # before transformers imports tokenizers

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import (
    Probes,
    flops_per_token,
    interleave,
    median,
    training_task,
)
from peers import PEER_RUNS, PEERS_TIED, PEERS_UNTIED, PeerMissing, Shape, versions

from companion.config import GPTConfig
from companion.generate import generate
from companion.model import GPTModel
from companion.optim import configure_optimizer
from companion.precision import native_bf16

ROOT = Path(__file__).resolve().parents[1]
SHAPES = (Shape(50257, 128, 128, 4, 4), Shape(50257, 256, 384, 6, 6), Shape(4096, 256, 384, 6, 6))
BATCH = 8
LR = 4e-4
NATIVE_BF16 = native_bf16()


def out(line: str = "") -> None:
    print(line, flush=True)


# --------------------------------------------------------------------------- #
# Training
# --------------------------------------------------------------------------- #
def companion_cfg(shape: Shape, tied: bool) -> GPTConfig:
    return GPTConfig(vocab_size=shape.V, context_length=shape.T, emb_dim=shape.C, n_heads=shape.H,
                     n_layers=shape.L, drop_rate=0.0, qkv_bias=False, tie_embeddings=tied)


def training_group(shape: Shape, tied: bool, rounds: int, seconds: float) -> dict[str, dict[str, float]]:
    """Interleaved tokens/s of companion (fast, readable, bf16) and the peers at one shape."""
    gen = torch.Generator().manual_seed(0)
    batch = (torch.randint(0, shape.V, (BATCH, shape.T), generator=gen),
             torch.randint(0, shape.V, (BATCH, shape.T), generator=gen))
    tasks, flops = {}, {}
    variants: list[tuple[str, dict[str, Any]]] = [("companion", {}), ("companion fused", {"fused": True})]
    if NATIVE_BF16:  # emulated bfloat16 is ~100x slower than float32: not worth a row
        variants += [("companion bf16", {"bf16": True}), ("companion fused bf16", {"fused": True, "bf16": True})]
    if tied:
        variants.insert(1, ("companion readable", {"readable": True}))
    for name, options in variants:
        torch.manual_seed(0)
        model = GPTModel(companion_cfg(shape, tied), layer_impl="manual" if options.get("readable") else "fused",
                         head_impl="fused" if options.get("fused") else "manual")
        if options.get("readable"):
            model.set_attention_impl("manual")
        optimizer = configure_optimizer(model, lr=LR, weight_decay=0.1)
        tasks[name] = training_task(model, optimizer, batch, bf16=options.get("bf16", False), seconds=seconds,
                                    targets_in_forward=bool(options.get("fused")))
        flops[name] = flops_per_token(model, shape.L, shape.T, shape.C)
    for name, build in (PEERS_TIED if tied else PEERS_UNTIED).items():
        try:
            torch.manual_seed(0)
            model, forward = build(shape)
        except PeerMissing as err:
            out(f"  ({name}: {err})")
            continue
        run = PEER_RUNS.get(name)
        if run is not None and run.optimizer is not None:  # the peer's own, as its users train it
            optimizer = run.optimizer(LR)
        else:  # the same optimizer kernel as companion's, so the ratio measures the models
            optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.1, fused=True)
        if run is not None and run.loss_fn is not None:
            tasks[name] = training_task(run.loss_fn, optimizer, batch, seconds=seconds, targets_in_forward=True)
        else:
            tasks[name] = training_task(forward, optimizer, batch, seconds=seconds)
        flops[name] = flops_per_token(model, shape.L, shape.T, shape.C)
    rates = interleave(tasks, rounds)
    return {name: {"tok_s": median(values), "flops": flops[name], "spread": max(values) / min(values)}
            for name, values in rates.items()}


def training_section(probes: Probes, rounds: int, seconds: float, shapes: tuple[Shape, ...]) -> list[dict[str, Any]]:
    out("## Training: tokens/s, forward + backward + AdamW, float32, batch 8, dropout 0")
    out()
    rows = []
    for i, shape in enumerate(shapes):
        for tied in (True, False):
            results = training_group(shape, tied, rounds, seconds)
            rows.append({"shape": shape, "tied": tied, "results": results})
        if i == 0:
            probes.take("after the first shape")
    peak = probes.peak_gflops * 1e9
    out("| shape (B=8) | head | companion | fused head | best peer | peer tok/s | ratio | fused ratio "
        "| MFU fused | MFU peer | readable path | bf16 autocast | fused + bf16 (default path) |")
    out("| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")

    def cell(result: dict[str, float] | None, base: float | None = None) -> str:
        if result is None:
            return "-"
        return f"{result['tok_s']:,.0f}" + ("" if base is None else f" ({result['tok_s'] / base:.2f}x)")

    for row in rows:
        res = row["results"]
        ours, fused = res["companion"], res["companion fused"]
        peers = {k: v for k, v in res.items() if not k.startswith("companion")}
        best = max(peers, key=lambda k: peers[k]["tok_s"]) if peers else None
        peer_rate = peers[best]["tok_s"] if best else float("nan")
        out(f"| {row['shape']} | {'tied' if row['tied'] else 'untied'} | {ours['tok_s']:,.0f} | "
            f"{fused['tok_s']:,.0f} | {best or '-'} | {peer_rate:,.0f} | {ours['tok_s'] / peer_rate:.2f}x | "
            f"**{fused['tok_s'] / peer_rate:.2f}x** | {fused['tok_s'] * fused['flops'] / peak:.0%} | "
            f"{(peer_rate * peers[best]['flops'] / peak) if best else float('nan'):.0%} | "
            f"{cell(res.get('companion readable'))} | {cell(res.get('companion bf16'), peer_rate)} | "
            f"{cell(res.get('companion fused bf16'), peer_rate)} |")
    out()
    if not NATIVE_BF16:
        out("This CPU has no native bfloat16 (`companion.precision.native_bf16()` is False): `precision='auto'` "
            "trains in float32 here, so the default path is the fused head in float32, and the bf16 columns "
            "are not measured (emulated bfloat16 runs about 100x slower than float32).")
        out()
    out("Every peer, tokens/s (median of the rounds; max/min spread of the rounds in brackets):")
    out()
    for row in rows:
        cells = ", ".join(f"{k} {v['tok_s']:,.0f} ({v['spread']:.2f})" for k, v in row["results"].items())
        out(f"- {row['shape']} {'tied' if row['tied'] else 'untied'}: {cells}")
    out()
    out(f"MFU: model FLOPs (6 per matmul weight + 12·L·T·C per token) x tokens/s over the median matmul "
        f"probe, {probes.peak_gflops:.0f} GFLOP/s. The peers use `torch.optim.AdamW(fused=True)`, "
        "the same kernel as `companion.optim.configure_optimizer`, except nanoGPT, trained as its users train "
        "it: its own `configure_optimizers` (multi-tensor AdamW on a CPU), its own loss, and at GPT-2's "
        "vocabulary its padded 50,304 rows.")
    out()
    return rows


# --------------------------------------------------------------------------- #
# bfloat16 autocast: the loss curve
# --------------------------------------------------------------------------- #
def bf16_curve(steps: int) -> None:
    from companion.course_models import RECIPES, prepare_data

    out(f"## bfloat16 autocast: the loss curve against float32 ({steps} steps of chapter 5's model)")
    out()
    if not NATIVE_BF16:
        out("Skipped: no native bfloat16 on this CPU (emulated, a step takes ~12x float32's). The long "
            "comparison is `bench/bf16_curve.py`, its last result in `bench/bf16_curve.md`.")
        out()
        return
    recipe = RECIPES["shakespeare-small"]
    data = prepare_data(recipe, progress=False)
    batches = []
    for inputs, targets in data.train_loader:
        batches.append((inputs, targets))
        if len(batches) == steps:
            break
    curves, times = {}, {}
    for name, bf16 in (("float32", False), ("bf16", True)):
        torch.manual_seed(recipe.seed)
        model = GPTModel(recipe.config)
        optimizer = configure_optimizer(model, lr=recipe.lr, weight_decay=recipe.weight_decay, betas=recipe.betas)
        losses = []
        start = time.perf_counter()
        for inputs, targets in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
        times[name] = time.perf_counter() - start
        curves[name] = losses
    window = max(1, steps // 10)

    def smooth(values: list[float]) -> list[float]:
        return [sum(values[i:i + window]) / window for i in range(0, len(values) - window + 1, window)]

    a, b = smooth(curves["float32"]), smooth(curves["bf16"])
    gap = max(abs(x - y) for x, y in zip(a, b, strict=True))
    out(f"Loss every {window} steps (mean of the {window}), float32: " + " ".join(f"{x:.3f}" for x in a))
    out(f"Loss every {window} steps (mean of the {window}), bf16:    " + " ".join(f"{x:.3f}" for x in b))
    out(f"Largest gap between the two curves: {gap:.3f} nats/token (band: 0.05); "
        f"time float32 {times['float32']:.1f} s, bf16 {times['bf16']:.1f} s.")
    out()


# --------------------------------------------------------------------------- #
# The trap: a tied head at PyTorch's default initialisation
# --------------------------------------------------------------------------- #
_TRAP_CHILD = """
import sys, time, torch, torch.nn.functional as F
flush = sys.argv[1] == "flush"
if flush:
    torch.set_flush_denormal(True)  # before torch starts its worker threads: they inherit it
from companion.config import GPTConfig
from companion.model import GPTModel
from companion.optim import configure_optimizer
cfg = GPTConfig(vocab_size=50257, context_length=128, emb_dim=128, n_heads=4, n_layers=4, tie_embeddings=True)
torch.manual_seed(0)
model = GPTModel(cfg, init="pytorch")
opt = configure_optimizer(model, lr=4e-4, weight_decay=0.1)
x, y = torch.randint(0, 50257, (8, 128)), torch.randint(0, 50257, (8, 128))
def step():
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
for _ in range(3): step()
start = time.perf_counter()
for _ in range(3): step()
print(8 * 128 * 3 / (time.perf_counter() - start))
"""


def trap_section(rounds: int) -> None:
    shape = Shape(50257, 128, 128, 4, 4)
    out(f"## The trap: tied head at PyTorch's default initialisation ({shape}, B=8)")
    out()
    gen = torch.Generator().manual_seed(0)
    batch = (torch.randint(0, shape.V, (BATCH, shape.T), generator=gen),
             torch.randint(0, shape.V, (BATCH, shape.T), generator=gen))
    models, tasks, optimizers = {}, {}, {}
    for init in ("gpt2", "pytorch"):
        torch.manual_seed(0)
        model = GPTModel(companion_cfg(shape, True), init=init)  # type: ignore[arg-type]
        optimizers[init] = configure_optimizer(model, lr=LR, weight_decay=0.1)
        models[init] = model
        tasks[f"init={init}"] = training_task(model, optimizers[init], batch, seconds=2.0)
    rates = {k: median(v) for k, v in interleave(tasks, rounds).items()}
    # where the time goes: one step split into forward+backward and the optimizer step
    split = {}
    tiny = torch.finfo(torch.float32).tiny
    facts = {}
    for init, model in models.items():
        inputs, targets = batch
        start = time.perf_counter()
        logits = model(inputs)
        F.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()
        middle = time.perf_counter()
        optimizers[init].step()
        end = time.perf_counter()
        optimizers[init].zero_grad(set_to_none=True)
        split[init] = (middle - start, end - middle)
        state = optimizers[init].state[model.tok_emb.weight]
        sq = state["exp_avg_sq"]
        facts[init] = {
            "logit_std": float(logits.detach().std()),
            "subnormal_sq": float(((sq != 0) & (sq < tiny)).float().mean()),
            "zero_sq": float((sq == 0).float().mean()),
        }
    flushed = float("nan")
    try:
        child = subprocess.run([sys.executable, "-c", _TRAP_CHILD, "flush"], capture_output=True, text=True,
                               check=True, cwd=ROOT)
        flushed = float(child.stdout.strip().splitlines()[-1])
    except (subprocess.CalledProcessError, ValueError) as err:
        out(f"(the flushed-denormals child failed: {err})")
    out("| initialisation | tokens/s | logit std at step 0 | fwd+bwd s | AdamW step s | token-embedding "
        "`exp_avg_sq`: subnormal / zero |")
    out("| --- | ---: | ---: | ---: | ---: | --- |")
    for init in ("gpt2", "pytorch"):
        f = facts[init]
        out(f"| {init} | {rates[f'init={init}']:,.0f} | {f['logit_std']:.2f} | {split[init][0]:.3f} | "
            f"{split[init][1]:.3f} | {f['subnormal_sq']:.0%} / {f['zero_sq']:.0%} |")
    out(f"| pytorch, denormals flushed in every thread (child process) | {flushed:,.0f} | | | | |")
    out()
    out(f"Slowdown of the default initialisation: {rates['init=gpt2'] / rates['init=pytorch']:.1f}x; "
        f"flushing denormals from the start leaves {rates['init=gpt2'] / flushed:.2f}x.")
    out()


# --------------------------------------------------------------------------- #
# Generation
# --------------------------------------------------------------------------- #
def memory_section() -> None:
    from memory import table

    out("## Peak resident memory (each case in a fresh process)")
    out()
    out(table())
    out()


def generation_section(probes: Probes, rounds: int, new_tokens: int) -> None:
    import transformers

    from companion.weights import gpt2_state_dict_from_hf

    transformers.utils.logging.set_verbosity_error()
    out(f"## Generation: GPT-2 small's shape, random weights, greedy, 10-token prompt, {new_tokens} new tokens")
    out()
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
    hf.generation_config.pad_token_id = 50256
    hf.generation_config.eos_token_id = None  # never stop early: every run makes new_tokens tokens
    cfg = GPTConfig.from_preset("gpt2-small", drop_rate=0.0)
    ours = GPTModel(cfg)
    ours.load_state_dict(gpt2_state_dict_from_hf(hf.state_dict(), cfg))
    ours.eval()
    from companion.quantize import for_decoding

    variants = {"companion": ours, "companion int8": for_decoding(ours, "int8"),
                "companion bf16 weights": for_decoding(ours, "bf16")}
    rows = []
    for batch in (1, 8):
        prompt = torch.randint(0, 50257, (batch, 10), generator=torch.Generator().manual_seed(batch))
        results: dict[str, torch.Tensor] = {}

        def ours_task(name: str, prompt: torch.Tensor = prompt, results: dict[str, torch.Tensor] = results) -> Any:
            def task() -> float:
                start = time.perf_counter()
                results[name] = generate(variants[name], prompt, new_tokens)
                return prompt.numel() // 10 * new_tokens / (time.perf_counter() - start)
            return task

        def hf_task(prompt: torch.Tensor = prompt, results: dict[str, torch.Tensor] = results) -> float:
            start = time.perf_counter()
            with torch.inference_mode():
                results["hf"] = hf.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                            max_new_tokens=new_tokens)
            return prompt.numel() // 10 * new_tokens / (time.perf_counter() - start)

        for model in variants.values():  # warm up every contender
            generate(model, prompt, 4)
        hf.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=4)
        tasks = {name: ours_task(name) for name in variants} | {"hf": hf_task}
        rates = {k: median(v) for k, v in interleave(tasks, rounds).items()}
        same_hf = torch.equal(results["companion"], results["hf"])
        check = min(new_tokens, 40)
        uncached = generate(ours, prompt, check, use_cache=False)
        same_uncached = torch.equal(uncached, results["companion"][:, : 10 + check])
        agree = {name: float((results[name][:, 10:] == results["companion"][:, 10:]).float().mean())
                 for name in variants if name != "companion"}
        rows.append((batch, rates, same_hf, same_uncached, check, agree))
    limit = probes.decode_limit
    out(f"Ceiling at batch 1: {limit:.1f} tokens/s (matrix-vector passes/s over {probes.numel / 1e6:.1f}M "
        "float32 weights, the median probe).")
    out()
    out("| batch | companion tok/s | HF tok/s | ratio | share of the ceiling | same tokens as HF | "
        "same as uncached | int8 tok/s (vs HF) | bf16 weights tok/s (vs HF) |")
    out("| ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: |")
    for batch, rates, same_hf, same_uncached, check, _ in rows:
        share = f"{rates['companion'] / limit:.0%}" if batch == 1 else "-"
        out(f"| {batch} | {rates['companion']:,.1f} | {rates['hf']:,.1f} | **{rates['companion'] / rates['hf']:.2f}x** "
            f"| {share} | {'yes' if same_hf else 'NO'} | {'yes' if same_uncached else 'NO'} (first {check}) | "
            f"{rates['companion int8']:,.1f} (**{rates['companion int8'] / rates['hf']:.2f}x**) | "
            f"{rates['companion bf16 weights']:,.1f} ({rates['companion bf16 weights'] / rates['hf']:.2f}x) |")
    out()
    out("Random weights decode greedily into repetitive text, so the share of generated tokens that int8 "
        "and bf16 weights keep equal to float32's is only a rough signal: "
        + "; ".join(f"batch {b}: " + ", ".join(f"{k.removeprefix('companion ')} {v:.0%}" for k, v in a.items())
                    for b, _, _, _, _, a in rows) + ". Quality on real text, with trained weights:")
    out()
    from decode_quality import quality_table

    out(quality_table(4096))
    out()


# --------------------------------------------------------------------------- #
# BPE
# --------------------------------------------------------------------------- #
def bpe_section(quick: bool) -> None:
    from companion.data import read_text
    from companion.tokenizers import BPETokenizer, gpt2_tokenizer, train_bpe_naive

    out("## The course's BPE")
    out()
    shakespeare = read_text("tinyshakespeare", progress=False)
    verdict = read_text("the-verdict", progress=False)
    out("| task | companion s | reference | reference s | ratio | same result |")
    out("| --- | ---: | --- | ---: | ---: | --- |")

    def timed(fn: Any, *args: Any) -> tuple[Any, float]:
        start = time.perf_counter()
        result = fn(*args)
        return result, time.perf_counter() - start

    # the trainer against the chapter's naive reference (same merges expected)
    ours, t_ours = timed(BPETokenizer.train, verdict, 512)
    naive, t_naive = timed(train_bpe_naive, verdict, 512)
    same = dict(ours.merges) == dict(naive.merges)
    out(f"| train 512 tokens on the-verdict | {t_ours:.2f} | `train_bpe_naive` | {t_naive:.2f} | "
        f"{t_naive / t_ours:.1f}x | {'yes' if same else 'NO'} |")
    # the trainer against Hugging Face tokenizers' byte-level BPE trainer
    sizes = (1024,) if quick else (1024, 4096)
    for size in sizes:
        _, t_ours = timed(BPETokenizer.train, shakespeare, size)
        try:
            from tokenizers import Tokenizer, models, pre_tokenizers, trainers

            def hf_train(text: str, size: int = size) -> Any:
                tok = Tokenizer(models.BPE())
                tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
                trainer = trainers.BpeTrainer(vocab_size=size, show_progress=False,
                                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
                tok.train_from_iterator([text], trainer=trainer)
                return tok

            _, t_hf = timed(hf_train, shakespeare)
            out(f"| train {size:,} tokens on tinyshakespeare | {t_ours:.2f} | HF `tokenizers` BpeTrainer | "
                f"{t_hf:.2f} | {t_hf / t_ours:.2f}x | (different tie-breaking) |")
        except ImportError:
            out(f"| train {size:,} tokens on tinyshakespeare | {t_ours:.2f} | - | - | - | - |")
    # the encoder with GPT-2's merges against tiktoken
    ours_gpt2, tik = BPETokenizer.from_gpt2(), gpt2_tokenizer()
    ids_ours, t_ours = timed(ours_gpt2.encode_ordinary, shakespeare)
    ids_tik, t_tik = timed(tik.encode_ordinary, shakespeare)
    mb = len(shakespeare.encode()) / 1e6
    out(f"| encode tinyshakespeare with GPT-2's merges ({mb:.1f} MB) | {t_ours:.2f} ({mb / t_ours:.2f} MB/s) | "
        f"tiktoken | {t_tik:.2f} ({mb / t_tik:.1f} MB/s) | {t_tik / t_ours:.2f}x | "
        f"{'yes' if ids_ours == ids_tik else 'NO'} |")
    out()
    out("Ratio: reference time / companion time (above 1: companion is faster).")
    out()


# --------------------------------------------------------------------------- #
# Notebooks and the book
# --------------------------------------------------------------------------- #
def notebooks_section(book: bool, notebooks: bool) -> None:
    out("## Notebooks under nbval, and the book build")
    out()
    out("| what | seconds | floor |")
    out("| --- | ---: | ---: |")
    total = 0.0
    if notebooks:
        for nb in sorted((ROOT / "book").glob("*.ipynb")):
            start = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "pytest", "--nbval", "-q", "-p", "no:cacheprovider",
                                     str(nb.relative_to(ROOT))], cwd=ROOT, capture_output=True, text=True)
            took = time.perf_counter() - start
            total += took
            status = "" if result.returncode == 0 else " (FAILED)"
            out(f"| `pytest --nbval {nb.relative_to(ROOT)}`{status} | {took:.0f} | 240 |")
        out(f"| all notebooks, one after another | {total:.0f} | 900 |")
    if book:
        with_tmp = ROOT / "_build" / "bench"
        start = time.perf_counter()
        # the jupyter-book next to this interpreter, so that an unactivated venv works too
        jupyter_book = shutil.which("jupyter-book") or str(Path(sys.executable).with_name("jupyter-book"))
        result = subprocess.run([jupyter_book, "build", ".", "--path-output", str(with_tmp)], cwd=ROOT,
                                capture_output=True, text=True)
        status = "" if result.returncode == 0 else " (FAILED)"
        out(f"| `jupyter-book build .`{status} | {time.perf_counter() - start:.0f} | 60 |")
    out()


# --------------------------------------------------------------------------- #
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="companion against its peers, in one run")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter measurements")
    parser.add_argument("--rounds", type=int, help="rounds per interleaved comparison (default 3; 2 with --quick)")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: "
                        "train,bf16,trap,generate,memory,bpe")
    parser.add_argument("--shape", action="append", metavar="V,T,C,L,H",
                        help="train at this shape only (repeatable; default the three of the report)")
    parser.add_argument("--notebooks", action="store_true", help="time pytest --nbval on every notebook")
    parser.add_argument("--book", action="store_true", help="time the book build")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 3)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    started = time.perf_counter()

    out("# companion benchmark")
    out()
    out(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__} with {torch.get_num_threads()} threads, "
        f"{torch.backends.cpu.get_cpu_capability()}; Python {platform.python_version()}.")
    out("Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()) + ".")
    out(f"Command: `python bench/run.py {' '.join(sys.argv[1:] if argv is None else argv)}`; "
        f"{rounds} interleaved rounds per comparison, medians.")
    out()
    probes = Probes()
    probes.take("start")
    if "train" not in skip:
        shapes = tuple(Shape(*(int(x) for x in text.split(","))) for text in args.shape) if args.shape else SHAPES
        training_section(probes, rounds, 1.0 if args.quick else 2.0, shapes)
    if "bf16" not in skip:
        bf16_curve(60 if args.quick else 200)
    if "trap" not in skip:
        trap_section(rounds)
    if "generate" not in skip:
        generation_section(probes, rounds, 50 if args.quick else 200)
    probes.take("end")
    if "memory" not in skip:
        memory_section()
    if "bpe" not in skip:
        bpe_section(args.quick)
    if args.notebooks or args.book:
        notebooks_section(args.book, args.notebooks)
    out("## Probes of the machine during the run")
    out()
    out("| when | matmul 2048² float32 GFLOP/s | matrix-vector passes/s over GPT-2 small's weights | GB/s |")
    out("| --- | ---: | ---: | ---: |")
    for (label, gflops), (_, passes, gbs) in zip(probes.matmul, probes.matvec, strict=True):
        out(f"| {label} | {gflops:.0f} | {passes:.1f} | {gbs:.1f} |")
    out()
    out(f"Whole run: {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
