"""Streaming generation and the chat: the functions, the loop, and the command in a real terminal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from companion.chat import Chat, ChatSettings, run_chat
from companion.checkpoint import save_checkpoint
from companion.config import GPTConfig
from companion.generate import generate, generate_text, stream_text, stream_tokens
from companion.model import GPTModel
from companion.tokenizers import BPETokenizer

TEXT = ("Which number is larger? The larger number is here. Count the words, café, naïve, "
        "déjà vu, über. ") * 20
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer() -> BPETokenizer:
    return BPETokenizer.train(TEXT, 300)


def tiny_model(tokenizer: BPETokenizer, *, context: int = 64, width: int = 32, seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=tokenizer.n_vocab, context_length=context, emb_dim=width, n_heads=4, n_layers=2)
    return GPTModel(config).eval()


# ------------------------------------------------------------------ streaming
def test_streamed_tokens_are_generate_s_tokens(tokenizer: BPETokenizer) -> None:
    model = tiny_model(tokenizer)
    prompt = tokenizer.encode("Which number")
    idx = torch.tensor([prompt])
    greedy = generate(model, idx, 40)[0, len(prompt):].tolist()
    assert list(stream_tokens(model, prompt, 40)) == greedy
    sampled = generate(model, idx, 40, temperature=0.9, top_k=20,
                       generator=torch.Generator().manual_seed(5))[0, len(prompt):].tolist()
    streamed = stream_tokens(model, prompt, 40, temperature=0.9, top_k=20, generator=torch.Generator().manual_seed(5))
    assert list(streamed) == sampled


def test_streaming_stops_before_the_end_token_and_past_the_context(tokenizer: BPETokenizer) -> None:
    model = tiny_model(tokenizer, context=16)
    prompt = tokenizer.encode("Count the words")
    full = generate(model, torch.tensor([prompt]), 30)[0, len(prompt):].tolist()  # slides past the context
    assert list(stream_tokens(model, prompt, 30)) == full
    eos = full[5]  # pretend the sixth token ends the text
    assert list(stream_tokens(model, prompt, 30, eos_id=eos)) == full[: full.index(eos)]


def test_streamed_text_joins_to_the_decoded_continuation(tokenizer: BPETokenizer) -> None:
    for seed in range(5):
        model = tiny_model(tokenizer, seed=seed)
        pieces = list(stream_text(model, tokenizer, "café", 30, temperature=1.0,
                                  generator=torch.Generator().manual_seed(seed)))
        whole = generate_text(model, tokenizer, "café", 30, temperature=1.0, seed=seed, include_prompt=False)
        assert "".join(pieces) == whole
        assert not any(piece.endswith("\ufffd") for piece in pieces[:-1])  # no half characters shown


def test_streaming_refuses_bad_arguments(tokenizer: BPETokenizer) -> None:
    model = tiny_model(tokenizer)
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        list(stream_tokens(model, [], 5))
    with pytest.raises(ValueError, match="temperature"):
        list(stream_tokens(model, [1], 5, temperature=-1))


def test_stopping_a_stream_leaves_the_model_as_it_was(tokenizer: BPETokenizer) -> None:
    model = tiny_model(tokenizer).train()
    stream = stream_tokens(model, [1, 2], 50)
    next(stream)
    assert model.training  # between steps the model is the caller's
    stream.close()
    assert model.training and torch.is_grad_enabled()


# ------------------------------------------------------------------ the chat
def test_chat_commands_change_and_reset_the_settings(tokenizer: BPETokenizer) -> None:
    chat = Chat(tiny_model(tokenizer), tokenizer)
    assert chat.command("/temperature 0.7") == "temperature 0.7 (sampling), top_k off, max_tokens 64"
    assert chat.command("/top_k 5").endswith("top_k 5, max_tokens 64")
    assert chat.command("/max_tokens 9").endswith("max_tokens 9")
    assert chat.command("/top_k off").startswith("temperature 0.7 (sampling), top_k off")
    assert chat.command("/reset") == "settings reset: temperature 0 (greedy), top_k off, max_tokens 64"
    assert "/temperature" in chat.command("/help")
    for line, match in [("/temperature hot", "needs a number"), ("/temperature -1", "temperature=-1.0"),
                        ("/temperature nan", "temperature=nan"), ("/top_k 2.5", "needs a whole number"),
                        ("/max_tokens 0", "max_tokens=0"), ("/jump", "unknown command '/jump'")]:
        with pytest.raises(ValueError, match=match):
            chat.command(line)


def test_chat_uses_the_template_and_refuses_what_does_not_fit(tokenizer: BPETokenizer) -> None:
    model = tiny_model(tokenizer, context=64)
    chat = Chat(model, tokenizer, style="compact")
    assert chat.prompt_for("Which number is larger?", "37 52") == (
        "### Instruction:\nWhich number is larger?\n\n### Input:\n37 52\n\n### Response:\n")
    assert Chat(model, tokenizer, style=None).prompt_for("ROMEO:") == "ROMEO:"
    prompt = chat.prompt_for("Count the words")
    room = 64 - len(tokenizer.encode(prompt))  # the answer may fill the rest of the context
    assert room > 0
    greedy = generate_text(model, tokenizer, prompt, room, eos_id=tokenizer.eot_token, include_prompt=False)
    assert chat.answer("Count the words") == greedy.strip()
    with pytest.raises(ValueError, match="write a shorter one"):
        chat.answer("Which number is larger? " * 20)
    with pytest.raises(ValueError, match="the message is empty"):
        chat.answer("   ")
    with pytest.raises(ValueError, match="style='chatml' is unknown"):
        Chat(model, tokenizer, style="chatml")


def test_the_loop_answers_runs_commands_and_survives_ctrl_c(tokenizer: BPETokenizer) -> None:
    chat = Chat(tiny_model(tokenizer), tokenizer, settings=ChatSettings(max_tokens=5))
    lines = iter(["Count the words | a b", "/temperature x", "   ", "stop me", KeyboardInterrupt, "/quit", "never"])
    written: list[str] = []

    def read(prompt: str) -> str:
        line = next(lines)
        if line is KeyboardInterrupt:
            raise KeyboardInterrupt
        return line

    real_reply = chat.reply

    def reply(message: str, input: str = ""):
        if message == "stop me":
            yield "half an ans"
            raise KeyboardInterrupt  # Ctrl-C while the answer is written
        yield from real_reply(message, input)

    chat.reply = reply  # type: ignore[method-assign]
    assert run_chat(chat, read=read, write=written.append) == 0
    out = "".join(written)
    expected = "".join(real_reply("Count the words", "a b")).lstrip()
    assert f"model> {expected}\n" in out
    assert "error: /temperature needs a number, got 'x'" in out
    assert "model> half an ans [stopped]\n" in out
    assert next(lines) == "never"  # /quit left the loop


def test_end_of_input_leaves_the_loop(tokenizer: BPETokenizer) -> None:
    def read(prompt: str) -> str:
        raise EOFError

    assert run_chat(Chat(tiny_model(tokenizer), tokenizer), read=read, write=lambda s: None) == 0


# ------------------------------------------------------------------ the command, in a terminal
def slow_checkpoint(tokenizer: BPETokenizer, folder: Path, *, style: str | None = "compact") -> GPTModel:
    """A model whose greedy answers never end (no <|endoftext|>) and take seconds to write."""
    for seed in range(20):
        torch.manual_seed(seed)
        config = GPTConfig(vocab_size=tokenizer.n_vocab, context_length=1024, emb_dim=384, n_heads=4, n_layers=6)
        model = GPTModel(config).eval()
        prompt = tokenizer.encode("### Instruction:\nhello\n\n### Response:\n")
        new = generate(model, torch.tensor([prompt]), 300)[0, len(prompt):].tolist()
        if tokenizer.eot_token not in new:
            extra = {"finetune": {"prompt_style": style}} if style else {}
            save_checkpoint(folder, model, tokenizer=tokenizer, extra=extra)
            return model
    raise AssertionError("no seed gave a model that never ends its answers")


def companion_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_chat_command_in_a_terminal(tokenizer: BPETokenizer, tmp_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    slow_checkpoint(tokenizer, tmp_path / "ckpt")
    # a shell that starts a job in the background makes it ignore SIGINT, and a Python started
    # with SIGINT ignored has no KeyboardInterrupt: give the chat the terminal's usual Ctrl-C
    child = pexpect.spawn(sys.executable, ["-m", "companion", "chat", "--model", str(tmp_path / "ckpt"),
                                           "--max-tokens", "1000"],
                          env=companion_env(), encoding="utf-8", timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        child.expect("the compact template; temperature 0 \\(greedy\\), top_k off, max_tokens 1000")
        child.expect("you> ")
        child.sendline("/temperature 0.5")
        child.expect("temperature 0.5 \\(sampling\\)")
        child.expect("you> ")
        child.sendline("/reset")
        child.expect("settings reset")
        child.expect("you> ")
        child.sendline("hello")
        child.expect("model> ")  # the answer (about 1,000 tokens, seconds) is being written
        child.sendintr()  # Ctrl-C in the middle of the answer
        child.expect(" \\[stopped\\]")
        child.expect("you> ")  # still running
        child.sendintr()  # Ctrl-C at the prompt clears the line
        child.expect("you> ")
        child.sendeof()  # Ctrl-D
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before


def test_chat_prompt_answers_once(tokenizer: BPETokenizer, tmp_path: Path) -> None:
    model = tiny_model(tokenizer)
    save_checkpoint(tmp_path / "ckpt", model, tokenizer=tokenizer, extra={"finetune": {"prompt_style": "compact"}})
    run = subprocess.run([sys.executable, "-m", "companion", "chat", "--model", str(tmp_path / "ckpt"),
                          "--prompt", "Count the words", "--input", "a b", "--max-tokens", "8"],
                         capture_output=True, text=True, env=companion_env(), timeout=120)
    assert run.returncode == 0, run.stderr
    expected = Chat(model, tokenizer, settings=ChatSettings(max_tokens=8)).answer("Count the words", "a b")
    assert run.stdout == expected + "\n"
    bad = subprocess.run([sys.executable, "-m", "companion", "chat", "--model", str(tmp_path / "none")],
                         capture_output=True, text=True, env=companion_env(), timeout=120)
    assert bad.returncode == 2
    assert "neither a course model" in bad.stderr and "nor an existing checkpoint folder" in bad.stderr
