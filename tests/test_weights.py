"""Tests for companion.weights: parity with Hugging Face's GPT-2, strict checks, no pickle."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

# Hugging Face tokenizers' thread pool can slow torch down badly: turn it off before import.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

from companion import GPTConfig, GPTModel
from companion.model import num_parameters
from companion.files import ChecksumError, DownloadError, sha256_of
from companion.weights import (
    GPT2_CHECKPOINTS,
    GPT2_KEY_MAP,
    WeightLoadError,
    config_from_hf,
    download_gpt2_weights,
    gpt2_dir,
    gpt2_state_dict_from_hf,
    load_gpt2_weights,
)

TINY_HF = dict(
    n_embd=64,
    n_layer=2,
    n_head=4,
    n_positions=32,
    vocab_size=101,
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
    bos_token_id=0,
    eos_token_id=0,
)


def save_hf_gpt2(folder: Path, seed: int = 0, **changes: object) -> GPT2LMHeadModel:
    """Build a tiny random GPT-2 with transformers and save it as safetensors in folder."""
    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(GPT2Config(**{**TINY_HF, **changes})).eval()
    hf.save_pretrained(folder, safe_serialization=True)
    return hf


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """(folder with model.safetensors and config.json, a batch of ids, HF's logits for it)."""
    folder = tmp_path_factory.mktemp("hf-gpt2")
    hf = save_hf_gpt2(folder)
    torch.manual_seed(1)
    idx = torch.randint(0, 101, (3, 32))
    with torch.no_grad():
        logits = hf(idx).logits
    return folder, idx, logits


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_logits_match_hugging_face(
    tiny_gpt2: tuple[Path, torch.Tensor, torch.Tensor], impl: str
) -> None:
    folder, idx, expected = tiny_gpt2
    cfg = config_from_hf(folder / "config.json", attn_impl=impl)
    assert cfg == GPTConfig(
        vocab_size=101,
        context_length=32,
        emb_dim=64,
        n_heads=4,
        n_layers=2,
        drop_rate=0.0,
        qkv_bias=True,
        tie_embeddings=True,
        attn_impl=impl,
    )
    torch.manual_seed(123)  # the random initial weights must all be replaced
    model = load_gpt2_weights(GPTModel(cfg), folder / "model.safetensors").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(idx), expected)
        # Generation with the KV cache gives the same logits as well.
        cache = model.new_cache()
        steps = [model(idx[:, :20], cache=cache)]
        steps += [model(idx[:, t : t + 1], cache=cache) for t in range(20, 32)]
        torch.testing.assert_close(torch.cat(steps, dim=1), expected)
    assert model.out_head.weight is model.tok_emb.weight


def test_folder_and_mapping_sources(tiny_gpt2: tuple[Path, torch.Tensor, torch.Tensor]) -> None:
    folder, idx, expected = tiny_gpt2
    cfg = config_from_hf(json.loads((folder / "config.json").read_text()))
    from_folder = load_gpt2_weights(GPTModel(cfg), folder).eval()
    from_mapping = load_gpt2_weights(GPTModel(cfg), load_file(folder / "model.safetensors")).eval()
    with torch.no_grad():
        torch.testing.assert_close(from_folder(idx), expected)
        torch.testing.assert_close(from_mapping(idx), expected)


