"""Qwen3 in the course's own code: weights, tokenizer, chat template (chapter 9,
"A real open model").

A Qwen3 checkpoint on the Hugging Face hub is a folder with ``config.json``,
``model.safetensors`` (or several shards and an index) and ``tokenizer.json``.

* ``config_from_hf`` reads ``config.json`` into a ``ModernConfig``.
* ``load_qwen3`` builds a ``ModernGPT`` and copies the tensors in under the course's
  names (``HF_KEY_MAP``).
* ``Qwen3Tokenizer`` wraps the ``tokenizers`` library's ``tokenizer.json``, with the
  interface of the course's tokenizers (``encode``, ``decode``, ``eot_token``).
* ``chat_prompt`` puts one user message into Qwen3's chat template.
* ``download`` fetches a model from the hub (``huggingface_hub``) and says what to do
  when that is impossible.

The tests check all of it against ``transformers`` on tiny random Qwen3 checkpoints.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from companion.modern.config import ModernConfig
from companion.modern.layers import rope_angles
from companion.modern.model import ModernGPT

__all__ = [
    "HF_KEY_MAP",
    "HUB_MODELS",
    "Qwen3Tokenizer",
    "chat_prompt",
    "config_from_hf",
    "download",
    "is_qwen3_folder",
    "load_qwen3",
    "load_qwen3_folder",
]

HUB_MODELS: Mapping[str, str] = {"qwen3-0.6b": "Qwen/Qwen3-0.6B"}
"""Names ``python -m companion chat --model`` accepts, and their hub repositories."""

_FILES = ["config.json", "tokenizer.json", "*.safetensors", "model.safetensors.index.json"]

# Hugging Face's parameter names (a regex, {i} the layer) -> the course's names
HF_KEY_MAP: Mapping[str, str] = {
    r"model\.embed_tokens\.weight": "tok_emb.weight",
    r"model\.norm\.weight": "final_norm.scale",
    r"lm_head\.weight": "out_head.weight",
    r"model\.layers\.(\d+)\.input_layernorm\.weight": r"trf_blocks.\1.norm1.scale",
    r"model\.layers\.(\d+)\.post_attention_layernorm\.weight": r"trf_blocks.\1.norm2.scale",
    r"model\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)": r"trf_blocks.\1.att.W_query.\2",
    r"model\.layers\.(\d+)\.self_attn\.k_proj\.(weight|bias)": r"trf_blocks.\1.att.W_key.\2",
    r"model\.layers\.(\d+)\.self_attn\.v_proj\.(weight|bias)": r"trf_blocks.\1.att.W_value.\2",
    r"model\.layers\.(\d+)\.self_attn\.o_proj\.(weight|bias)": r"trf_blocks.\1.att.out_proj.\2",
    r"model\.layers\.(\d+)\.self_attn\.q_norm\.weight": r"trf_blocks.\1.att.q_norm.scale",
    r"model\.layers\.(\d+)\.self_attn\.k_norm\.weight": r"trf_blocks.\1.att.k_norm.scale",
    r"model\.layers\.(\d+)\.mlp\.gate_proj\.weight": r"trf_blocks.\1.ff.W_gate.weight",
    r"model\.layers\.(\d+)\.mlp\.up_proj\.weight": r"trf_blocks.\1.ff.W_up.weight",
    r"model\.layers\.(\d+)\.mlp\.down_proj\.weight": r"trf_blocks.\1.ff.W_down.weight",
}


def config_from_hf(hf: Mapping[str, Any], *, context_length: int | None = 4_096) -> ModernConfig:
    """A ``ModernConfig`` from a Qwen3 ``config.json`` (as a dict).

    Args:
        hf: The parsed ``config.json``.
        context_length: Longest text to allow (it sizes the KV cache); ``None`` keeps
            the model's ``max_position_embeddings`` (40,960 for Qwen3).

    Raises:
        ValueError: The config is not a Qwen3 one, or uses a feature this code lacks.
    """
    if hf.get("model_type") != "qwen3":
        raise ValueError(f"model_type={hf.get('model_type')!r}: this loader reads Qwen3 checkpoints "
                         "(model_type 'qwen3') only")
    rope = hf.get("rope_parameters") or {}
    theta = rope.get("rope_theta", hf.get("rope_theta", 10_000.0))
    old = hf.get("rope_scaling") or {}  # the format of transformers 4
    scaling = rope.get("rope_type", "default") if rope else old.get("rope_type", old.get("type", "default"))
    if scaling != "default" or hf.get("use_sliding_window"):
        raise ValueError(f"rope scaling {scaling!r} / sliding window attention are not implemented here")
    max_len = int(hf["max_position_embeddings"])
    return ModernConfig(
        vocab_size=int(hf["vocab_size"]), context_length=min(max_len, context_length or max_len),
        emb_dim=int(hf["hidden_size"]), n_heads=int(hf["num_attention_heads"]),
        n_layers=int(hf["num_hidden_layers"]), n_kv_heads=int(hf["num_key_value_heads"]),
        head_dim=int(hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]),
        hidden_dim=int(hf["intermediate_size"]), norm_eps=float(hf["rms_norm_eps"]),
        rope_theta=float(theta), qk_norm=True, qkv_bias=bool(hf.get("attention_bias", False)),
        bias=bool(hf.get("attention_bias", False)), tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
    )


def _course_name(hf_name: str) -> str | None:
    for pattern, target in HF_KEY_MAP.items():
        if re.fullmatch(pattern, hf_name):
            return re.sub(pattern, target, hf_name)
    return None


def load_qwen3(cfg: ModernConfig, tensors: Mapping[str, Tensor], *, dtype: torch.dtype = torch.float32) -> ModernGPT:
    """Build a ``ModernGPT`` and fill it with Hugging Face-named ``tensors``.

    Raises:
        KeyError: A tensor has no place in the model, or a parameter got no tensor
            (the message names them).
    """
    with torch.device("meta"):
        model = ModernGPT(cfg)
    state: dict[str, Tensor] = {}
    unknown = []
    for name, tensor in tensors.items():
        target = _course_name(name)
        if target is None:
            unknown.append(name)
        elif not (cfg.tie_embeddings and target == "out_head.weight"):
            state[target] = tensor.to(dtype)
    if unknown:
        raise KeyError(f"tensors with no place in the model: {', '.join(sorted(unknown)[:5])}")
    missing = set(model.state_dict()) - set(state) - ({"out_head.weight"} if cfg.tie_embeddings else set())
    if missing:
        raise KeyError(f"the checkpoint lacks {', '.join(sorted(missing)[:5])}")
    model.load_state_dict(state, strict=False, assign=True)
    if cfg.tie_embeddings:
        model.out_head.weight = model.tok_emb.weight
    if cfg.positions == "rope":  # buffers are not in the checkpoint: compute them for real
        model.rope_cos, model.rope_sin = rope_angles(cfg.context_length, cfg.kv_dim, cfg.rope_theta)
    return model.eval()


def is_qwen3_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a Hugging Face Qwen3 checkpoint."""
    config = Path(path) / "config.json"
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") == "qwen3"
    except (OSError, ValueError, AttributeError):
        return False


