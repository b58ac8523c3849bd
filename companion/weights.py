"""OpenAI's GPT-2 weights in this course's ``GPTModel`` (chapter 5,
"GPT-2's published weights").

GPT-2's published checkpoints use Hugging Face's parameter names and layout; the
course's model uses the names of chapter 4 (and of Raschka's book). ``GPT2_KEY_MAP`` states the correspondence as data,
one row per tensor: the GPT-2 name, this model's name(s), and the transform between
them. One small function, ``gpt2_state_dict_from_hf``, applies the table and checks
every name and shape, so a wrong file or a wrong config fails with one message that
lists every problem.

Two layout differences need a transform:

* GPT-2 stores its linear layers as ``Conv1D`` modules, whose weight is
  ``(in_features, out_features)``, the transpose of ``nn.Linear``'s.
* GPT-2 computes queries, keys and values with one ``c_attn`` layer of width ``3C``;
  this model has three layers, ``W_query``, ``W_key`` and ``W_value``, so that weight
  and bias are split in three.

Weights are read only from safetensors files (``safetensors.torch.load_file``), never
with ``torch.load``: a pickle file can run code when it is opened.

``GPT2_CHECKPOINTS`` lists where OpenAI's four model sizes are published, and
``download_gpt2_weights`` fetches one (``load_pretrained_gpt2`` does both steps).

Shape letters used in this module:

* ``C``: channels, the embedding width (``emb_dim``)
* ``V``: vocabulary size
* ``N``: number of positions (``context_length``)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from companion.config import GPTConfig
from companion.files import cache_folder, fetch_verified
from companion.model import GPTModel

__all__ = [
    "COPY",
    "GPT2_CHECKPOINTS",
    "GPT2_DIR_ENV",
    "GPT2_IGNORED_KEYS",
    "GPT2_KEY_MAP",
    "SPLIT",
    "TRANSPOSE",
    "TRANSPOSE_SPLIT",
    "GPT2Checkpoint",
    "KeyRule",
    "Transform",
    "WeightLoadError",
    "config_from_hf",
    "download_gpt2_weights",
    "gpt2_dir",
    "gpt2_state_dict_from_hf",
    "load_gpt2_weights",
    "load_pretrained_gpt2",
]

Shape = tuple[int, ...]


class WeightLoadError(ValueError):
    """A checkpoint's tensors do not match the model (names, shapes) or cannot be read."""


# --------------------------------------------------------------------------- #
# The key map: data
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Transform:
    """How one GPT-2 tensor becomes one or more of this model's tensors.

    Attributes:
        name: A short label for messages.
        apply: ``apply(tensor, n)`` returns the ``n`` target tensors.
        source_shape: ``source_shape(target_shape, n)`` returns the shape the GPT-2
            tensor must have, given the shape of each of the ``n`` targets; used to
            check a checkpoint before anything is reshaped.
    """

    name: str
    apply: Callable[[Tensor, int], tuple[Tensor, ...]]
    source_shape: Callable[[Shape, int], Shape]


COPY = Transform(
    "copy",
    apply=lambda t, n: (t,),
    source_shape=lambda shape, n: shape,
)
"""The tensor is used as it is."""

TRANSPOSE = Transform(
    "transpose",
    # Conv1D (in, out) -> nn.Linear (out, in)
    apply=lambda t, n: (t.t().contiguous(),),
    source_shape=lambda shape, n: (shape[1], shape[0]),
)
"""A ``Conv1D`` weight ``(in, out)`` becomes an ``nn.Linear`` weight ``(out, in)``."""

SPLIT = Transform(
    "split",
    # (3C,) -> 3 tensors (C,)
    apply=lambda t, n: tuple(part.contiguous() for part in t.chunk(n, dim=-1)),
    source_shape=lambda shape, n: (*shape[:-1], n * shape[-1]),
)
"""A fused bias ``(nC,)`` is cut into ``n`` equal biases ``(C,)`` (q, k, v in order)."""

