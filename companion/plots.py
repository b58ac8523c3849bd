"""Plotting functions used by the chapters.

Each function draws on a new Figure (or on the ``ax`` it is given), returns the Figure
and writes no file, so a notebook decides what to show and nothing happens on import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

if TYPE_CHECKING:
    import torch


BOOK_WIDTH_INCHES = 6.8
"""The widest figure the book shows unshrunk: its text column is 688 px at 100 dpi."""

BOOK_STYLE: dict[str, Any] = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
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


def book_style() -> None:
    """Use the book's figure settings (``BOOK_STYLE``) for the rest of the session.

    Each chapter calls it once: figures are then at most ``BOOK_WIDTH_INCHES`` wide by
    default, at 100 dpi, with 10-pt text, so that nothing is shrunk below a readable size
    in the rendered book.
    """
    plt.style.use(BOOK_STYLE)


def _figure(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        fig = ax.get_figure(root=True)
        if fig is None:
            raise ValueError("the axes given are not part of a figure")
        return fig, ax
    fig, ax = plt.subplots(figsize=size)
    return fig, ax


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
    size: tuple[float, float] = (7.0, 3.2),
) -> Figure:
    """A bar per label; ``annotate`` is a format string such as ``"{:.2f}"`` for the bar values.

    Used for next-token distributions (chapters 1 and 5) and data-set sizes (chapter 1).
    """
    if len(labels) != len(values):
        raise ValueError(f"got {len(labels)} labels but {len(values)} values; pass one value per label")
    fig, ax = _figure(ax, size)
    positions = range(len(labels))
    bars = ax.barh(positions, values, color="#3b82f6") if horizontal else ax.bar(positions, values, color="#3b82f6")
    if horizontal:
        ax.set_yticks(list(positions), labels)
        ax.invert_yaxis()
        if log:
            ax.set_xscale("log")
    else:
        ax.set_xticks(list(positions), labels, rotation=0 if max(map(len, labels), default=0) < 8 else 45,
                      ha="center" if max(map(len, labels), default=0) < 8 else "right")
        if log:
            ax.set_yscale("log")
    if annotate:
        ax.bar_label(bars, labels=[annotate.format(v) for v in values], fontsize=8, padding=2)
    if title:
        ax.set_title(title)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


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

    Row ``2*i`` shows window ``i``'s input tokens, the row below it its targets: the same
    span shifted one token to the right. Each window starts ``stride`` tokens after the last.
    """
    if context_length < 1 or stride < 1:
        raise ValueError(f"context_length and stride must be >= 1, got {context_length} and {stride}")
    needed = (n_windows - 1) * stride + context_length + 1
    if len(tokens) < needed:
        raise ValueError(f"{n_windows} windows need {needed} tokens, got {len(tokens)}; pass more tokens")
    width = max(len(t) for t in tokens[:needed]) * 0.11 + 0.35
    n_cols = needed
    fig, ax = plt.subplots(figsize=size or (min(1.0 + n_cols * width, 14.0), 0.5 + 0.55 * 2 * n_windows + 0.6))
    ax.set_axis_off()
    for col, token in enumerate(tokens[:needed]):
        ax.text(col * width + width / 2, 2 * n_windows + 0.35, token, ha="center", va="center", fontsize=8,
                family="monospace", color="#374151")
    for i in range(n_windows):
        start = i * stride
        for row, (offset, colour, label) in enumerate([(0, "#bfdbfe", "input"), (1, "#bbf7d0", "target")]):
            y = 2 * n_windows - 1 - (2 * i + row)
            for col in range(start + offset, start + offset + context_length):
                ax.add_patch(Rectangle((col * width + 0.03, y - 0.4), width - 0.06, 0.8, facecolor=colour,
                                           edgecolor="#374151", lw=0.8))
                ax.text(col * width + width / 2, y, tokens[col], ha="center", va="center", fontsize=8,
                        family="monospace")
            ax.text(-0.1, y, f"window {i + 1} {label}", ha="right", va="center", fontsize=8.5)
    ax.set_xlim(-2.2, n_cols * width + 0.1)
    ax.set_ylim(-0.6, 2 * n_windows + 0.8)
    ax.set_title(f"context_length={context_length}, stride={stride}", fontsize=10)
    fig.tight_layout()
    return fig


def length_histograms(
    lengths: dict[str, Sequence[int]],
    *,
    max_length: int = 12,
    title: str | None = None,
    xlabel: str = "characters per token",
    size: tuple[float, float] = (8.0, 3.2),
) -> Figure:
    """Side-by-side histograms (as shares of all tokens) of token lengths, one series per name."""
    fig, ax = plt.subplots(figsize=size)
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


def attention_heatmap(
    weights: torch.Tensor | Sequence[Sequence[float]],
    labels: Sequence[str],
    *,
    title: str | None = None,
    annotate: bool | None = None,
    ax: Axes | None = None,
    size: tuple[float, float] = (5.0, 4.4),
) -> Figure:
    """Attention weights as a heatmap: row = query token, column = key token (chapter 3).

    Args:
        weights: A ``(T, T)`` matrix of attention weights (a tensor or nested lists).
        labels: The ``T`` token strings, used for both axes; whitespace is made visible.
        annotate: Print each weight in its cell; by default only when ``T <= 8``.
    """
    import numpy as np

    matrix = np.asarray(weights.detach().cpu() if hasattr(weights, "detach") else weights, dtype=float)
    T = len(labels)
    if matrix.shape != (T, T):
        raise ValueError(f"weights have shape {matrix.shape} but there are {T} labels; expected ({T}, {T})")
    fig, ax = _figure(ax, size)
    shown = [label.replace(" ", "·").replace("\n", "↵") for label in labels]
    im = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=max(float(matrix.max()), 1e-9))
    ax.set_xticks(range(T), shown, rotation=90, fontsize=8, family="monospace")
    ax.set_yticks(range(T), shown, fontsize=8, family="monospace")
    ax.set_xlabel("attended to (key)")
    ax.set_ylabel("attending (query)")
    if annotate if annotate is not None else T <= 8:
        for i in range(T):
            for j in range(T):
                value = matrix[i, j]
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7.5,
                        color="white" if value > 0.6 * matrix.max() else "black")
    if title:
        ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return fig


def plot_losses(
    history: object,
    *,
    title: str | None = None,
    log: bool = False,
    ax: Axes | None = None,
    size: tuple[float, float] = (7.0, 3.6),
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
    ax.plot(steps, train, label="training loss", color="#3b82f6")
    val_points = [(s, v) for s, v in zip(steps, val, strict=True) if v is not None]
    if val_points:
        ax.plot(*zip(*val_points, strict=True), label="validation loss", color="#f97316", linestyle="--")
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
