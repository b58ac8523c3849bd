"""Diagrams of the course's ideas, drawn with matplotlib so they can be regenerated.

Each public function returns a :class:`matplotlib.figure.Figure` and writes no file; a
chapter calls it and the notebook stores the picture. The drawing is kept declarative:
a diagram is a list of :class:`Box` objects and a list of arrows between their names,
laid out in inches on an axis with no frame, so that a diagram's text keeps its size (10 pt
or more) and the whole drawing fits the book's text column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.path import Path

from companion.plots import DRAWING_WIDTH_INCHES, INK, MIN_FONT_SIZE

__all__ = [
    "Box",
    "alignment_methods",
    "attention_qkv",
    "course_plan",
    "ddp_all_reduce",
    "draw",
    "gpt_architecture",
    "multihead_split_merge",
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
    """A labelled rounded box centred at ``(x, y)``; every length is in inches on the page."""

    name: str
    x: float
    y: float
    text: str
    kind: str = "step"
    width: float = 1.8
    height: float = 0.6
    fontsize: float = MIN_FONT_SIZE


ARROW_LABEL_SIDES = ("above", "below", "left", "right", "upper left", "upper right", "lower left", "lower right")
"""Where an arrow's label sits, relative to the middle of the arrow."""

_LABEL_OFFSETS = {  # side -> (dx, dy, horizontal alignment, vertical alignment)
    "above": (0, 0.05, "center", "bottom"),
    "below": (0, -0.05, "center", "top"),
    "left": (-0.08, 0, "right", "center"),
    "right": (0.08, 0, "left", "center"),
    "upper left": (-0.06, 0.06, "right", "bottom"),
    "upper right": (0.06, 0.06, "left", "bottom"),
    "lower left": (-0.06, -0.06, "right", "top"),
    "lower right": (0.06, -0.06, "left", "top"),
}


def draw(
    boxes: Sequence[Box],
    arrows: Sequence[tuple[str, ...]],
    *,
    size: tuple[float, float] | None = None,
    title: str | None = None,
) -> Figure:
    """Draw boxes and arrows between them as a Figure.

    An arrow is ``(from, to)``, ``(from, to, label)`` or ``(from, to, label, where)``.
    ``where`` is one of ``ARROW_LABEL_SIDES`` (by default the label sits above a sideways
    arrow and right of an upright one), or ``"bypass"``: the arrow leaves ``from`` to the
    right, runs up or down past every box in between and enters ``to`` from the right, with
    its label beside it (a shortcut connection). Coordinates are inches, so text keeps its
    size: by default the Figure is exactly as large as the drawing, which must fit within
    ``DRAWING_WIDTH_INCHES``.

    Raises:
        ValueError: The drawing is wider than the page, a box's type is below 10 pt, or a
            label position is unknown.
        KeyError: An arrow names a box that is not there.
    """
    by_name = {b.name: b for b in boxes}
    for b in boxes:
        if b.fontsize < MIN_FONT_SIZE:
            raise ValueError(f"box {b.name!r} sets its text in {b.fontsize} pt; the book needs >= {MIN_FONT_SIZE}")
    routes = [_route(by_name, boxes, arrow) for arrow in arrows]
    margin, title_room = 0.04, (0.4 if title else 0.0)
    xs = [x for b in boxes for x in (b.x - b.width / 2, b.x + b.width / 2)] + [x for r in routes for x, _ in r[0]]
    ys = [y for b in boxes for y in (b.y - b.height / 2, b.y + b.height / 2)]
    x0, x1 = min(xs) - margin, max(xs) + margin
    y0, y1 = min(ys) - margin, max(ys) + margin + title_room
    labels = [(arrow[2], route) for arrow, route in zip(arrows, routes, strict=True) if len(arrow) >= 3]
    for text, (_, (lx, _ly, ha, _va)) in labels:  # a label to the right of everything widens the drawing
        if ha == "left":
            x1 = max(x1, lx + len(text) * 0.08 + margin)
    if size is None:
        if x1 - x0 > DRAWING_WIDTH_INCHES + 1e-9:
            raise ValueError(f"the drawing is {x1 - x0:.2f} inches wide; the page holds {DRAWING_WIDTH_INCHES}")
        size = (x1 - x0, y1 - y0)
    fig = plt.figure(figsize=size, dpi=100, facecolor="white")
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    for b in boxes:
        ax.add_patch(
            FancyBboxPatch(
                (b.x - b.width / 2, b.y - b.height / 2),
                b.width,
                b.height,
                boxstyle="round,pad=0,rounding_size=0.08",
                facecolor=COLORS[b.kind],
                edgecolor=EDGE,
                linewidth=1.2,
                gid=f"box:{b.name}",
            )
        )
        ax.text(b.x, b.y, b.text, ha="center", va="center", fontsize=b.fontsize, color=INK,
                linespacing=1.25, gid=f"box:{b.name}")
    for arrow, (points, _) in zip(arrows, routes, strict=True):
        ax.add_patch(FancyArrowPatch(path=Path(points), arrowstyle="-|>", mutation_scale=12, color=EDGE, lw=1.2,
                                     shrinkA=1, shrinkB=1))
        if len(arrow) >= 4 and arrow[3] == "bypass":  # a dot where the shortcut branches off
            ax.plot(*points[0], marker="o", markersize=4, color=EDGE)
    for text, (_, (lx, ly, ha, va)) in labels:
        ax.text(lx, ly, text, ha=ha, va=va, fontsize=MIN_FONT_SIZE, color=INK, style="italic", gid="arrow-label")
    if title:
        ax.text((x0 + x1) / 2, y1 - 0.2, title, ha="center", va="center", fontsize=11, color=INK)
    width, height = size
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2  # a Figure larger than the drawing centres it
    ax.set_xlim(cx - width / 2, cx + width / 2)
    ax.set_ylim(cy - height / 2, cy + height / 2)
    return fig


