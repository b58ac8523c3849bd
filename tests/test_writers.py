"""Fault injection for every writer of the package (issue 18).

Each writer keeps a reader's work safe whatever happens while it writes: the process is
killed mid-write, the disk fills up, the folder is read-only, or a second writer writes
the same place at the same time. The tests are parametrised over ``WRITERS``, so a new
writer is added there and gets every test.

A writer writes "version" ``v`` of its content; its reader returns the version it finds
(or ``None``). After any fault the reader finds a whole old or new version, never a mix,
and nothing half-written is left that a later write trips over.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]

from companion.checkpoint import load_checkpoint, save_checkpoint
from companion.config import GPTConfig
from companion.files import atomic_folder, atomic_write
from companion.model import GPTModel
from companion.tokenizers import BPETokenizer

CFG = GPTConfig(vocab_size=64, context_length=8, emb_dim=16, n_heads=2, n_layers=1)


def _model(version: int) -> GPTModel:
    torch.manual_seed(version)
    return GPTModel(CFG)


def _write_checkpoint(target: Path, version: int) -> None:
    save_checkpoint(target, _model(version), step=version, extra={"version": version})


def _read_checkpoint(target: Path) -> int | None:
    model, info = load_checkpoint(target)  # verifies every file against its recorded hash
    version = info["extra"]["version"]
    expected = _model(version).state_dict()
    assert all(torch.equal(t, expected[k]) for k, t in model.state_dict().items()), "weights of another version"
    return int(version)


def _write_tokenizer(target: Path, version: int) -> None:
    BPETokenizer([], special_tokens={"<|endoftext|>": 256 + version}).save(target)


def _read_tokenizer(target: Path) -> int | None:
    return BPETokenizer.load(target).eot_token - 256


def _write_file(target: Path, version: int) -> None:
    atomic_write(target, f"{version}\n" * 200_000)  # big enough that a kill can land inside the write


def _read_file(target: Path) -> int | None:
    lines = target.read_text().splitlines()
    assert len(lines) == 200_000 and len(set(lines)) == 1, "a mixture of two versions"
    return int(lines[0])


def _write_folder(target: Path, version: int) -> None:
    with atomic_folder(target) as tmp:
        for i in range(20):
            (tmp / f"part{i}.txt").write_text(f"{version}\n" * 5_000)


def _read_folder(target: Path) -> int | None:
    found = {(target / f"part{i}.txt").read_text() for i in range(20)}
    assert len(found) == 1, "a folder mixing two versions"
    return int(found.pop().split("\n", 1)[0])


@dataclass(frozen=True)
class Writer:
    """A writer under test: how to write version ``v`` to ``target`` and read it back.

    ``tidies``: the next write removes what a killed one left (``save_checkpoint`` does;
    the two primitives leave a hidden temporary file or folder, which is never read).
    ``names_target``: its errors name the target (``atomic_folder``'s come from the
    caller's own writes inside the block, which name what the caller wrote).
    """

    write: Callable[[Path, int], None]
    read: Callable[[Path], int | None]
    name: str  # the file or folder name of its target
    tidies: bool = False
    names_target: bool = True


WRITERS = {
    # save_checkpoint is also the writer of the model cache (pretrained()'s save) and of train()'s checkpoints
    "checkpoint": Writer(_write_checkpoint, _read_checkpoint, "ck", tidies=True),
    "tokenizer": Writer(_write_tokenizer, _read_tokenizer, "tokenizer.json"),
    "atomic_write": Writer(_write_file, _read_file, "data.txt"),
    "atomic_folder": Writer(_write_folder, _read_folder, "folder", names_target=False),
}


def _leftovers(folder: Path, name: str) -> list[str]:
    """Temporary files or folders of a write to ``name`` (lock files are meant to stay)."""
    return sorted(p.name for p in folder.iterdir() if p.name != name and not p.name.endswith(".lock"))


# --------------------------------------------------------------------------- #
# Killed mid-write
# --------------------------------------------------------------------------- #
_KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    import test_writers as t
    writer, target = t.WRITERS[sys.argv[1]], Path(sys.argv[2])
    version = 1
    while True:
        version = 3 - version
        writer.write(target, version)
        Path(str(target) + ".written").touch()
    """
)


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_writer_killed_mid_write_leaves_a_whole_version(kind: str, tmp_path: Path) -> None:
    writer = WRITERS[kind]
    target = tmp_path / writer.name
    writer.write(target, 1)
    marker = Path(str(target) + ".written")
    process = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, kind, str(target), str(Path(__file__).parent)])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():  # at least one whole write, then kill it somewhere in the next ones
            assert process.poll() is None, "the writer died on its own"
            assert time.monotonic() < deadline, "the writer never finished a write"
            time.sleep(0.01)
        time.sleep(0.05)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    marker.unlink()
    assert writer.read(target) in (1, 2)
    writer.write(target, 3)  # the next write is not tripped up by what the killed one left
    assert writer.read(target) == 3
    if writer.tidies:
        assert _leftovers(tmp_path, writer.name) == []


# --------------------------------------------------------------------------- #
# A full disk, a read-only folder
# --------------------------------------------------------------------------- #
@contextlib.contextmanager
def _no_space(limit: int = 512) -> Iterator[None]:
    """Let this process write files of at most ``limit`` bytes, as a nearly full disk would.

    ``RLIMIT_FSIZE`` makes every longer write fail with ``EFBIG`` (Python's ``open``, and the
    Rust code of safetensors alike); the signal that would kill the process is ignored.
    """
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


@pytest.mark.skipif(resource is None, reason="needs RLIMIT_FSIZE (POSIX)")
@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_full_disk_keeps_the_old_version_and_names_the_target(kind: str, tmp_path: Path,
                                                              capfd: pytest.CaptureFixture[str]) -> None:
    writer = WRITERS[kind]
    target = tmp_path / writer.name
    writer.write(target, 1)
    with capfd.disabled(), _no_space(), pytest.raises(OSError) as raised:
        writer.write(target, 2)
    assert writer.name in str(raised.value) or not writer.names_target, raised.value
    assert writer.read(target) == 1
    assert _leftovers(tmp_path, writer.name) == []  # a failed write removes its temporary file or folder
    writer.write(target, 2)
    assert writer.read(target) == 2


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes to read-only folders")
@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_read_only_folder_keeps_the_old_version(kind: str, tmp_path: Path) -> None:
    writer = WRITERS[kind]
    target = tmp_path / writer.name
    writer.write(target, 1)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(OSError) as raised:
            writer.write(target, 2)
        assert writer.name in str(raised.value)
    finally:
        tmp_path.chmod(0o755)
    assert writer.read(target) == 1


# --------------------------------------------------------------------------- #
# A second writer at the same time
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_concurrent_writers_all_succeed_and_one_version_wins(kind: str, tmp_path: Path) -> None:
    writer = WRITERS[kind]
    target = tmp_path / writer.name
    errors: list[BaseException] = []

    def write_many(version: int) -> None:
        try:
            for _ in range(6):
                writer.write(target, version)
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=write_many, args=(v,)) for v in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert writer.read(target) in (1, 2)
    assert _leftovers(tmp_path, writer.name) == []
