"""Text generation: turn a model's next-token logits into text, one token at a time.

Chapter 4, "From logits to text: greedy generation", writes the simplest loop,
greedy decoding; chapter 5, "Sampling: temperature and top-k", adds temperature
scaling and top-k sampling. This module holds the finished ``generate``, which also

* works on a batch of prompts of equal length,
* stops at an end-of-sequence token,
* feeds only the new token at each step through a KV cache (``use_cache=True``),
  giving the same tokens as re-reading the whole text every step, only faster,
* and can sample reproducibly from its own ``torch.Generator``.

and the helpers the chapter uses: ``text_to_ids``, ``ids_to_text``,
``generate_text``, ``softmax_with_temperature``, ``top_k_filter``, ``top_p_filter``.

Shape letters used in this module:

* ``B``: batch size (prompts generated together)
* ``T``: tokens so far
* ``V``: vocabulary size
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from companion.model import GPTModel, ModelCache, eval_mode
from companion.modern.model import ModernGPT
from companion.tokenizers import encode_text

__all__ = [
    "generate",
    "generate_text",
    "ids_to_text",
    "softmax_with_temperature",
    "stream_text",
    "stream_tokens",
    "text_to_ids",
    "top_k_filter",
    "top_p_filter",
]


# --------------------------------------------------------------------------- #
# Text <-> ids
# --------------------------------------------------------------------------- #
def text_to_ids(text: str, tokenizer: Any) -> Tensor:
    """Encode a text as a batch of one: ``(1, T)`` long (chapter 5,
    "A training loop").

    Special tokens such as ``<|endoftext|>`` become their ids
    (``companion.tokenizers.encode_text``).
    """
    return torch.tensor(encode_text(tokenizer, text), dtype=torch.long).unsqueeze(0)  # (1, T)


def ids_to_text(ids: Tensor | list[int], tokenizer: Any) -> str:
    """Decode one sequence of ids, ``(T,)`` or ``(1, T)``, to text (chapter 5).

    Raises:
        ValueError: ``ids`` is a batch of more than one sequence (decode each row).
    """
    if isinstance(ids, Tensor):
        if ids.dim() == 2:
            if ids.shape[0] != 1:
                raise ValueError(
                    f"ids is a batch of {ids.shape[0]} sequences; decode one row at a time: "
                    "[ids_to_text(row, tokenizer) for row in ids]"
                )
            ids = ids[0]  # (T,)
        ids = ids.tolist()
    return tokenizer.decode(ids)


# --------------------------------------------------------------------------- #
# Decoding strategies
# --------------------------------------------------------------------------- #
def softmax_with_temperature(logits: Tensor, temperature: float) -> Tensor:
    """Probabilities ``softmax(logits / temperature)`` over the last dimension (chapter 5,
    "Sampling: temperature and top-k").

    A temperature below 1 sharpens the distribution towards the most likely token;
    above 1 flattens it towards uniform.

    Raises:
        ValueError: ``temperature`` is not positive (0 means greedy: use ``argmax``).
    """
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0; for greedy decoding take the argmax")
    return torch.softmax(logits / temperature, dim=-1)


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest logits of each row, set the others to ``-inf`` (chapter 5,
    "Sampling: temperature and top-k").

    Logits equal to the ``k``-th largest are all kept, so a tie may keep more than ``k``.

    Args:
        logits: ``(..., V)``.
        k: How many to keep; ``k >= V`` keeps all.

    Returns:
        A new tensor of the same shape.
    """
    if k < 1:
        raise ValueError(f"top_k={k} must be at least 1")
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1), the k-th largest
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability
    adds up to at least ``p``; set the other logits to ``-inf`` (Holtzman et al., 2020).

    The most likely token is always kept.

    Args:
        logits: ``(..., V)``, after any temperature scaling.
        p: In ``(0, 1]``; 1 keeps all.
    """
    if not 0 < p <= 1:
        raise ValueError(f"top_p={p} must be in (0, 1]")
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (..., V)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)  # (..., V)
    # drop a token when the tokens before it already reach p
    drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= p  # (..., V)
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def _next_token(
    logits: Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
) -> Tensor:
    """Pick one token per row from the last position's logits ``(B, V)``; returns ``(B, 1)``."""
    if temperature == 0:
        return torch.argmax(logits, dim=-1, keepdim=True)  # (B, 1), the first maximum on ties
    logits = logits.float()
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    logits = logits / temperature
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)


