"""Tests for companion.modern: the config, the layers, ModernGPT, and Qwen3 against transformers."""

from __future__ import annotations

import json
import os
from pathlib import Path

# Hugging Face tokenizers' thread pool can slow torch down badly: turn it off before import.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from companion.chat import Chat, ChatSettings
from companion.cli import main
from companion.config import GPTConfig
from companion.generate import generate
from companion.model import GPTModel
from companion.modern.config import PRESETS, ModernConfig
from companion.modern.layers import RMSNorm, apply_rope, rope_angles
from companion.modern.model import ModernGPT
from companion.modern.qwen3 import (
    Qwen3Tokenizer,
    chat_prompt,
    config_from_hf,
    download,
    is_qwen3_folder,
    load_qwen3_folder,
)
from companion.train import train

TINY = {"vocab_size": 40, "context_length": 32, "emb_dim": 32, "n_heads": 4, "n_layers": 2}
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# the pre-tokenizer pattern of Qwen2/Qwen3's tokenizer.json (as GPT-4's, digits one at a time)
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


# ------------------------------------------------------------------ the config
def test_config_rejects_bad_values_naming_them_and_the_fix() -> None:
    with pytest.raises(ValueError, match=r"n_kv_heads=3 does not divide n_heads=4.*choose a divisor"):
        ModernConfig(**TINY, n_kv_heads=3)
    with pytest.raises(ValueError, match="head_dim=7 is odd"):
        ModernConfig(**TINY, head_dim=7)
    with pytest.raises(ValueError, match=r"norm='batchnorm' is unknown; choose one of \('layernorm', 'rmsnorm'\)"):
        ModernConfig(**TINY, norm="batchnorm")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"n_kv_heads=2.0 must be an int"):
        ModernConfig(**TINY, n_kv_heads=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"emb_dim=30 is not divisible by n_heads=4"):
        ModernConfig(**{**TINY, "emb_dim": 30})
    with pytest.raises(KeyError, match=r"unknown ModernConfig field.*'emb_size'"):
        ModernConfig.from_dict({**TINY, "emb_size": 3})
    ModernConfig(**{**TINY, "emb_dim": 30}, head_dim=8)  # an explicit head_dim needs no divisibility


def test_config_round_trips_and_derives_sizes() -> None:
    cfg = ModernConfig(**TINY, n_kv_heads=2)
    assert ModernConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert (cfg.kv_heads, cfg.kv_dim, cfg.ffn_dim) == (2, 8, 88)  # 8/3 * 32 = 85.3 -> 88
    assert cfg.replace(ffn="gelu").ffn_dim == 128
    # keys and values, 2 layers, 2 heads of 8 floats of 4 bytes
    assert cfg.kv_cache_bytes_per_token() == 2 * 2 * 2 * 8 * 4
    assert PRESETS["qwen3-0.6b"].kv_cache_bytes_per_token(2) == 2 * 28 * 8 * 128 * 2  # 114,688 in bf16


# ------------------------------------------------------------------ the layers
def test_rmsnorm_matches_torch() -> None:
    torch.manual_seed(0)
    norm = RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.scale.normal_()
    x = torch.randn(3, 5, 16) * 4
    torch.testing.assert_close(norm(x), F.rms_norm(x, (16,), norm.scale, 1e-6))


def test_rope_scores_depend_only_on_the_distance() -> None:
    torch.manual_seed(0)
    q, k = torch.randn(64), torch.randn(64)
    cos, sin = rope_angles(200, 64)

    def score(m: int, n: int) -> float:
        qm = apply_rope(q.view(1, 64), cos[m : m + 1], sin[m : m + 1])
        kn = apply_rope(k.view(1, 64), cos[n : n + 1], sin[n : n + 1])
        return float(qm @ kn.T)

    assert score(5, 2) == pytest.approx(score(105, 102), abs=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-3)
    # a rotation keeps lengths
    rotated = apply_rope(q.view(1, 64), cos[7:8], sin[7:8])
    assert float(rotated.norm()) == pytest.approx(float(q.norm()), rel=1e-5)


