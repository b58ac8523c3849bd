"""Tests for companion.course_models: recipes, the model cache, training a recipe.

A tiny recipe on a tiny text trains in about a second; the real recipe is only
checked (valid config, stable cache key), never trained here.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

import companion.course_models as pretrained_module  # the module, for monkeypatching
import companion.runs.pretrain as pretrain_run  # where Recipe.run finds train_recipe
from companion import GPTConfig, GPTModel, pretrained
from companion.checkpoint import CheckpointError
from companion.course_models import (
    MODEL_DIR_ENV,
    RECIPES,
    SHIPPED,
    SHIPPED_DIR,
    Recipe,
    list_recipes,
    model_dir,
    prepare_data,
    train_recipe,
)
from companion.files import sha256_of
from companion.model import num_parameters
from companion.tokenizers import BPETokenizer

TEXT = (
    "ROMEO: But soft, what light through yonder window breaks? It is the east, and Juliet is the sun.\n"
    "JULIET: O Romeo, Romeo, wherefore art thou Romeo? Deny thy father and refuse thy name.\n"
) * 12


@pytest.fixture
def tiny(tmp_path: Path) -> Recipe:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    return Recipe(
        name="tiny-test",
        config=GPTConfig(vocab_size=280, context_length=16, emb_dim=32, n_heads=4, n_layers=1,
                         tie_embeddings=True),
        data=str(corpus),
        batch_size=4,
        steps=12,
        lr=3e-3,
        min_lr=3e-4,
        warmup_steps=2,
        eval_every=6,
        eval_batches=2,
        seed=1,
    )


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------ the real recipe
def test_the_shipped_recipe_is_valid_and_its_key_is_stable() -> None:
    assert list_recipes() == ["shakespeare-small"]
    recipe = RECIPES["shakespeare-small"]
    assert recipe.data == "tinyshakespeare" and recipe.val_fraction == 0.1 and recipe.tokenizer == "bpe"
    assert recipe.config.drop_rate == 0.0
    with torch.device("meta"):
        model = GPTModel(recipe.config)
    assert 0.5e6 < num_parameters(model) < 5e6
    assert Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    assert recipe.replace(description="other words").cache_key() == recipe.cache_key()
    assert recipe.replace(seed=recipe.seed + 1).cache_key() != recipe.cache_key()
    assert recipe.replace(data="the-verdict").cache_key() != recipe.cache_key()


def test_recipes_are_validated(tiny: Recipe) -> None:
    with pytest.raises(ValueError, match="steps=0"):
        tiny.replace(steps=0)
    with pytest.raises(ValueError, match="val_fraction"):
        tiny.replace(val_fraction=1.0)
    with pytest.raises(ValueError, match="tokenizer='gpt2' has 50257"):
        tiny.replace(tokenizer="gpt2")
    with pytest.raises(ValueError, match="at least 257"):
        tiny.replace(config=tiny.config.replace(vocab_size=100))
    with pytest.raises(ValueError, match="min_lr"):
        tiny.replace(min_lr=1.0)
    with pytest.raises(ValueError, match="unknown"):
        tiny.replace(tokenizer="chars")
    # failure mode: a negative clip (and a non-finite rate) used to be accepted here
    with pytest.raises(ValueError, match="grad_clip=-1.0"):
        tiny.replace(grad_clip=-1.0)
    with pytest.raises(ValueError, match="lr=inf"):
        tiny.replace(lr=float("inf"), min_lr=None)


def test_unknown_names_list_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="known models: shakespeare-small"):
        pretrained("shakespeare-huge", cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a course data file"):
        Recipe(name="x", config=RECIPES["shakespeare-small"].config, data="no-such-file").cache_key()


def test_model_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert MODEL_DIR_ENV == "COMPANION_MODEL_DIR"
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path / "models"))
    assert model_dir() == tmp_path / "models"
    monkeypatch.delenv(MODEL_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_dir() == tmp_path / "xdg" / "companion" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert model_dir() == Path.home() / ".cache" / "companion" / "models"


# ------------------------------------------------------------ training, caching
def test_prepare_data_splits_the_text_and_trains_the_tokenizer_on_the_first_part(tiny: Recipe) -> None:
    data = prepare_data(tiny, progress=False)
    split = int(len(TEXT) * 0.9)
    assert data.train_text == TEXT[:split] and data.val_text == TEXT[split:]
    assert isinstance(data.tokenizer, BPETokenizer) and data.tokenizer.vocab_size == 280
    assert data.tokenizer.merges == BPETokenizer.train(TEXT[:split], 280).merges
    x, y = next(iter(data.val_loader))
    assert x.shape[1] == 16 and torch.equal(x[0, 1:], y[0, :-1])
    assert len(data.train_loader.dataset) == len(data.tokenizer.encode(data.train_text)) - 16


def test_train_recipe_is_deterministic(tiny: Recipe) -> None:
    a = train_recipe(tiny, progress=False)
    b = train_recipe(tiny, progress=False)
    assert same_weights(a.model, b.model)
    assert a.history.batch_losses == b.history.batch_losses
    assert not a.model.training
    info = a.info
    assert info["steps"] == 12 and info["tokens_seen"] == 12 * 4 * 16
    assert info["source"] == "trained" and info["recipe_key"] == tiny.cache_key()
    assert info["parameters"] == num_parameters(a.model)
    assert info["val_nats_per_char"] == pytest.approx(info["val_loss"] * info["val_tokens"] / info["val_chars"])
    assert info["val_loss"] < math.log(280)  # it learned something
    assert a.history.batch_losses[-1] < a.history.batch_losses[0]


def test_pretrained_trains_once_then_loads_from_the_cache(tiny: Recipe, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "models"
    first = pretrained(tiny, cache_dir=cache, progress=False)
    assert first.info["source"] == "trained" and first.info["path"] == cache / "tiny-test"
    assert (cache / "tiny-test" / "tokenizer.json").is_file()

    calls = []
    monkeypatch.setattr(pretrain_run, "train_recipe", lambda *a, **k: calls.append(a))
    second = pretrained(tiny, cache_dir=cache, progress=False)
    assert calls == []  # not retrained
    assert second.info["source"] == "cache"
    assert same_weights(second.model, first.model) and not second.model.training
    assert second.config == tiny.config
    assert second.tokenizer.encode("Romeo, Romeo") == first.tokenizer.encode("Romeo, Romeo")
    for key in ("val_loss", "val_nats_per_char", "steps", "train_seconds", "recipe_key"):
        assert second.info[key] == first.info[key]
    assert second.history.batch_losses == first.history.batch_losses
    # the environment variable chooses the cache when cache_dir is not given
    monkeypatch.setenv(MODEL_DIR_ENV, str(cache))
    assert pretrained(tiny, progress=False).info["source"] == "cache"


def test_a_changed_recipe_or_a_broken_cache_is_retrained(tiny: Recipe, tmp_path: Path) -> None:
    cache = tmp_path / "models"
    first = pretrained(tiny, cache_dir=cache, progress=False)
    changed = pretrained(tiny.replace(seed=2), cache_dir=cache, progress=False)
    assert changed.info["source"] == "trained" and not same_weights(changed.model, first.model)
    assert pretrained(tiny.replace(seed=2), cache_dir=cache, progress=False).info["source"] == "cache"

    (cache / "tiny-test" / "model.safetensors").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unusable"):
        again = pretrained(tiny.replace(seed=2), cache_dir=cache, progress=False)
    assert again.info["source"] == "trained" and same_weights(again.model, changed.model)
    assert pretrained(tiny.replace(seed=2), cache_dir=cache, progress=False).info["source"] == "cache"
    assert pretrained(tiny.replace(seed=2), cache_dir=cache, progress=False, retrain=True).info["source"] == "trained"


def test_an_unwritable_cache_only_warns(tiny: Recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise OSError("read-only file system")

    monkeypatch.setattr(pretrained_module, "save_checkpoint", refuse)
    with pytest.warns(UserWarning, match="could not save 'tiny-test'.*read-only"):
        result = pretrained(tiny, cache_dir=tmp_path, progress=False)
    assert result.info["source"] == "trained" and result.info["path"] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(CheckpointError("x"), ValueError)


def test_a_full_disk_while_caching_only_warns(tiny: Recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Failure mode: safetensors' SafetensorError on a full disk escaped and the model was lost."""
    import companion.checkpoint as ckpt
    from safetensors import SafetensorError

    def disk_full(*args, **kwargs):
        raise SafetensorError("Error while serializing: No space left on device (os error 28)")

    monkeypatch.setattr(ckpt, "save_model", disk_full)
    with pytest.warns(UserWarning, match="could not save 'tiny-test'.*No space left"):
        result = pretrained(tiny, cache_dir=tmp_path, progress=False)
    assert result.info["source"] == "trained" and result.info["path"] is None
    assert not any(tmp_path.rglob("*.safetensors"))