TRANSPOSE_SPLIT = Transform(
    "transpose+split",
    # Conv1D (C, 3C) -> transposed (3C, C) -> 3 nn.Linear weights (C, C)
    apply=lambda t, n: tuple(part.contiguous() for part in t.t().chunk(n, dim=0)),
    source_shape=lambda shape, n: (shape[1], n * shape[0]),
)
"""A fused ``Conv1D`` weight ``(C, nC)`` becomes ``n`` ``nn.Linear`` weights ``(C, C)``."""


@dataclass(frozen=True)
class KeyRule:
    """One row of the key map: a GPT-2 tensor, the tensor(s) it becomes, and how.

    ``{i}`` in a name stands for the index of a transformer block.

    Attributes:
        hf: GPT-2's name, without the ``transformer.`` prefix.
        ours: This model's name(s), in the order ``transform.apply`` returns them.
        transform: How the tensor is converted.
    """

    hf: str
    ours: tuple[str, ...]
    transform: Transform = COPY


def _block(*names: str) -> tuple[str, ...]:
    return tuple(f"trf_blocks.{{i}}.{name}" for name in names)


GPT2_KEY_MAP: tuple[KeyRule, ...] = (
    KeyRule("wte.weight", ("tok_emb.weight",)),  # (V, C)
    KeyRule("wpe.weight", ("pos_emb.weight",)),  # (N, C)
    KeyRule("h.{i}.ln_1.weight", _block("norm1.scale")),  # (C,)
    KeyRule("h.{i}.ln_1.bias", _block("norm1.shift")),  # (C,)
    KeyRule(
        "h.{i}.attn.c_attn.weight",  # (C, 3C)
        _block("att.W_query.weight", "att.W_key.weight", "att.W_value.weight"),
        TRANSPOSE_SPLIT,
    ),
    KeyRule(
        "h.{i}.attn.c_attn.bias",  # (3C,)
        _block("att.W_query.bias", "att.W_key.bias", "att.W_value.bias"),
        SPLIT,
    ),
    KeyRule("h.{i}.attn.c_proj.weight", _block("att.out_proj.weight"), TRANSPOSE),  # (C, C)
    KeyRule("h.{i}.attn.c_proj.bias", _block("att.out_proj.bias")),  # (C,)
    KeyRule("h.{i}.ln_2.weight", _block("norm2.scale")),  # (C,)
    KeyRule("h.{i}.ln_2.bias", _block("norm2.shift")),  # (C,)
    KeyRule("h.{i}.mlp.c_fc.weight", _block("ff.layers.0.weight"), TRANSPOSE),  # (C, 4C)
    KeyRule("h.{i}.mlp.c_fc.bias", _block("ff.layers.0.bias")),  # (4C,)
    KeyRule("h.{i}.mlp.c_proj.weight", _block("ff.layers.2.weight"), TRANSPOSE),  # (4C, C)
    KeyRule("h.{i}.mlp.c_proj.bias", _block("ff.layers.2.bias")),  # (C,)
    KeyRule("ln_f.weight", ("final_norm.scale",)),  # (C,)
    KeyRule("ln_f.bias", ("final_norm.shift",)),  # (C,)
    # GPT-2 ties its output head to wte, so checkpoints usually leave it out; when it
    # is absent, out_head.weight is taken from wte.weight (see gpt2_state_dict_from_hf).
    KeyRule("lm_head.weight", ("out_head.weight",)),  # (V, C)
)
"""GPT-2's parameter names (Hugging Face) and this model's, with the transform between."""

GPT2_IGNORED_KEYS: tuple[str, ...] = ("h.{i}.attn.bias", "h.{i}.attn.masked_bias")
"""Buffers some GPT-2 checkpoints carry (the causal mask and its fill value): not
parameters, rebuilt by the model, skipped."""