def load_qwen3_folder(path: str | Path, *, context_length: int | None = 4_096,
                      dtype: torch.dtype = torch.float32) -> tuple[ModernGPT, Qwen3Tokenizer]:
    """The model and tokenizer in a Hugging Face Qwen3 folder (``download`` makes one)."""
    from safetensors.torch import load_file

    folder = Path(path)
    cfg = config_from_hf(json.loads((folder / "config.json").read_text(encoding="utf-8")),
                         context_length=context_length)
    tensors: dict[str, Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    if not tensors:
        raise FileNotFoundError(f"no .safetensors files in {folder}")
    return load_qwen3(cfg, tensors, dtype=dtype), Qwen3Tokenizer(folder / "tokenizer.json")


def download(name: str, cache_dir: str | Path | None = None) -> Path:
    """Download a model of ``HUB_MODELS`` from the Hugging Face hub; return its folder.

    Files already downloaded are reused. Qwen3-0.6B is about 1.5 GB.

    Raises:
        KeyError: ``name`` is not in ``HUB_MODELS``.
        ConnectionError: The hub cannot be reached (the message says what to do).
    """
    if name not in HUB_MODELS:
        raise KeyError(f"unknown hub model {name!r}; known: {', '.join(HUB_MODELS)}")
    from huggingface_hub import snapshot_download

    repo = HUB_MODELS[name]
    try:
        return Path(snapshot_download(repo, allow_patterns=_FILES, cache_dir=cache_dir))
    except Exception as err:  # huggingface_hub raises several types for "no network"
        raise ConnectionError(
            f"could not download {repo} from the Hugging Face hub ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:120]}). Connect to the internet and run the command again "
            f"(about 1.5 GB, downloaded once), or download the files of https://huggingface.co/{repo} "
            "(config.json, tokenizer.json, model.safetensors) into a folder and pass that folder: "
            "--model FOLDER"
        ) from err


class Qwen3Tokenizer:
    """A ``tokenizer.json`` (Hugging Face ``tokenizers``) with the course's tokenizer interface.

    ``encode`` turns special tokens written in the text (``<|im_start|>``) into their
    ids, as ``companion.tokenizers.encode_text`` expects; ``eot_token`` is the id of
    ``<|im_end|>``, where an assistant's turn ends.
    """

    def __init__(self, path: str | Path) -> None:
        import os

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # its threads slow torch down
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path))
        end = self._tok.token_to_id("<|im_end|>")
        if end is None:
            raise ValueError(f"{path} has no <|im_end|> token: it is not a Qwen3 chat tokenizer")
        self.eot_token: int = end
        self.n_vocab: int = self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special tokens in it become their ids."""
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        """The text of ``ids`` (special tokens written out)."""
        return str(self._tok.decode(list(ids), skip_special_tokens=False))


def chat_prompt(message: str, input: str = "", *, thinking: bool = False) -> str:
    """One user message in Qwen3's chat template, ready for the assistant's answer.

    Without ``thinking`` the template closes an empty ``<think>`` block, which makes
    Qwen3 answer at once (its model card's ``enable_thinking=False``). An ``input`` is
    appended to the message on its own line.
    """
    text = f"{message}\n{input}" if input else message
    prompt = f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
    return prompt if thinking else prompt + "<think>\n\n</think>\n\n"