# ------------------------------------------------------------------ the model
@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_gpt2_style_config_is_the_gpt_model(impl: str) -> None:
    torch.manual_seed(0)
    gpt = GPTModel(GPTConfig(**TINY, qkv_bias=True, tie_embeddings=True, attn_impl=impl)).eval()  # type: ignore[arg-type]
    modern = ModernGPT.from_gpt(gpt).eval()
    idx = torch.randint(0, 40, (2, 32))
    torch.testing.assert_close(modern(idx), gpt(idx), rtol=0, atol=1e-5)
    assert torch.equal(generate(modern, idx[:, :5], 20), generate(gpt, idx[:, :5], 20))


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_the_kv_cache_holds_the_kv_heads_and_gives_the_uncached_tokens(impl: str) -> None:
    torch.manual_seed(0)
    cfg = ModernConfig(**TINY, n_kv_heads=2, qk_norm=True, attn_impl=impl)  # type: ignore[arg-type]
    model = ModernGPT(cfg).eval()
    idx = torch.randint(0, 40, (3, 6))
    cache = model.new_cache()
    with torch.no_grad():
        full = model(idx)
        first = model(idx[:, :4], cache=cache)
        rest = model(idx[:, 4:], cache=cache)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full, rtol=0, atol=1e-5)
    k = cache.layers[0].k
    assert k is not None and tuple(k.shape) == (3, 2, 6, 8)  # (B, G, S, D): 2 heads cached, not 4
    assert sum(layer.k.numel() + layer.v.numel() for layer in cache.layers) * 4 == (  # type: ignore[union-attr]
        3 * 6 * cfg.kv_cache_bytes_per_token())
    assert torch.equal(generate(model, idx, 40), generate(model, idx, 40, use_cache=False))


def test_a_modern_model_trains_with_the_course_loop() -> None:
    torch.manual_seed(0)
    model = ModernGPT(ModernConfig(**TINY, n_kv_heads=2))
    data = torch.arange(33).remainder(40).repeat(8, 1)  # one sequence to learn
    batches = [(data[:, :-1], data[:, 1:])] * 40
    history = train(model, batches, batches[:1], max_steps=40, lr=3e-3, eval_every=40, progress=False)
    assert history.val_loss[-1] is not None and history.val_loss[-1] < 1.0 < torch.log(torch.tensor(40.0))


def test_bad_input_is_refused_with_the_fix() -> None:
    model = ModernGPT(ModernConfig(**TINY))
    with pytest.raises(ValueError, match=r"exceed context_length=32; crop"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match=r"outside the vocabulary 0..39"):
        model(torch.tensor([[3, 40]]))


