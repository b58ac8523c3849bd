"""Talking to a model: one message at a time, the answer streamed as it is written.

Chapter 7, "Talking to the model", uses this; ``python -m companion chat`` runs the same
loop in a terminal. A ``Chat`` holds a model, its tokenizer, the prompt template it was
fine-tuned with (``None`` for a pretrained model, which simply continues the text) and
the sampling settings, which commands typed into the chat change:

* ``/temperature X``: 0 answers greedily (the most likely token each time); above 0
  samples.
* ``/top_k N``: sample among the ``N`` most likely tokens; ``/top_k off`` for all.
* ``/max_tokens N``: the longest answer, in tokens.
* ``/reset``: back to the settings the chat started with.
* ``/help`` and ``/quit``.

An instruction can come with an input, as in the fine-tuning data: in a typed line they
are separated by `` | `` ("Which number is larger? | 37 52").

The course's models answer one message at a time: their template holds one instruction
and a context of 128 tokens has no room for a conversation, so every message starts
afresh.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from companion.finetune.instruction import PROMPT_STYLES, eos_id_of, format_prompt
from companion.generate import stream_text
from companion.model import GPTModel
from companion.modern.model import ModernGPT
from companion.tokenizers import encode_text

__all__ = ["Chat", "ChatSettings", "run_chat"]


@dataclass(frozen=True)
class ChatSettings:
    """How a chat samples its answers.

    Attributes:
        temperature: 0 for greedy answers; above 0 to sample.
        top_k: Sample only among this many most likely tokens (``None``: all).
        max_tokens: The longest answer, in tokens.
        seed: Seeds the sampling (the same seed and settings give the same answers).
    """

    temperature: float = 0.0
    top_k: int | None = None
    max_tokens: int = 64
    seed: int = 123

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t < float("inf"):
            raise ValueError(f"temperature={t!r} must be a finite number >= 0 (0 answers greedily)")
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, int)
                                       or self.top_k < 1):
            raise ValueError(f"top_k={self.top_k!r} must be a positive whole number or None")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens={self.max_tokens!r} must be a positive whole number")


class Chat:
    """A model to talk to (chapter 7, "Talking to the model").

    Args:
        model: A ``GPTModel`` (or a ``ModernGPT``, chapter 9).
        tokenizer: Its tokenizer (it must have ``<|endoftext|>``, where answers end).
        style: The prompt template the model was fine-tuned with (``"compact"`` or
            ``"alpaca"``), or ``None`` to continue each message as plain text, or a
            function ``(message, input) -> prompt`` (a chat template, chapter 9).
        settings: The sampling settings to start with.
    """

    def __init__(
        self, model: GPTModel | ModernGPT, tokenizer: Any, *, style: str | Callable[[str, str], str] | None = "compact",
        settings: ChatSettings | None = None
    ) -> None:
        if isinstance(style, str) and style not in PROMPT_STYLES:
            raise ValueError(f"style={style!r} is unknown; choose one of {PROMPT_STYLES} or None")
        self.model = model
        self.tokenizer = tokenizer
        self.style = style
        self.initial = settings or ChatSettings()
        self.settings = self.initial
        self.eos_id = eos_id_of(tokenizer)
        self._generator = torch.Generator().manual_seed(self.settings.seed)

    def prompt_for(self, message: str, input: str = "") -> str:
        """The text the model continues: the message (and its input) in the template, or
        without a template the message and input as they are."""
        if self.style is None:
            return f"{message}\n{input}" if input else message
        if callable(self.style):  # a chat template, e.g. companion.modern.qwen3.chat_prompt
            return self.style(message, input)
        return format_prompt({"instruction": message, "input": input}, self.style)  # type: ignore[arg-type]

    def reply(self, message: str, input: str = "") -> Iterator[str]:
        """The answer to a message, in pieces as it is generated (join them for the whole).

        The answer ends at the end-of-text token or after ``settings.max_tokens``. The
        prompt must leave room in the model's context; a longer one is refused.

        Raises:
            ValueError: An empty message, or one too long for the context.
        """
        if not message.strip():
            raise ValueError("the message is empty")
        prompt = self.prompt_for(message, input)
        n = len(encode_text(self.tokenizer, prompt))
        room = self.model.config.context_length - n
        if room < 1:
            raise ValueError(
                f"the message takes {n} tokens with its template, and the model reads at most "
                f"{self.model.config.context_length}: write a shorter one"
            )
        s = self.settings
        yield from stream_text(self.model, self.tokenizer, prompt, min(s.max_tokens, room),
                               temperature=s.temperature, top_k=s.top_k, eos_id=self.eos_id,
                               generator=self._generator)

    def answer(self, message: str, input: str = "") -> str:
        """The whole answer to a message, without surrounding whitespace."""
        return "".join(self.reply(message, input)).strip()

    def command(self, line: str) -> str:
        """Carry out a chat command (a line starting with ``/``); returns what to show.

        Raises:
            ValueError: An unknown command or a bad value (the message says which).
        """
        name, _, value = line.strip().partition(" ")
        value = value.strip()
        if name == "/help":
            return HELP
        if name == "/reset":
            self.settings = self.initial
            self._generator.manual_seed(self.settings.seed)
            return f"settings reset: {self.describe()}"
        changes: dict[str, Any]
        if name == "/temperature":
            changes = {"temperature": _number(value, name, float)}
        elif name == "/top_k":
            changes = {"top_k": None if value in ("off", "none", "0") else _number(value, name, int)}
        elif name == "/max_tokens":
            changes = {"max_tokens": _number(value, name, int)}
        else:
            raise ValueError(f"unknown command {name!r}; /help lists the commands")
        self.settings = dataclasses.replace(self.settings, **changes)
        return self.describe()

    def describe(self) -> str:
        """The settings in one line."""
        s = self.settings
        top_k = "off" if s.top_k is None else s.top_k
        mode = "greedy" if s.temperature == 0 else "sampling"
        return f"temperature {s.temperature:g} ({mode}), top_k {top_k}, max_tokens {s.max_tokens}"


HELP = """\
Type a message and press Enter; the answer appears as it is written.
Give the instruction an input after " | ", for example: Which number is larger? | 37 52
Commands:
  /temperature X   0 answers greedily; 0.5 to 1 samples more varied answers
  /top_k N         sample among the N most likely tokens (/top_k off for all)
  /max_tokens N    the longest answer, in tokens
  /reset           the settings the chat started with
  /help            this text
  /quit            leave (or press Ctrl-D)
