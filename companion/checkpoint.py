"""Checkpoints: a trained model (and what is needed to resume its training) as a folder.

Chapter 5, "Checkpoints: saving, loading and resuming", saves a model so that the
next chapters can start from it, and saves the optimizer too so that training can go
on later. The book uses ``torch.save``, which pickles: loading a pickle can run any
code. Here a checkpoint is data only:

=============================  ==========================================================
``config.json``                the ``GPTConfig`` (``to_dict``), or a chapter 9
                               ``ModernConfig`` marked ``"architecture": "modern"``
``model.safetensors``          the weights (``safetensors.torch.save_model``: a tied
                               output head is stored once)
``checkpoint.json``            format and version, step, ``TrainHistory``, ``extra``,
                               the tokenizer's kind, the optimizer's class, parameter
                               groups and non-tensor state, the SHA-256 of every other
                               file; written last
``training_state.safetensors`` the optimizer's tensors (AdamW's moments and step
                               counts) and the random generators' states; only when an
                               optimizer or a step is saved
``tokenizer.json``             a ``BPETokenizer`` (``BPETokenizer.save``), if given
=============================  ==========================================================

Nothing is ever unpickled: ``torch.load`` is not used. Every file is read from inside
the checkpoint's folder: a name in ``checkpoint.json`` that leads out of it (an absolute
path, ``..``, a symbolic link pointing elsewhere) is refused. A file whose SHA-256 differs
from the one recorded when it was saved (a flipped bit, a file replaced by hand) is
refused too.

Writes are atomic (``companion.files.atomic_folder``). The files go into a hidden
temporary folder next to the target, are flushed to disk, and the folder is then
renamed into place. Renaming a folder over a non-empty one is not possible in one
step, so an existing checkpoint is first renamed to a hidden backup name, the new one
renamed into place, and the backup removed. If the process dies between those two
renames, the backup is still a complete checkpoint: ``load_checkpoint`` and
``find_checkpoint`` fall back to it and the next ``save_checkpoint`` puts it back
first (and removes any other leftover, such as a half-deleted backup). At no moment is
a half-written folder found under the checkpoint's name. Two processes saving to
the same folder take turns (``companion.files.folder_lock``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_file, save_model
from torch import Tensor, nn

from companion.config import GPTConfig
from companion.files import atomic_folder, folder_backups, folder_lock, recover_folder, sha256_of
from companion.history import TrainHistory
from companion.model import GPTModel
from companion.modern.config import ModernConfig
from companion.modern.model import ModernGPT
from companion.tokenizers import BPETokenizer, gpt2_tokenizer

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "CheckpointNotFoundError",
    "find_checkpoint",
    "get_rng_state",
    "load_checkpoint",
    "read_checkpoint_info",
    "save_checkpoint",
    "set_rng_state",
    "tokenizer_spec",
]

CHECKPOINT_FORMAT = "companion-checkpoint"
CHECKPOINT_VERSION = 1

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
META_FILE = "checkpoint.json"
STATE_FILE = "training_state.safetensors"
TOKENIZER_FILE = "tokenizer.json"

_OPTIMIZER_PREFIX = "optimizer.state."
_ARCHITECTURE = "architecture"  # config.json key of a ModernGPT's checkpoint (chapter 9)
_RNG_PREFIX = "rng."


class CheckpointError(ValueError):
    """A checkpoint cannot be used: a file is corrupt, or it does not fit the model."""


class CheckpointNotFoundError(FileNotFoundError):
    """There is no checkpoint (or one of its files is missing) at the given path."""


# --------------------------------------------------------------------------- #
# Random state
# --------------------------------------------------------------------------- #
def get_rng_state() -> dict[str, Tensor]:
    """The global random generators' states: ``"cpu"`` and ``"cuda.<i>"`` for each
    initialised CUDA device (uint8 tensors, as ``torch.get_rng_state`` returns)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda.{i}"] = cuda_state
    return state