def _route(
    by_name: dict[str, Box], boxes: Sequence[Box], arrow: tuple[str, ...]
) -> tuple[list[tuple[float, float]], tuple[float, float, str, str]]:
    """The points an arrow passes through, and where (x, y, ha, va) its label goes."""
    start, end = by_name[arrow[0]], by_name[arrow[1]]
    where = arrow[3] if len(arrow) >= 4 else None
    if where == "bypass":
        low, high = sorted((start.y, end.y))
        passed = [b for b in boxes if low <= b.y <= high]
        x = max(b.x + b.width / 2 for b in passed) + 0.3
        up = 1 if end.y > start.y else -1
        edge = start.y + up * start.height / 2
        ahead = [b.y - up * b.height / 2 for b in boxes
                 if abs(b.x - start.x) < b.width / 2 and (b.y - start.y) * up > 0]
        # on the line that leaves ``from``: halfway to the next box in that direction
        tap = (edge + min(ahead, key=lambda y: abs(y - edge))) / 2 if ahead else edge + up * 0.1
        points = [(start.x, tap), (x, tap), (x, end.y), (end.x + end.width / 2, end.y)]
        return points, (x + 0.08, (tap + end.y) / 2, "left", "center")
    (ax_, ay), (bx, by) = _edge_points(start, end)
    if where is None:
        where = "above" if abs(bx - ax_) >= abs(by - ay) else "right"
    if where not in _LABEL_OFFSETS:
        raise ValueError(f"arrow label position {where!r}; use 'bypass' or one of {ARROW_LABEL_SIDES}")
    dx, dy, ha, va = _LABEL_OFFSETS[where]
    return [(ax_, ay), (bx, by)], ((ax_ + bx) / 2 + dx, (ay + by) / 2 + dy, ha, va)


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
        Box("raw", 0.95, 3.0, "Raw, unlabelled text\n(web pages, books, …)\nbillions of tokens", "data", 1.9, 0.8),
        Box("pre", 3.25, 3.0, "Pretraining:\npredict the\nnext token", "step", 1.7, 0.8),
        Box("base", 5.55, 3.0, "Foundation model\n(e.g. GPT-2, GPT-3)", "model", 1.9, 0.8),
        Box("cls_data", 0.95, 1.55, "Labelled examples\n(text, class)", "data", 1.9, 0.6),
        Box("ins_data", 0.95, 0.6, "Instruction–answer\npairs", "data", 1.9, 0.6),
        Box("ft", 3.25, 1.075, "Fine-tuning\n(supervised)", "step", 1.7, 0.6),
        Box("cls", 5.55, 1.55, "Classifier\n(spam or not spam)", "result", 1.9, 0.6),
        Box("chat", 5.55, 0.6, "Assistant that\nfollows instructions", "result", 1.9, 0.6),
    ]
    arrows = [
        ("raw", "pre"),
        ("pre", "base"),
        ("base", "ft", "start from its weights", "upper left"),
        ("cls_data", "ft"),
        ("ins_data", "ft"),
        ("ft", "cls"),
        ("ft", "chat"),
    ]
    return draw(boxes, arrows)


