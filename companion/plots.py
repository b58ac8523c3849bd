"""Plotting functions used by the chapters.

Each function draws on a new Figure (or on the ``ax`` it is given), returns the Figure
and writes no file, so a notebook decides what to show and nothing happens on import.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def _figure(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
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
