"""The chapters' figures and widgets: they return objects, raise clear errors, update, and
are legible at the book's width (at most 6.8 inches at 100 dpi, type of 10 pt or more,
labelled axes, no two labels on top of each other)."""

from __future__ import annotations

import html
import io
import itertools
import math

import matplotlib

matplotlib.use("Agg")

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from companion import diagrams, plots
from companion.config import GPTConfig
from companion.model import GPTModel
from companion.tokenizers import SimpleTokenizer, build_vocab, gpt2_tokenizer
from companion.widgets import attention_explorer, render_tokens, tokenizer_explorer

PAGE_PX = 680  # the book's text column holds 688 px; a figure is never wider than 6.8 in at 100 dpi


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _corners(text: Text, renderer) -> np.ndarray:
    """The four corners, in pixels, of the (possibly rotated) rectangle a text covers."""
    angle = text.get_rotation()
    box = text.get_window_extent(renderer)
    text.set_rotation(0)
    flat = text.get_window_extent(renderer)
    text.set_rotation(angle)
    w, h = flat.width / 2, flat.height / 2
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    centre = np.array([(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2])
    offsets = np.array([[dx * c - dy * s, dx * s + dy * c] for dx, dy in [(-w, -h), (w, -h), (w, h), (-w, h)]])
    return centre + offsets


def _polygons_overlap(a: np.ndarray, b: np.ndarray, slack: float = 0.5) -> bool:
    """Separating-axis test for two convex quadrilaterals (touching within ``slack`` px is fine)."""
    for poly in (a, b):
        for i in range(4):
            edge = poly[(i + 1) % 4] - poly[i]
            normal = np.array([-edge[1], edge[0]])
            if not normal.any():
                continue
            normal = normal / np.linalg.norm(normal)
            pa, pb = a @ normal, b @ normal
            if pa.max() <= pb.min() + slack or pb.max() <= pa.min() + slack:
                return False
    return True


def shown_texts(fig: Figure) -> list[Text]:
    """Every text matplotlib draws on the figure (empty and hidden ones left out)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    area = fig.bbox
    hidden = set()  # the texts of an axis that is switched off, and tick labels that are not drawn
    for each in fig.axes + [child for ax in fig.axes for child in ax.child_axes]:
        for axis in (each.xaxis, each.yaxis):
            ticks = axis._update_ticks() if each.axison else []  # the ticks inside the view, which are drawn
            drawn = {id(label) for tick in ticks for label in (tick.label1, tick.label2) if label.get_visible()}
            drawn |= {id(axis.label), id(axis.get_offset_text())} if each.axison else set()
            hidden |= {id(t) for t in axis.findobj(Text)} - drawn
    texts = []
    for t in fig.findobj(Text):
        if not t.get_visible() or not t.get_text().strip() or id(t) in hidden:
            continue
        parent = t.axes
        if parent is not None and not parent.get_visible():
            continue
        box = t.get_window_extent(renderer)
        if box.x1 < area.x0 or box.x0 > area.x1 or box.y1 < area.y0 or box.y0 > area.y1:
            continue  # a tick label outside the view, which is not drawn
        texts.append(t)
    return texts


def legibility_problems(fig: Figure, *, max_width_px: int = PAGE_PX) -> list[str]:
    """What makes ``fig`` hard to read in the book; an empty list when nothing does."""
    problems = []
    if fig.get_figwidth() > plots.BOOK_WIDTH_INCHES + 1e-6:
        problems.append(f"{fig.get_figwidth():.2f} in wide, more than {plots.BOOK_WIDTH_INCHES}")
    if fig.dpi != 100:
        problems.append(f"{fig.dpi} dpi, not 100")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")  # as the notebook shows it
    width_px = Image.open(io.BytesIO(buffer.getvalue())).size[0]
    if width_px > max_width_px:
        problems.append(f"the PNG is {width_px} px wide, more than {max_width_px}")
    rgba = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGBA"))
    if rgba[0, 0, 3] < 255 or rgba[0, 0, :3].min() < 250:
        problems.append(f"the background is not opaque white but {tuple(rgba[0, 0])}")
    texts = shown_texts(fig)
    drawn_ids = {id(t) for t in texts}
    renderer = fig.canvas.get_renderer()
    for t in texts:
        if t.get_fontsize() < plots.MIN_FONT_SIZE:
            problems.append(f"{t.get_text()!r} is set in {t.get_fontsize():g} pt")
    corners = [_corners(t, renderer) for t in texts]
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            if _polygons_overlap(corners[i], corners[j]):
                problems.append(f"{texts[i].get_text()!r} overlaps {texts[j].get_text()!r}")
    axes = list(fig.axes) + [child for ax in fig.axes for child in ax.child_axes]
    for ax in axes:
        if not ax.axison or not ax.get_visible():
            continue
        for name, axis, label in (("x", ax.xaxis, ax.get_xlabel()), ("y", ax.yaxis, ax.get_ylabel())):
            ticks = [t for t in axis.get_ticklabels() if id(t) in drawn_ids and t.get_text().strip()]
            if axis.get_visible() and ticks and not label.strip():
                problems.append(f"the {name} axis of {ax.get_title()!r} has tick labels but no axis label")
    return problems


def test_the_legibility_check_finds_each_problem() -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3), dpi=100)
    left.plot([0, 1], [0, 1])
    left.set_xlabel("steps")  # no y label
    right.text(0.5, 0.5, "tiny", fontsize=7)
    right.text(0.5, 0.5, "on top", fontsize=12)
    right.set_xlabel("x")
    right.set_ylabel("y")
    problems = "\n".join(legibility_problems(fig))
    assert "9.00 in wide" in problems
    assert "'tiny' is set in 7 pt" in problems
    assert "'tiny' overlaps 'on top'" in problems
    assert "the y axis of '' has tick labels but no axis label" in problems
    # labels slanted 45 degrees that are far apart do not count as overlapping
    fig, ax = plots.new_figure((6.4, 3))
    ax.set_xticks([0, 1, 2], ["one", "two", "three"], rotation=45)
    ax.set_xlabel("word")
    ax.set_ylabel("count")
    assert legibility_problems(fig) == []


def _history():
    from companion.history import TrainHistory

    return TrainHistory(steps=[10, 20, 30], tokens_seen=[640, 1280, 1920], train_loss=[5.0, 4.0, 3.5],
                        val_loss=[5.2, None, 3.9], lr=[1e-3] * 3)


WORDS = ["the", "a", "his", "her", "it", "that", "this", "my", "one", "an"]
LINE = ["ROMEO", ":", "\n", "But", ",", " soft", "!", " what", " light", " through", " y", "onder", " window",
        " breaks", "?"]


def _two_bar_charts() -> Figure:
    fig, axes = plots.new_figure((plots.BOOK_WIDTH_INCHES, 3.2), ncols=2)
    for ax in axes:
        plots.bar_chart(WORDS, [0.3, 0.2, 0.1, 0.1, 0.05, 0.05, 0.04, 0.03, 0.02, 0.01], ax=ax, xlabel="next word",
                        ylabel="probability")
    return fig


def _weights(T: int, seed: int = 0) -> torch.Tensor:
    return torch.softmax(torch.randn(T, T, generator=torch.Generator().manual_seed(seed)), dim=-1)


FIGURES = {
    "bar chart, short labels": lambda: plots.bar_chart(["a", "b", "c"], [1, 2, 3], xlabel="letter", ylabel="count"),
    "bar chart, ten tokens": lambda: plots.bar_chart(WORDS, list(range(10, 0, -1)), xlabel="next word",
                                                     ylabel="count", title="t"),
    "bar chart, long labels": lambda: plots.bar_chart([f"a rather long label {i}" for i in range(8)], list(range(8)),
                                                      xlabel="label", ylabel="count", annotate="{:d}"),
    "two bar charts side by side": _two_bar_charts,
    "horizontal log bar chart": lambda: plots.bar_chart(
        ["The Verdict", "Tiny Shakespeare", "GPT-2's WebText", "GPT-3"], [5_145, 338_025, 9e9, 3e11], log=True,
        horizontal=True, xlabel="tokens (log scale)", ylabel="data set", title="Training text", annotate="{:.0e}"),
    "sliding windows": lambda: plots.sliding_windows(["In", "·the", "·sun", "lit", "·terr", "aces", "·of", "·some",
                                                      "unknown", "·place", ",", "·there", "·was", "·a"], 4, 4),
    "sliding windows, long tokens": lambda: plots.sliding_windows(["·extraordinarily"] * 20, 4, 2),
    "sliding windows, overlapping": lambda: plots.sliding_windows(list("abcdefghijkl"), 6, 2),
    "length histograms": lambda: plots.length_histograms(
        {"words": [1, 2, 3, 5, 8], "Shakespeare BPE": [1, 1, 2, 3, 4], "GPT-2 BPE": [2, 3, 4, 13]},
        title="Token lengths on held-out Shakespeare (leading space not counted)"),
    "heatmap, 6 words": lambda: plots.attention_heatmap(_weights(6), ["Your", "journey", "starts", "with", "one", "step"],
                                                        title="Simplified self-attention weights"),
    "heatmap, 15 tokens": lambda: plots.attention_heatmap(_weights(15), LINE, title="layer 1, head 2"),
    "heatmap, 40 tokens": lambda: plots.attention_heatmap(_weights(40), [f"t{i}" for i in range(40)]),
    "three heatmaps": lambda: plots.attention_heatmaps([_weights(15, k) for k in range(3)], LINE,
                                                       ["without the mask", "the previous token", "line breaks"]),
    "two annotated heatmaps": lambda: plots.attention_heatmaps(
        [_weights(6, 0), _weights(6, 1)], ["Your", "journey", "starts", "with", "one", "step"], ["before", "after"],
        annotate=True),
    "losses": lambda: plots.plot_losses(_history(), title="The Verdict: the model memorises its training text"),
    "rnn with computed weights": lambda: diagrams.rnn_versus_attention([0.1, 0.2, 0.3, 0.4]),
    **{f"diagram {name}": getattr(diagrams, name) for name in sorted(set(diagrams.__all__) - {"Box", "draw"})},
}


@pytest.mark.parametrize("name", list(FIGURES))
def test_every_figure_is_legible_at_the_page_width(name: str) -> None:
    fig = FIGURES[name]()
    assert isinstance(fig, Figure)
    assert legibility_problems(fig) == []


@pytest.mark.parametrize("name", sorted(set(diagrams.__all__) - {"Box", "draw", "rnn_versus_attention"}))
def test_diagram_text_stays_inside_its_box(name: str) -> None:
    fig = getattr(diagrams, name)()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    boxes = {p.get_gid(): p.get_window_extent(renderer) for p in ax.patches if (p.get_gid() or "").startswith("box:")}
    texts = [t for t in ax.texts if (t.get_gid() or "").startswith("box:")]
    assert len(texts) == len(boxes) >= 3
    for t in texts:
        inner, outer = t.get_window_extent(renderer), boxes[t.get_gid()]
        assert outer.x0 + 2 <= inner.x0 and inner.x1 <= outer.x1 - 2, f"{t.get_text()!r} is wider than its box"
        assert outer.y0 + 1 <= inner.y0 and inner.y1 <= outer.y1 - 1, f"{t.get_text()!r} is taller than its box"
    for label in (t for t in ax.texts if t.get_gid() == "arrow-label"):
        box = label.get_window_extent(renderer)
        hits = [gid for gid, b in boxes.items() if box.overlaps(b)]
        assert not hits, f"arrow label {label.get_text()!r} lies on {hits}"


def test_draw_rejects_what_would_not_fit_or_read() -> None:
    with pytest.raises(KeyError):
        diagrams.draw([diagrams.Box("a", 0, 0, "A")], [("a", "missing")])
    with pytest.raises(ValueError, match=r"7\.08 inches wide"):
        diagrams.draw([diagrams.Box("a", 0, 0, "A", width=1), diagrams.Box("b", 6, 0, "B", width=1)], [])
    with pytest.raises(ValueError, match="8 pt"):
        diagrams.draw([diagrams.Box("a", 0, 0, "A", fontsize=8)], [])
    with pytest.raises(ValueError, match="'diagonal'"):
        diagrams.draw([diagrams.Box("a", 0, 0, "A"), diagrams.Box("b", 3, 0, "B")], [("a", "b", "x", "diagonal")])
    with pytest.raises(ValueError, match="shrunk on the page"):
        plots.new_figure((7.5, 3))


def test_rnn_diagram_prints_the_weights_it_is_given() -> None:
    fig = diagrams.rnn_versus_attention([0.1, 0.2, 0.3, 0.4])
    printed = {t.get_text() for t in fig.axes[1].texts}
    assert {"0.10", "0.20", "0.30", "0.40"} <= printed
    plain = {t.get_text() for t in diagrams.rnn_versus_attention().axes[1].texts}
    assert not any(t.startswith("0.") for t in plain), "without weights no number is made up"
    with pytest.raises(ValueError, match="one weight per input word"):
        diagrams.rnn_versus_attention([0.5, 0.5])


def test_bar_chart_checks_lengths_and_labels_bars() -> None:
    with pytest.raises(ValueError, match="2 labels but 3 values"):
        plots.bar_chart(["a", "b"], [1, 2, 3])
    fig = plots.bar_chart(["a", "b"], [0.25, 0.75], annotate="{:.2f}")
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels == ["0.25", "0.75"]
    assert {t.get_fontsize() for t in fig.axes[0].texts} == {plots.MIN_FONT_SIZE}


def test_bar_chart_turns_its_labels_only_when_they_would_touch() -> None:
    level = plots.bar_chart(["a", "b", "c"], [1, 2, 3])
    assert {t.get_rotation() for t in level.axes[0].get_xticklabels()} == {0.0}
    crowded = _two_bar_charts()
    for ax in crowded.axes:
        assert {t.get_rotation() for t in ax.get_xticklabels()} <= {45.0, 90.0}
        assert [t.get_text() for t in ax.get_xticklabels()] == WORDS  # every token still named


def test_sliding_windows_pairs_each_input_with_the_next_token() -> None:
    with pytest.raises(ValueError, match="need 10 tokens, got 5"):
        plots.sliding_windows(list("abcde"), context_length=3, stride=3, n_windows=3)
    fig = plots.sliding_windows(list("abcdefghij"), context_length=3, stride=3, n_windows=3)
    ax = fig.axes[0]
    assert len(ax.patches) == 18  # 3 windows x (input + target) x 3 boxes

    def text_in(patch) -> str:
        (x0, y0), (x1, y1) = patch.get_bbox().get_points()
        return next(t.get_text() for t in ax.texts if x0 < t.get_position()[0] < x1 and y0 < t.get_position()[1] < y1)

    inputs = sorted((p.get_y(), p.get_x(), text_in(p)) for p in ax.patches if p.get_facecolor()[2] > 0.9)
    targets = sorted((p.get_y(), p.get_x(), text_in(p)) for p in ax.patches if p.get_facecolor()[2] < 0.9)
    assert [t for *_, t in inputs] == list("abcdefghi")
    for (y_in, x_in, token), (y_out, x_out, target) in zip(inputs, targets, strict=True):
        assert y_in == y_out and x_in < x_out and ord(target) == ord(token) + 1
    long = plots.sliding_windows(["·extraordinarily"] * 20, 4, 2)
    tokens = [t.get_text() for t in long.axes[0].texts if t.get_fontfamily() == ["monospace"]]
    assert tokens and all(t.endswith("…") and "·extraordinarily".startswith(t[:-1]) for t in tokens), \
        "tokens too long for the page are shortened, not set in smaller type"


def test_attention_heatmap_checks_shape_and_labels_every_token_that_fits() -> None:
    with pytest.raises(ValueError, match="expected \\(3, 3\\)"):
        plots.attention_heatmap(torch.ones(2, 2), ["a", "b", "c"])
    fig = plots.attention_heatmap(torch.eye(3), ["a", "b", "c"])
    assert fig.axes[0].images[0].get_array().shape == (3, 3)
    fig = plots.attention_heatmap(_weights(15), LINE)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [s.replace(" ", "·").replace("\n", "\\n")
                                                                      for s in LINE]
    crowded = plots.attention_heatmap(_weights(40), [f"t{i}" for i in range(40)])
    rows = [int(t.get_text()[1:]) for t in crowded.axes[0].get_yticklabels()]
    steps = {b - a for a, b in itertools.pairwise(rows)}
    assert rows[0] == 0 and len(steps) == 1 and steps.pop() >= 2, "every k-th token is labelled, evenly"
    assert len(rows) >= 10
    with pytest.raises(ValueError, match="one title per map"):
        plots.attention_heatmaps([_weights(3)], ["a", "b", "c"], ["one", "two"])


def test_render_tokens_shows_every_token_and_id() -> None:
    enc = gpt2_tokenizer()
    text = "Hello, world"
    html = render_tokens(enc, text)
    for token_id in enc.encode(text):
        assert f"id {token_id}" in html
    assert "·world" in html  # the leading space is made visible
    # dark text on the light token colours, whatever the page's own text colour (dark mode)
    assert html.count("<span") == html.count("color:#111827") == len(enc.encode(text))


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


def test_attention_explorer_draws_a_heatmap_per_choice(monkeypatch) -> None:
    import companion.widgets

    drawn: list[list[str]] = []
    to_png = companion.widgets._figure_png

    def check_then_render(fig: Figure) -> bytes:
        drawn.append(legibility_problems(fig))
        return to_png(fig)

    monkeypatch.setattr(companion.widgets, "_figure_png", check_then_render)
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=50257, context_length=16, emb_dim=8, n_heads=2, n_layers=2))
    enc = gpt2_tokenizer()
    box = attention_explorer(model, enc, ["one two three", "four five"])
    assert drawn == [[]], "the explorer's heatmap is legible at the page's width"
    assert Image.open(io.BytesIO(box.children[2].value)).size[0] <= PAGE_PX
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
    _prompt, sliders, out = box.children
    temperature, _top_k, seed = sliders.children
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