def course_plan() -> Figure:
    """The course's four stages and the chapters in each (chapter 1)."""
    boxes = [
        Box("s1", 0.78, 0, "Stage 1:\nthe building\nblocks\nch. 2 text data\nch. 3 attention", "data", 1.5, 1.2),
        Box("s2", 2.45, 0, "Stage 2:\na foundation\nmodel\nch. 4 the GPT\nch. 5 pretraining", "model", 1.5, 1.2),
        Box("s3", 4.12, 0, "Stage 3:\nfine-tuning\n\nch. 6 a classifier\nch. 7 an assistant", "result", 1.5, 1.2),
        Box("s4", 5.79, 0, "Stage 4:\nbeyond\n\nch. 8 alignment\nch. 9 today's\nmodels", "result", 1.5, 1.2),
    ]
    return draw(boxes, [("s1", "s2"), ("s2", "s3"), ("s3", "s4")])


def transformer_families() -> Figure:
    """Encoder–decoder transformer, encoder-only (BERT) and decoder-only (GPT) models (chapter 1)."""
    boxes = [
        Box("src", 0.8, 3.6, "Input sentence\n(e.g. English)", "data", 1.6, 0.6),
        Box("enc", 3.25, 3.6, "Encoder:\nreads the whole input", "model", 2.0, 0.6),
        Box("dec", 3.25, 2.5, "Decoder: writes\none token at a time", "model", 2.0, 0.6),
        Box("tgt", 5.65, 2.5, "Output sentence\n(e.g. German)", "result", 1.7, 0.6),
        Box("bert_in", 0.8, 1.35, "Text with\n[MASK]ed words", "data", 1.6, 0.6),
        Box("bert", 3.25, 1.35, "Encoder only (BERT):\nfills in blanks", "model", 2.0, 0.6),
        Box("bert_out", 5.65, 1.35, "Hidden word,\nclass label", "result", 1.7, 0.6),
        Box("gpt_in", 0.8, 0.3, "Text so far", "data", 1.6, 0.6),
        Box("gpt", 3.25, 0.3, "Decoder only (GPT):\npredicts the next token", "model", 2.0, 0.6),
        Box("gpt_out", 5.65, 0.3, "Next token,\nthen the next…", "result", 1.7, 0.6),
    ]
    arrows = [
        ("src", "enc"), ("enc", "dec", "context"), ("dec", "tgt"),
        ("bert_in", "bert"), ("bert", "bert_out"),
        ("gpt_in", "gpt"), ("gpt", "gpt_out"),
    ]
    return draw(boxes, arrows)


def text_pipeline() -> Figure:
    """From raw text to the vectors a GPT reads: the pipeline chapter 2 builds."""
    boxes = [
        Box("text", 0.85, 1.6, '"This is an\nexample."', "data", 1.7, 0.8),
        Box("tok", 3.25, 1.6, "Tokens\nThis|·is|·an|\n·example|.", "step", 1.7, 0.8),
        Box("ids", 5.65, 1.6, "Token ids\n1212 318 281\n1672 13", "step", 1.7, 0.8),
        Box("emb", 5.65, 0.2, "Token embeddings\n(one vector each)", "model", 1.7, 0.6),
        Box("pos", 0.85, 0.2, "Position\nembeddings", "model", 1.7, 0.6),
        Box("inp", 3.25, 0.2, "Input vectors\nfor the GPT", "result", 1.7, 0.6),
    ]
    arrows = [("text", "tok", "split"), ("tok", "ids", "look up"), ("ids", "emb", "embed"), ("emb", "inp", "+"),
              ("pos", "inp", "+")]
    return draw(boxes, arrows)