_PREFIX = "transformer."  # added by save_pretrained; OpenAI's Hub files have none
_OPTIONAL_KEYS = frozenset({"lm_head.weight"})


# --------------------------------------------------------------------------- #
# Applying the key map
# --------------------------------------------------------------------------- #
def _expected_shapes(cfg: GPTConfig) -> dict[str, Shape]:
    """The name and shape of every tensor in a ``GPTModel(cfg)`` state dict.

    Built on the meta device: no memory is allocated and no numbers are drawn.
    """
    with torch.device("meta"):
        model = GPTModel(cfg)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def _expand(rule_name: str, n_layers: int) -> list[tuple[str, int | None]]:
    """The concrete names of one table row: one per block if it has ``{i}``."""
    if "{i}" not in rule_name:
        return [(rule_name, None)]
    return [(rule_name.format(i=i), i) for i in range(n_layers)]


def gpt2_state_dict_from_hf(hf_state: Mapping[str, Tensor], cfg: GPTConfig) -> dict[str, Tensor]:
    """Convert a GPT-2 state dict (Hugging Face names) into a ``GPTModel`` state dict.

    Applies ``GPT2_KEY_MAP``. Keys may carry the ``transformer.`` prefix (as
    ``save_pretrained`` writes them) or not (as in OpenAI's files on the Hub); the
    buffers in ``GPT2_IGNORED_KEYS`` are skipped. Without ``lm_head.weight`` the output
    head is the token embedding (GPT-2 ties them): the same tensor when
    ``cfg.tie_embeddings``, a copy otherwise.

    Args:
        hf_state: GPT-2 tensors by name, e.g. ``safetensors.torch.load_file(path)``.
        cfg: The configuration of the model that will receive the weights.

    Returns:
        Tensors by this model's names, ready for ``model.load_state_dict(..., strict=True)``.

    Raises:
        WeightLoadError: Any tensor is missing, unexpected or of the wrong shape; one
            message lists them all, each with its expected and found shape.
    """
    expected = _expected_shapes(cfg)

    # The table, expanded to every block: GPT-2 name -> (our names, transform, shape).
    plan: dict[str, tuple[tuple[str, ...], Transform, Shape]] = {}
    for rule in GPT2_KEY_MAP:
        for hf_name, i in _expand(rule.hf, cfg.n_layers):
            ours = tuple(name.format(i=i) for name in rule.ours)
            want = rule.transform.source_shape(expected[ours[0]], len(ours))
            plan[hf_name] = (ours, rule.transform, want)
    ignored = {name for pattern in GPT2_IGNORED_KEYS for name, _ in _expand(pattern, cfg.n_layers)}

    out: dict[str, Tensor] = {}
    seen: dict[str, str] = {}  # GPT-2 name without prefix -> key as given
    unexpected: list[str] = []
    wrong: list[str] = []
    for key, tensor in hf_state.items():
        name = key.removeprefix(_PREFIX)
        if name in seen:
            wrong.append(f"{key}: given twice (also as {seen[name]})")
            continue
        seen[name] = key
        if name in ignored:
            continue
        if name not in plan:
            unexpected.append(f"{key}: shape {tuple(tensor.shape)}")
            continue
        ours, transform, want = plan[name]
        if tuple(tensor.shape) != want:
            wrong.append(f"{key}: expected {want}, found {tuple(tensor.shape)}")
            continue
        out.update(zip(ours, transform.apply(tensor, len(ours)), strict=True))

    missing = [
        f"{hf_name} (for {', '.join(ours)}): expected {want}"
        for hf_name, (ours, _, want) in plan.items()
        if hf_name not in seen and hf_name not in _OPTIONAL_KEYS
    ]
    if missing or unexpected or wrong:
        raise WeightLoadError(_mismatch_message(cfg, missing, unexpected, wrong))

    embedding = out["tok_emb.weight"]  # (V, C)
    if "out_head.weight" not in out:
        out["out_head.weight"] = embedding if cfg.tie_embeddings else embedding.clone()
    elif cfg.tie_embeddings and not torch.equal(out["out_head.weight"], embedding):
        raise WeightLoadError(
            "lm_head.weight differs from wte.weight, but tie_embeddings=True makes the "
            "output head and the token embedding one matrix; load this checkpoint into a "
            "model configured with tie_embeddings=False"
        )
    return out


