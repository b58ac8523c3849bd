"""Plotting functions used by the chapters.

Each function draws on a new Figure (or on the ``ax`` it is given), returns the Figure
and writes no file, so a notebook decides what to show and nothing happens on import.

Every new Figure fits the book's text column (``BOOK_WIDTH_INCHES`` at 100 dpi, so the
page never shrinks it), writes every label in ``MIN_FONT_SIZE``-point type or larger, and
has a white background: the book shows figures as white cards in its dark mode too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

if TYPE_CHECKING:
    import torch


BOOK_WIDTH_INCHES = 6.8
"""The widest figure the book shows unshrunk: its text column is 688 px at 100 dpi."""

MIN_FONT_SIZE = 10.0
"""The smallest type, in points, of any label, tick, legend or annotation of a figure."""

DRAWING_WIDTH_INCHES = BOOK_WIDTH_INCHES - 0.2
"""The widest drawing that fills its whole figure: a notebook saves figures with
``bbox_inches="tight"``, which adds 0.1 inch of white on each side."""

BOOK_STYLE: dict[str, Any] = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "figure.titlesize": 11,
    "figure.figsize": (6.4, 3.6),
}
"""matplotlib settings that keep every label at least 10 pt on the page."""

# the colours of the package's figures: readable on the white card of either page theme
BLUE = "#2563eb"
ORANGE = "#ea580c"
INK = "#1f2937"


def book_style() -> None:
    """Use the book's figure settings (``BOOK_STYLE``) for the rest of the session.

    Each chapter calls it once: figures are then at most ``BOOK_WIDTH_INCHES`` wide by
    default, at 100 dpi, with 10-pt text, so that nothing is shrunk below a readable size
    in the rendered book.
    """
    plt.style.use(BOOK_STYLE)


def new_figure(size: tuple[float, float], **subplots: Any) -> tuple[Figure, Any]:
    """``plt.subplots`` at 100 dpi with a white background; ``size`` in inches (width, height).

    Raises:
        ValueError: The figure would be wider than the book's text column.
    """
    if size[0] > BOOK_WIDTH_INCHES + 1e-9:
        raise ValueError(f"a figure {size[0]} inches wide is shrunk on the page; "
                         f"use at most BOOK_WIDTH_INCHES = {BOOK_WIDTH_INCHES}")
    fig, axes = plt.subplots(figsize=size, dpi=100, facecolor="white", **subplots)
    return fig, axes


def _figure(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        fig = ax.get_figure(root=True)
        if fig is None:
            raise ValueError("the axes given are not part of a figure")
        return fig, ax
    return new_figure(size)


def _overlap(a: Any, b: Any, gap: float = 1.0) -> bool:
    """Whether two display-space boxes overlap or come within ``gap`` pixels of each other."""
    return not (a.x1 + gap <= b.x0 or b.x1 + gap <= a.x0 or a.y1 + gap <= b.y0 or b.y1 + gap <= a.y0)


def _labels_collide(fig: Figure, labels: Sequence[Any]) -> bool:
    """Whether two neighbouring tick labels (in axis order) would touch on the page."""
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    shown = [t for t in labels if t.get_visible() and t.get_text()]
    boxes = [t.get_window_extent(renderer) for t in shown]
    for (a, box_a), box_b in zip(zip(shown, boxes, strict=True), boxes[1:], strict=False):
        angle = math.radians(a.get_rotation())
        if abs(math.sin(angle)) < 1e-6:
            if _overlap(box_a, box_b):
                return True
        else:  # slanted labels are parallel strips: their distance across must exceed a line
            line = fig.dpi * a.get_fontsize() / 72 * 1.2
            if abs((box_b.x0 + box_b.x1) / 2 - (box_a.x0 + box_a.x1) / 2) * abs(math.sin(angle)) < line:
                return True
    return False


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    log: bool = False,
    horizontal: bool = False,
    annotate: str | None = None,
    ax: Axes | None = None,
    size: tuple[float, float] = (6.4, 3.2),
) -> Figure:
    """A bar per label; ``annotate`` is a format string such as ``"{:.2f}"`` for the bar values.

    Used for next-token distributions (chapters 1 and 5) and data-set sizes (chapter 1).
    Pass both ``xlabel`` and ``ylabel`` (say what the categories are, and the values' unit):
    the book labels every axis. Category labels are written level while they fit side by
    side; when two would touch they are turned 45 degrees, then 90, so that none overlaps
    another.
    """
    if len(labels) != len(values):
        raise ValueError(f"got {len(labels)} labels but {len(values)} values; pass one value per label")
    fig, ax = _figure(ax, size)
    positions = list(range(len(labels)))
    bars = ax.barh(positions, values, color=BLUE) if horizontal else ax.bar(positions, values, color=BLUE)
    if horizontal:
        ax.set_yticks(positions, labels)
        ax.invert_yaxis()
        if log:
            ax.set_xscale("log")
    else:
        ax.set_xticks(positions, labels)
        if log:
            ax.set_yscale("log")
    if annotate:
        ax.bar_label(bars, labels=[annotate.format(v) for v in values], fontsize=MIN_FONT_SIZE, padding=2,
                     color=INK)
        if horizontal:  # room for the numbers
            ax.margins(x=0.12)
        else:
            ax.margins(y=0.12)
    if title:
        ax.set_title(title)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    if not horizontal:
        alignments: tuple[tuple[int, Literal["right", "center"]], ...] = ((45, "right"), (90, "center"))
        for rotation, align in alignments:
            if not _labels_collide(fig, ax.get_xticklabels()):
                break
            ax.tick_params(axis="x", labelrotation=rotation)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment(align)
                label.set_rotation_mode("anchor" if rotation == 45 else "default")
            fig.tight_layout()
    return fig


def _fit_label(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max(max_chars - 1, 1)] + "…"


def sliding_windows(
    tokens: Sequence[str],
    context_length: int,
    stride: int,
    *,
    n_windows: int = 3,
    size: tuple[float, float] | None = None,
) -> Figure:
    """Draw the first input/target windows cut from ``tokens`` (chapter 2,
    "Input–target pairs with a sliding window").

    The text runs down the page, one token a row. Window ``i`` has two columns: its input
    tokens, and on the same rows its targets, each the token that follows its input (the
    next row of the text). Each window starts ``stride`` tokens after the last. Tokens too
    long for their column are cut short with "…"; the type is never made smaller.
    """
    if context_length < 1 or stride < 1:
        raise ValueError(f"context_length and stride must be >= 1, got {context_length} and {stride}")
    needed = (n_windows - 1) * stride + context_length + 1
    if len(tokens) < needed:
        raise ValueError(f"{n_windows} windows need {needed} tokens, got {len(tokens)}; pass more tokens")
    char = 0.08 * MIN_FONT_SIZE / 10  # inches per monospace character
    row, arrow, gap, margin, pad = 0.27, 0.2, 0.2, 0.02, 0.16
    widest = max(len(t) for t in tokens[:needed])
    column = max(widest * char + pad, 0.62)  # "target" must fit too
    n_columns = 1 + 2 * n_windows
    fixed = 2 * margin + n_windows * (arrow + gap)
    if fixed + n_columns * column > DRAWING_WIDTH_INCHES:  # shorten the tokens, never the type
        column = (DRAWING_WIDTH_INCHES - fixed) / n_columns
    width = fixed + n_columns * column
    max_chars = max(int((column - pad) / char), 2)
    shown = [_fit_label(t, max_chars) for t in tokens[:needed]]
    height = 2 * margin + 0.35 + (needed + 2) * row
    fig = plt.figure(figsize=size or (width, height), dpi=100, facecolor="white")
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)  # in inches, growing down the page

    def y_of(index: int) -> float:  # centre of the row of token ``index``
        return margin + 0.35 + (2 + index + 0.5) * row

    def x_of(window: int, target: bool) -> float:  # left edge of a window's column
        return margin + column + window * (2 * column + arrow + gap) + gap + target * (column + arrow)

    ax.text(width / 2, margin + 0.15, f"context_length={context_length}, stride={stride}", ha="center",
            va="center", fontsize=11, color=INK)
    ax.text(margin + column / 2, y_of(-1), "text", ha="center", va="center", fontsize=MIN_FONT_SIZE,
            color=INK, style="italic")
    for index, token in enumerate(shown):
        ax.text(margin + column / 2, y_of(index), token, ha="center", va="center", fontsize=MIN_FONT_SIZE,
                family="monospace", color="#4b5563")
    for i in range(n_windows):
        start = i * stride
        ax.text(x_of(i, False) + column + arrow / 2, y_of(-2), f"window {i + 1}", ha="center", va="center",
                fontsize=MIN_FONT_SIZE, color=INK, weight="bold")
        for target, (colour, label) in enumerate([("#bfdbfe", "input"), ("#bbf7d0", "target")]):
            x = x_of(i, bool(target))
            ax.text(x + column / 2, y_of(-1), label, ha="center", va="center", fontsize=MIN_FONT_SIZE, color=INK,
                    style="italic")
            for index in range(start, start + context_length):
                ax.add_patch(Rectangle((x + 0.03, y_of(index) - row / 2 + 0.02), column - 0.06, row - 0.04,
                                       facecolor=colour, edgecolor="#374151", lw=0.8))
                ax.text(x + column / 2, y_of(index), shown[index + target], ha="center", va="center",
                        fontsize=MIN_FONT_SIZE, family="monospace", color="#111827")
                if target:
                    ax.text(x - arrow / 2, y_of(index), "→", ha="center", va="center", fontsize=MIN_FONT_SIZE,
                            color="#6b7280")
    return fig


def length_histograms(
    lengths: dict[str, Sequence[int]],
    *,
    max_length: int = 12,
    title: str | None = None,
    xlabel: str = "characters per token",
    size: tuple[float, float] = (6.4, 3.2),
) -> Figure:
    """Side-by-side histograms (as shares of all tokens) of token lengths, one series per name."""
    fig, ax = new_figure(size)
    n = len(lengths)
    bar_width = 0.8 / max(n, 1)
    bins = list(range(1, max_length + 1))
    for k, (name, values) in enumerate(lengths.items()):
        total = len(values)
        if total == 0:
            raise ValueError(f"series {name!r} is empty; pass at least one length")
        shares = [sum(1 for v in values if min(v, max_length) == b) / total for b in bins]
        ax.bar([b + (k - (n - 1) / 2) * bar_width for b in bins], shares, width=bar_width, label=name)
    ax.set_xticks(bins, [str(b) for b in bins[:-1]] + [f"{max_length}+"])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of tokens")
    if title:
        ax.set_title(title)
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def _heatmap_matrix(weights: Any, n_labels: int) -> Any:
    import numpy as np

    matrix = np.asarray(weights.detach().cpu() if hasattr(weights, "detach") else weights, dtype=float)
    if matrix.shape != (n_labels, n_labels):
        raise ValueError(
            f"weights have shape {matrix.shape} but there are {n_labels} labels; expected ({n_labels}, {n_labels})"
        )
    return matrix


def _shown_labels(labels: Sequence[str]) -> list[str]:
    # a line break shows as Python writes it, \n: an arrow such as ↵ turned on its side
    # with the x-axis labels reads as ↓
    return [label.replace(" ", "·").replace("\n", "\\n") for label in labels]


def _thin_tick_labels(fig: Figure, ax: Axes, shown: Sequence[str], *, y_labels: bool = True) -> None:
    """Label every token, or every k-th with the smallest k at which no two labels touch."""
    T = len(shown)
    for step in range(1, max(T, 1) + 1):
        ticks = list(range(0, T, step))
        ax.set_xticks(ticks, [shown[i] for i in ticks], rotation=90, fontsize=MIN_FONT_SIZE, family="monospace")
        ax.set_yticks(ticks, [shown[i] for i in ticks] if y_labels else [], fontsize=MIN_FONT_SIZE,
                      family="monospace")
        fig.canvas.draw()
        if not (_labels_collide(fig, ax.get_xticklabels()) or _labels_collide(fig, ax.get_yticklabels())):
            return


def _heatmap_axes(ax: Axes, matrix: Any, shown: Sequence[str], *, vmax: float, annotate: bool,
                  y_labels: bool = True) -> Any:
    T = len(shown)
    im = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=max(vmax, 1e-9))
    ax.set_xticks(range(T), shown, rotation=90, fontsize=MIN_FONT_SIZE, family="monospace")
    ax.set_yticks(range(T), shown if y_labels else [], fontsize=MIN_FONT_SIZE, family="monospace")
    ax.set_xlabel("attended to (key)")
    ax.set_ylabel("attending (query)" if y_labels else "")
    if annotate:
        for i in range(T):
            for j in range(T):
                value = matrix[i, j]
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=MIN_FONT_SIZE,
                        color="white" if value > 0.6 * vmax else "black")
    return im


def attention_heatmap(
    weights: torch.Tensor | Sequence[Sequence[float]],
    labels: Sequence[str],
    *,
    title: str | None = None,
    annotate: bool | None = None,
    ax: Axes | None = None,
    size: tuple[float, float] | None = None,
) -> Figure:
    """Attention weights as a heatmap: row = query token, column = key token (chapter 3).

    Args:
        weights: A ``(T, T)`` matrix of attention weights (a tensor or nested lists).
        labels: The ``T`` token strings, used for both axes; whitespace is made visible.
        annotate: Print each weight in its cell; by default only when ``T <= 8``.
        ax: Draw here instead of on a new Figure.
        size: Size of a new Figure in inches; by default it grows with ``T`` up to the
            page's width. When rows are too thin for 10-pt labels, every k-th is labelled.
    """
    matrix = _heatmap_matrix(weights, len(labels))
    T = len(labels)
    shown = _shown_labels(labels)
    own = ax is None
    if size is None:
        margin = 0.9 + 0.08 * max((len(s) for s in shown), default=1)  # tick labels and axis label
        cell = min(0.5 if T <= 8 else 0.3, (BOOK_WIDTH_INCHES - margin - 1.1) / max(T, 1))
        size = (min(margin + T * cell + 1.1, BOOK_WIDTH_INCHES - 0.1), margin + T * cell + (0.4 if title else 0.1))
    fig, ax = _figure(ax, size)
    im = _heatmap_axes(ax, matrix, shown, vmax=float(matrix.max()),
                       annotate=annotate if annotate is not None else T <= 8)
    if title:
        ax.set_title(title)
    colorbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    colorbar.set_label("attention weight")
    if own:
        fig.tight_layout()
    _thin_tick_labels(fig, ax, shown)
    return fig


def attention_heatmaps(
    weights: Sequence[torch.Tensor | Sequence[Sequence[float]]],
    labels: Sequence[str],
    titles: Sequence[str],
    *,
    columns: int | None = None,
    annotate: bool = False,
) -> Figure:
    """Several ``(T, T)`` attention maps of one text in a grid, on one colour scale.

    Chapter 3 compares heads this way. Only the first column repeats the query labels; one
    colour bar below serves every panel. ``columns`` defaults to as many as fit the page's
    width with rows at least 0.17 inches tall, so that every 10-pt token label shows.
    """
    if not weights or len(weights) != len(titles):
        raise ValueError(f"got {len(weights)} maps and {len(titles)} titles; pass one title per map")
    matrices = [_heatmap_matrix(w, len(labels)) for w in weights]
    T = len(labels)
    shown = _shown_labels(labels)
    label_inches = 0.55 + 0.08 * max((len(s) for s in shown), default=1)  # tick labels and axis label
    usable = BOOK_WIDTH_INCHES - 0.2 - label_inches
    if columns is None:
        columns = max(1, min(len(matrices), int(usable // (0.17 * T + 0.1))))
    rows = math.ceil(len(matrices) / columns)
    side = min(usable / columns - 0.1, 0.3 * T + 0.3)
    width = min(label_inches + columns * (side + 0.1) + 0.2, BOOK_WIDTH_INCHES - 0.1)
    height = rows * (side + label_inches + 0.35) + 0.8  # the colour bar and its label
    fig, axes = new_figure((width, height), nrows=rows, ncols=columns, squeeze=False)
    vmax = max(float(m.max()) for m in matrices)
    image: Any = None
    used = []
    for k, ax in enumerate(axes.flat):
        if k >= len(matrices):
            ax.set_axis_off()
            continue
        image = _heatmap_axes(ax, matrices[k], shown, vmax=vmax, annotate=annotate, y_labels=k % columns == 0)
        ax.set_title(titles[k])
        used.append(ax)
    fig.tight_layout(rect=(0, 0.8 / height, 1, 1))
    bar = fig.add_axes((0.25, 0.35 / height, 0.5, 0.12 / height))
    colorbar = fig.colorbar(image, cax=bar, orientation="horizontal")
    colorbar.set_label("attention weight")
    for k, ax in enumerate(used):
        _thin_tick_labels(fig, ax, shown, y_labels=k % columns == 0)
    return fig


def plot_losses(
    history: object,
    *,
    title: str | None = None,
    log: bool = False,
    ax: Axes | None = None,
    size: tuple[float, float] = (6.4, 3.6),
) -> Figure:
    """Training and validation loss against optimizer steps, with tokens seen on top.

    Chapter 5, "A training loop". ``history`` is a ``companion.train.TrainHistory`` (or
    anything with its ``steps``, ``tokens_seen``, ``train_loss`` and ``val_loss``
    lists); validation points that are ``None`` are left out. The upper x-axis converts
    steps to training tokens by interpolating between the recorded points.

    Args:
        history: What ``train`` returned.
        title: Axes title.
        log: Logarithmic loss axis.
        ax: Draw here instead of on a new Figure.
        size: Size of a new Figure, in inches.

    Returns:
        The Figure.

    Raises:
        ValueError: The history has no evaluation point.
    """
    import numpy as np

    steps = list(history.steps)  # type: ignore[attr-defined]
    tokens = list(history.tokens_seen)  # type: ignore[attr-defined]
    train = list(history.train_loss)  # type: ignore[attr-defined]
    val = list(history.val_loss)  # type: ignore[attr-defined]
    if not steps:
        raise ValueError("the history has no evaluation point to plot; train for at least one step")
    fig, ax = _figure(ax, size)
    ax.plot(steps, train, label="training loss", color=BLUE)
    val_points = [(s, v) for s, v in zip(steps, val, strict=True) if v is not None]
    if val_points:
        ax.plot(*zip(*val_points, strict=True), label="validation loss", color=ORANGE, linestyle="--")
    ax.set_xlabel("optimizer steps")
    ax.set_ylabel("loss (nats per token)")
    if log:
        ax.set_yscale("log")
    ax.legend(frameon=False)
    ax.spines[["right"]].set_visible(False)

    # steps <-> tokens: through the origin and every recorded point, linear beyond the last
    xs = np.array([0.0, *steps], dtype=float)
    ys = np.array([0.0, *tokens], dtype=float)
    rate = ys[-1] / xs[-1] if xs[-1] else 1.0

    def to_tokens(s: Any) -> Any:
        s = np.asarray(s, dtype=float)
        return np.where(s <= xs[-1], np.interp(s, xs, ys), ys[-1] + (s - xs[-1]) * rate)

    def to_steps(t: Any) -> Any:
        t = np.asarray(t, dtype=float)
        return np.where(t <= ys[-1], np.interp(t, ys, xs), xs[-1] + (t - ys[-1]) / rate)

    top = ax.secondary_xaxis("top", functions=(to_tokens, to_steps))
    top.set_xlabel("tokens seen")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