def rnn_versus_attention(weights: Sequence[float] | None = None) -> Figure:
    """An RNN encoder–decoder squeezes the input into one state; attention reads every state (chapter 3).

    Args:
        weights: The four attention weights of the decoder step that writes "help", one per
            input word, e.g. computed in the chapter. They set the arrows' widths and are
            printed above the input states. Without them the arrows' widths only illustrate
            the idea (most weight on "helfen") and no number is printed.
    """
    if weights is not None and len(weights) != 4:
        raise ValueError(f"pass one weight per input word (4), got {len(weights)}")
    fig, axes = plt.subplots(2, 1, figsize=(DRAWING_WIDTH_INCHES, 5.0), dpi=100, facecolor="white")
    source = ["Kannst", "du", "mir", "helfen"]
    target = ["Can", "you", "help", "me"]
    for ax, title in zip(axes, ["RNN encoder–decoder: one hidden state carries everything",
                                "With attention: every decoder step reads every input state"], strict=True):
        ax.set_axis_off()
        ax.set_title(title, fontsize=11)
        ax.set_xlim(-0.6, 8.6)
        ax.set_ylim(-0.9, 3.3)
        for i, word in enumerate(source):
            ax.add_patch(FancyBboxPatch((i - 0.35, 0.0), 0.7, 0.6, boxstyle="round,pad=0.02",
                                        facecolor=COLORS["model"], edgecolor=EDGE))
            ax.text(i, 0.3, f"h{i + 1}", ha="center", va="center", fontsize=MIN_FONT_SIZE, color=INK)
            ax.text(i, -0.45, word, ha="center", va="center", fontsize=MIN_FONT_SIZE, color=INK)
            if i:
                ax.add_patch(FancyArrowPatch((i - 0.65, 0.3), (i - 0.35, 0.3), arrowstyle="-|>", mutation_scale=10,
                                             color=EDGE))
        for j, word in enumerate(target):
            x = 4.6 + j
            ax.add_patch(FancyBboxPatch((x - 0.35, 2.0), 0.7, 0.6, boxstyle="round,pad=0.02",
                                        facecolor=COLORS["result"], edgecolor=EDGE))
            ax.text(x, 2.3, f"s{j + 1}", ha="center", va="center", fontsize=MIN_FONT_SIZE, color=INK)
            ax.text(x, 2.95, word, ha="center", va="center", fontsize=MIN_FONT_SIZE, color=INK)
            if j:
                ax.add_patch(FancyArrowPatch((x - 0.65, 2.3), (x - 0.35, 2.3), arrowstyle="-|>", mutation_scale=10,
                                             color=EDGE))
    # top: only the last encoder state reaches the decoder
    axes[0].add_patch(FancyArrowPatch((3.35, 0.45), (4.25, 2.15), arrowstyle="-|>", mutation_scale=12, color="#b91c1c",
                                      lw=2.0))
    axes[0].text(4.15, 0.95, "the only link", fontsize=MIN_FONT_SIZE, color="#b91c1c", va="center")
    # bottom: the third decoder step ("help") weighs all encoder states; thicker = larger weight
    shown = list(weights) if weights is not None else [0.05, 0.05, 0.15, 0.75]
    for i, w in enumerate(shown):
        axes[1].add_patch(FancyArrowPatch((i, 0.65), (6.6, 1.95), arrowstyle="-|>", mutation_scale=10,
                                          color="#2563eb", lw=0.6 + 5 * w, alpha=0.4 + 0.6 * w))
        if weights is not None:
            axes[1].text(i - 0.3, 0.8, f"{w:.2f}", fontsize=MIN_FONT_SIZE, color="#1d4ed8", va="bottom")
    axes[1].text(7.0, 1.4, "weights for\n\"help\"", fontsize=MIN_FONT_SIZE, color="#1d4ed8", va="center")
    fig.tight_layout()
    return fig


