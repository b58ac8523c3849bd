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

__all__ = [
    "Box",
    "course_plan",
    "draw",
    "gpt_architecture",
    "rnn_versus_attention",
    "text_pipeline",
    "training_loop",
    "training_stages",
    "transformer_block",
    "transformer_families",
]

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
    arrows: Sequence[tuple[str, ...]],
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


def rnn_versus_attention() -> Figure:
    """An RNN encoder–decoder squeezes the input into one state; attention reads every state (chapter 3)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    source = ["Kannst", "du", "mir", "helfen"]
    target = ["Can", "you", "help", "me"]
    for ax, title in zip(axes, ["RNN encoder–decoder: one hidden state carries everything",
                                "With attention: every decoder step reads every input state"], strict=True):
        ax.set_axis_off()
        ax.set_title(title, fontsize=10)
        ax.set_xlim(-0.6, 8.6)
        ax.set_ylim(-0.9, 3.2)
        for i, word in enumerate(source):
            ax.add_patch(FancyBboxPatch((i - 0.35, 0.0), 0.7, 0.6, boxstyle="round,pad=0.02",
                                        facecolor=COLORS["model"], edgecolor=EDGE))
            ax.text(i, 0.3, f"h{i + 1}", ha="center", va="center", fontsize=9)
            ax.text(i, -0.45, word, ha="center", va="center", fontsize=9)
            if i:
                ax.add_patch(FancyArrowPatch((i - 0.65, 0.3), (i - 0.35, 0.3), arrowstyle="-|>", mutation_scale=10,
                                             color=EDGE))
        for j, word in enumerate(target):
            x = 4.6 + j
            ax.add_patch(FancyBboxPatch((x - 0.35, 2.0), 0.7, 0.6, boxstyle="round,pad=0.02",
                                        facecolor=COLORS["result"], edgecolor=EDGE))
            ax.text(x, 2.3, f"s{j + 1}", ha="center", va="center", fontsize=9)
            ax.text(x, 2.95, word, ha="center", va="center", fontsize=9)
            if j:
                ax.add_patch(FancyArrowPatch((x - 0.65, 2.3), (x - 0.35, 2.3), arrowstyle="-|>", mutation_scale=10,
                                             color=EDGE))
    # left: only the last encoder state reaches the decoder
    axes[0].add_patch(FancyArrowPatch((3.35, 0.45), (4.25, 2.15), arrowstyle="-|>", mutation_scale=12, color="#b91c1c",
                                      lw=2.0))
    axes[0].text(4.2, 1.05, "the only\nlink", fontsize=8.5, color="#b91c1c")
    # right: the third decoder step ("help") weighs all encoder states; thicker = larger weight
    weights = [0.05, 0.05, 0.15, 0.75]
    for i, w in enumerate(weights):
        axes[1].add_patch(FancyArrowPatch((i, 0.65), (6.6, 1.95), arrowstyle="-|>", mutation_scale=10,
                                          color="#2563eb", lw=0.6 + 5 * w, alpha=0.4 + 0.6 * w))
        axes[1].text(i - 0.05, 0.78, f"{w:.2f}", fontsize=8, color="#1d4ed8")
    axes[1].text(6.95, 1.55, "weights for\n\"help\"", fontsize=8.5, color="#1d4ed8")
    fig.tight_layout()
    return fig


def transformer_block() -> Figure:
    """GPT-2's (pre-LayerNorm) transformer block, bottom to top (chapter 4)."""
    boxes = [
        Box("in", 0, 0, "input (B, T, C)", "data", 2.6, 0.6),
        Box("n1", 0, 1.1, "LayerNorm 1", "step", 2.6, 0.6),
        Box("att", 0, 2.1, "masked multi-head\nattention", "model", 2.6, 0.8),
        Box("d1", 0, 3.1, "dropout", "step", 2.6, 0.5),
        Box("add1", 0, 4.0, "+", "step", 0.6, 0.5),
        Box("n2", 0, 4.9, "LayerNorm 2", "step", 2.6, 0.6),
        Box("ff", 0, 5.9, "feed-forward\nC → 4C → GELU → C", "model", 2.6, 0.8),
        Box("d2", 0, 6.9, "dropout", "step", 2.6, 0.5),
        Box("add2", 0, 7.8, "+", "step", 0.6, 0.5),
        Box("out", 0, 8.8, "output (B, T, C)", "result", 2.6, 0.6),
        Box("skip1", 2.6, 2.0, "shortcut", "note", 1.4, 0.5, fontsize=8.5),
        Box("skip2", 2.6, 5.9, "shortcut", "note", 1.4, 0.5, fontsize=8.5),
    ]
    arrows = [("in", "n1"), ("n1", "att"), ("att", "d1"), ("d1", "add1"), ("add1", "n2"), ("n2", "ff"),
              ("ff", "d2"), ("d2", "add2"), ("add2", "out"), ("in", "skip1"), ("skip1", "add1"),
              ("add1", "skip2"), ("skip2", "add2")]
    return draw(boxes, arrows, size=(4.6, 8.2))


def gpt_architecture() -> Figure:
    """The whole GPT model, bottom to top (chapter 4)."""
    boxes = [
        Box("ids", -1.7, 0, "token ids (B, T)", "data", 2.6, 0.6),
        Box("positions", 1.7, 0, "positions 0, 1, …, T−1", "data", 2.6, 0.6),
        Box("tok", -1.7, 1.2, "token embedding\nV × C", "model", 2.6, 0.8),
        Box("pos", 1.7, 1.2, "position embedding\nT_max × C", "model", 2.6, 0.8),
        Box("add", 0, 2.4, "+  then dropout", "step", 2.6, 0.6),
        Box("blocks", 0, 3.7, "transformer block\nrepeated N times", "model", 3.4, 0.9),
        Box("norm", 0, 5.0, "final LayerNorm", "step", 2.6, 0.6),
        Box("head", 0, 6.1, "linear output head\nC × V", "model", 2.6, 0.8),
        Box("logits", 0, 7.3, "logits (B, T, V):\na score per vocabulary entry", "result", 3.6, 0.8),
    ]
    arrows = [("ids", "tok"), ("positions", "pos"), ("tok", "add"), ("pos", "add"), ("add", "blocks"),
              ("blocks", "norm"), ("norm", "head"), ("head", "logits")]
    return draw(boxes, arrows, size=(5.6, 7.0))


def training_loop() -> Figure:
    """One step of the training loop, as a cycle (chapter 5)."""
    boxes = [
        Box("batch", 0, 2.0, "next batch\ninputs, targets", "data", 2.4, 0.8),
        Box("fwd", 3.2, 2.0, "forward pass\nlogits", "model", 2.4, 0.8),
        Box("loss", 6.4, 2.0, "cross-entropy\nloss", "step", 2.4, 0.8),
        Box("bwd", 6.4, 0.0, "backward pass\ngradients", "step", 2.4, 0.8),
        Box("upd", 3.2, 0.0, "optimizer step\n(AdamW, clipped)", "model", 2.4, 0.8),
        Box("eval", 0, 0.0, "every N steps:\nvalidation loss,\nsample text", "result", 2.4, 1.0),
    ]
    arrows = [("batch", "fwd"), ("fwd", "loss"), ("loss", "bwd"), ("bwd", "upd"), ("upd", "eval"), ("eval", "batch")]
    return draw(boxes, arrows, size=(9, 3.6))
