"""Tests for companion.checkpoint: round trips, clear errors, atomic writes, exact resuming."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import companion.checkpoint as ckpt
from companion import GPTConfig, GPTModel
from companion.checkpoint import (
    CheckpointError,
    CheckpointNotFoundError,
    find_checkpoint,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from companion.data import SlidingWindowDataset
from companion.tokenizers import BPETokenizer, gpt2_tokenizer
from companion.history import TrainHistory
from companion.optim import configure_optimizer
from companion.train import train

CFG = GPTConfig(vocab_size=64, context_length=16, emb_dim=32, n_heads=4, n_layers=2)


def build(cfg: GPTConfig = CFG, seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(cfg)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def stepped_optimizer(model: GPTModel, steps: int = 2) -> torch.optim.Optimizer:
    opt = configure_optimizer(model, lr=1e-3, betas=(0.9, 0.95))
    for _ in range(steps):
        x = torch.randint(0, 64, (2, 8))
        model(x).sum().backward()
        opt.step()
        opt.zero_grad()
    return opt


# ------------------------------------------------------------- round trips
@pytest.mark.parametrize("tied", [False, True])
def test_model_round_trip(tmp_path: Path, tied: bool) -> None:
    model = build(CFG.replace(tie_embeddings=tied, qkv_bias=True))
    path = save_checkpoint(tmp_path / "ck", model, extra={"note": "hi", "n": [1, 2]})
    assert path == tmp_path / "ck"
    assert sorted(p.name for p in path.iterdir()) == ["checkpoint.json", "config.json", "model.safetensors"]
    assert json.loads((path / "config.json").read_text()) == model.config.to_dict()

    loaded, info = load_checkpoint(path)
    assert isinstance(loaded, GPTModel) and loaded.config == model.config
    assert same_weights(loaded, model)
    assert (loaded.out_head.weight is loaded.tok_emb.weight) == tied
    assert info["extra"] == {"note": "hi", "n": [1, 2]}
    assert info["step"] is None and info["history"] is None and info["tokenizer"] is None
    assert info["rng_state"] is None and info["path"] == path

    into = build(model.config, seed=1)
    assert not same_weights(into, model)
    same, _ = load_checkpoint(path, model=into)
    assert same is into and same_weights(into, model)


def test_optimizer_history_and_tokenizer_round_trip(tmp_path: Path) -> None:
    model = build()
    opt = stepped_optimizer(model)
    history = TrainHistory(steps=[2], tokens_seen=[32], train_loss=[4.0], val_loss=[None], lr=[1e-3],
                           batch_losses=[4.1, 3.9], elapsed=0.5)
    tokenizer = BPETokenizer.train("hello world, hello there " * 10, 270)
    rng_at_save = get_rng_state()
    save_checkpoint(tmp_path / "ck", model, optimizer=opt, step=2, history=history, tokenizer=tokenizer)

    model2 = build(seed=1)
    opt2 = configure_optimizer(model2, lr=5.0, betas=(0.5, 0.5))
    _, info = load_checkpoint(tmp_path / "ck", model=model2, optimizer=opt2)
    assert same_weights(model2, model)
    assert info["step"] == 2 and info["history"] == history
    assert info["tokenizer"].encode("hello there") == tokenizer.encode("hello there")
    state, state2 = opt.state_dict(), opt2.state_dict()
    assert state["param_groups"] == state2["param_groups"]
    assert opt2.param_groups[0]["betas"] == (0.9, 0.95)  # a tuple again
    assert state["state"].keys() == state2["state"].keys()
    for index, values in state["state"].items():
        for key, value in values.items():
            assert torch.equal(value, state2["state"][index][key]), (index, key)
    assert torch.equal(info["rng_state"]["cpu"], rng_at_save["cpu"])


def test_gpt2_tokenizer_is_recorded_by_name(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ck", build(), tokenizer=gpt2_tokenizer())
    assert json.loads((tmp_path / "ck" / "checkpoint.json").read_text())["tokenizer"] == {"kind": "gpt2"}
    assert load_checkpoint(tmp_path / "ck")[1]["tokenizer"].encode("Hello, do") == [15496, 11, 466]
    with pytest.raises(TypeError, match="cannot save a tokenizer"):
        save_checkpoint(tmp_path / "other", build(), tokenizer=object())


def test_rng_state_round_trip() -> None:
    state = get_rng_state()
    a = torch.rand(3)
    set_rng_state(state)
    assert torch.equal(torch.rand(3), a)


def test_loading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = build()
    save_checkpoint(tmp_path / "ck", model, optimizer=stepped_optimizer(model), step=2)

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling is not allowed")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    loaded, _ = load_checkpoint(tmp_path / "ck", optimizer=configure_optimizer(build()))
    assert same_weights(loaded, model)
    for file in (tmp_path / "ck").iterdir():
        assert b"\x80\x04\x95" not in file.read_bytes()[:64]  # no pickle protocol header anywhere


# ------------------------------------------------------------------ errors
def test_shape_mismatch_names_every_tensor(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ck", build())
    other = build(CFG.replace(emb_dim=48, vocab_size=70))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "ck", model=other)
    message = str(err.value)
    assert "tok_emb.weight: expected (70, 48), found (64, 32)" in message
    assert "pos_emb.weight: expected (16, 48), found (16, 32)" in message
    assert "trf_blocks.1.ff.layers.0.weight: expected (192, 48), found (128, 32)" in message
    assert str(tmp_path / "ck" / "model.safetensors") in message

    deeper = build(CFG.replace(n_layers=3))
    with pytest.raises(CheckpointError, match=r"trf_blocks\.2\.att\.W_query\.weight: in the model .* missing"):
        load_checkpoint(tmp_path / "ck", model=deeper)


def test_missing_and_corrupt_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFoundError, match="checkpoint.json is missing"):
        load_checkpoint(tmp_path / "empty")

    path = tmp_path / "ck"
    save_checkpoint(path, build())
    weights = path / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # cut short
    with pytest.raises(CheckpointError, match=f"{weights}.*corrupt"):
        load_checkpoint(path)
    weights.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(path)
    weights.unlink()
    with pytest.raises(CheckpointNotFoundError, match=f"{weights} is missing"):
        load_checkpoint(path)
    weights.write_bytes(good)
    (path / "config.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="config.json is corrupt"):
        load_checkpoint(path)
    (path / "config.json").write_text(json.dumps({"vocab_size": 64}))
    with pytest.raises(CheckpointError, match="config.json is corrupt: its SHA-256 is"):
        load_checkpoint(path)
    meta = json.loads((path / "checkpoint.json").read_text())
    del meta["sha256"]  # as a checkpoint saved before hashes were recorded: the content is checked
    (path / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="config.json is not a valid GPTConfig"):
        load_checkpoint(path)


def test_optimizer_mismatches_are_errors(tmp_path: Path) -> None:
    model = build()
    save_checkpoint(tmp_path / "weights-only", model)
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        load_checkpoint(tmp_path / "weights-only", optimizer=configure_optimizer(model))
    save_checkpoint(tmp_path / "ck", model, optimizer=stepped_optimizer(model))
    with pytest.raises(CheckpointError, match="AdamW optimizer, not of a SGD"):
        load_checkpoint(tmp_path / "ck", optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(CheckpointError, match="does not fit the optimizer"):
        load_checkpoint(tmp_path / "ck", optimizer=torch.optim.AdamW(model.parameters()))  # one group, not two


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(tmp_path / "ck", build(), extra={"tensor": torch.zeros(1)})
    with pytest.raises(TypeError, match="GPTModel"):
        save_checkpoint(tmp_path / "ck", torch.nn.Linear(2, 2))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        save_checkpoint(tmp_path / "mine", build())
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


# ---------------------------------------------------------- atomic writes
def test_a_failure_while_writing_leaves_the_old_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = build(seed=0)
    save_checkpoint(tmp_path / "ck", old, step=1)
    real_save_model = ckpt.save_model

    def dies_half_way(model, filename, **kwargs):
        real_save_model(model, filename, **kwargs)
        with open(filename, "r+b") as f:  # a half-written file ...
            f.truncate(os.path.getsize(filename) // 2)
        raise KeyboardInterrupt  # ... and the process is interrupted

    monkeypatch.setattr(ckpt, "save_model", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "ck", build(seed=1), step=2)
    monkeypatch.undo()
    loaded, info = load_checkpoint(tmp_path / "ck")
    assert same_weights(loaded, old) and info["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["ck"]  # no temporary folder left


def test_a_failure_between_the_renames_restores_the_old_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = build(seed=0)
    save_checkpoint(tmp_path / "ck", old, step=1)
    real_replace = os.replace
    calls = []

    def second_fails(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", second_fails)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ck", build(seed=1), step=2)
    monkeypatch.undo()
    loaded, info = load_checkpoint(tmp_path / "ck")
    assert same_weights(loaded, old) and info["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["ck"]


def test_a_crash_between_the_renames_keeps_the_old_checkpoint_findable(tmp_path: Path) -> None:
    """A real process dies (``os._exit``) after moving the old checkpoint aside."""
    old = build(seed=0)
    save_checkpoint(tmp_path / "ck", old, step=1)
    script = textwrap.dedent(
        f"""
        import os, torch
        import companion.checkpoint as ckpt
        from companion import GPTConfig, GPTModel
        real_replace = os.replace
        calls = []
        def crash_on_second(src, dst):
            calls.append(src)
            if len(calls) == 2:
                os._exit(3)  # no cleanup runs: like a killed process
            real_replace(src, dst)
        ckpt.os.replace = crash_on_second
        cfg = GPTConfig.from_dict({CFG.to_dict()!r})
        ckpt.save_checkpoint({str(tmp_path / "ck")!r}, GPTModel(cfg), step=2)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert not (tmp_path / "ck").exists()  # the name is free, the old checkpoint under a backup name
    backup = find_checkpoint(tmp_path / "ck")
    assert backup is not None and backup.name.startswith(".ck.old-")
    loaded, info = load_checkpoint(tmp_path / "ck")
    assert same_weights(loaded, old) and info["step"] == 1
    # the next save puts things in order: one checkpoint, no backup or temporary folder
    newer = build(seed=2)
    save_checkpoint(tmp_path / "ck", newer, step=3)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["ck"]
    loaded, info = load_checkpoint(tmp_path / "ck")
    assert same_weights(loaded, newer) and info["step"] == 3