def transformer_block() -> Figure:
    """GPT-2's (pre-LayerNorm) transformer block, bottom to top (chapter 4)."""
    boxes = [
        Box("in", 0, 0, "input (B, T, C)", "data", 2.2, 0.36),
        Box("n1", 0, 0.72, "LayerNorm 1", "step", 2.2, 0.36),
        Box("att", 0, 1.45, "masked multi-head\nattention", "model", 2.2, 0.55),
        Box("d1", 0, 2.15, "dropout", "step", 2.2, 0.36),
        Box("add1", 0, 2.75, "+", "step", 0.45, 0.36),
        Box("n2", 0, 3.5, "LayerNorm 2", "step", 2.2, 0.36),
        Box("ff", 0, 4.25, "feed-forward\nC → 4C → GELU → C", "model", 2.2, 0.55),
        Box("d2", 0, 4.95, "dropout", "step", 2.2, 0.36),
        Box("add2", 0, 5.55, "+", "step", 0.45, 0.36),
        Box("out", 0, 6.3, "output (B, T, C)", "result", 2.2, 0.36),
    ]
    arrows = [("in", "n1"), ("n1", "att"), ("att", "d1"), ("d1", "add1"), ("add1", "n2"), ("n2", "ff"),
              ("ff", "d2"), ("d2", "add2"), ("add2", "out"),
              ("in", "add1", "shortcut", "bypass"), ("add1", "add2", "shortcut", "bypass")]
    return draw(boxes, arrows)


def gpt_architecture() -> Figure:
    """The whole GPT model, bottom to top (chapter 4)."""
    boxes = [
        Box("ids", -1.3, 0, "token ids (B, T)", "data", 2.3, 0.36),
        Box("positions", 1.3, 0, "positions 0, 1, …, T−1", "data", 2.3, 0.36),
        Box("tok", -1.3, 0.8, "token embedding\nV × C", "model", 2.3, 0.55),
        Box("pos", 1.3, 0.8, "position embedding\nT_max × C", "model", 2.3, 0.55),
        Box("add", 0, 1.65, "+  then dropout", "step", 2.3, 0.36),
        Box("blocks", 0, 2.45, "transformer block\nrepeated N times", "model", 2.6, 0.55),
        Box("norm", 0, 3.25, "final LayerNorm", "step", 2.3, 0.36),
        Box("head", 0, 4.0, "linear output head\nC × V", "model", 2.3, 0.55),
        Box("logits", 0, 4.85, "logits (B, T, V):\na score per vocabulary entry", "result", 2.6, 0.55),
    ]
    arrows = [("ids", "tok"), ("positions", "pos"), ("tok", "add"), ("pos", "add"), ("add", "blocks"),
              ("blocks", "norm"), ("norm", "head"), ("head", "logits")]
    return draw(boxes, arrows)


def training_loop() -> Figure:
    """One step of the training loop, as a cycle (chapter 5)."""
    boxes = [
        Box("batch", 0.9, 1.35, "next batch:\ninputs, targets", "data", 1.8, 0.6),
        Box("fwd", 3.25, 1.35, "forward pass:\nlogits", "model", 1.8, 0.6),
        Box("loss", 5.6, 1.35, "cross-entropy\nloss", "step", 1.8, 0.6),
        Box("bwd", 5.6, 0, "backward pass:\ngradients", "step", 1.8, 0.6),
        Box("upd", 3.25, 0, "optimizer step\n(AdamW, clipped)", "model", 1.8, 0.6),
        Box("eval", 0.9, 0, "every N steps:\nvalidation loss,\nsample text", "result", 1.8, 0.8),
    ]
    arrows = [("batch", "fwd"), ("fwd", "loss"), ("loss", "bwd"), ("bwd", "upd"), ("upd", "eval"), ("eval", "batch")]
    return draw(boxes, arrows)


def attention_qkv() -> Figure:
    """Self-attention with trainable weights: queries, keys, values, then weights (chapter 3)."""
    boxes = [
        Box("x", 3.1, 3.3, "input vectors X  (T, d_in): one row per token", "data", 4.6, 0.4),
        Box("q", 0.95, 2.35, "queries Q = X W_q\n(T, d_out)\nwhat it seeks", "model", 1.9, 0.8),
        Box("k", 3.1, 2.35, "keys K = X W_k\n(T, d_out)\nwhat it offers", "model", 1.9, 0.8),
        Box("v", 5.25, 2.35, "values V = X W_v\n(T, d_out)\nwhat it passes on", "model", 1.9, 0.8),
        Box("scores", 2.0, 1.2, "scores Q Kᵀ / √d_out\n(T, T): query row, key column", "step", 3.0, 0.6),
        Box("weights", 2.0, 0.0, "softmax over each row\n(causal: future scores −∞)\nweights (T, T), rows sum to 1",
            "step", 3.0, 0.8),
        Box("out", 5.25, 0.0, "context vectors\nweights @ V\n(T, d_out)", "result", 1.9, 0.8),
    ]
    arrows = [("x", "q"), ("x", "k"), ("x", "v"), ("q", "scores"), ("k", "scores"), ("scores", "weights"),
              ("weights", "out"), ("v", "out")]
    return draw(boxes, arrows)


