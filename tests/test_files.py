"""Tests for companion.files: the cache-folder rule, all-or-nothing writes, verified downloads.

Every file is written under ``tmp_path``; downloads go to ``pytest-httpserver``'s server
on the loopback interface. Failures (a full disk, an interrupt, a crash between two
renames) are simulated by replacing one standard-library call for the length of a test.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from companion import files
from companion.files import (
    ChecksumError,
    DownloadError,
    FolderBusyError,
    atomic_folder,
    atomic_write,
    cache_folder,
    fetch_verified,
    file_digest,
    folder_backups,
    folder_lock,
    recover_folder,
    sha256_of,
)


def _listing(folder: Path) -> list[str]:
    """Everything in a folder, hidden temporary files included (not the write locks, which stay by design)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".writing.lock"))


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under a folder, by relative path, with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- #
# The cache-folder rule
# --------------------------------------------------------------------------- #
def test_cache_folder_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = "COMPANION_TEST_FOLDER"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    # 1. the variable wins, with ~ expanded
    monkeypatch.setenv(env, str(tmp_path / "chosen"))
    assert cache_folder("models", env) == tmp_path / "chosen"
    monkeypatch.setenv(env, "~/elsewhere")
    assert cache_folder("models", env) == tmp_path / "home" / "elsewhere"
    # 2. then $XDG_CACHE_HOME/companion/<kind>
    monkeypatch.setenv(env, "")  # empty counts as unset
    assert cache_folder("models", env) == tmp_path / "xdg" / "companion" / "models"
    monkeypatch.delenv(env)
    assert cache_folder("data", env) == tmp_path / "xdg" / "companion" / "data"
    # 3. then ~/.cache/companion/<kind>
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_folder("gpt2", env) == tmp_path / "home" / ".cache" / "companion" / "gpt2"
    assert _listing(tmp_path) == []  # asking creates nothing