def _mismatch_message(
    cfg: GPTConfig, missing: list[str], unexpected: list[str], wrong: list[str]
) -> str:
    lines = [f"GPT-2 weights do not fit a GPTModel with {cfg}:"]
    for title, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape", wrong),
    ):
        if items:
            lines.append(f"  {title} ({len(items)}):")
            lines.extend(f"    {item}" for item in items)
    lines.append(
        "Check that the config matches the checkpoint: config_from_hf() reads it from "
        "the checkpoint's config.json, GPTConfig.from_preset() names OpenAI's sizes."
    )
    return "\n".join(lines)


def load_gpt2_weights(
    model: GPTModel, source: str | os.PathLike[str] | Mapping[str, Tensor]
) -> GPTModel:
    """Load GPT-2 weights into ``model`` in place (chapter 5); returns the model.

    Args:
        model: A ``GPTModel`` whose config matches the checkpoint (same sizes).
        source: A ``.safetensors`` file, a folder holding ``model.safetensors`` (as
            ``save_pretrained`` writes it), or a mapping of GPT-2 tensors by name.

    Returns:
        ``model``, with every parameter replaced (on the model's device and dtype).

    Raises:
        FileNotFoundError: ``source`` does not exist.
        WeightLoadError: The file is not a readable safetensors file, or its tensors
            do not match the model (one message lists every mismatch).
    """
    if isinstance(source, Mapping):
        hf_state = source
    else:
        path = Path(source)
        if path.is_dir():
            path = path / "model.safetensors"
        if not path.is_file():
            raise FileNotFoundError(
                f"no weights file at {path}; pass the path of a .safetensors file "
                "(download_gpt2_weights() fetches OpenAI's)"
            )
        try:
            hf_state = load_file(path)  # safetensors: tensors only, no code
        except (SafetensorError, OSError) as exc:
            raise WeightLoadError(
                f"{path} is not a readable safetensors file ({exc}); only safetensors "
                "files are loaded (never pickle-based .bin/.pt files): download the "
                "model's model.safetensors again"
            ) from exc
    state = gpt2_state_dict_from_hf(hf_state, model.config)
    model.load_state_dict(state, strict=True)
    return model


