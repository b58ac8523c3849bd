"""Tests for companion.train: losses, evaluation, the schedule, the optimizer, the loop.

Also GPT-2's weight initialisation (``companion.model.init_gpt2_weights``), which
chapter 5 uses for pretraining.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils.data import DataLoader

from companion import GPTConfig, GPTModel
from companion.data import SlidingWindowDataset
from companion.generate import generate_text
from companion.model import init_gpt2_weights, num_parameters
from companion.tokenizers import BPETokenizer
from companion.train import (
    IGNORE_INDEX,
    TrainHistory,
    _Batches,
    batch_loss,
    configure_optimizer,
    cross_entropy_loss,
    evaluate,
    evaluate_text,
    lr_schedule,
    perplexity,
    train,
)

TINY = GPTConfig(vocab_size=64, context_length=16, emb_dim=32, n_heads=4, n_layers=2)
TEXT = (
    "First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. "
    "First Citizen: You are all resolved rather to die than to famish? All: Resolved. resolved. "
) * 6


def build(cfg: GPTConfig = TINY, seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    return init_gpt2_weights(GPTModel(cfg))


def loaders(n_tokens: int = 400, batch_size: int = 4, ctx: int = 16, vocab: int = 64):
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, vocab, (n_tokens,), generator=g)
    train_set = SlidingWindowDataset(ids[: n_tokens * 3 // 4], ctx, stride=4)
    val_set = SlidingWindowDataset(ids[n_tokens * 3 // 4 :], ctx, stride=ctx)
    return (
        DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True),
        DataLoader(val_set, batch_size=batch_size, shuffle=False),
    )


# --------------------------------------------------------------------- losses
def manual_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of -log softmax(logits)[target] over the positions whose target is not ignored."""
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    losses = []
    for b in range(targets.shape[0]):
        for t in range(targets.shape[1]):
            if targets[b, t] != IGNORE_INDEX:
                losses.append(-log_probs[b, t, targets[b, t]])
    return torch.stack(losses).mean()


def test_cross_entropy_matches_manual_log_softmax() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    targets = torch.randint(0, 11, (2, 5))
    loss = cross_entropy_loss(logits, targets)
    assert loss.shape == ()
    torch.testing.assert_close(loss.double(), manual_cross_entropy(logits, targets))

    targets[0, :3] = IGNORE_INDEX
    targets[1, 4] = IGNORE_INDEX
    torch.testing.assert_close(cross_entropy_loss(logits, targets).double(), manual_cross_entropy(logits, targets))


def test_cross_entropy_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"logits must be \(B, T, V\)"):
        cross_entropy_loss(torch.randn(2, 5, 11), torch.zeros(2, 4, dtype=torch.long))


def test_uniform_model_loss_is_log_vocab_and_perplexity_is_vocab() -> None:
    logits = torch.zeros(3, 4, 50)
    loss = cross_entropy_loss(logits, torch.randint(0, 50, (3, 4)))
    assert loss.item() == pytest.approx(math.log(50), rel=1e-6)
    assert perplexity(loss) == pytest.approx(50, rel=1e-5)
    assert perplexity(math.log(7)) == pytest.approx(7)


def test_batch_loss_is_cross_entropy_of_the_logits() -> None:
    model = build().eval()
    x = torch.randint(0, 64, (3, 10))
    y = torch.randint(0, 64, (3, 10))
    with torch.no_grad():
        expected = manual_cross_entropy(model(x), y)
        torch.testing.assert_close(batch_loss(model, x, y, "cpu").double(), expected)
        torch.testing.assert_close(batch_loss(model, x, y).double(), expected)