def multihead_split_merge() -> Figure:
    """How multi-head attention splits C features into H heads and merges them back (chapter 3)."""
    boxes = [
        Box("x", 0, 0, "queries, keys or values (B, T, C)", "data", 4.4, 0.4),
        Box("view", 0, 0.85, "view: cut each token's C features\ninto H slices of D = C / H  →  (B, T, H, D)",
            "step", 4.4, 0.6),
        Box("split", 0, 1.8, "transpose(1, 2): heads before tokens  →  (B, H, T, D)", "step", 4.4, 0.4),
        Box("att", 0, 2.65, "attention in every head at once, one batched\nmatrix product  →  (B, H, T, D)",
            "model", 4.4, 0.6),
        Box("merge", 0, 3.6, "transpose(1, 2), then view (B, T, H · D):\nthe heads' outputs side by side  →  (B, T, C)",
            "step", 4.4, 0.6),
        Box("proj", 0, 4.5, "out_proj (C → C) mixes the heads  →  (B, T, C)", "result", 4.4, 0.4),
    ]
    arrows = [("x", "view"), ("view", "split"), ("split", "att"), ("att", "merge"), ("merge", "proj")]
    return draw(boxes, arrows)


def ddp_all_reduce() -> Figure:
    """One step of data-parallel training on two processes (appendix A)."""
    boxes = [
        Box("batch", 3.1, 2.9, "a batch of 8 sequences", "data", 2.6, 0.4),
        Box("p0", 1.25, 1.95, "process 0: rows 0–3\nforward, backward → g₀", "model", 2.5, 0.6),
        Box("p1", 4.95, 1.95, "process 1: rows 4–7\nforward, backward → g₁", "model", 2.5, 0.6),
        Box("ar", 3.1, 0.95, "all-reduce: both processes\nreceive (g₀ + g₁) / 2", "step", 2.8, 0.6),
        Box("s0", 1.25, 0.0, "process 0: optimizer step\n(its copy of the model)", "result", 2.5, 0.6),
        Box("s1", 4.95, 0.0, "process 1: optimizer step\n(the same weights)", "result", 2.5, 0.6),
    ]
    arrows = [("batch", "p0"), ("batch", "p1"), ("p0", "ar"), ("p1", "ar"), ("ar", "s0"), ("ar", "s1")]
    return draw(boxes, arrows)


def alignment_methods() -> Figure:
    """RLHF with a reward model and PPO, DPO, and GRPO with a checker: what each needs (chapter 8)."""
    boxes = [
        Box("rl_data", 0.85, 3.3, "preference\npairs", "data", 1.5, 0.6),
        Box("rm", 2.55, 3.3, "train a\nreward model", "model", 1.5, 0.6),
        Box("ppo", 4.45, 3.3, "PPO: sample, score,\nvalue model, KL", "step", 1.9, 0.6),
        Box("rl_out", 6.05, 3.3, "aligned\nmodel", "result", 1.0, 0.6),
        Box("dpo_data", 0.85, 1.9, "preference\npairs", "data", 1.5, 0.6),
        Box("dpo", 3.5, 1.9, "DPO: a classification loss on\nlog-probability ratios to a\nfrozen reference",
            "step", 3.2, 0.8),
        Box("dpo_out", 6.05, 1.9, "aligned\nmodel", "result", 1.0, 0.6),
        Box("grpo_data", 0.85, 0.5, "prompts and\na checker", "data", 1.5, 0.6),
        Box("grpo", 3.5, 0.5, "GRPO: sample a group, reward\nby the checker, compare within\nthe group, KL",
            "step", 3.2, 0.8),
        Box("grpo_out", 6.05, 0.5, "aligned\nmodel", "result", 1.0, 0.6),
    ]
    arrows = [("rl_data", "rm"), ("rm", "ppo"), ("ppo", "rl_out"), ("dpo_data", "dpo"), ("dpo", "dpo_out"),
              ("grpo_data", "grpo"), ("grpo", "grpo_out")]
    return draw(boxes, arrows)
