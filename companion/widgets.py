"""Interactive explorers for the chapters, built on ipywidgets.

ipywidgets is imported inside each function, so ``import companion`` works without it.
Each explorer computes its first view in Python when it is created, so a notebook saved
with its widget state shows that view in the HTML book too, where no Python runs.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from companion.tokenizers import encode_text

# Background colours that cycle from token to token so that their boundaries show.
_TOKEN_COLOURS = ("#fde68a", "#bfdbfe", "#bbf7d0", "#fbcfe8", "#ddd6fe", "#fed7aa")


def _token_text(tokenizer: Any, token_id: int) -> str:
    return tokenizer.decode([token_id])


def render_tokens(tokenizer: Any, text: str) -> str:
    """HTML showing ``text`` cut into the tokenizer's tokens, each with its id on hover.

    Whitespace inside a token is made visible (``·`` for a space, ``↵`` for a newline) so
    that a reader can see where GPT-2 keeps the space that precedes a word.
    """
    try:
        ids = encode_text(tokenizer, text)
    except (KeyError, ValueError) as exc:  # e.g. a word the simple tokenizer cannot encode
        return f"<p style='color:#b91c1c'><b>{type(exc).__name__}</b>: {html.escape(str(exc))}</p>"
    spans = []
    for i, token_id in enumerate(ids):
        piece = _token_text(tokenizer, token_id).replace(" ", "·").replace("\n", "↵")
        colour = _TOKEN_COLOURS[i % len(_TOKEN_COLOURS)]
        spans.append(
            f"<span title='id {token_id}' style='display:inline-block;background:{colour};color:#111827;"
            f"padding:1px 2px;margin:1px;border-radius:3px;font-family:monospace;white-space:pre'>"
            f"{html.escape(piece)}</span>"
        )
    chars = len(text)
    summary = f"{len(ids)} tokens for {chars} characters" + (
        f" ({chars / len(ids):.2f} characters per token)" if ids else ""
    )
    id_list = ", ".join(str(t) for t in ids)
    return (
        f"<div style='line-height:2em'>{''.join(spans)}</div>"
        f"<p style='margin:4px 0'><i>{summary}</i></p>"
        f"<p style='font-family:monospace;font-size:90%;margin:0;overflow-wrap:anywhere'>ids: [{html.escape(id_list)}]</p>"
    )


def tokenizer_explorer(tokenizers: Mapping[str, Any], text: str = "Hello, world!") -> Any:
    """A text box and a tokenizer menu; shows the tokens and ids as you type (chapter 2).

    Args:
        tokenizers: Display name -> any object with ``encode`` and ``decode`` (the simple
            tokenizers, :class:`~companion.tokenizers.BPETokenizer`, a tiktoken encoding).
        text: The text shown first.

    Returns:
        An ``ipywidgets.VBox``; display it as the last expression of a cell.
    """
    import ipywidgets as widgets

    if not tokenizers:
        raise ValueError("tokenizer_explorer needs at least one tokenizer, e.g. {'GPT-2': gpt2_tokenizer()}")
    names = list(tokenizers)
    box = widgets.Textarea(value=text, description="Text", layout=widgets.Layout(width="95%", height="80px"))
    choice = widgets.Dropdown(options=names, value=names[0], description="Tokenizer")
    out = widgets.HTML()

    def update(_: object = None) -> None:
        out.value = render_tokens(tokenizers[choice.value], box.value)

    box.observe(update, names="value")
    choice.observe(update, names="value")
    update()
    return widgets.VBox([choice, box, out])



def _figure_png(fig: Any) -> bytes:
    """Render a matplotlib Figure to PNG bytes and close it (no file, no display).

    At 100 dpi on white, as a notebook shows a figure: a figure made to fit the book's
    text column (``companion.plots.BOOK_WIDTH_INCHES``) is then shown at its natural size.
    """
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return buffer.getvalue()


def attention_explorer(model: Any, tokenizer: Any, sentences: Sequence[str]) -> Any:
    """Pick a sentence, a layer and a head; see that head's attention heatmap (chapter 3).

    Args:
        model: A :class:`~companion.model.GPTModel`.
        tokenizer: Its tokenizer (``encode``/``decode``).
        sentences: Texts to choose from; each must fit the model's context length.

    Returns:
        An ``ipywidgets.VBox`` with a sentence menu, layer and head sliders, and the heatmap.
    """
    import ipywidgets as widgets
    import torch

    from companion.model import attention_maps
    from companion.plots import attention_heatmap

    if not sentences:
        raise ValueError("attention_explorer needs at least one sentence to show")
    n_layers = len(model.trf_blocks)
    n_heads = model.trf_blocks[0].att.num_heads
    cache: dict[str, tuple[list[str], Any]] = {}

    def maps_for(text: str) -> tuple[list[str], Any]:
        if text not in cache:
            ids = encode_text(tokenizer, text)
            labels = [_token_text(tokenizer, i) for i in ids]
            cache[text] = (labels, attention_maps(model, torch.tensor([ids]))[:, 0])  # (L, H, T, T)
        return cache[text]

    sentence = widgets.Dropdown(options=list(sentences), value=sentences[0], description="Sentence",
                                layout=widgets.Layout(width="95%"))
    layer = widgets.IntSlider(value=0, min=0, max=n_layers - 1, description="Layer")
    head = widgets.IntSlider(value=0, min=0, max=n_heads - 1, description="Head")
    image = widgets.Image(format="png")

    def update(_: object = None) -> None:
        labels, maps = maps_for(sentence.value)
        fig = attention_heatmap(maps[layer.value, head.value], labels,
                                title=f"layer {layer.value}, head {head.value}")
        image.value = _figure_png(fig)

    for control in (sentence, layer, head):
        control.observe(update, names="value")
    update()
    return widgets.VBox([sentence, widgets.HBox([layer, head]), image])


def sampling_explorer(
    model: Any,
    tokenizer: Any,
    *,
    prompt: str = "ROMEO:\n",
    max_new_tokens: int = 60,
    seed: int = 123,
) -> Any:
    """Temperature and top-k sliders over text sampled from ``model`` (chapter 5,
    "Sampling: temperature and top-k").

    Each change re-samples ``max_new_tokens`` tokens after ``prompt`` with a generator
    seeded by the seed slider, so a setting always shows the same text. Temperature 0 is
    greedy decoding; top-k 0 keeps every token.

    Returns:
        An ``ipywidgets.VBox`` with the prompt box, the sliders and the generated text.
    """
    import ipywidgets as widgets

    from companion.generate import generate_text

    prompt_box = widgets.Textarea(value=prompt, description="Prompt", layout=widgets.Layout(width="95%"))
    wide_label = {"description_width": "initial"}  # show "Temperature" in full
    temperature = widgets.FloatSlider(value=0.8, min=0.0, max=2.0, step=0.1, description="Temperature",
                                      style=wide_label)
    top_k = widgets.IntSlider(value=20, min=0, max=200, step=5, description="Top-k", style=wide_label)
    seed_box = widgets.IntSlider(value=seed, min=0, max=999, description="Seed", style=wide_label)
    out = widgets.HTML()

    def update(_: object = None) -> None:
        text = generate_text(
            model,
            tokenizer,
            prompt_box.value,
            max_new_tokens=max_new_tokens,
            temperature=temperature.value,
            top_k=top_k.value or None,
            seed=seed_box.value,
        )
        out.value = f"<pre style='white-space:pre-wrap;margin:4px 0'>{html.escape(text)}</pre>"

    for control in (prompt_box, temperature, top_k, seed_box):
        control.observe(update, names="value")
    update()
    return widgets.VBox([prompt_box, widgets.HBox([temperature, top_k, seed_box]), out])


def chat_widget(chat: Any, messages: Sequence[str] = ()) -> Any:
    """A message box and the conversation so far: talk to a fine-tuned model (chapter 7).

    Type an instruction (an input after `` | ``, as in ``companion chat``) and press Enter
    or *Send*; the answer appears token by token. The messages given are answered when
    the widget is created, so a saved notebook shows them in the HTML book too.

    Args:
        chat: A ``companion.chat.Chat``.
        messages: Messages to answer first.
    """
    import ipywidgets as widgets

    # continuous_update=False: the value changes when Enter is pressed (or the box loses focus)
    box = widgets.Text(placeholder="Reverse the order of the words: king horse crown",
                       continuous_update=False, layout=widgets.Layout(width="70%"))
    send = widgets.Button(description="Send", button_style="primary")
    log = widgets.HTML()
    lines: list[str] = []

    def show(partial: str = "") -> None:
        log.value = "<div style='font-family:monospace;white-space:pre-wrap'>" + "".join(lines) + partial + "</div>"

    def ask(message: str) -> None:
        instruction, _, text = message.partition(" | ")
        lines.append(f"<b>you&gt;</b> {html.escape(message)}\n")
        answer = ""
        try:
            for piece in chat.reply(instruction.strip(), text.strip()):
                answer += piece
                show(f"<b>model&gt;</b> {html.escape(answer.lstrip())}")
            lines.append(f"<b>model&gt;</b> {html.escape(answer.strip())}\n")
        except ValueError as err:
            lines.append(f"<span style='color:#b91c1c'>error: {html.escape(str(err))}</span>\n")
        show()

    def on_send(_: Any) -> None:
        if box.value.strip():
            message, box.value = box.value, ""
            ask(message)

    send.on_click(on_send)
    box.observe(on_send, "value")
    for message in messages:
        ask(message)
    show()
    return widgets.VBox([widgets.HBox([box, send]), log])