def test_a_cache_with_wrong_types_is_retrained(tiny: Recipe, tmp_path: Path) -> None:
    """Failure mode: valid JSON with wrong types made pretrained() fail instead of retraining."""
    first = pretrained(tiny, cache_dir=tmp_path, progress=False)
    meta_path = tmp_path / "tiny-test" / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    meta["history"], meta["step"] = "garbage", "three"
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="unusable.*corrupt"):
        again = pretrained(tiny, cache_dir=tmp_path, progress=False)
    assert again.info["source"] == "trained" and same_weights(again.model, first.model)


# ------------------------------------------------------------ weights shipped with the package
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_weights_were_made_by_the_current_recipe(name: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """If this fails, a recipe changed: run ``python -m companion.course_models ship NAME``."""
    from companion import pretrained as course_model
    from companion.runs.task_model import RECIPES as TASK_RECIPES

    record = SHIPPED[name]
    recipe = RECIPES[name] if name in RECIPES else TASK_RECIPES[name]
    assert record.recipe_key == recipe.cache_key()
    folder = SHIPPED_DIR / name
    assert {p.name for p in folder.iterdir() if p.is_file()} == set(record.sha256)
    for filename, digest in record.sha256.items():
        assert sha256_of(folder / filename) == digest, filename
    monkeypatch.setattr(type(recipe), "run", lambda *a, **k: pytest.fail("trained instead"))
    shipped = course_model(name, cache_dir=tmp_path)
    assert shipped.info["source"] == "shipped" and not shipped.model.training
    assert shipped.info["recipe_key"] == record.recipe_key
    assert not any(tmp_path.iterdir())  # nothing written to the cache
    again = course_model(name, cache_dir=tmp_path)
    assert same_weights(again.model, shipped.model)


def test_damaged_shipped_weights_warn_and_the_recipe_is_trained(tiny: Recipe, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    record = pretrained_module.ship(tiny, tmp_path / "shipped" / tiny.name)
    monkeypatch.setattr(pretrained_module, "SHIPPED_DIR", tmp_path / "shipped")
    monkeypatch.setattr(pretrained_module, "SHIPPED", {tiny.name: record})
    good = pretrained(tiny, cache_dir=tmp_path / "cache", progress=False)
    assert good.info["source"] == "shipped" and good.info["made_with"]["torch"] == torch.__version__
    (tmp_path / "shipped" / tiny.name / "model.safetensors").write_bytes(b"damaged")
    with pytest.warns(UserWarning, match="shipped weights of 'tiny-test' are damaged"):
        fallback = pretrained(tiny, cache_dir=tmp_path / "cache", progress=False)
    assert fallback.info["source"] == "trained" and same_weights(fallback.model, good.model)
    # a recipe that changed since the weights were made does not use them
    other = pretrained(tiny.replace(seed=9), cache_dir=tmp_path / "cache", progress=False)
    assert other.info["source"] == "trained"


def test_the_package_root_finds_pretrained_and_fine_tuned_models() -> None:
    import companion
    from companion.runs.task_model import RECIPES as TASK_RECIPES

    assert companion.list_models() == [*RECIPES, *TASK_RECIPES]
    assert "shakespeare-tasks" in companion.list_models()
    with pytest.raises(KeyError, match="unknown course model 'gpt-9'; known models: shakespeare-small"):
        companion.pretrained("gpt-9")


def test_train_recipe_refuses_a_fine_tuning_recipe() -> None:
    from companion.runs.task_model import RECIPES as TASK_RECIPES

    with pytest.raises(TypeError, match="call its run"):
        pretrained_module.train_recipe(TASK_RECIPES["shakespeare-tasks"])


# ------------------------------------------------------------ issue 18
class _Trained(Exception):
    """Raised by a stand-in for train_recipe: the test wants to know that training started."""


def _no_training(*args: object, **kwargs: object) -> None:
    raise _Trained


def test_missing_shipped_weights_warn_before_training(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A broken install (no companion/pretrained/<name>/) used to start a retrain without a word."""
    monkeypatch.setattr(pretrained_module, "SHIPPED_DIR", tmp_path / "not-installed")
    monkeypatch.setattr(pretrain_run, "train_recipe", _no_training)
    with pytest.warns(UserWarning, match=r"shipped weights of 'shakespeare-small' are missing .*reinstall it\. "
                                         r"Training the recipe on this machine instead \(about 4 minutes"), \
            pytest.raises(_Trained):
        pretrained("shakespeare-small", cache_dir=tmp_path / "cache", progress=False)


@pytest.mark.parametrize("damage", ["flipped bit", "nan weights"])
def test_a_damaged_cached_model_is_not_loaded(damage: str, tiny: Recipe, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Cached models used to load as source='cache' whatever their bytes held."""
    from safetensors.torch import load_file, save_file

    cache = tmp_path / "models"
    pretrained(tiny, cache_dir=cache, progress=False)
    weights = cache / "tiny-test" / "model.safetensors"
    if damage == "flipped bit":
        data = bytearray(weights.read_bytes())
        data[-3] ^= 0x40
        weights.write_bytes(bytes(data))
        expected = r"unusable \(checkpoint file .*model\.safetensors is corrupt: its SHA-256 is"
    else:
        tensors = load_file(weights)
        name = sorted(tensors)[0]
        tensors[name] = torch.full_like(tensors[name], float("nan"))
        save_file(tensors, weights, metadata={"format": "companion-checkpoint"})
        meta_path = cache / "tiny-test" / "checkpoint.json"
        meta = json.loads(meta_path.read_text())
        meta.setdefault("sha256", {})["model.safetensors"] = sha256_of(weights)  # as if cached with NaN
        meta_path.write_text(json.dumps(meta))
        expected = rf"unusable \(its weights {name} hold NaN or infinite values\)"
    monkeypatch.setattr(pretrain_run, "train_recipe", _no_training)
    with pytest.warns(UserWarning, match=expected), pytest.raises(_Trained):
        pretrained(tiny, cache_dir=cache, progress=False)


def test_a_cached_model_without_recorded_hashes_is_retrained(tiny: Recipe, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "models"
    pretrained(tiny, cache_dir=cache, progress=False)
    meta_path = cache / "tiny-test" / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    del meta["sha256"]
    meta_path.write_text(json.dumps(meta))
    monkeypatch.setattr(pretrain_run, "train_recipe", _no_training)
    with pytest.warns(UserWarning, match=r"unusable \(it has no record of its files' SHA-256"), pytest.raises(_Trained):
        pretrained(tiny, cache_dir=cache, progress=False)