# ---------------------------------------------------------------- resuming
class Crash(Exception):
    pass


def resumable_run(checkpoint_dir: Path | None, *, crash_at: int | None = None, init_seed: int = 0):
    """A short run with dropout, warmup, cosine decay and several epochs."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 64, (160,), generator=g)
    train_loader = DataLoader(SlidingWindowDataset(ids[:120], 16, stride=8), batch_size=4, shuffle=True,
                              drop_last=True)  # 13 windows: 3 batches per epoch
    val_loader = DataLoader(SlidingWindowDataset(ids[120:], 16, stride=16), batch_size=2)
    model = build(CFG.replace(drop_rate=0.2), seed=init_seed)

    def callback(step: int, history: TrainHistory) -> None:
        if step == crash_at:
            raise Crash

    history = train(model, train_loader, val_loader, max_steps=14, eval_every=4, lr=3e-3, warmup_steps=3,
                    min_lr=3e-4, weight_decay=0.1, progress=False, seed=11, checkpoint_dir=checkpoint_dir,
                    checkpoint_every=5 if checkpoint_dir else None, callback=callback)
    return model, history


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    model_a, history_a = resumable_run(None)

    with pytest.raises(Crash):
        resumable_run(tmp_path / "run", crash_at=8)  # the last checkpoint is from step 5
    _, info = load_checkpoint(tmp_path / "run")
    assert info["step"] == 5 and info["history"].batch_losses == history_a.batch_losses[:5]

    # a different initialisation proves that the weights come from the checkpoint
    model_b, history_b = resumable_run(tmp_path / "run", init_seed=99)
    assert history_b.batch_losses == history_a.batch_losses  # exactly, float for float
    assert history_b.val_loss == history_a.val_loss
    assert history_b.train_loss == history_a.train_loss
    assert history_b.steps == history_a.steps and history_b.tokens_seen == history_a.tokens_seen
    assert history_b.lr == history_a.lr
    assert same_weights(model_b, model_a)
    _, info = load_checkpoint(tmp_path / "run")
    assert info["step"] == 14

    # resuming a finished run changes nothing
    model_c, history_c = resumable_run(tmp_path / "run", init_seed=5)
    assert history_c.batch_losses == history_a.batch_losses and same_weights(model_c, model_a)


def test_resume_false_starts_afresh(tmp_path: Path) -> None:
    model_a, history_a = resumable_run(None)
    with pytest.raises(Crash):
        resumable_run(tmp_path / "run", crash_at=6)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 64, (160,), generator=g)
    loader = DataLoader(SlidingWindowDataset(ids[:120], 16, stride=8), batch_size=4, shuffle=True, drop_last=True)
    model = build(CFG.replace(drop_rate=0.2))
    history = train(model, loader, max_steps=2, progress=False, checkpoint_dir=tmp_path / "run", resume=False)
    assert len(history.batch_losses) == 2
    assert load_checkpoint(tmp_path / "run")[1]["step"] == 2


# ------------------------------------------------------------ damaged or unusual folders
@pytest.mark.parametrize(
    "field, value",
    [("history", "garbage"), ("step", "three"), ("step", -1), ("extra", [1]), ("tokenizer", "bpe"),
     ("optimizer", {"class": "AdamW"}), ("training_state", "yes"), ("history", {"steps": "x"})],
)
def test_valid_json_with_wrong_types_is_a_checkpoint_error(tmp_path: Path, field: str, value: object) -> None:
    """Failure mode: wrong types in checkpoint.json escaped as bare KeyError/TypeError."""
    folder = save_checkpoint(tmp_path / "ck", build(), step=3, history=TrainHistory(steps=[3]))
    meta = json.loads((folder / "checkpoint.json").read_text())
    meta[field] = value
    (folder / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=f"{folder / 'checkpoint.json'} is corrupt"):
        load_checkpoint(folder)


def test_a_half_deleted_backup_is_cleaned_up_by_the_next_save(tmp_path: Path) -> None:
    """Failure mode: a kill while deleting the backup left a .x.old-... folder forever."""
    save_checkpoint(tmp_path / "ck", build(seed=0), step=1)
    leftover = tmp_path / ".ck.old-0123abcd"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half of it")  # its checkpoint.json was deleted first
    save_checkpoint(tmp_path / "ck", build(seed=1), step=2)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["ck"]
    assert load_checkpoint(tmp_path / "ck")[1]["step"] == 2


def test_a_full_disk_is_an_os_error_that_names_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """safetensors reports a full disk as its own SafetensorError; callers catch OSError."""
    from safetensors import SafetensorError

    old = build(seed=0)
    save_checkpoint(tmp_path / "ck", old, step=1)

    def disk_full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')

    monkeypatch.setattr(ckpt, "save_model", disk_full)
    with pytest.raises(OSError, match=f"could not write the checkpoint {tmp_path / 'ck'}.*No space left"):
        save_checkpoint(tmp_path / "ck", build(seed=1), step=2)
    monkeypatch.undo()
    loaded, info = load_checkpoint(tmp_path / "ck")
    assert same_weights(loaded, old) and info["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["ck"]


def test_loading_does_not_move_the_callers_random_state(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ck", build())
    torch.manual_seed(5)
    before = torch.get_rng_state()
    load_checkpoint(tmp_path / "ck")
    assert torch.equal(torch.get_rng_state(), before)


def test_rng_states_of_several_processes_are_kept_apart(tmp_path: Path) -> None:
    torch.manual_seed(1)
    rank0 = get_rng_state()
    torch.manual_seed(2)
    rank1 = get_rng_state()
    state = {**rank0, **{f"rank1.{k}": v for k, v in rank1.items()}}
    save_checkpoint(tmp_path / "ck", build(), step=1, rng_state=state)
    saved = load_checkpoint(tmp_path / "ck")[1]["rng_state"]
    set_rng_state(saved, rank=1)
    assert torch.equal(torch.get_rng_state(), rank1["cpu"])
    set_rng_state(saved, rank=0)
    assert torch.equal(torch.get_rng_state(), rank0["cpu"])


# ------------------------------------------- issue 18: files stay inside the folder
def _bpe_checkpoint(path: Path) -> Path:
    save_checkpoint(path, build(), tokenizer=BPETokenizer.train("hello world, hello there " * 10, 270))
    return path


def _set_tokenizer_file(path: Path, name: str) -> None:
    meta = json.loads((path / "checkpoint.json").read_text())
    meta["tokenizer"]["file"] = name
    (path / "checkpoint.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("kind", ["absolute", "dotdot"])
def test_a_tokenizer_file_outside_the_folder_is_refused(tmp_path: Path, kind: str) -> None:
    path = _bpe_checkpoint(tmp_path / "ck")
    outside = tmp_path / "secret.json"
    (path / "tokenizer.json").rename(outside)  # a readable tokenizer, but outside the folder
    _set_tokenizer_file(path, str(outside) if kind == "absolute" else "../secret.json")
    with pytest.raises(CheckpointError, match=r"names the file .*secret\.json.*outside its folder"):
        load_checkpoint(path)


def test_a_symlink_pointing_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    path = _bpe_checkpoint(tmp_path / "ck")
    outside = tmp_path / "elsewhere.json"
    (path / "tokenizer.json").rename(outside)
    (path / "tokenizer.json").symlink_to(outside)
    with pytest.raises(CheckpointError, match=r"'tokenizer.json', which is outside its folder"):
        load_checkpoint(path)
    weights = tmp_path / "weights.safetensors"
    (path / "model.safetensors").rename(weights)
    (path / "model.safetensors").symlink_to(weights)
    with pytest.raises(CheckpointError, match=r"'model.safetensors', which is outside its folder"):
        load_checkpoint(path)


def test_a_checkpoint_reached_through_a_symlink_still_loads(tmp_path: Path) -> None:
    path = _bpe_checkpoint(tmp_path / "ck")
    (tmp_path / "latest").symlink_to(path)
    _, info = load_checkpoint(tmp_path / "latest")
    assert isinstance(info["tokenizer"], BPETokenizer)


# -------------------------------------- issue 18: recorded hashes, concurrent saves
def test_every_file_is_hashed_and_a_flipped_bit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ck"
    model = build()
    save_checkpoint(path, model, optimizer=stepped_optimizer(model), step=2)
    recorded = json.loads((path / "checkpoint.json").read_text())["sha256"]
    assert sorted(recorded) == ["config.json", "model.safetensors", "training_state.safetensors"]
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of the last weight: still a valid file, a silently different model
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors is corrupt: its SHA-256 is [0-9a-f]{64}, not the"):
        load_checkpoint(path)


def test_concurrent_saves_to_one_folder_all_succeed(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, torch
        from companion import GPTConfig, GPTModel
        from companion.checkpoint import save_checkpoint
        torch.manual_seed(int(sys.argv[1]))
        model = GPTModel(GPTConfig(vocab_size=64, context_length=16, emb_dim=32, n_heads=4, n_layers=2))
        for _ in range(15):
            save_checkpoint({str(tmp_path / "ck")!r}, model, step=int(sys.argv[1]))
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], stderr=subprocess.PIPE, text=True)
             for i in range(3)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    _, info = load_checkpoint(tmp_path / "ck")  # whole: one writer's checkpoint, its hashes verified
    assert info["step"] in (0, 1, 2)