def config_from_hf(
    hf_config: Mapping[str, Any] | str | os.PathLike[str], **overrides: Any
) -> GPTConfig:
    """Build a ``GPTConfig`` from a Hugging Face GPT-2 ``config.json``.

    Maps ``vocab_size``, ``n_positions`` (``context_length``), ``n_embd``
    (``emb_dim``), ``n_head`` and ``n_layer``; GPT-2 always has query/key/value
    biases, and ties its head unless ``tie_word_embeddings`` is false. GPT-2's three
    dropout rates (``embd_pdrop``, ``attn_pdrop``, ``resid_pdrop``) must agree, since
    this model has one ``drop_rate``.

    Args:
        hf_config: The parsed ``config.json``, or its path.
        **overrides: Fields to set afterwards, e.g. ``drop_rate=0.0`` or
            ``attn_impl="manual"``.

    Raises:
        ValueError: The file is not a JSON object, or the config describes a variant this model cannot reproduce
            (another activation or layer-norm epsilon, a different MLP width, scaled
            attention, unequal dropout rates without a ``drop_rate`` override).
    """
    if not isinstance(hf_config, Mapping):
        path = Path(hf_config)
        try:
            hf_config = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not a Hugging Face config.json: it is not valid JSON text ({err})") from err
        if not isinstance(hf_config, Mapping):
            raise ValueError(f"{path} is not a Hugging Face config.json: it holds a {type(hf_config).__name__}, not an object")
    get = hf_config.get

    n_embd = get("n_embd", 768)
    unsupported = {
        "activation_function": (get("activation_function", "gelu_new"), "gelu_new"),
        "layer_norm_epsilon": (get("layer_norm_epsilon", 1e-5), 1e-5),
        "n_inner": (get("n_inner") or 4 * n_embd, 4 * n_embd),
        "scale_attn_weights": (get("scale_attn_weights", True), True),
        "scale_attn_by_inverse_layer_idx": (get("scale_attn_by_inverse_layer_idx", False), False),
    }
    for field_name, (found, supported) in unsupported.items():
        if found != supported:
            raise ValueError(
                f"{field_name}={found!r} is not supported: this GPT model reproduces "
                f"GPT-2 with {field_name}={supported!r}"
            )

    rates = {name: get(name, 0.1) for name in ("embd_pdrop", "attn_pdrop", "resid_pdrop")}
    if len(set(rates.values())) > 1 and "drop_rate" not in overrides:
        raise ValueError(
            f"the dropout rates differ ({rates}) but this model has one drop_rate; "
            "pass drop_rate=... to choose it"
        )
    fields: dict[str, Any] = {
        "vocab_size": get("vocab_size", 50_257),
        "context_length": get("n_positions", get("n_ctx", 1_024)),
        "emb_dim": n_embd,
        "n_heads": get("n_head", 12),
        "n_layers": get("n_layer", 12),
        "drop_rate": rates["resid_pdrop"],
        "qkv_bias": True,
        "tie_embeddings": bool(get("tie_word_embeddings", True)),
    }
    fields.update(overrides)
    return GPTConfig(**fields)


# --------------------------------------------------------------------------- #
# OpenAI's published checkpoints
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class GPT2Checkpoint:
    """Where one size of OpenAI's GPT-2 is published, as a safetensors file.

    Attributes:
        name: The matching preset in ``companion.config.PRESETS``.
        url: Download address of the file on the Hugging Face Hub.
        filename: Name of the file once downloaded.
        sha256: Expected SHA-256 of the file, or ``None`` when not recorded here (the
            first download's hash is then recorded beside the file and checked later);
            the loader also checks every tensor's name and shape.
        num_parameters: Parameters of the model (tied head counted once).
    """

    name: str
    url: str
    filename: str
    sha256: str | None
    num_parameters: int


# gpt2-small is pinned to a revision of the Hub repository, whose model.safetensors
# (548,105,171 bytes) has the SHA-256 below, as the Hub's LFS pointer records it. For the
# other sizes no hash is recorded here (a made-up one is worse than none): the first
# complete download's hash is written next to the file and checked on every later use.
_GPT2_SMALL_REVISION = "607a30d783dfa663caf39e06633721c8d4cfcd7e"
GPT2_CHECKPOINTS: Mapping[str, GPT2Checkpoint] = MappingProxyType(
    {
        entry.name: entry
        for entry in (
            GPT2Checkpoint(
                name="gpt2-small",
                url=(
                    "https://huggingface.co/openai-community/gpt2/resolve/"
                    f"{_GPT2_SMALL_REVISION}/model.safetensors"
                ),
                filename="gpt2-small.safetensors",
                sha256="248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707",
                num_parameters=124_439_808,
            ),
            GPT2Checkpoint(
                name="gpt2-medium",
                url="https://huggingface.co/openai-community/gpt2-medium/resolve/main/model.safetensors",
                filename="gpt2-medium.safetensors",
                sha256=None,
                num_parameters=354_823_168,
            ),
            GPT2Checkpoint(
                name="gpt2-large",
                url="https://huggingface.co/openai-community/gpt2-large/resolve/main/model.safetensors",
                filename="gpt2-large.safetensors",
                sha256=None,
                num_parameters=774_030_080,
            ),
            GPT2Checkpoint(
                name="gpt2-xl",
                url="https://huggingface.co/openai-community/gpt2-xl/resolve/main/model.safetensors",
                filename="gpt2-xl.safetensors",
                sha256=None,
                num_parameters=1_557_611_200,
            ),
        )
    }
)
"""OpenAI's four GPT-2 sizes, keyed by preset name (chapter 5)."""