def test_evaluate_is_the_token_weighted_mean_and_restores_the_mode() -> None:
    model = build(TINY.replace(drop_rate=0.5))
    x = torch.randint(0, 64, (5, 8))
    y = torch.randint(0, 64, (5, 8))
    y[4, 2:] = IGNORE_INDEX
    batches = [(x[:2], y[:2]), (x[2:4], y[2:4]), (x[4:], y[4:])]
    model.train()
    result = evaluate(model, batches)
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        expected = manual_cross_entropy(model(x), y).item()
    assert result == pytest.approx(expected, rel=1e-6)
    assert not model.training
    with torch.no_grad():
        first_two = manual_cross_entropy(model(x[:4]), y[:4]).item()
    assert evaluate(model, batches, max_batches=2) == pytest.approx(first_two, rel=1e-6)
    assert math.isnan(evaluate(model, []))


def test_evaluate_text_scores_every_token_once() -> None:
    tokenizer = BPETokenizer.train(TEXT, 300)
    cfg = GPTConfig(vocab_size=300, context_length=16, emb_dim=32, n_heads=4, n_layers=1)
    model = build(cfg)
    text = TEXT[:400]
    ids = tokenizer.encode(text)
    n, ctx = len(ids), cfg.context_length
    assert n % ctx != 1  # the tail window overlaps the one before it

    # reference: position j (1..n-1) is predicted in the window of the definition
    total = 0.0
    with torch.no_grad():
        for j in range(1, n):
            start = ((j - 1) // ctx) * ctx
            if start + ctx + 1 > n:
                start = max(0, n - 1 - ctx)
            window = torch.tensor(ids[start : start + ctx]).unsqueeze(0)
            log_probs = torch.log_softmax(model(window)[0].double(), dim=-1)
            total -= log_probs[j - 1 - start, ids[j]].item()
    result = evaluate_text(model, tokenizer, text, batch_size=3)
    assert result.tokens == n - 1
    assert result.chars == len(text) - len(tokenizer.decode(ids[:1]))
    assert result.loss_per_token == pytest.approx(total / (n - 1), rel=1e-5)
    assert result.nats_per_char == pytest.approx(total / result.chars, rel=1e-5)
    assert result.bits_per_char == pytest.approx(result.nats_per_char / math.log(2))
    # a text shorter than one window is one window
    short = evaluate_text(model, tokenizer, text[:30])
    assert short.tokens == len(tokenizer.encode(text[:30])) - 1


# ------------------------------------------------------------ schedule, optimizer
def test_lr_schedule_known_values() -> None:
    kw = dict(max_lr=1e-3, warmup_steps=10, max_steps=110, min_lr=1e-4)
    assert lr_schedule(0, **kw) == pytest.approx(1e-4)  # 1/10 of the peak
    assert lr_schedule(4, **kw) == pytest.approx(5e-4)
    assert lr_schedule(9, **kw) == pytest.approx(1e-3)  # last warmup step reaches the peak
    assert lr_schedule(10, **kw) == pytest.approx(1e-3)  # cosine starts at the peak
    assert lr_schedule(60, **kw) == pytest.approx(5.5e-4)  # halfway: the mean of peak and floor
    assert lr_schedule(35, **kw) == pytest.approx(1e-4 + 9e-4 * (1 + math.cos(math.pi / 4)) / 2)
    assert lr_schedule(110, **kw) == pytest.approx(1e-4)
    assert lr_schedule(500, **kw) == pytest.approx(1e-4)
    values = [lr_schedule(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # decays monotonically
    # no warmup, no decay: the book's constant rate
    assert lr_schedule(0, max_lr=4e-4, warmup_steps=0, max_steps=10, min_lr=None) == 4e-4
    assert lr_schedule(99, max_lr=4e-4, warmup_steps=0, max_steps=10, min_lr=None) == 4e-4
    with pytest.raises(ValueError, match="step=-1"):
        lr_schedule(-1, **kw)


def test_configure_optimizer_decays_matrices_only() -> None:
    model = build(TINY.replace(tie_embeddings=True, qkv_bias=True))
    opt = configure_optimizer(model, lr=1e-3, weight_decay=0.2, betas=(0.9, 0.95))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0
    assert opt.defaults["betas"] == (0.9, 0.95)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert "tok_emb.weight" in decayed and "pos_emb.weight" in decayed
    assert "trf_blocks.0.att.W_query.weight" in decayed and "trf_blocks.1.ff.layers.2.weight" in decayed
    assert "trf_blocks.0.att.W_query.bias" in kept and "final_norm.scale" in kept
    assert "trf_blocks.0.norm1.shift" in kept and "trf_blocks.0.ff.layers.0.bias" in kept
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    # the tied head is one parameter, counted once
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == num_parameters(model)


# ------------------------------------------------------------------ GPT-2 init
def test_init_gpt2_weights_statistics() -> None:
    cfg = GPTConfig(vocab_size=512, context_length=64, emb_dim=128, n_heads=4, n_layers=4, qkv_bias=True)
    torch.manual_seed(0)
    model = init_gpt2_weights(GPTModel(cfg))
    residual_std = 0.02 / math.sqrt(2 * 4)
    for name, p in model.named_parameters():
        if name.endswith(("att.out_proj.weight", "ff.layers.2.weight")):
            assert p.std().item() == pytest.approx(residual_std, rel=0.05), name
        elif name.endswith("bias") or name.endswith("shift"):
            assert torch.count_nonzero(p) == 0, name
        elif name.endswith("scale"):
            assert torch.equal(p, torch.ones_like(p)), name
        else:
            assert p.dim() == 2
            assert p.std().item() == pytest.approx(0.02, rel=0.05), name
    # seeded: the same model twice; and a fresh model's loss is about ln(V)
    torch.manual_seed(0)
    again = init_gpt2_weights(GPTModel(cfg))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    x = torch.randint(0, 512, (4, 32))
    with torch.no_grad():
        loss = cross_entropy_loss(model.eval()(x), torch.randint(0, 512, (4, 32)))
    assert loss.item() == pytest.approx(math.log(512), abs=0.15)


def test_init_gpt2_weights_keeps_a_tied_head_tied() -> None:
    torch.manual_seed(0)
    model = init_gpt2_weights(GPTModel(TINY.replace(tie_embeddings=True)))
    assert model.out_head.weight is model.tok_emb.weight
    assert model.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.1)


# ------------------------------------------------------------------ batches
def test_indexed_batches_are_a_function_of_seed_and_step() -> None:
    train_loader, _ = loaders()
    n = len(train_loader.dataset)
    per_epoch = len(train_loader)
    a = _Batches(train_loader, seed=5)
    run = [a.batch(s) for s in range(2 * per_epoch + 3)]
    # each epoch visits every window at most once (drop_last drops the remainder)
    windows = {tuple(train_loader.dataset[i][0].tolist()): i for i in range(n)}
    for epoch in range(2):
        seen = [windows[tuple(x.tolist())] for xb, _ in run[epoch * per_epoch : (epoch + 1) * per_epoch] for x in xb]
        assert len(seen) == len(set(seen)) == per_epoch * train_loader.batch_size
    assert [windows[tuple(x.tolist())] for x in run[0][0]] != [
        windows[tuple(x.tolist())] for x in run[per_epoch][0]
    ]  # a new order each epoch
    # random access (a resumed run) gives the same batches
    b = _Batches(train_loader, seed=5)
    for step in (2 * per_epoch + 2, 1, per_epoch, 0):
        xb, yb = b.batch(step)
        assert torch.equal(xb, run[step][0]) and torch.equal(yb, run[step][1])
    assert not torch.equal(_Batches(train_loader, seed=6).batch(0)[0], run[0][0])


def test_unshuffled_loader_and_plain_iterables_keep_their_order() -> None:
    _, val_loader = loaders()
    expected = list(val_loader)
    batches = _Batches(val_loader, seed=1)
    assert batches.per_epoch == len(expected)
    for step in range(2 * len(expected)):
        got = batches.batch(step)
        assert torch.equal(got[0], expected[step % len(expected)][0])
    as_list = [(x.clone(), y.clone()) for x, y in expected]
    replay = _Batches(as_list, seed=1)
    assert torch.equal(replay.batch(0)[0], as_list[0][0])
    assert torch.equal(replay.batch(1)[0], as_list[1][0])
    assert torch.equal(replay.batch(len(as_list) + 1)[0], as_list[1][0])  # jumps ahead, wraps around
    with pytest.raises(ValueError, match="no batch"):
        _Batches([], seed=1)


# ------------------------------------------------------------------ the loop
def test_training_is_deterministic_and_leaves_the_global_rng_alone() -> None:
    train_loader, val_loader = loaders()
    cfg = TINY.replace(drop_rate=0.1)
    kwargs = dict(max_steps=12, eval_every=5, lr=3e-3, warmup_steps=2, min_lr=3e-4, progress=False, seed=3)
    model = build(cfg)
    torch.manual_seed(99)
    before = torch.get_rng_state()
    h1 = train(model, train_loader, val_loader, **kwargs)
    assert torch.equal(torch.get_rng_state(), before)
    h2 = train(build(cfg), train_loader, val_loader, **kwargs)
    assert h1.batch_losses == h2.batch_losses and len(h1.batch_losses) == 12
    assert h1.val_loss == h2.val_loss
    h3 = train(build(cfg), train_loader, val_loader, **{**kwargs, "seed": 4})
    assert h3.batch_losses != h1.batch_losses

    assert h1.steps == [5, 10, 12]
    assert h1.tokens_seen == [s * 4 * 16 for s in h1.steps]
    assert h1.train_loss[0] == pytest.approx(sum(h1.batch_losses[:5]) / 5)
    assert h1.train_loss[2] == pytest.approx(sum(h1.batch_losses[10:12]) / 2)
    assert h1.lr == [
        lr_schedule(s - 1, max_lr=3e-3, warmup_steps=2, max_steps=12, min_lr=3e-4) for s in h1.steps
    ]
    assert all(v is not None and v > 0 for v in h1.val_loss)
    assert h1.elapsed > 0


def test_training_learns_a_repetitive_text() -> None:
    tokenizer = BPETokenizer.train(TEXT, 300)
    ids = tokenizer.encode(TEXT)
    data = DataLoader(SlidingWindowDataset(ids, 16, stride=1), batch_size=8, shuffle=True, drop_last=True)
    cfg = GPTConfig(vocab_size=300, context_length=16, emb_dim=32, n_heads=4, n_layers=2)
    model = build(cfg)
    start = evaluate(model, data, max_batches=5)
    history = train(model, data, data, max_steps=60, eval_every=30, eval_batches=5, lr=1e-2,
                    progress=False, tokenizer=tokenizer, sample_prompt="First", sample_every=30,
                    sample_tokens=8)
    assert start > 5.0 and history.val_loss[-1] < start - 2.0
    assert [s["step"] for s in history.samples] == [30, 60]
    # the last sample is the greedy continuation of the trained model
    assert history.samples[-1]["text"] == generate_text(model, tokenizer, "First", 8)
    assert history.samples[-1]["text"].startswith("First")


def test_epochs_gradient_clipping_and_callback(monkeypatch: pytest.MonkeyPatch) -> None:
    train_loader, _ = loaders()
    calls: list[float] = []
    original = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm, *args, **kwargs):
        calls.append(max_norm)
        return original(parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    seen: list[int] = []
    history = train(build(), train_loader, epochs=2, grad_clip=0.5, progress=False,
                    callback=lambda step, h: seen.append(step))
    assert len(history.batch_losses) == 2 * len(train_loader)
    assert seen == list(range(1, 2 * len(train_loader) + 1))
    assert calls == [0.5] * len(seen)
    assert history.val_loss == [None] * len(history.steps)
    calls.clear()
    train(build(), train_loader, max_steps=3, grad_clip=None, progress=False)
    assert calls == []


def test_gradient_clipping_bounds_the_global_norm() -> None:
    model = build()
    x = torch.randint(0, 64, (2, 16))
    loss = batch_loss(model, x, x)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
    norm = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters()))
    assert norm.item() == pytest.approx(1e-3, rel=1e-3)