# ------------------------------------------------------------------ Qwen3 against transformers
def tiny_qwen3(folder: Path, *, seed: int = 0, tie: bool = True) -> Qwen3ForCausalLM:
    """A tiny random Qwen3 written by transformers, its weights far from the small init."""
    torch.manual_seed(seed)
    hf_cfg = Qwen3Config(vocab_size=len(SPECIALS) + 300, hidden_size=64, intermediate_size=96,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                         max_position_embeddings=128, tie_word_embeddings=tie, rms_norm_eps=1e-6,
                         rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0})
    hf = Qwen3ForCausalLM(hf_cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():  # norms around 1, matrices of a trained scale
            p.copy_(1 + 0.3 * torch.randn_like(p) if "norm" in name else 0.1 * torch.randn_like(p))
    hf.save_pretrained(folder)
    return hf


def tiny_tokenizer(folder: Path) -> None:
    """A byte-level BPE in the format of Qwen3's tokenizer.json, with its special tokens."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    text = ["Which number is larger? 37 or 52. The larger number is 52.", "Hello, how are you today?"] * 20
    tok.train_from_iterator(text, trainer)
    tok.save(str(folder / "tokenizer.json"))


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Qwen3ForCausalLM]:
    folder = tmp_path_factory.mktemp("qwen3")
    hf = tiny_qwen3(folder)
    tiny_tokenizer(folder)
    return folder, hf


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_qwen3_logits_and_greedy_tokens_match_transformers(tmp_path: Path, tie: bool, impl: str) -> None:
    hf = tiny_qwen3(tmp_path, tie=tie)
    cfg = config_from_hf(json.loads((tmp_path / "config.json").read_text()))
    assert (cfg.n_kv_heads, cfg.head_dim, cfg.qk_norm, cfg.tie_embeddings, cfg.rope_theta) == (2, 32, True, tie, 1e6)
    tiny_tokenizer(tmp_path)
    model, _ = load_qwen3_folder(tmp_path)
    model.config = model.config.replace(attn_impl=impl)  # type: ignore[arg-type]
    for block in model.trf_blocks:
        block.att.impl = impl
    torch.manual_seed(1)
    idx = torch.randint(0, 303, (2, 40))
    with torch.no_grad():
        expected, got = hf(idx).logits, model(idx)
    assert expected.abs().max() > 1.0  # logits of a real spread, not all near zero
    assert float((got - expected).abs().max()) < 1e-4
    ours = generate(model, idx[:1, :8], 24)
    theirs = hf.generate(idx[:1, :8], max_new_tokens=24, do_sample=False, min_new_tokens=24)
    assert torch.equal(ours, theirs)


def test_qwen3_loader_refuses_other_models_and_missing_tensors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"model_type='llama'.*Qwen3 checkpoints"):
        config_from_hf({"model_type": "llama"})
    tiny_qwen3(tmp_path)
    from safetensors.torch import load_file, save_file

    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, tmp_path / "model.safetensors")
    tiny_tokenizer(tmp_path)
    with pytest.raises(KeyError, match=r"lacks trf_blocks\.1\.ff\.W_up\.weight"):
        load_qwen3_folder(tmp_path)
    assert is_qwen3_folder(tmp_path) and not is_qwen3_folder(tmp_path / "nothing")


def test_qwen3_tokenizer_matches_transformers_and_the_template_is_chatml(
        qwen_folder: tuple[Path, Qwen3ForCausalLM]) -> None:
    folder, _ = qwen_folder
    ours = Qwen3Tokenizer(folder / "tokenizer.json")
    theirs = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    prompt = chat_prompt("Which number is larger?", "37 52")
    assert prompt == ("<|im_start|>user\nWhich number is larger?\n37 52<|im_end|>\n<|im_start|>assistant\n"
                      "<think>\n\n</think>\n\n")
    ids = ours.encode(prompt)
    assert ids == theirs.encode(prompt, add_special_tokens=False)
    assert ids[0] == 1 and ids.count(2) == 1 and ours.eot_token == 2  # special tokens are single ids
    assert ours.decode(ids) == prompt
    assert chat_prompt("Hi", thinking=True).endswith("assistant\n")


def test_chat_answers_with_a_qwen3_model_and_its_template(qwen_folder: tuple[Path, Qwen3ForCausalLM]) -> None:
    folder, hf = qwen_folder
    model, tokenizer = load_qwen3_folder(folder)
    chat = Chat(model, tokenizer, style=chat_prompt, settings=ChatSettings(max_tokens=12))
    prompt_ids = torch.tensor([tokenizer.encode(chat_prompt("Hello", ""))])
    expected = hf.generate(prompt_ids, max_new_tokens=12, do_sample=False, eos_token_id=tokenizer.eot_token)
    new = expected[0, prompt_ids.shape[1]:].tolist()
    new = new[: new.index(2)] if 2 in new else new
    assert chat.answer("Hello") == tokenizer.decode(new).strip()


def test_chat_command_with_a_qwen3_folder_and_offline_hub(
        qwen_folder: tuple[Path, Qwen3ForCausalLM], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = qwen_folder
    assert main(["chat", "--model", str(folder), "--prompt", "Hello", "--max-tokens", "5"]) == 0
    assert capsys.readouterr().out.strip() != ""

    import huggingface_hub

    def offline(*args: object, **kwargs: object) -> str:
        raise OSError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ConnectionError, match=r"Qwen/Qwen3-0.6B.*Connect to the internet.*--model FOLDER"):
        download("qwen3-0.6b")
    assert main(["chat", "--model", "qwen3-0.6b", "--prompt", "Hello"]) == 2
    assert "--model FOLDER" in capsys.readouterr().err


def test_a_modern_model_is_checkpointed_and_loaded_back(tmp_path: Path) -> None:
    from companion.checkpoint import load_checkpoint

    torch.manual_seed(0)
    model = ModernGPT(ModernConfig(**TINY, n_kv_heads=2, qk_norm=True, tie_embeddings=True))
    data = torch.arange(33).remainder(40).repeat(4, 1)
    batches = [(data[:, :-1], data[:, 1:])] * 5
    train(model, batches, None, max_steps=5, lr=1e-3, progress=False, checkpoint_dir=tmp_path / "run")
    loaded, info = load_checkpoint(tmp_path / "run")
    assert isinstance(loaded, ModernGPT) and info["config"] == model.config and info["step"] == 5
    assert loaded.out_head.weight is loaded.tok_emb.weight  # still tied
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(data[:1, :10]), model.eval()(data[:1, :10]), rtol=0, atol=0)


def test_the_hub_config_of_qwen3_0_6b_is_the_preset() -> None:
    # Qwen/Qwen3-0.6B's config.json as published (written by transformers 4.51: rope_theta at
    # the top level, rope_scaling null), the format the tiny checkpoints above do not cover
    published = {
        "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
        "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
        "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
        "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
        "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None,
        "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_cache": True,
        "use_sliding_window": False, "vocab_size": 151936,
    }
    assert config_from_hf(published) == PRESETS["qwen3-0.6b"]
    assert config_from_hf(published, context_length=None).context_length == 40_960
    with pytest.raises(ValueError, match="rope scaling 'yarn'"):
        config_from_hf({**published, "rope_scaling": {"type": "yarn", "factor": 4.0}})
    with pytest.raises(ValueError, match="rope scaling 'llama3'"):
        config_from_hf({**published, "rope_scaling": {"rope_type": "llama3", "factor": 32.0}})
    with pytest.raises(ValueError, match="rope scaling 'yarn'"):
        config_from_hf({**published, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6}})