Ctrl-C stops an answer while it is being written.
Each message is answered on its own: the model does not see earlier messages."""


def _number(text: str, command: str, kind: type) -> Any:
    try:
        return kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"{command} needs {what}, got {text!r}") from None


def run_chat(
    chat: Chat,
    *,
    read: Callable[[str], str] = input,
    write: Callable[[str], Any] | None = None,
    greeting: str | None = None,
) -> int:
    """The interactive loop of ``python -m companion chat``.

    Reads a line with ``read`` (Python's ``input`` by default), answers it or carries out
    its command, and writes the answer piece by piece as it is generated. Ctrl-C while an
    answer is written stops that answer; Ctrl-C at the prompt clears the line; Ctrl-D
    (end of input) or ``/quit`` leaves. Returns the exit status, 0.
    """
    def out(text: str) -> None:
        if write is None:
            print(text, end="", flush=True)
        else:
            write(text)

    if greeting:
        out(greeting + "\n")
    while True:
        try:
            line = read("you> ")
        except EOFError:
            out("\n")
            return 0
        except KeyboardInterrupt:
            out("\n")
            continue
        if not line.strip():
            continue
        if line.strip() in ("/quit", "/exit"):
            return 0
        if line.strip().startswith("/"):
            try:
                out(chat.command(line) + "\n")
            except ValueError as err:
                out(f"error: {err}\n")
            continue
        message, _, text = line.partition(" | ")
        try:
            out("model> ")
            started = False
            for piece in chat.reply(message.strip(), text.strip()):
                if not started:  # the template's newline: the answer starts after it
                    piece = piece.lstrip()
                    started = bool(piece)
                out(piece)
            out("\n")
        except KeyboardInterrupt:
            out(" [stopped]\n")
        except ValueError as err:
            out(f"\nerror: {err}\n")