def test_the_optimizer_given_keeps_its_rate_unless_lr_is_given() -> None:
    train_loader, _ = loaders()
    model = build()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    history = train(model, train_loader, max_steps=2, eval_every=1, optimizer=opt, progress=False)
    assert history.lr == [0.05, 0.05]
    history = train(model, train_loader, max_steps=2, eval_every=1, optimizer=opt, lr=0.01, progress=False)
    assert history.lr == [0.01, 0.01]


def test_progress_false_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    train_loader, val_loader = loaders()
    train(build(), train_loader, val_loader, max_steps=3, eval_every=1, progress=False)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    train(build(), train_loader, val_loader, max_steps=3, eval_every=1, progress=True)
    out, err = capfd.readouterr()
    assert "3/3" in err


def test_history_round_trips_through_json() -> None:
    history = TrainHistory(steps=[1, 2], tokens_seen=[8, 16], train_loss=[3.5, 3.25], val_loss=[None, 3.0],
                           lr=[1e-3, 5e-4], batch_losses=[3.5, 3.25], samples=[{"step": 2, "text": "hi"}],
                           elapsed=1.5)
    again = TrainHistory.from_dict(json.loads(json.dumps(history.to_dict())))
    assert again == history
    with pytest.raises(KeyError, match="unknown TrainHistory field"):
        TrainHistory.from_dict({"loss": []})