def set_rng_state(state: Mapping[str, Tensor], *, rank: int = 0) -> None:
    """Restore states from ``get_rng_state`` (CUDA entries only where the device exists).

    A checkpoint of a run on several processes holds every process's states: rank 0's
    under the plain names, rank ``r``'s under ``"rank<r>.cpu"`` and so on; ``rank``
    picks which to restore (a rank with no entry of its own keeps its current state).
    """
    if rank:
        prefix = f"rank{rank}."
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            return
    torch.set_rng_state(state["cpu"].cpu())
    for key, value in state.items():
        if key.startswith("cuda.") and torch.cuda.is_available():
            index = int(key.split(".", 1)[1])
            if index < torch.cuda.device_count():
                torch.cuda.set_rng_state(value.cpu(), index)


# --------------------------------------------------------------------------- #
# The files of a folder
# --------------------------------------------------------------------------- #
def _member(folder: Path, name: str) -> Path:
    """``folder / name``, after checking that it stays inside ``folder``.

    Raises:
        CheckpointError: ``name`` is absolute, climbs out with ``..``, or is (or passes
            through) a symbolic link that points outside the folder.
    """
    path = folder / name
    root = folder.resolve()
    if Path(name).is_absolute() or not path.resolve().is_relative_to(root):
        raise CheckpointError(
            f"checkpoint {folder} names the file {name!r}, which is outside its folder "
            f"(it resolves to {path.resolve()}); a checkpoint may only use files inside its own folder. "
            "Was checkpoint.json edited, or a file replaced by a link? Save the checkpoint again."
        )
    return path


def _file_hashes(folder: Path) -> dict[str, str]:
    """The SHA-256 of each file of a checkpoint folder being written (``checkpoint.json`` excluded)."""
    return {p.name: sha256_of(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != META_FILE}


def _verify(folder: Path, name: str, meta: Mapping[str, Any]) -> Path:
    """The path of file ``name`` of the checkpoint, inside the folder and with its recorded hash.

    Checkpoints saved before hashes were recorded have none; their files are not checked.

    Raises:
        CheckpointError: The file leads out of the folder, or its SHA-256 is not the one
            recorded when the checkpoint was saved.
    """
    path = _member(folder, name)
    expected = (meta.get("sha256") or {}).get(name)
    if expected is not None and path.is_file():
        actual = sha256_of(path)
        if actual != expected:
            raise CheckpointError(
                f"checkpoint file {path} is corrupt: its SHA-256 is {actual}, not the {expected} recorded "
                "when the checkpoint was saved (a changed bit, or a file replaced by hand). Save or "
                "download the checkpoint again."
            )
    return path


# --------------------------------------------------------------------------- #
# Tokenizers
# --------------------------------------------------------------------------- #
def tokenizer_spec(tokenizer: Any) -> dict[str, str] | None:
    """How a tokenizer is recorded in a checkpoint, or ``None`` if it cannot be.

    A ``BPETokenizer`` is saved as ``tokenizer.json``; tiktoken's GPT-2 encoding
    (``gpt2_tokenizer()``) is recorded by name, since it ships with the package.
    """
    if isinstance(tokenizer, BPETokenizer):
        return {"kind": "bpe", "file": TOKENIZER_FILE}
    if getattr(tokenizer, "name", None) == "gpt2" and hasattr(tokenizer, "n_vocab"):
        return {"kind": "gpt2"}
    return None


def _load_tokenizer(folder: Path, spec: Mapping[str, Any] | None, meta: Mapping[str, Any]) -> Any:
    if not spec:
        return None
    if spec.get("kind") == "gpt2":
        return gpt2_tokenizer()
    if spec.get("kind") == "bpe":
        path = _verify(folder, str(spec.get("file", TOKENIZER_FILE)), meta)
        if not path.is_file():
            raise CheckpointNotFoundError(f"checkpoint {folder} names a tokenizer file {path.name} that is missing")
        try:
            return BPETokenizer.load(path)
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"the tokenizer file {path} is corrupt: {err}") from err
    raise CheckpointError(f"checkpoint {folder} names an unknown tokenizer kind {spec.get('kind')!r}")


# --------------------------------------------------------------------------- #
# Finding a checkpoint (and an interrupted save's backup)
# --------------------------------------------------------------------------- #
def _is_complete(folder: Path) -> bool:
    """A folder is a complete checkpoint when its last-written file is there."""
    return (folder / META_FILE).is_file()


