"""The chapters' figures and widgets: they return objects, raise clear errors, and update."""

from __future__ import annotations

import html

import matplotlib

matplotlib.use("Agg")

import ipywidgets as widgets
import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure

from companion import diagrams, plots
from companion.config import GPTConfig
from companion.model import GPTModel
from companion.tokenizers import SimpleTokenizer, build_vocab, gpt2_tokenizer
from companion.widgets import attention_explorer, render_tokens, tokenizer_explorer


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("name", sorted(set(diagrams.__all__) - {"Box", "draw"}))
def test_every_diagram_draws_a_figure_with_its_boxes(name: str) -> None:
    fig = getattr(diagrams, name)()
    assert isinstance(fig, Figure)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert len(texts) >= 3 and all(isinstance(t, str) for t in texts)


def test_draw_rejects_arrows_to_unknown_boxes() -> None:
    with pytest.raises(KeyError):
        diagrams.draw([diagrams.Box("a", 0, 0, "A")], [("a", "missing")])


def test_bar_chart_checks_lengths_and_labels_bars() -> None:
    with pytest.raises(ValueError, match="2 labels but 3 values"):
        plots.bar_chart(["a", "b"], [1, 2, 3])
    fig = plots.bar_chart(["a", "b"], [0.25, 0.75], annotate="{:.2f}")
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels == ["0.25", "0.75"]


def test_sliding_windows_needs_enough_tokens() -> None:
    with pytest.raises(ValueError, match="need 10 tokens, got 5"):
        plots.sliding_windows(list("abcde"), context_length=3, stride=3, n_windows=3)
    fig = plots.sliding_windows(list("abcdefghij"), context_length=3, stride=3, n_windows=3)
    # 3 windows x (input + target) x 3 boxes
    assert len(fig.axes[0].patches) == 18


def test_attention_heatmap_checks_shape() -> None:
    with pytest.raises(ValueError, match="expected \\(3, 3\\)"):
        plots.attention_heatmap(torch.ones(2, 2), ["a", "b", "c"])
    fig = plots.attention_heatmap(torch.eye(3), ["a", "b", "c"])
    assert fig.axes[0].images[0].get_array().shape == (3, 3)


def test_render_tokens_shows_every_token_and_id() -> None:
    enc = gpt2_tokenizer()
    text = "Hello, world"
    html = render_tokens(enc, text)
    for token_id in enc.encode(text):
        assert f"id {token_id}" in html
    assert "·world" in html  # the leading space is made visible


def test_render_tokens_reports_errors_instead_of_raising() -> None:
    strict = SimpleTokenizer(build_vocab("a b c", special_tokens=()))
    html = render_tokens(strict, "a z")
    assert "UnknownTokenError" in html or "KeyError" in html
    assert "z" in html


def test_tokenizer_explorer_updates_when_text_or_tokenizer_change() -> None:
    enc = gpt2_tokenizer()
    simple = SimpleTokenizer(build_vocab("hello world"))
    box = tokenizer_explorer({"GPT-2": enc, "simple": simple}, text="hello")
    choice, text, out = box.children
    assert isinstance(out, widgets.HTML) and f"id {enc.encode('hello')[0]}" in out.value
    text.value = "hello world"
    assert out.value == render_tokens(enc, "hello world")
    choice.value = "simple"
    assert out.value == render_tokens(simple, "hello world")
    with pytest.raises(ValueError, match="at least one tokenizer"):
        tokenizer_explorer({})


def test_attention_explorer_draws_a_heatmap_per_choice() -> None:
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=50257, context_length=16, emb_dim=8, n_heads=2, n_layers=2))
    enc = gpt2_tokenizer()
    box = attention_explorer(model, enc, ["one two three", "four five"])
    sentence, sliders, image = box.children
    layer, head = sliders.children
    assert (layer.max, head.max) == (1, 1)
    first = image.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    head.value = 1
    assert image.value != first
    sentence.value = "four five"
    assert image.value[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="at least one sentence"):
        attention_explorer(model, enc, [])


def test_sampling_explorer_resamples_when_a_slider_moves() -> None:
    from companion.generate import generate_text
    from companion.widgets import sampling_explorer

    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=50257, context_length=32, emb_dim=8, n_heads=2, n_layers=1))
    enc = gpt2_tokenizer()
    box = sampling_explorer(model, enc, prompt="Hello", max_new_tokens=5, seed=3)
    prompt, sliders, out = box.children
    temperature, top_k, seed = sliders.children
    expected = generate_text(model, enc, "Hello", 5, temperature=0.8, top_k=20, seed=3)
    assert out.value == f"<pre style='white-space:pre-wrap;margin:4px 0'>{html.escape(expected)}</pre>"
    temperature.value = 0.0  # greedy
    greedy = html.escape(generate_text(model, enc, "Hello", 5))
    assert greedy in out.value
    seed.value = 4
    assert greedy in out.value, "greedy decoding does not depend on the seed"


def test_plot_losses_draws_both_curves_with_a_tokens_axis() -> None:
    import matplotlib.pyplot as plt

    from companion.history import TrainHistory
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