def test_bad_arguments_are_reported() -> None:
    train_loader, _ = loaders()
    model = build()
    with pytest.raises(ValueError, match="max_steps or epochs, not both"):
        train(model, train_loader, max_steps=2, epochs=1, progress=False)
    with pytest.raises(ValueError, match="eval_every=0"):
        train(model, train_loader, max_steps=2, eval_every=0, progress=False)
    with pytest.raises(ValueError, match="checkpoint_every needs checkpoint_dir"):
        train(model, train_loader, max_steps=2, checkpoint_every=1, progress=False)
    with pytest.raises(ValueError, match="sample_every needs"):
        train(model, train_loader, max_steps=2, sample_every=1, progress=False)
    with pytest.raises(ValueError, match="min_lr"):
        train(model, train_loader, max_steps=2, lr=1e-3, min_lr=1e-2, progress=False)
    with pytest.raises(ValueError, match="no length"):
        train(model, iter([]), progress=False)


def test_plot_losses_draws_both_curves_with_a_tokens_axis() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from companion.plots import plot_losses

    history = TrainHistory(steps=[10, 20, 30], tokens_seen=[640, 1280, 1920], train_loss=[5.0, 4.0, 3.5],
                           val_loss=[5.2, None, 3.9], lr=[1e-3] * 3)
    fig = plot_losses(history, title="run")
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["training loss"].get_xdata()) == [10, 20, 30]
    assert list(lines["validation loss"].get_xdata()) == [10, 30]  # the None point is left out
    assert list(lines["validation loss"].get_ydata()) == [5.2, 3.9]
    top = [child for child in ax.get_children() if type(child).__name__ == "SecondaryAxis"]
    assert len(top) == 1 and top[0].get_xlabel() == "tokens seen"
    forward, inverse = top[0]._functions
    assert forward(15.0) == pytest.approx(960.0) and inverse(1920.0) == pytest.approx(30.0)
    assert forward(40.0) == pytest.approx(2560.0)  # linear beyond the last point
    plt.close(fig)
    with pytest.raises(ValueError, match="no evaluation point"):
        plot_losses(TrainHistory())