GPT2_DIR_ENV = "COMPANION_GPT2_DIR"
"""Name of the environment variable that sets the folder for GPT-2's weights."""


def gpt2_dir() -> Path:
    """Where GPT-2's weights are kept: ``$COMPANION_GPT2_DIR``, else
    ``$XDG_CACHE_HOME/companion/gpt2``, else ``~/.cache/companion/gpt2``
    (``companion.files.cache_folder``, the rule every cache of the package follows)."""
    return cache_folder("gpt2", GPT2_DIR_ENV)


def download_gpt2_weights(
    name: str,
    directory: str | os.PathLike[str] | None = None,
    *,
    url: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Return the path of a GPT-2 weights file, downloading and verifying it on first use.

    The file's SHA-256 is checked against ``GPT2_CHECKPOINTS[name].sha256`` (or, for a
    size without a recorded hash, against the hash recorded at its first download); a
    download goes to a temporary file that is renamed only once verified
    (``companion.files.fetch_verified``).

    Args:
        name: A key of ``GPT2_CHECKPOINTS``, e.g. ``"gpt2-small"``.
        directory: Folder for the file; ``None`` for ``gpt2_dir()``. Created if needed.
        url: Download from here instead (a mirror); it must serve the same file.
        progress: Show a ``tqdm`` progress bar.
        timeout: Seconds to wait for the server.

    Raises:
        KeyError: Unknown ``name`` (the message lists the known ones).
        DownloadError: The download failed (offline, refused, cut short); the message
            says how to place the file by hand.
        ChecksumError: The file's SHA-256 is wrong (nothing is kept).
    """
    try:
        entry = GPT2_CHECKPOINTS[name]
    except KeyError:
        raise KeyError(
            f"unknown GPT-2 checkpoint {name!r}; known: {', '.join(GPT2_CHECKPOINTS)}"
        ) from None
    folder = Path(directory) if directory is not None else gpt2_dir()
    target = folder / entry.filename
    return fetch_verified(
        url or entry.url,
        target,
        sha256=entry.sha256,
        progress=progress,
        timeout=timeout,
        by_hand=(
            f"To fix this by hand, download {entry.url} and save it as {target}, "
            f"or set {GPT2_DIR_ENV} to a folder that holds {entry.filename}."
        ),
    )


def load_pretrained_gpt2(
    name: str, directory: str | os.PathLike[str] | None = None, *, progress: bool = True, **overrides: Any
) -> GPTModel:
    """Build the GPT-2 model of preset ``name`` and load OpenAI's weights (chapter 5).

    Args:
        name: ``"gpt2-small"``, ``"gpt2-medium"``, ``"gpt2-large"`` or ``"gpt2-xl"``.
        directory: Where the weights file is kept; ``None`` for ``gpt2_dir()``
            (downloaded on first use).
        progress: Show a progress bar while downloading.
        **overrides: Config fields that do not change shapes, e.g. ``drop_rate=0.0``
            or ``attn_impl="manual"``.

    Returns:
        The model with GPT-2's weights, in eval mode.
    """
    path = download_gpt2_weights(name, directory, progress=progress)
    with torch.random.fork_rng(devices=[]):  # the weights are replaced: keep the caller's random state
        model = GPTModel(GPTConfig.from_preset(name, **overrides), init="pytorch")
    return load_gpt2_weights(model, path).eval()