def test_keys_without_prefix_and_with_buffers(
    tiny_gpt2: tuple[Path, torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    """OpenAI's files on the Hub: no 'transformer.' prefix, plus the attn.bias buffers."""
    folder, idx, expected = tiny_gpt2
    state = {
        key.removeprefix("transformer."): tensor
        for key, tensor in load_file(folder / "model.safetensors").items()
    }
    assert "wte.weight" in state and not any(k.startswith("transformer.") for k in state)
    for i in range(2):
        state[f"h.{i}.attn.bias"] = torch.ones(1, 1, 32, 32).tril()
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(state, tmp_path / "openai.safetensors")

    model = GPTModel(config_from_hf(folder / "config.json"))
    load_gpt2_weights(model, tmp_path / "openai.safetensors").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(idx), expected)


def test_untied_checkpoint_with_lm_head(tmp_path: Path) -> None:
    hf = save_hf_gpt2(tmp_path, seed=5, tie_word_embeddings=False)
    assert any(k.endswith("lm_head.weight") for k in load_file(tmp_path / "model.safetensors"))
    cfg = config_from_hf(tmp_path / "config.json")
    assert cfg.tie_embeddings is False
    model = load_gpt2_weights(GPTModel(cfg), tmp_path / "model.safetensors").eval()
    idx = torch.randint(0, 101, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf(idx).logits)
    assert not torch.equal(model.out_head.weight, model.tok_emb.weight)

    # A tied model cannot hold two different matrices: refused, with the fix.
    with pytest.raises(
        WeightLoadError, match=r"lm_head.weight differs from wte.weight.*tie_embeddings=False"
    ):
        load_gpt2_weights(GPTModel(cfg.replace(tie_embeddings=True)), tmp_path)


def test_tied_checkpoint_into_untied_model(
    tiny_gpt2: tuple[Path, torch.Tensor, torch.Tensor],
) -> None:
    """The book's way: a separate output head, initialised as a copy of the embedding."""
    folder, idx, expected = tiny_gpt2
    cfg = config_from_hf(folder / "config.json", tie_embeddings=False)
    model = load_gpt2_weights(GPTModel(cfg), folder).eval()
    assert model.out_head.weight is not model.tok_emb.weight
    torch.testing.assert_close(model.out_head.weight, model.tok_emb.weight)
    with torch.no_grad():
        torch.testing.assert_close(model(idx), expected)


def test_qkv_split_and_transposes(tiny_gpt2: tuple[Path, torch.Tensor, torch.Tensor]) -> None:
    folder, _, _ = tiny_gpt2
    hf_state = load_file(folder / "model.safetensors")
    ours = gpt2_state_dict_from_hf(hf_state, config_from_hf(folder / "config.json"))
    c_attn_w = hf_state["transformer.h.1.attn.c_attn.weight"]  # (C, 3C)
    c_attn_b = hf_state["transformer.h.1.attn.c_attn.bias"]  # (3C,)
    for j, name in enumerate(["W_query", "W_key", "W_value"]):
        cols = slice(64 * j, 64 * (j + 1))
        assert torch.equal(ours[f"trf_blocks.1.att.{name}.weight"], c_attn_w[:, cols].T)
        assert torch.equal(ours[f"trf_blocks.1.att.{name}.bias"], c_attn_b[cols])
    assert torch.equal(
        ours["trf_blocks.0.ff.layers.2.weight"], hf_state["transformer.h.0.mlp.c_proj.weight"].T
    )
    assert len(GPT2_KEY_MAP) == 17


def test_mismatches_listed_in_one_error(
    tiny_gpt2: tuple[Path, torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    folder, _, _ = tiny_gpt2
    state = load_file(folder / "model.safetensors")
    del state["transformer.h.1.mlp.c_fc.weight"]
    state["transformer.wte.weight"] = torch.zeros(100, 64)
    state["transformer.h.0.attn.c_attn.bias"] = torch.zeros(190)
    state["transformer.h.2.ln_1.weight"] = torch.ones(64)
    save_file(state, tmp_path / "bad.safetensors")

    model = GPTModel(config_from_hf(folder / "config.json"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightLoadError) as info:
        load_gpt2_weights(model, tmp_path / "bad.safetensors")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("GPT-2 weights do not fit a GPTModel with GPTConfig(vocab_size=101")
    assert "  missing (1):" in lines
    assert (
        "    h.1.mlp.c_fc.weight (for trf_blocks.1.ff.layers.0.weight): expected (64, 256)" in lines
    )
    assert "  unexpected (1):" in lines
    assert "    transformer.h.2.ln_1.weight: shape (64,)" in lines
    assert "  wrong shape (2):" in lines
    assert "    transformer.wte.weight: expected (101, 64), found (100, 64)" in lines
    assert "    transformer.h.0.attn.c_attn.bias: expected (192,), found (190,)" in lines
    # Nothing was loaded.
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_wrong_config_names_every_tensor(
    tiny_gpt2: tuple[Path, torch.Tensor, torch.Tensor],
) -> None:
    folder, _, _ = tiny_gpt2
    cfg = config_from_hf(folder / "config.json", emb_dim=32, n_layers=1)
    with pytest.raises(WeightLoadError) as info:
        load_gpt2_weights(GPTModel(cfg), folder)
    message = str(info.value)
    assert "transformer.wte.weight: expected (101, 32), found (101, 64)" in message
    assert "transformer.h.0.attn.c_attn.weight: expected (32, 96), found (64, 192)" in message
    assert "transformer.h.1.ln_1.weight: shape (64,)" in message  # a block too many


def test_duplicate_key_refused(tiny_gpt2: tuple[Path, torch.Tensor, torch.Tensor]) -> None:
    folder, _, _ = tiny_gpt2
    state = load_file(folder / "model.safetensors")
    state["ln_f.bias"] = state["transformer.ln_f.bias"]
    with pytest.raises(
        WeightLoadError, match=r"ln_f.bias: given twice \(also as transformer.ln_f.bias\)"
    ):
        gpt2_state_dict_from_hf(state, config_from_hf(folder / "config.json"))


def test_corrupted_file(tmp_path: Path, tiny_gpt2: tuple[Path, torch.Tensor, torch.Tensor]) -> None:
    folder, _, _ = tiny_gpt2
    data = (folder / "model.safetensors").read_bytes()
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(data[: len(data) // 2])
    model = GPTModel(config_from_hf(folder / "config.json"))
    with pytest.raises(
        WeightLoadError, match=r"broken.safetensors is not a readable safetensors file"
    ):
        load_gpt2_weights(model, broken)
    with pytest.raises(FileNotFoundError, match=r"no weights file at"):
        load_gpt2_weights(model, tmp_path / "absent.safetensors")


def test_loader_never_unpickles(
    tiny_gpt2: tuple[Path, torch.Tensor, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle-based loading was called")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    folder, idx, expected = tiny_gpt2
    model = load_gpt2_weights(GPTModel(config_from_hf(folder / "config.json")), folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(idx), expected)


def test_config_from_hf_rejects_variants() -> None:
    base = {"n_embd": 64, "n_head": 4, "n_layer": 2, "n_positions": 32, "vocab_size": 101}
    assert config_from_hf(base).drop_rate == 0.1  # GPT-2's default dropout
    with pytest.raises(ValueError, match=r"activation_function='relu' is not supported"):
        config_from_hf(base | {"activation_function": "relu"})
    with pytest.raises(ValueError, match=r"n_inner=128 is not supported"):
        config_from_hf(base | {"n_inner": 128})
    with pytest.raises(ValueError, match=r"layer_norm_epsilon=1e-06 is not supported"):
        config_from_hf(base | {"layer_norm_epsilon": 1e-6})
    with pytest.raises(ValueError, match=r"dropout rates differ.*pass drop_rate="):
        config_from_hf(base | {"attn_pdrop": 0.0})
    assert config_from_hf(base | {"attn_pdrop": 0.0}, drop_rate=0.05).drop_rate == 0.05


def test_checkpoint_registry() -> None:
    assert list(GPT2_CHECKPOINTS) == ["gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl"]
    repos = {"gpt2-small": "gpt2", "gpt2-medium": "gpt2-medium", "gpt2-large": "gpt2-large",
             "gpt2-xl": "gpt2-xl"}  # fmt: skip
    for name, entry in GPT2_CHECKPOINTS.items():
        revision = "607a30d783dfa663caf39e06633721c8d4cfcd7e" if name == "gpt2-small" else "main"
        assert entry.url == (
            f"https://huggingface.co/openai-community/{repos[name]}/resolve/{revision}/model.safetensors"
        )
        assert entry.filename == f"{name}.safetensors"
        assert (entry.sha256 is not None) == (name == "gpt2-small")  # only the pinned file has a published hash
        with torch.device("meta"):
            model = GPTModel(GPTConfig.from_preset(name))
        assert num_parameters(model) == entry.num_parameters


def test_download_from_a_local_url_records_and_checks_the_hash(
    tmp_path: Path, tiny_gpt2: tuple[Path, torch.Tensor, torch.Tensor]
) -> None:
    folder, _, _ = tiny_gpt2
    source = folder / "model.safetensors"
    # gpt2-medium has no recorded hash: the first download's hash is kept beside the file
    target = download_gpt2_weights("gpt2-medium", tmp_path / "weights", url=source.as_uri(), progress=False)
    assert target == tmp_path / "weights" / "gpt2-medium.safetensors"
    assert target.read_bytes() == source.read_bytes()
    sidecar = target.with_name(target.name + ".sha256")
    assert sidecar.read_text().strip() == sha256_of(source)
    # a file already there (and matching) is returned without any download
    assert download_gpt2_weights("gpt2-medium", tmp_path / "weights", url="http://127.0.0.1:9/") == target
    # a file changed since is not trusted: it must be fetched again, and here that fails
    target.write_bytes(b"not the weights")
    with pytest.raises(DownloadError, match="not trusted"):
        download_gpt2_weights("gpt2-medium", tmp_path / "weights", url="http://127.0.0.1:9/", progress=False,
                              timeout=5)


def test_gpt2_small_is_checked_against_its_published_hash(
    tmp_path: Path, tiny_gpt2: tuple[Path, torch.Tensor, torch.Tensor]
) -> None:
    entry = GPT2_CHECKPOINTS["gpt2-small"]
    assert entry.sha256 == "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707"
    assert "/resolve/607a30d783dfa663caf39e06633721c8d4cfcd7e/" in entry.url  # a pinned revision
    source = tiny_gpt2[0] / "model.safetensors"
    with pytest.raises(ChecksumError, match=f"expected {entry.sha256}"):
        download_gpt2_weights("gpt2-small", tmp_path, url=source.as_uri(), progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing kept


def test_gpt2_weights_follow_the_cache_folder_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPANION_GPT2_DIR", str(tmp_path / "mine"))
    assert gpt2_dir() == tmp_path / "mine"
    monkeypatch.delenv("COMPANION_GPT2_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gpt2_dir() == tmp_path / "xdg" / "companion" / "gpt2"


def test_download_failure_is_clear(tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as info:
        download_gpt2_weights(
            "gpt2-medium", tmp_path, url="http://127.0.0.1:9/none", progress=False, timeout=5
        )
    message = str(info.value)
    assert "Could not get gpt2-medium.safetensors from http://127.0.0.1:9/none" in message
    assert (
        "download https://huggingface.co/openai-community/gpt2-medium/resolve/main/"
        f"model.safetensors and save it as {tmp_path / 'gpt2-medium.safetensors'}"
    ) in message
    assert list(tmp_path.iterdir()) == []  # no partial file left behind
    with pytest.raises(KeyError, match=r"unknown GPT-2 checkpoint 'gpt2-tiny'; known: gpt2-small"):
        download_gpt2_weights("gpt2-tiny", tmp_path)


def test_config_from_hf_names_a_file_that_is_not_json(tmp_path: Path) -> None:
    """Failure mode: bad JSON in config.json used to end in a bare JSONDecodeError."""
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=f"{bad} is not a Hugging Face config.json: it is not valid JSON"):
        config_from_hf(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="it holds a list, not an object"):
        config_from_hf(bad)
