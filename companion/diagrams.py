"""Diagrams of the course's ideas, drawn with matplotlib so they can be regenerated.

Each public function returns a :class:`matplotlib.figure.Figure` and writes no file; a
chapter calls it and the notebook stores the picture. The drawing is kept declarative:
a diagram is a list of :class:`Box` objects and a list of arrows between their names,
laid out in data coordinates on an axis with no frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

# One palette for every diagram of the course: data, model, process, result.
COLORS = {
    "data": "#dbeafe",  # light blue: text, tokens, datasets
    "model": "#fde68a",  # amber: networks and their parts
    "step": "#e5e7eb",  # grey: a step that transforms something
    "result": "#bbf7d0",  # green: what comes out
    "note": "#ffffff",
}
EDGE = "#374151"


@dataclass(frozen=True)
class Box:
    """A labelled rounded box centred at ``(x, y)`` in data coordinates."""

    name: str
    x: float
    y: float
    text: str
    kind: str = "step"
    width: float = 2.2
    height: float = 0.8
    fontsize: float = 10.0


def draw(
    boxes: Sequence[Box],
    arrows: Sequence[tuple[str, str] | tuple[str, str, str]],
    *,
    size: tuple[float, float] = (9.0, 3.0),
    title: str | None = None,
) -> Figure:
    """Draw boxes and labelled arrows (``(from, to)`` or ``(from, to, label)``) as a Figure."""
    by_name = {b.name: b for b in boxes}
    fig, ax = plt.subplots(figsize=size)
    ax.set_axis_off()
    for b in boxes:
        ax.add_patch(
            FancyBboxPatch(
                (b.x - b.width / 2, b.y - b.height / 2),
                b.width,
                b.height,
                boxstyle="round,pad=0.02,rounding_size=0.12",
                facecolor=COLORS[b.kind],
                edgecolor=EDGE,
                linewidth=1.2,
            )
        )
        ax.text(b.x, b.y, b.text, ha="center", va="center", fontsize=b.fontsize, wrap=True)
    for arrow in arrows:
        start, end = by_name[arrow[0]], by_name[arrow[1]]
        (x0, y0), (x1, y1) = _edge_points(start, end)
        ax.add_patch(
            FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=14, color=EDGE, lw=1.3)
        )
        if len(arrow) == 3:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.12, arrow[2], ha="center", va="bottom", fontsize=8.5,
                    color="#1f2937", style="italic")
    xs = [b.x - b.width / 2 for b in boxes] + [b.x + b.width / 2 for b in boxes]
    ys = [b.y - b.height / 2 for b in boxes] + [b.y + b.height / 2 for b in boxes]
    ax.set_xlim(min(xs) - 0.2, max(xs) + 0.2)
    ax.set_ylim(min(ys) - 0.3, max(ys) + 0.3)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


def _edge_points(a: Box, b: Box) -> tuple[tuple[float, float], tuple[float, float]]:
    """Where an arrow from box ``a`` to box ``b`` leaves ``a`` and enters ``b``."""
    dx, dy = b.x - a.x, b.y - a.y
    if abs(dx) * (a.height + b.height) >= abs(dy) * (a.width + b.width):  # mostly sideways
        sign = 1 if dx > 0 else -1
        return (a.x + sign * a.width / 2, a.y), (b.x - sign * b.width / 2, b.y)
    sign = 1 if dy > 0 else -1
    return (a.x, a.y + sign * a.height / 2), (b.x, b.y - sign * b.height / 2)


def training_stages() -> Figure:
    """Pretraining on raw text gives a foundation model; fine-tuning specialises it (chapter 1)."""
    boxes = [
        Box("raw", 0, 1.2, "Raw, unlabelled text\n(web pages, books, ...)\nbillions of tokens", "data", 2.8, 1.0),
        Box("pre", 3.4, 1.2, "Pretraining\npredict the next token", "step", 2.4, 1.0),
        Box("base", 6.8, 1.2, "Foundation model\n(e.g. GPT-2, GPT-3)", "model", 2.6, 1.0),
        Box("cls_data", 0, -0.8, "Labelled examples\n(text, class)", "data", 2.8, 0.9),
        Box("ins_data", 0, -2.2, "Instruction–answer pairs", "data", 2.8, 0.9),
        Box("ft", 3.4, -1.5, "Fine-tuning\n(supervised)", "step", 2.4, 1.0),
        Box("cls", 6.8, -0.8, "Classifier\n(spam or not spam)", "result", 2.6, 0.9),
        Box("chat", 6.8, -2.2, "Assistant that\nfollows instructions", "result", 2.6, 0.9),
    ]
    arrows = [
        ("raw", "pre"),
        ("pre", "base"),
        ("base", "ft", "start from its weights"),
        ("cls_data", "ft"),
        ("ins_data", "ft"),
        ("ft", "cls"),
        ("ft", "chat"),
    ]
    return draw(boxes, arrows, size=(9.5, 4.6))


def course_plan() -> Figure:
    """The course's three stages and the chapters in each (chapter 1)."""
    boxes = [
        Box("s1", 0, 0, "Stage 1: build the parts\nch. 2 text data\nch. 3 attention", "data", 3.2, 1.4),
        Box("s2", 4.0, 0, "Stage 2: a foundation model\nch. 4 GPT architecture\nch. 5 pretraining,\nGPT-2 weights",
            "model", 3.4, 1.4),
        Box("s3", 8.2, 0, "Stage 3: fine-tuning\nch. 6 a classifier\nch. 7 an assistant", "result", 3.2, 1.4),
    ]
    return draw(boxes, [("s1", "s2"), ("s2", "s3")], size=(10, 2.4))