def find_checkpoint(path: str | os.PathLike[str]) -> Path | None:
    """The folder holding the checkpoint saved at ``path``, or ``None`` if there is none.

    Normally ``path`` itself. If a save died after moving the old checkpoint aside and
    before moving the new one in, the old one is found under its backup name.
    """
    target = Path(path)
    if (target / META_FILE).is_file():
        return target
    if target.exists():
        return None
    backups = folder_backups(target, _is_complete)
    return backups[0] if backups else None


# --------------------------------------------------------------------------- #
# Saving
# --------------------------------------------------------------------------- #
def _write_json(path: Path, data: Any, *, indent: int | None = 2) -> None:
    with open(path, "x", encoding="utf-8") as file:
        json.dump(data, file, indent=indent)  # NaN (a diverged loss) round-trips in Python
        file.write("\n")


def _unwrap(model: nn.Module) -> nn.Module:
    """The module itself, not a ``torch.compile`` wrapper around it."""
    return getattr(model, "_orig_mod", model)


def _optimizer_payload(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimizer's state_dict into tensors and JSON-able data."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            if isinstance(value, Tensor):
                tensors[f"{_OPTIMIZER_PREFIX}{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(index), {})[key] = value
    groups = []
    for group in state_dict["param_groups"]:
        clean = {}
        for key, value in group.items():
            if isinstance(value, Tensor):
                value = value.item()
            clean[key] = list(value) if isinstance(value, tuple) else value
        groups.append(clean)
    meta = {
        "class": type(optimizer).__name__,
        "param_groups": groups,
        "scalars": scalars,
        "tuple_keys": sorted({k for g in state_dict["param_groups"] for k, v in g.items() if isinstance(v, tuple)}),
    }
    return tensors, meta


def save_checkpoint(
    path_dir: str | os.PathLike[str],
    model: nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    step: int | None = None,
    history: TrainHistory | None = None,
    extra: Mapping[str, Any] | None = None,
    tokenizer: Any = None,
    rng_state: Mapping[str, Tensor] | None = None,
) -> Path:
    """Save a model, and optionally its training state, to a folder, atomically.

    Chapter 5, "Checkpoints: saving, loading and resuming". See the module docstring
    for the files. When an optimizer or a step is given, the global random state is
    saved too (``get_rng_state``), so that a resumed run draws the same dropout masks.

    Args:
        path_dir: The checkpoint folder. An existing checkpoint there is replaced; a
            folder that holds anything else is refused.
        model: A ``GPTModel`` (its ``config`` is saved), or a ``torch.compile`` wrapper
            of one (the wrapped module is saved).
        optimizer: Its state (e.g. AdamW's moments) is saved for resuming.
        step: Optimizer steps taken so far.
        history: The ``TrainHistory`` so far.
        extra: More JSON-able data, returned by ``load_checkpoint`` as ``info["extra"]``.
        tokenizer: A ``BPETokenizer`` (saved) or tiktoken's GPT-2 encoding (recorded
            by name), returned by ``load_checkpoint`` as ``info["tokenizer"]``.
        rng_state: Random-generator states to save instead of this process's own
            (the trainer passes every process's when training on several).

    Returns:
        The checkpoint folder's path.

    Raises:
        TypeError: ``extra`` is not JSON-able, or the tokenizer cannot be saved.
        CheckpointError: ``path_dir`` exists and holds something other than a checkpoint.
        OSError: The folder cannot be written (a full disk, no permission, or another
            process has been saving there for ``files.WRITE_LOCK_TIMEOUT_S`` seconds); an
            older checkpoint there is left as it was.
    """
    target = Path(path_dir)
    module = _unwrap(model)
    config = getattr(module, "config", None)
    if not isinstance(config, (GPTConfig, ModernConfig)):
        raise TypeError(f"model must be a GPTModel or a ModernGPT (with its config), got {type(module).__name__}")
    spec = None
    if tokenizer is not None:
        spec = tokenizer_spec(tokenizer)
        if spec is None:
            raise TypeError(
                f"cannot save a tokenizer of type {type(tokenizer).__name__}: pass a BPETokenizer "
                "or companion.tokenizers.gpt2_tokenizer()"
            )
    try:
        extra_json = json.loads(json.dumps(dict(extra or {})))
    except (TypeError, ValueError) as err:
        raise TypeError(f"extra must hold JSON data (str, numbers, lists, dicts): {err}") from err

    target.parent.mkdir(parents=True, exist_ok=True)
    if rng_state is None and (optimizer is not None or step is not None):
        rng_state = get_rng_state()
    with folder_lock(target):  # another process saving here waits: saves never remove each other's files
        _save_unlocked(target, module, config, optimizer, step, history, extra_json, tokenizer, spec, rng_state)
    return target


def _save_unlocked(
    target: Path,
    module: nn.Module,
    config: GPTConfig | ModernConfig,
    optimizer: torch.optim.Optimizer | None,
    step: int | None,
    history: TrainHistory | None,
    extra_json: dict[str, Any],
    tokenizer: Any,
    spec: dict[str, str] | None,
    rng_state: Mapping[str, Tensor] | None,
) -> None:
    """The files of ``save_checkpoint``, written while its caller holds the folder's lock."""
    recover_folder(target, _is_complete)
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not _is_complete(target))):
        raise CheckpointError(
            f"{target} exists and is not a checkpoint folder; refusing to replace it. "
            "Choose a new folder or an existing checkpoint's folder."
        )
    try:
        with atomic_folder(target) as tmp:
            # a ModernConfig (chapter 9) is marked, so that loading builds a ModernGPT
            modern = {_ARCHITECTURE: "modern"} if isinstance(config, ModernConfig) else {}
            _write_json(tmp / CONFIG_FILE, {**modern, **config.to_dict()})
            save_model(module, str(tmp / MODEL_FILE), metadata={"format": CHECKPOINT_FORMAT})
            optimizer_meta = None
            if rng_state is not None or optimizer is not None:
                tensors = {f"{_RNG_PREFIX}{k}": v for k, v in (rng_state or {}).items()}
                if optimizer is not None:
                    optimizer_tensors, optimizer_meta = _optimizer_payload(optimizer)
                    tensors.update(optimizer_tensors)
                save_file(tensors, str(tmp / STATE_FILE), metadata={"format": CHECKPOINT_FORMAT})
            if spec is not None and spec["kind"] == "bpe":
                tokenizer.save(tmp / TOKENIZER_FILE)
            meta = {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "step": step,
                "history": None if history is None else history.to_dict(),
                "extra": extra_json,
                "tokenizer": spec,
                "optimizer": optimizer_meta,
                "training_state": (tmp / STATE_FILE).is_file(),
                "sha256": _file_hashes(tmp),
            }
            _write_json(tmp / META_FILE, meta, indent=None)  # last: a folder with this file is complete
    except SafetensorError as err:  # safetensors reports a full disk as its own error type
        raise OSError(f"could not write the checkpoint {target}: {err}") from err


# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #
def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint file {path} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint file {path} is corrupt: it is not valid JSON ({err})") from err


def _tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a safetensors file's tensors, read from its header only."""
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint file {path} is missing")
    try:
        with safe_open(str(path), framework="pt") as file:
            return {key: tuple(file.get_slice(key).get_shape()) for key in file.keys()}  # noqa: SIM118 - a safetensors handle, not a dict
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint file {path} is corrupt or not a safetensors file: {err}") from err


def _read_tensors(path: Path, device: str | torch.device) -> dict[str, Tensor]:
    _tensor_shapes(path)  # clear errors for a missing or corrupt file
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as file:
            return {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 - a safetensors handle, not a dict
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint file {path} is corrupt: {err}") from err


def _check_model_shapes(model: nn.Module, path: Path) -> None:
    """Raise one ``CheckpointError`` listing every tensor that does not fit the model."""
    found = _tensor_shapes(path)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    # Names that share one tensor (a tied head): the file holds one of them.
    groups: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(name)
    problems = []
    for name, shape in found.items():
        if name not in expected:
            problems.append(f"{name}: in the checkpoint, not in the model (found {shape})")
        elif expected[name] != shape:
            problems.append(f"{name}: expected {expected[name]}, found {shape}")
    for names in groups.values():
        if not any(name in found for name in names):
            problems.append(f"{' / '.join(names)}: in the model (expected {expected[names[0]]}), missing from the checkpoint")
    if problems:
        raise CheckpointError(
            f"the weights in {path} do not fit the model ({len(problems)} problem(s)):\n  "
            + "\n  ".join(problems)
            + "\nWas the checkpoint saved from a model with another configuration?"
        )


def _load_optimizer(
    optimizer: torch.optim.Optimizer, meta: Mapping[str, Any] | None, tensors: Mapping[str, Tensor], path: Path
) -> None:
    if meta is None:
        raise CheckpointError(f"checkpoint {path} holds no optimizer state; load it without optimizer=")
    if meta["class"] != type(optimizer).__name__:
        raise CheckpointError(
            f"checkpoint {path} holds the state of a {meta['class']} optimizer, not of a "
            f"{type(optimizer).__name__}"
        )
    state: dict[int, dict[str, Any]] = {}
    try:
        for key, value in tensors.items():
            if key.startswith(_OPTIMIZER_PREFIX):
                index, name = key[len(_OPTIMIZER_PREFIX) :].split(".", 1)
                state.setdefault(int(index), {})[name] = value
        for index, values in meta["scalars"].items():
            state.setdefault(int(index), {}).update(values)
        tuple_keys = set(meta.get("tuple_keys", ()))
        groups = [
            {key: tuple(value) if key in tuple_keys else value for key, value in group.items()}
            for group in meta["param_groups"]
        ]
    except (ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(f"the optimizer state in {path} is corrupt: {err}") from err
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"the optimizer state in {path / STATE_FILE} does not fit the optimizer: {err}") from err


def _check_meta(meta: dict[str, Any], path: Path) -> tuple[int | None, TrainHistory | None]:
    """Check the types in ``checkpoint.json``; return its step and history.

    Raises:
        CheckpointError: A field has the wrong type (valid JSON is not enough).
    """

    def bad(field: str, want: str) -> CheckpointError:
        return CheckpointError(f"{path} is corrupt: {field!r} must be {want}, found {meta.get(field)!r:.80}")

    step = meta.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        raise bad("step", "a whole number of steps or null")
    for field, kind, want in (("extra", dict, "an object"), ("tokenizer", dict, "an object or null"),
                              ("optimizer", dict, "an object or null")):
        if meta.get(field) is not None and not isinstance(meta[field], kind):
            raise bad(field, want)
    if not isinstance(meta.get("training_state", False), bool):
        raise bad("training_state", "true or false")
    hashes = meta.get("sha256")
    if hashes is not None and not (
        isinstance(hashes, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in hashes.items())
    ):
        raise bad("sha256", "an object of file names and hex SHA-256 digests")
    optimizer = meta.get("optimizer")
    if optimizer is not None and not (
        isinstance(optimizer.get("class"), str)
        and isinstance(optimizer.get("param_groups"), list)
        and all(isinstance(g, dict) for g in optimizer["param_groups"])
        and isinstance(optimizer.get("scalars"), dict)
    ):
        raise bad("optimizer", "an object with 'class', 'param_groups' and 'scalars'")
    history = meta.get("history")
    if history is None:
        return step, None
    try:
        return step, TrainHistory.from_dict(history)
    except (TypeError, KeyError, ValueError) as err:
        raise CheckpointError(f"{path} is corrupt: its training history is not valid ({err})") from err


def read_checkpoint_info(path_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What a checkpoint holds, without loading its weights (cheap: two small JSON files).

    Returns:
        A dict with ``"path"`` (the folder read, which may be a backup of an interrupted
        save), ``"config"`` (``GPTConfig``), ``"step"``, ``"history"`` (``TrainHistory`` or
        ``None``), ``"extra"`` (dict) and ``"meta"`` (the checked ``checkpoint.json``).

    Raises:
        CheckpointNotFoundError: There is no checkpoint at ``path_dir``.
        CheckpointError: ``checkpoint.json`` or ``config.json`` is corrupt.
    """
    target = Path(path_dir)
    folder = find_checkpoint(target)
    if folder is None:
        if target.is_dir():
            raise CheckpointNotFoundError(f"{target} is not a checkpoint: checkpoint file {target / META_FILE} is missing")
        raise CheckpointNotFoundError(f"no checkpoint at {target}: the folder does not exist")
    meta = _read_json(_member(folder, META_FILE))
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{folder / META_FILE} is not a companion checkpoint file")
    if meta.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{folder / META_FILE} has checkpoint version {meta.get('version')!r}; this companion "
            f"reads version {CHECKPOINT_VERSION}"
        )
    step, history = _check_meta(meta, folder / META_FILE)
    try:
        data = _read_json(_verify(folder, CONFIG_FILE, meta))
        config: GPTConfig | ModernConfig
        if isinstance(data, dict) and data.get(_ARCHITECTURE) == "modern":
            config = ModernConfig.from_dict({k: v for k, v in data.items() if k != _ARCHITECTURE})
        else:
            config = GPTConfig.from_dict(data)
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint file {folder / CONFIG_FILE} is not a valid GPTConfig: {err}") from err
    return {"path": folder, "config": config, "step": step, "history": history,
            "extra": meta.get("extra") or {}, "meta": meta}


def load_checkpoint(
    path_dir: str | os.PathLike[str],
    *,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[GPTModel, dict[str, Any]]:
    """Load a checkpoint written by ``save_checkpoint`` (chapter 5,
    "Checkpoints: saving, loading and resuming").

    Args:
        path_dir: The checkpoint folder.
        model: Load the weights into this model (its shapes are checked first). ``None``
            builds a ``GPTModel`` (a ``ModernGPT`` for a ``ModernConfig``) from the saved
            config, on ``map_location``; it is
            returned in training mode, as PyTorch builds modules.
        optimizer: Load the saved optimizer state into it (same class, same parameter
            groups, built over the model's parameters).
        map_location: Device the tensors are read to.

    Returns:
        ``(model, info)``; ``info`` has ``"path"`` (the folder read), ``"config"``
        (``GPTConfig``), ``"step"``, ``"history"`` (``TrainHistory`` or ``None``),
        ``"extra"`` (dict), ``"tokenizer"`` (the saved tokenizer or ``None``) and
        ``"rng_state"`` (for ``set_rng_state``, or ``None``).

    Raises:
        CheckpointNotFoundError: There is no checkpoint at ``path_dir``, or a file of it
            is missing (the message names it).
        CheckpointError: A file is corrupt, or the weights do not fit the model (the
            message lists each mismatched tensor with the expected and found shapes),
            or the optimizer state does not fit the optimizer.
    """
    info = read_checkpoint_info(path_dir)
    folder, config = info["path"], info["config"]
    if model is None and "classifier" in info["extra"]:
        raise CheckpointError(
            f"{folder} holds a classifier (its output head is not the vocabulary's); load it with "
            "companion.finetune.classification.load_classifier, or pass model= a model with that head"
        )
    if model is None:
        with torch.random.fork_rng(devices=[]):  # building it must not move the caller's random state
            built = ModernGPT(config) if isinstance(config, ModernConfig) else GPTModel(config, init="pytorch")
            model = built.to(map_location)
    module = _unwrap(model)
    meta = info.pop("meta")
    model_file = _verify(folder, MODEL_FILE, meta)
    _check_model_shapes(module, model_file)
    try:
        load_model(module, str(model_file), strict=True, device=str(map_location))
    except (SafetensorError, RuntimeError, OSError) as err:
        raise CheckpointError(f"checkpoint file {model_file} could not be loaded: {err}") from err

    rng_state = None
    if meta.get("training_state"):
        tensors = _read_tensors(_verify(folder, STATE_FILE, meta), map_location)
        rng_state = {k[len(_RNG_PREFIX) :]: v.cpu() for k, v in tensors.items() if k.startswith(_RNG_PREFIX)}
        if optimizer is not None:
            _load_optimizer(optimizer, meta.get("optimizer"), tensors, folder)
    elif optimizer is not None:
        raise CheckpointError(f"checkpoint {folder} holds no optimizer state; load it without optimizer=")

    info["tokenizer"] = _load_tokenizer(folder, meta.get("tokenizer"), meta)
    info["rng_state"] = rng_state
    return model, info  # type: ignore[return-value]