def _is_whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_sampling(max_new_tokens: Any, temperature: Any, top_k: Any, top_p: Any) -> None:
    """Clear errors for the numbers of ``generate`` (a string, a NaN, a float count)."""
    if not _is_whole(max_new_tokens) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a whole number of tokens >= 0")
    if not _is_number(temperature) or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(
            f"temperature={temperature!r} must be a finite number >= 0 (0 is greedy; 0.7 to 1.0 is usual for sampling)"
        )
    if top_k is not None and (not _is_whole(top_k) or top_k < 1):
        raise ValueError(f"top_k={top_k!r} must be a whole number >= 1, or None to keep every token")
    if top_p is not None and (not _is_number(top_p) or not 0 < top_p <= 1):
        raise ValueError(f"top_p={top_p!r} must be a number in (0, 1], or None")


# --------------------------------------------------------------------------- #
# The loop
# --------------------------------------------------------------------------- #
def _context_logits(model: GPTModel | ModernGPT, idx: Tensor, cache: ModelCache | None) -> Tensor:
    """Logits ``(B, V)`` for the token after ``idx``, reading only what the cache lacks.

    Without a cache the last ``context_length`` tokens are re-read. With one, only the
    tokens after the ``len(cache)`` cached ones are fed; when the text no longer fits
    (the positions would pass ``context_length``), the cache is emptied and the last
    ``context_length`` tokens are encoded afresh, exactly what the uncached path reads.
    Either way only the last position's logits are computed (``last_only``).
    """
    ctx = model.config.context_length
    if cache is None:
        return model(idx[:, -ctx:], last_only=True)[:, -1, :]  # (B, V)
    T = idx.shape[1]
    past = len(cache)
    if ctx < T:  # past the last position: re-encode the window, as the uncached path does
        cache.reset()
        return model(idx[:, -ctx:], cache=cache, last_only=True)[:, -1, :]
    return model(idx[:, past:], cache=cache, last_only=True)[:, -1, :]  # (B, V)