def transformer_families() -> Figure:
    """Encoder–decoder transformer, encoder-only (BERT) and decoder-only (GPT) models (chapter 1)."""
    boxes = [
        Box("src", 0, 1.4, "Input sentence\n(e.g. English)", "data", 2.4, 0.9),
        Box("enc", 3.0, 1.4, "Encoder\nreads the whole input", "model", 2.6, 0.9),
        Box("dec", 6.2, 1.4, "Decoder\nwrites one token at a time", "model", 2.8, 0.9),
        Box("tgt", 9.3, 1.4, "Output sentence\n(e.g. German)", "result", 2.4, 0.9),
        Box("bert_in", 0, -0.2, "Text with [MASK]ed words", "data", 2.4, 0.9),
        Box("bert", 3.0, -0.2, "Encoder only (BERT)\nfills in blanks", "model", 2.6, 0.9),
        Box("bert_out", 6.2, -0.2, "Hidden word, class label", "result", 2.8, 0.9),
        Box("gpt_in", 0, -1.8, "Text so far", "data", 2.4, 0.9),
        Box("gpt", 3.0, -1.8, "Decoder only (GPT)\npredicts the next token", "model", 2.6, 0.9),
        Box("gpt_out", 6.2, -1.8, "Next token, then the next...", "result", 2.8, 0.9),
    ]
    arrows = [
        ("src", "enc"), ("enc", "dec", "context"), ("dec", "tgt"),
        ("bert_in", "bert"), ("bert", "bert_out"),
        ("gpt_in", "gpt"), ("gpt", "gpt_out"),
    ]
    return draw(boxes, arrows, size=(10.5, 4.4))


def text_pipeline() -> Figure:
    """From raw text to the vectors a GPT reads: the pipeline chapter 2 builds."""
    boxes = [
        Box("text", 0, 0, '"This is an\nexample."', "data", 1.9, 1.0),
        Box("tok", 2.9, 0, "Tokens\nThis|·is|·an|\n·example|.", "step", 2.3, 1.0),
        Box("ids", 5.8, 0, "Token ids\n1212 318 281\n1672 13", "step", 2.1, 1.0),
        Box("emb", 8.6, 0, "Token\nembeddings\n(one vector each)", "model", 2.1, 1.0),
        Box("pos", 8.6, -1.5, "Position\nembeddings", "model", 2.1, 0.9),
        Box("inp", 11.4, 0, "Input vectors\nfor the GPT", "result", 2.1, 1.0),
    ]
    arrows = [("text", "tok", "split"), ("tok", "ids", "look up"), ("ids", "emb", "embed"), ("emb", "inp", "+"),
              ("pos", "inp")]
    return draw(boxes, arrows, size=(12, 3.2))