# --------------------------------------------------------------------------- #
# Hashes
# --------------------------------------------------------------------------- #
def test_digests_match_hashlib_across_chunks(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    payload = bytes(range(256)) * 1000  # 256,000 bytes: several read chunks
    path.write_bytes(payload)
    assert sha256_of(path) == hashlib.sha256(payload).hexdigest()
    assert sha256_of(str(path)) == file_digest(path) == file_digest(path, "sha256")
    assert file_digest(path, "md5") == hashlib.md5(payload).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_of(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


# --------------------------------------------------------------------------- #
# atomic_write
# --------------------------------------------------------------------------- #
def test_atomic_write_bytes_and_text(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    assert atomic_write(target, b"\x00\x01bytes") == target
    assert target.read_bytes() == b"\x00\x01bytes"
    assert atomic_write(str(target), "héllo\n") == target  # str paths, text as UTF-8
    assert target.read_bytes() == "héllo\n".encode()
    atomic_write(target, "héllo", encoding="latin-1")
    assert target.read_bytes() == "héllo".encode("latin-1")
    assert _listing(tmp_path) == ["out.bin"]


def test_atomic_write_renames_a_complete_file_over_the_old_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "model.json"
    target.write_text("old content\n", encoding="utf-8")
    new = "new content\n" * 10_000
    seen: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def watching_replace(src: Any, dst: Any) -> None:
        src, dst = Path(src), Path(dst)
        # At the moment of the rename: the new bytes are all in a temporary file next to
        # the target, and the target still holds the old bytes.
        assert src.parent == dst.parent == tmp_path and src.name.startswith(".")
        assert src.read_text(encoding="utf-8") == new
        assert dst.read_text(encoding="utf-8") == "old content\n"
        seen.append((src, dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", watching_replace)
    atomic_write(target, new)
    assert [dst for _, dst in seen] == [target]
    assert target.read_text(encoding="utf-8") == new
    assert _listing(tmp_path) == ["model.json"]


class _FailingFile:
    """A file whose ``write`` writes half the bytes, then raises ``error``."""

    def __init__(self, file: Any, error: BaseException) -> None:
        self._file, self._error = file, error

    def __enter__(self) -> _FailingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def write(self, data: bytes) -> int:
        self._file.write(data[: len(data) // 2])
        self._file.flush()
        raise self._error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


@pytest.mark.parametrize(
    "error", [OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), KeyboardInterrupt()], ids=["disk-full", "interrupt"]
)
def test_atomic_write_failing_mid_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    target = tmp_path / "tokenizer.json"
    target.write_text("old content\n", encoding="utf-8")
    opened: list[Path] = []

    def failing_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        opened.append(Path(path))
        return _FailingFile(open(path, mode, *args, **kwargs), error)

    monkeypatch.setattr(files, "open", failing_open, raising=False)  # only companion.files' open
    with pytest.raises(type(error)) as info:
        atomic_write(target, "new content\n" * 1000)
    assert len(opened) == 1 and opened[0] != target  # the bytes went to a temporary file
    if isinstance(error, OSError):
        assert info.value.errno == errno.ENOSPC
        assert str(target) in str(info.value) and info.value.filename == str(target)
    assert target.read_text(encoding="utf-8") == "old content\n"
    assert _listing(tmp_path) == ["tokenizer.json"]  # no temporary file left


def test_atomic_write_into_a_missing_folder_names_the_target(tmp_path: Path) -> None:
    # Failure mode 7: the error named the temporary file, not the file asked for.
    missing = tmp_path / "no-such-folder"
    target = missing / "tokenizer.json"
    with pytest.raises(FileNotFoundError) as info:
        atomic_write(target, "{}\n")
    message = str(info.value)
    assert str(target) in message
    assert f"the folder {missing} does not exist" in message
    assert ".tmp" not in message and ".tokenizer.json." not in message  # not the temporary name
    assert info.value.filename == str(target)
    assert _listing(tmp_path) == []


# --------------------------------------------------------------------------- #
# atomic_folder
# --------------------------------------------------------------------------- #
def test_atomic_folder_appears_whole(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    with atomic_folder(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".ckpt.tmp-")
        (tmp / "weights.bin").write_bytes(b"\x01" * 1000)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "meta.json").write_text("{}", encoding="utf-8")
        assert not target.exists()  # nothing under the final name until the block ends
    assert _tree(target) == {"sub/meta.json": b"{}", "weights.bin": b"\x01" * 1000}
    assert _listing(tmp_path) == ["ckpt"]


def test_atomic_folder_exception_leaves_the_old_folder(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "weights.bin").write_bytes(b"old")
    with pytest.raises(RuntimeError, match="died while writing"), atomic_folder(target) as tmp:
        (tmp / "weights.bin").write_bytes(b"new, half-written")
        raise RuntimeError("died while writing")
    assert _tree(target) == {"weights.bin": b"old"}
    assert _listing(tmp_path) == ["ckpt"]  # no temporary folder


def test_atomic_folder_replaces_an_existing_folder_without_a_backup(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "old-only.bin").write_bytes(b"old")
    (target / "shared.json").write_text("old", encoding="utf-8")
    with atomic_folder(target) as tmp:
        (tmp / "shared.json").write_text("new", encoding="utf-8")
        assert _tree(target) == {"old-only.bin": b"old", "shared.json": b"old"}
    assert _tree(target) == {"shared.json": b"new"}  # the new folder, not a mixture
    assert _listing(tmp_path) == ["ckpt"]  # the old one was not kept as a backup


def test_atomic_folder_failed_swap_puts_the_old_folder_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "weights.bin").write_bytes(b"old")
    real_replace = os.replace

    def failing_replace(src: Any, dst: Any) -> None:
        if Path(src).name.startswith(".ckpt.tmp-"):  # moving the new folder in
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError) as info, atomic_folder(target) as tmp:
        (tmp / "weights.bin").write_bytes(b"new")
    assert str(target) in str(info.value) and info.value.errno == errno.EIO
    assert _tree(target) == {"weights.bin": b"old"}
    assert _listing(tmp_path) == ["ckpt"]


def test_atomic_folder_in_a_missing_folder_names_the_target(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "ckpt"
    with pytest.raises(FileNotFoundError) as info, atomic_folder(target):
        pytest.fail("the block must not run")
    assert str(target) in str(info.value) and f"the folder {target.parent} does not exist" in str(info.value)
    assert _listing(tmp_path) == []


# --------------------------------------------------------------------------- #
# recover_folder and folder_backups
# --------------------------------------------------------------------------- #
MARKER = "meta.json"


def _is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def _make(folder: Path, content: dict[str, bytes], mtime: float | None = None) -> Path:
    folder.mkdir()
    for name, data in content.items():
        (folder / name).write_bytes(data)
    if mtime is not None:
        os.utime(folder, (mtime, mtime))
    return folder


def test_recover_folder_puts_the_newest_complete_backup_back(tmp_path: Path) -> None:
    # A save died between its two renames: the target is gone, its backups remain.
    target = tmp_path / "ckpt"
    older = _make(tmp_path / ".ckpt.old-aaaa", {MARKER: b"1", "weights.bin": b"older"}, mtime=1_000_000)
    newer = _make(tmp_path / ".ckpt.old-bbbb", {MARKER: b"2", "weights.bin": b"newer"}, mtime=2_000_000)
    _make(tmp_path / ".ckpt.tmp-cccc", {"weights.bin": b"half"})
    assert folder_backups(target, _is_complete) == [newer, older]
    recover_folder(target, _is_complete)
    assert _tree(target) == {MARKER: b"2", "weights.bin": b"newer"}
    assert _listing(tmp_path) == ["ckpt"]  # the older backup and the temporary folder are gone
    assert folder_backups(target, _is_complete) == []


def test_recover_folder_removes_a_half_deleted_backup(tmp_path: Path) -> None:
    # Failure mode 6b: removing a backup died half-way; its marker is gone already. It
    # is no checkpoint, must not be restored, and must not stay behind.
    target = _make(tmp_path / "ckpt", {MARKER: b"current", "weights.bin": b"current"})
    _make(tmp_path / ".ckpt.old-dddd", {"weights.bin": b"half-deleted"})
    assert folder_backups(target, _is_complete) == []
    recover_folder(target, _is_complete)
    assert _tree(target) == {MARKER: b"current", "weights.bin": b"current"}
    assert _listing(tmp_path) == ["ckpt"]


def test_recover_folder_never_restores_an_incomplete_backup(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    _make(tmp_path / ".ckpt.old-eeee", {"weights.bin": b"half-deleted"})
    recover_folder(target, _is_complete)
    assert not target.exists()
    assert _listing(tmp_path) == []


def test_recover_folder_leaves_other_folders_alone(tmp_path: Path) -> None:
    _make(tmp_path / ".other.old-ffff", {MARKER: b"x"})
    _make(tmp_path / "ckpt-2", {MARKER: b"y"})
    recover_folder(tmp_path / "ckpt", _is_complete)
    recover_folder(tmp_path / "missing" / "ckpt", _is_complete)  # a missing parent is fine
    assert _listing(tmp_path) == [".other.old-ffff", "ckpt-2"]


# --------------------------------------------------------------------------- #
# fetch_verified
# --------------------------------------------------------------------------- #
def _serve(httpserver: HTTPServer, path: str, body: bytes) -> str:
    httpserver.expect_request(path).respond_with_data(body, content_type="application/octet-stream")
    return httpserver.url_for(path)


def test_fetch_verified_without_a_known_hash_records_the_first_one(tmp_path: Path, httpserver: HTTPServer) -> None:
    cache = tmp_path / "cache"
    target = cache / "model.bin"
    sidecar = cache / "model.bin.sha256"
    first, second = b"first version\n" * 100, b"second version\n" * 100
    first_hash, second_hash = hashlib.sha256(first).hexdigest(), hashlib.sha256(second).hexdigest()

    url = _serve(httpserver, "/model.bin", first)
    assert fetch_verified(url, target, sha256=None, progress=False) == target
    assert target.read_bytes() == first
    assert sidecar.read_text(encoding="ascii") == first_hash + "\n"
    assert _listing(cache) == ["model.bin", "model.bin.sha256"]

    # A later call trusts the file because it matches the recorded hash: no download.
    assert fetch_verified(url, target, sha256=None, progress=False) == target
    assert len(httpserver.log) == 1

    # The file is lost and the server now sends other bytes: they are rejected.
    target.unlink()
    httpserver.clear()
    url = _serve(httpserver, "/model.bin", second)
    with pytest.raises(ChecksumError) as info:
        fetch_verified(url, target, sha256=None, progress=False)
    assert first_hash in str(info.value) and second_hash in str(info.value) and url in str(info.value)
    assert _listing(cache) == ["model.bin.sha256"]

    # A cached file that no longer matches the record is not trusted either.
    target.write_bytes(second)
    with pytest.raises(ChecksumError, match="not trusted"):
        fetch_verified(url, target, sha256=None, progress=False)
    assert target.read_bytes() == second  # left in place, as the message says
    assert sidecar.read_text(encoding="ascii") == first_hash + "\n"
    assert _listing(cache) == ["model.bin", "model.bin.sha256"]


def test_fetch_verified_checks_the_unpacked_bytes(tmp_path: Path, httpserver: HTTPServer) -> None:
    target = tmp_path / "member.txt"
    packed = b"HEADER\nthe member's text\n"
    kept = b"the member's text\n"
    url = _serve(httpserver, "/packed", packed)

    def unpack(path: Path) -> bytes | None:
        content = path.read_bytes()
        return content.removeprefix(b"HEADER\n") if content.startswith(b"HEADER\n") else None

    path = fetch_verified(url, target, sha256=hashlib.sha256(kept).hexdigest(), unpack=unpack, progress=False)
    assert path.read_bytes() == kept
    assert _listing(tmp_path) == ["member.txt"]

    other = tmp_path / "other.txt"
    with pytest.raises(DownloadError, match="is not the expected archive") as info:
        fetch_verified(url, other, sha256=None, unpack=lambda path: None, progress=False, by_hand="Do it yourself.")
    assert str(info.value).endswith("Do it yourself.")
    assert not isinstance(info.value, ChecksumError)
    assert _listing(tmp_path) == ["member.txt"]


def test_a_file_placed_by_hand_gets_its_hash_recorded_on_first_use(tmp_path: Path) -> None:
    """Issue 18: the offline error advises placing the file by hand; that copy is then checked like a download."""
    cache = tmp_path / "cache"
    cache.mkdir()
    target = cache / "gpt2-medium.safetensors"
    placed = b"weights placed by hand\n" * 50
    target.write_bytes(placed)
    url = "http://127.0.0.1:9/never-contacted"  # nothing listens: a download attempt would fail
    assert fetch_verified(url, target, sha256=None, progress=False) == target
    sidecar = cache / "gpt2-medium.safetensors.sha256"
    assert sidecar.read_text(encoding="ascii") == hashlib.sha256(placed).hexdigest() + "\n"
    target.write_bytes(placed[:-1] + b"!")  # changed afterwards: no longer trusted
    with pytest.raises(DownloadError, match="is not trusted"):
        fetch_verified(url, target, sha256=None, progress=False, timeout=1)


def test_folder_lock_is_one_lock_through_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    raised: list[BaseException] = []

    def second_writer() -> None:  # another thread (or process) waits, here at most 0.05 s
        try:
            with folder_lock(tmp_path / "link", timeout=0.05):
                pass
        except FolderBusyError as err:
            raised.append(err)

    with folder_lock(real):
        with folder_lock(real):  # the holder may take it again (save_checkpoint around atomic_folder)
            thread = threading.Thread(target=second_writer)
            thread.start()
            thread.join()
    assert len(raised) == 1 and "another process has been writing" in str(raised[0]) and "real" in str(raised[0])
    thread = threading.Thread(target=second_writer)  # released: free again
    thread.start()
    thread.join()
    assert len(raised) == 1