def generate(
    model: GPTModel | ModernGPT,
    idx: Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Continue a batch of token sequences (chapter 4,
    "From logits to text: greedy generation"; chapter 5,
    "Sampling: temperature and top-k").

    At each step the model reads the text so far (at most its last ``context_length``
    tokens) and one next token is chosen per sequence: the most likely one when
    ``temperature`` is 0 (greedy), otherwise a sample from
    ``softmax(filtered logits / temperature)`` after the top-k and top-p filters.

    With ``use_cache`` (the default) each step feeds only the new token and reuses the
    keys and values of the earlier ones (``GPTModel.new_cache``). When the text grows
    past ``context_length``, the cache cannot simply be extended (there are no
    positions beyond it), so from then on every step empties the cache and re-encodes
    the last ``context_length`` tokens: exactly what the uncached path does, and as
    slow. Cached and uncached generation choose the same tokens (up to floating-point
    ties: the two paths round differently in the last bits).

    Runs in eval mode (no dropout) under ``torch.inference_mode`` (no gradients, no
    autograd bookkeeping), and restores the model's mode. The output is written into one
    tensor allocated up front rather than grown by a concatenation per token.

    Args:
        model: A ``GPTModel`` or a ``ModernGPT`` (chapter 9).
        idx: ``(B, T)`` long token ids, on the model's device; every row has ``T`` tokens.
        max_new_tokens: Most tokens to add.
        temperature: 0 for greedy decoding; above 0 to sample.
        top_k: Sample only among the ``top_k`` most likely tokens.
        top_p: Sample only among the most likely tokens whose probabilities add up to
            ``top_p`` (nucleus sampling).
        eos_id: An end-of-sequence id (e.g. ``<|endoftext|>``). A sequence that has
            produced it is finished: every later position of that row is ``eos_id``
            too, so the batch stays rectangular. Generation stops early once every
            sequence is finished.
        use_cache: Feed only new tokens through a KV cache.
        generator: Source of randomness for sampling (seed it for reproducible text);
            ``None`` uses torch's global generator.

    Returns:
        ``(B, T + n)`` with ``n <= max_new_tokens`` (smaller only when every sequence
        reached ``eos_id``): the prompts followed by the generated tokens.

    Raises:
        ValueError: ``idx`` is not a non-empty ``(B, T)`` batch, or an argument is out of range.
    """
    if not isinstance(idx, Tensor):
        raise TypeError(
            f"idx must be a (B, T) tensor of token ids, got a {type(idx).__name__}; convert it with "
            "torch.tensor([ids]) (one sequence: a batch of one)"
        )
    if idx.dim() != 2 or idx.shape[1] == 0:
        raise ValueError(
            f"idx must be a (B, T) batch of token ids with T >= 1, got shape {tuple(idx.shape)}; "
            "for one sequence use idx.unsqueeze(0)"
        )
    _check_sampling(max_new_tokens, temperature, top_k, top_p)

    B, T = idx.shape
    length = T  # tokens of `out` filled so far
    with eval_mode(model), torch.inference_mode():
        out = idx.new_empty(B, T + max_new_tokens)  # (B, T + max_new_tokens)
        out[:, :T] = idx
        cache = model.new_cache() if use_cache else None
        finished = torch.zeros(B, 1, dtype=torch.bool, device=idx.device)  # (B, 1)
        for _ in range(max_new_tokens):
            logits = _context_logits(model, out[:, :length], cache)  # (B, V)
            next_ids = _next_token(logits, temperature, top_k, top_p, generator)  # (B, 1)
            if eos_id is not None:
                next_ids = next_ids.masked_fill(finished, eos_id)  # finished rows repeat eos
                finished |= next_ids == eos_id
            out[:, length : length + 1] = next_ids
            length += 1
            if eos_id is not None and bool(finished.all()):
                break
    # a copy made outside inference mode is an ordinary tensor, usable anywhere (even in
    # a later training step)
    return out[:, :length].clone()


def generate_text(
    model: GPTModel | ModernGPT,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int = 50,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    include_prompt: bool = True,
) -> str:
    """Continue a text prompt and return text (chapter 5, "A training loop").

    Args:
        model: A ``GPTModel``.
        tokenizer: Has ``encode`` and ``decode``.
        prompt: The text to continue (at least one token).
        max_new_tokens: Most tokens to add.
        temperature, top_k, top_p, eos_id, use_cache: As in ``generate``.
        seed: Seeds a private ``torch.Generator`` for sampling, so the same seed gives
            the same text; ``None`` uses torch's global generator.
        include_prompt: Return the prompt followed by the continuation (default), or
            only the continuation.

    Returns:
        The decoded text. With ``eos_id``, the text stops before the first ``eos_id``.
    """
    device = next(model.parameters()).device
    idx = text_to_ids(prompt, tokenizer).to(device)  # (1, T)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    out = generate(model, idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                   eos_id=eos_id, use_cache=use_cache, generator=generator)[0]  # (T + n,)
    new = out[idx.shape[1]:].tolist()
    if eos_id is not None and eos_id in new:
        new = new[: new.index(eos_id)]
    ids = idx[0].tolist() + new if include_prompt else new
    return tokenizer.decode(ids)


# --------------------------------------------------------------------------- #
# Streaming: one token at a time, for a chat
# --------------------------------------------------------------------------- #
def stream_tokens(
    model: GPTModel | ModernGPT,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[int]:
    """Yield the continuation of one prompt token by token, as it is chosen (chapter 7,
    "Talking to the model").

    The same choices as ``generate`` with a KV cache on a batch of one, but each token is
    handed out as soon as it exists, so a chat can show the answer while it is written.
    Each step runs in eval mode under ``torch.inference_mode``; between steps the caller's
    code runs normally. Stopping early (``break``, or an exception such as Ctrl-C in the
    caller) leaves the model as it was.

    Args:
        model: A ``GPTModel``.
        prompt_ids: The prompt's token ids (at least one).
        max_new_tokens, temperature, top_k, top_p, generator: As in ``generate``.
        eos_id: Stop when the model chooses this token (it is not yielded).

    Yields:
        Token ids, at most ``max_new_tokens`` of them.
    """
    _check_sampling(max_new_tokens, temperature, top_k, top_p)
    if len(prompt_ids) == 0:
        raise ValueError("prompt_ids is empty: the model needs at least one token to continue")
    device = next(model.parameters()).device
    with eval_mode(model), torch.inference_mode():
        out = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)  # (1, T)
        cache = model.new_cache()
    for _ in range(max_new_tokens):
        with eval_mode(model), torch.inference_mode():
            logits = _context_logits(model, out, cache)  # (1, V)
            next_id = _next_token(logits, temperature, top_k, top_p, generator)  # (1, 1)
            out = torch.cat([out, next_id], dim=1)  # (1, T + 1)
        token = int(next_id)
        if token == eos_id:
            return
        yield token


def stream_text(
    model: GPTModel | ModernGPT,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int = 50,
    **sampling: Any,
) -> Iterator[str]:
    """Yield the continuation of a text prompt in pieces, as the tokens are chosen.

    Joined, the pieces are the decoded continuation (what ``generate_text`` returns with
    ``include_prompt=False``). A byte-level tokenizer can split one character over two
    tokens; a piece is handed out only once its characters are whole.

    Args:
        model, tokenizer, prompt, max_new_tokens: As in ``generate_text``.
        **sampling: ``temperature``, ``top_k``, ``top_p``, ``eos_id``, ``generator`` of
            ``stream_tokens``.
    """
    ids: list[int] = []
    shown = 0
    for token in stream_tokens(model, encode_text(tokenizer, prompt), max_new_tokens, **sampling):
        ids.append(token)
        text = tokenizer.decode(ids)
        if text.endswith("\ufffd"):  # a character whose last byte is still to come
            continue
        yield text[shown:]
        shown = len(text)
    text = tokenizer.decode(ids)
    if len(text) > shown:
        yield text[shown:]
