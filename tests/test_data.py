"""Tests for companion.data: the file registry, the download cache, and sliding windows.

Downloads are tested for real, over HTTP, against ``pytest-httpserver``'s server on the
loopback interface (fixture ``httpserver``), which serves the course's own files from
the shared data folder (``../shared/data`` from the repository root, or
``$COMPANION_SHARED_DATA``). Nothing leaves the machine.

The tests run as root on CI, and root ignores file permissions, so a read-only cache is
simulated: ``make_read_only`` makes every write, rename or removal inside a folder raise
``OSError(EROFS)``, as a read-only mount does.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import io
import logging
import os
import re
import socket
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tiktoken
import torch
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from companion import data, files
from companion.data import (
    DATA_DIR_ENV,
    DATASETS,
    ChecksumError,
    DownloadError,
    SlidingWindowDataset,
    create_dataloader,
    fetch,
    load_json,
    read_text,
)
from companion.files import sha256_of
from companion.tokenizers import ENDOFTEXT, BPETokenizer


def _shared_data_dir() -> Path:
    configured = os.environ.get("COMPANION_SHARED_DATA")
    if configured:
        return Path(configured)
    repo_root = Path(__file__).resolve().parents[1]
    return repo_root.parent / "shared" / "data"


SHARED = _shared_data_dir()


@pytest.fixture
def shared() -> Path:
    """The folder holding the real data files (skip the test when it is missing)."""
    missing = [e.filename for e in DATASETS.values() if not (SHARED / e.filename).is_file()]
    if not (SHARED / "MANIFEST.md").is_file() or missing:
        pytest.skip(
            f"the course's data files are not in {SHARED} (missing: {missing or 'MANIFEST.md'}); "
            "set COMPANION_SHARED_DATA to the folder that holds them"
        )
    return SHARED


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder (not created yet), selected through the environment."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(DATA_DIR_ENV, str(folder))
    return folder


@pytest.fixture
def verdict_bytes(shared: Path) -> bytes:
    return (shared / "the-verdict.txt").read_bytes()


# --------------------------------------------------------------------------- #
# Helpers: what the server answers, what a folder holds, what an error says
# --------------------------------------------------------------------------- #
def _serve(httpserver: HTTPServer, path: str, body: bytes) -> str:
    """Serve ``body`` at ``path`` and return its URL."""
    httpserver.expect_request(path).respond_with_data(body, content_type="application/octet-stream")
    return httpserver.url_for(path)


def _requested(httpserver: HTTPServer) -> list[str]:
    """The paths the server was asked for, in order."""
    return [request.path for request, _ in httpserver.log]


def _refused_url() -> str:
    """An address on loopback where nothing listens (the connection is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/the-verdict.txt"


def _crlf_zip(member: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, content.replace(b"\n", b"\r\n"))
    return buffer.getvalue()


def _listing(folder: Path) -> list[str]:
    """Everything in a folder, hidden temporary files included."""
    return sorted(p.name for p in folder.iterdir())


def _assert_explains(message: str, name: str, url: str, folder: Path) -> None:
    """A download error names the file, the URL and the folder, and says how to fix it by hand."""
    entry = DATASETS[name]
    assert entry.filename in message
    assert url in message
    assert str(folder) in message
    assert "by hand" in message
    assert entry.url in message  # where to get it by hand
    assert str(folder / entry.filename) in message  # where to put it
    assert entry.sha256 in message  # what it must hash to
    assert DATA_DIR_ENV in message  # or where to point the cache


def _erofs(path: Any) -> OSError:
    return OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def make_read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make ``folder`` behave like a read-only file system, for root too.

    Opening a file inside it for writing, creating, renaming or removing anything in it
    raises ``OSError(EROFS)``. As on Linux, removing a file that does not exist raises
    EROFS too, not ENOENT; ``mkdir`` of a folder that exists still raises EEXIST.
    Reading is unaffected.
    """
    root = folder.resolve()

    def inside(path: Any) -> bool:
        if isinstance(path, int):
            return False
        resolved = Path(os.fsdecode(path)).resolve()
        return resolved == root or root in resolved.parents

    real_open = builtins.open

    def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(c in mode for c in "wxa+") and inside(file):
            raise _erofs(file)
        return real_open(file, mode, *args, **kwargs)

    real_os_open = os.open

    def fake_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & _WRITE_FLAGS and inside(path):
            raise _erofs(path)
        return real_os_open(path, flags, *args, **kwargs)

    def refuse_one(real: Callable[..., Any]) -> Callable[..., Any]:
        def fake(path: Any, *args: Any, **kwargs: Any) -> Any:
            if inside(path):
                raise _erofs(path)
            return real(path, *args, **kwargs)

        return fake

    def refuse_two(real: Callable[..., Any]) -> Callable[..., Any]:
        def fake(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
            if inside(src) or inside(dst):
                raise _erofs(dst)
            return real(src, dst, *args, **kwargs)

        return fake

    real_mkdir = os.mkdir

    def fake_mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if inside(path):
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(path))
            raise _erofs(path)
        real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    for name in ("unlink", "remove", "rmdir"):
        monkeypatch.setattr(os, name, refuse_one(getattr(os, name)))
    for name in ("replace", "rename"):
        monkeypatch.setattr(os, name, refuse_two(getattr(os, name)))
    monkeypatch.setattr(os, "mkdir", fake_mkdir)

    # The simulation itself: writing and removing fail as on a read-only mount.
    probe = folder / ".probe"
    with pytest.raises(OSError) as wrote:
        probe.write_bytes(b"")
    with pytest.raises(OSError) as removed:
        probe.unlink(missing_ok=True)
    assert wrote.value.errno == removed.value.errno == errno.EROFS
    folder.mkdir(parents=True, exist_ok=True)  # an existing folder is fine


# --------------------------------------------------------------------------- #
# The registry
# --------------------------------------------------------------------------- #
def test_registry_matches_manifest_and_files(shared: Path) -> None:
    row = re.compile(
        r"^\| `(?P<file>[^`]+)` \| (?P<size>[\d,]+) \| `(?P<sha>[0-9a-f]{64})` \| "
        r"(?P<url>\S+)(?: \(member `(?P<member>[^`]+)`\))? \|",
        re.MULTILINE,
    )
    manifest = {
        m["file"]: (int(m["size"].replace(",", "")), m["sha"], m["url"], m["member"])
        for m in row.finditer((shared / "MANIFEST.md").read_text(encoding="utf-8"))
    }
    registry = {e.filename: (e.size, e.sha256, e.url, e.member) for e in DATASETS.values()}
    assert registry == manifest
    assert set(DATASETS) == {
        "the-verdict",
        "tinyshakespeare",
        "sms-spam",
        "instruction-data",
        "instruction-data-with-preference",
    }
    for name, entry in DATASETS.items():
        assert entry.name == name
        path = shared / entry.filename
        assert path.stat().st_size == entry.size, name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256, name


def test_registry_entries_are_frozen() -> None:
    with pytest.raises(AttributeError):
        DATASETS["the-verdict"].sha256 = "0" * 64  # type: ignore[misc]


def test_unknown_name_lists_the_known_names(cache: Path) -> None:
    with pytest.raises(KeyError) as info:
        fetch("the-verdikt")
    message = str(info.value)
    assert "the-verdikt" in message
    assert all(name in message for name in DATASETS)
    assert not cache.exists()


def test_errors_are_the_files_modules_errors() -> None:
    assert data.DownloadError is files.DownloadError
    assert data.ChecksumError is files.ChecksumError
    assert issubclass(ChecksumError, DownloadError)
    assert not hasattr(data, "DataUnavailableError")


# --------------------------------------------------------------------------- #
# The cache folder
# --------------------------------------------------------------------------- #
def test_data_dir_from_env_var(cache: Path) -> None:
    assert DATA_DIR_ENV == "COMPANION_DATA_DIR"
    assert data.data_dir() == cache
    assert not cache.exists()  # asking for the folder creates nothing


def test_data_dir_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.data_dir() == tmp_path / "xdg" / "companion" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.data_dir() == tmp_path / "home" / ".cache" / "companion" / "data"
    monkeypatch.setenv(DATA_DIR_ENV, "")  # empty counts as unset
    assert data.data_dir() == tmp_path / "home" / ".cache" / "companion" / "data"
    assert not (tmp_path / "xdg").exists() and not (tmp_path / "home").exists()


# --------------------------------------------------------------------------- #
# fetch: downloads over HTTP
# --------------------------------------------------------------------------- #
def test_download_into_empty_cache(cache: Path, verdict_bytes: bytes, httpserver: HTTPServer) -> None:
    url = _serve(httpserver, "/the-verdict.txt", verdict_bytes)
    path = fetch("the-verdict", url=url, progress=False)
    assert path == cache / "the-verdict.txt"
    assert path.read_bytes() == verdict_bytes
    assert hashlib.sha256(path.read_bytes()).hexdigest() == DATASETS["the-verdict"].sha256
    assert _requested(httpserver) == ["/the-verdict.txt"]
    assert _listing(cache) == ["the-verdict.txt"]  # no temporary file, no hash file


def test_second_fetch_uses_the_cache(cache: Path, verdict_bytes: bytes, httpserver: HTTPServer) -> None:
    url = _serve(httpserver, "/the-verdict.txt", verdict_bytes)
    first = fetch("the-verdict", url=url, progress=False)
    second = fetch("the-verdict", url=url, progress=False)
    third = fetch("the-verdict", progress=False)  # the canonical URL is never tried
    assert first == second == third
    assert _requested(httpserver) == ["/the-verdict.txt"]


def test_read_only_seeded_cache_needs_no_network(
    shared: Path, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What CI does: point the variable at the shared folder, which it may not write.
    monkeypatch.setenv(DATA_DIR_ENV, str(shared))
    make_read_only(monkeypatch, shared)
    for name, entry in DATASETS.items():
        url = _serve(httpserver, f"/{entry.filename}", b"never served")
        assert fetch(name, url=url, progress=False) == shared / entry.filename
    assert _requested(httpserver) == []


def test_read_only_copy_of_the_cache(
    tmp_path: Path, verdict_bytes: bytes, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "seeded"
    folder.mkdir()
    (folder / "the-verdict.txt").write_bytes(verdict_bytes)
    folder.chmod(0o555)
    (folder / "the-verdict.txt").chmod(0o444)
    monkeypatch.setenv(DATA_DIR_ENV, str(folder))
    try:
        make_read_only(monkeypatch, folder)
        url = _serve(httpserver, "/the-verdict.txt", b"never served")
        assert fetch("the-verdict", url=url, progress=False) == folder / "the-verdict.txt"
        assert read_text("the-verdict", progress=False) == verdict_bytes.decode("utf-8")
        assert _requested(httpserver) == []
        assert _listing(folder) == ["the-verdict.txt"]
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("cached", ["nothing", "a stale copy"])
def test_read_only_cache_without_the_file_reports_the_download_error(
    cached: str,
    tmp_path: Path,
    verdict_bytes: bytes,
    httpserver: HTTPServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Failure mode: the cleanup of the ``.part`` file raised EROFS and replaced the
    # error that says why the file could not be cached.
    folder = tmp_path / "read-only"
    folder.mkdir()
    stale = b"an old, wrong copy\n"
    if cached == "a stale copy":
        (folder / "the-verdict.txt").write_bytes(stale)
    monkeypatch.setenv(DATA_DIR_ENV, str(folder))
    make_read_only(monkeypatch, folder)
    url = _serve(httpserver, "/the-verdict.txt", verdict_bytes)
    with pytest.raises(DownloadError) as info:
        fetch("the-verdict", url=url, progress=False)
    message = str(info.value)
    assert os.strerror(errno.EROFS) in message  # why: the folder cannot be written
    _assert_explains(message, "the-verdict", url, folder)
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.EROFS
    if cached == "a stale copy":
        assert "not trusted" in message
        assert (folder / "the-verdict.txt").read_bytes() == stale
        assert _listing(folder) == ["the-verdict.txt"]
    else:
        assert _listing(folder) == []


def test_cache_folder_that_cannot_be_created(
    tmp_path: Path, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n", encoding="utf-8")
    folder = blocker / "cache"
    monkeypatch.setenv(DATA_DIR_ENV, str(folder))
    url = _serve(httpserver, "/the-verdict.txt", b"never served")
    with pytest.raises(DownloadError, match="cannot be created") as info:
        fetch("the-verdict", url=url, progress=False)
    _assert_explains(str(info.value), "the-verdict", url, folder)
    assert _requested(httpserver) == []


def test_corrupted_download_raises_and_keeps_nothing(cache: Path, verdict_bytes: bytes, httpserver: HTTPServer) -> None:
    bad = bytearray(verdict_bytes)
    bad[100] ^= 0xFF
    url = _serve(httpserver, "/the-verdict.txt", bytes(bad))
    with pytest.raises(ChecksumError) as info:
        fetch("the-verdict", url=url, progress=False)
    message = str(info.value)
    assert hashlib.sha256(bytes(bad)).hexdigest() in message  # what arrived
    _assert_explains(message, "the-verdict", url, cache)
    assert isinstance(info.value, DownloadError)
    assert _listing(cache) == []


def test_connection_dropped_mid_file(cache: Path, verdict_bytes: bytes, httpserver: HTTPServer) -> None:
    # The server promises the whole file (Content-Length), sends half, and closes.
    short = Response(verdict_bytes[: len(verdict_bytes) // 2], content_type="application/octet-stream")
    short.headers["Content-Length"] = str(len(verdict_bytes))
    httpserver.expect_request("/the-verdict.txt").respond_with_response(short)
    url = httpserver.url_for("/the-verdict.txt")
    with pytest.raises(DownloadError) as info:
        fetch("the-verdict", url=url, progress=False)
    assert not isinstance(info.value, ChecksumError)
    assert "IncompleteRead" in str(info.value)
    _assert_explains(str(info.value), "the-verdict", url, cache)
    assert _listing(cache) == []


def test_http_404(cache: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/missing.txt").respond_with_data("no such file", status=404)
    url = httpserver.url_for("/missing.txt")
    with pytest.raises(DownloadError, match="404") as info:
        fetch("the-verdict", url=url, progress=False)
    assert not isinstance(info.value, ChecksumError)
    _assert_explains(str(info.value), "the-verdict", url, cache)
    assert _listing(cache) == []


def test_timeout(cache: Path, verdict_bytes: bytes, httpserver: HTTPServer) -> None:
    release = threading.Event()

    def stall(request: Request) -> Response:
        release.wait(10)  # answer only after the client has given up
        return Response(verdict_bytes)

    httpserver.expect_request("/the-verdict.txt").respond_with_handler(stall)
    url = httpserver.url_for("/the-verdict.txt")
    try:
        with pytest.raises(DownloadError, match="timed out") as info:
            fetch("the-verdict", url=url, progress=False, timeout=0.2)
    finally:
        release.set()
        # Let the server finish the late answer, so that it is not logged in the next test.
        deadline = time.monotonic() + 10
        while not httpserver.log and time.monotonic() < deadline:
            time.sleep(0.01)
    _assert_explains(str(info.value), "the-verdict", url, cache)
    assert _listing(cache) == []


def test_refused_connection_says_what_to_do(cache: Path) -> None:
    url = _refused_url()
    with pytest.raises(DownloadError) as info:
        fetch("the-verdict", url=url, progress=False)
    assert "refused" in str(info.value).lower()
    _assert_explains(str(info.value), "the-verdict", url, cache)
    assert _listing(cache) == []


def test_corrupted_cached_file_is_replaced(cache: Path, verdict_bytes: bytes, httpserver: HTTPServer) -> None:
    cache.mkdir()
    (cache / "the-verdict.txt").write_bytes(verdict_bytes[:-1] + b"?")
    url = _serve(httpserver, "/the-verdict.txt", verdict_bytes)
    path = fetch("the-verdict", url=url, progress=False)
    assert path.read_bytes() == verdict_bytes
    assert _requested(httpserver) == ["/the-verdict.txt"]
    assert _listing(cache) == ["the-verdict.txt"]


def test_corrupted_cached_file_is_not_replaced_by_a_bad_download(cache: Path, httpserver: HTTPServer) -> None:
    stale = b"an old, wrong copy\n"
    cache.mkdir()
    (cache / "the-verdict.txt").write_bytes(stale)
    url = _serve(httpserver, "/the-verdict.txt", b"also wrong\n")
    with pytest.raises(ChecksumError, match="not trusted") as info:
        fetch("the-verdict", url=url, progress=False)
    _assert_explains(str(info.value), "the-verdict", url, cache)
    assert (cache / "the-verdict.txt").read_bytes() == stale
    assert _listing(cache) == ["the-verdict.txt"]


def test_interrupted_download_leaves_no_temporary_file(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[Path] = []

    def interrupted(url: str, path: Path, **kwargs: object) -> None:
        path.write_bytes(b"half a file")
        started.append(path)
        raise KeyboardInterrupt

    monkeypatch.setattr(files, "download", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fetch("the-verdict", progress=False)
    assert len(started) == 1 and started[0].parent == cache  # the download did begin
    assert _listing(cache) == []


def test_sms_zip_is_extracted_and_normalised(cache: Path, shared: Path, httpserver: HTTPServer) -> None:
    entry = DATASETS["sms-spam"]
    lf = (shared / "SMSSpamCollection").read_bytes()
    archive = _crlf_zip(entry.member, lf)
    assert b"\r\n" in zipfile.ZipFile(io.BytesIO(archive)).read(entry.member)
    url = _serve(httpserver, "/sms+spam+collection.zip", archive)
    path = fetch("sms-spam", url=url, progress=False)
    assert path == cache / "SMSSpamCollection"
    assert path.read_bytes() == lf
    assert sha256_of(path) == entry.sha256
    assert b"\r" not in path.read_bytes()
    assert _listing(cache) == ["SMSSpamCollection"]  # no zip, no temporary files


@pytest.mark.parametrize(
    "body",
    [b"<html>not an archive</html>", _crlf_zip("README.txt", b"an archive without the member\n")],
    ids=["not-a-zip", "zip-without-the-member"],
)
def test_sms_download_that_cannot_be_unpacked(cache: Path, httpserver: HTTPServer, body: bytes) -> None:
    url = _serve(httpserver, "/sms+spam+collection.zip", body)
    with pytest.raises(DownloadError, match="not a ZIP archive holding 'SMSSpamCollection'") as info:
        fetch("sms-spam", url=url, progress=False)
    assert not isinstance(info.value, ChecksumError)
    message = str(info.value)
    _assert_explains(message, "sms-spam", url, cache)
    assert "extract the member 'SMSSpamCollection' with LF line endings" in message
    assert _listing(cache) == []


def test_progress_false_prints_nothing(
    cache: Path,
    verdict_bytes: bytes,
    httpserver: HTTPServer,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="werkzeug")  # the test server's request log
    url = _serve(httpserver, "/the-verdict.txt", verdict_bytes)
    fetch("the-verdict", url=url, progress=False)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_progress_true_shows_a_bar(
    cache: Path, verdict_bytes: bytes, httpserver: HTTPServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _serve(httpserver, "/the-verdict.txt", verdict_bytes)
    fetch("the-verdict", url=url, progress=True)
    assert "the-verdict.txt" in capsys.readouterr().err


def test_read_text_and_load_json(shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(shared))
    text = read_text("the-verdict", progress=False)
    assert text == (shared / "the-verdict.txt").read_text(encoding="utf-8")
    records = load_json("instruction-data", progress=False)
    assert len(records) == 1100
    assert set(records[0]) == {"instruction", "input", "output"}
    preference = load_json("instruction-data-with-preference", progress=False)
    assert len(preference) == 1100
    assert {"chosen", "rejected"} <= set(preference[0])
    with pytest.raises(ValueError, match="not JSON"):
        load_json("the-verdict")


# --------------------------------------------------------------------------- #
# SlidingWindowDataset
# --------------------------------------------------------------------------- #
def _as_lists(dataset: SlidingWindowDataset) -> list[tuple[list[int], list[int]]]:
    return [(x.tolist(), y.tolist()) for x, y in dataset]


def test_windows_known_answer() -> None:
    dataset = SlidingWindowDataset(list(range(10)), context_length=4, stride=2)
    assert _as_lists(dataset) == [
        ([0, 1, 2, 3], [1, 2, 3, 4]),
        ([2, 3, 4, 5], [3, 4, 5, 6]),
        ([4, 5, 6, 7], [5, 6, 7, 8]),
    ]
    # Windows that do not overlap; the last one uses the very last token as a target.
    dataset = SlidingWindowDataset(list(range(10)), context_length=3, stride=3)
    assert _as_lists(dataset) == [
        ([0, 1, 2], [1, 2, 3]),
        ([3, 4, 5], [4, 5, 6]),
        ([6, 7, 8], [7, 8, 9]),
    ]


@pytest.mark.parametrize("num_tokens", [6, 7, 17, 40])
@pytest.mark.parametrize("context_length", [1, 4, 5])
@pytest.mark.parametrize("stride", [1, 2, 3, 5, 8])
def test_windows_agree_with_the_books_loop(num_tokens: int, context_length: int, stride: int) -> None:
    ids = [(7 * i + 3) % 50 for i in range(num_tokens)]
    # The chapter's loop: every start i with range(0, len - context_length, stride).
    expected = [
        (ids[i : i + context_length], ids[i + 1 : i + context_length + 1])
        for i in range(0, len(ids) - context_length, stride)
    ]
    dataset = SlidingWindowDataset(ids, context_length=context_length, stride=stride)
    assert len(dataset) == (num_tokens - context_length - 1) // stride + 1 == len(expected)
    assert _as_lists(dataset) == expected
    for x, y in dataset:
        assert x.dtype == y.dtype == torch.long
        assert x.shape == y.shape == (context_length,)
        assert torch.equal(x[1:], y[:-1])  # the targets are the inputs shifted by one


def test_windows_are_views_of_one_tensor() -> None:
    ids = torch.arange(100)
    dataset = SlidingWindowDataset(ids, context_length=8, stride=4)
    assert dataset.token_ids.dtype == torch.long
    assert dataset.token_ids.shape == (100,)
    x, y = dataset[3]
    storage = dataset.token_ids.untyped_storage().data_ptr()
    assert x.untyped_storage().data_ptr() == storage
    assert y.untyped_storage().data_ptr() == storage
    assert x.tolist() == list(range(12, 20)) and y.tolist() == list(range(13, 21))


def test_window_indexing() -> None:
    dataset = SlidingWindowDataset(list(range(10)), context_length=4, stride=2)
    assert dataset[-1][0].tolist() == [4, 5, 6, 7]
    with pytest.raises(IndexError):
        dataset[3]
    with pytest.raises(IndexError):
        dataset[-4]


def test_exactly_one_window() -> None:
    dataset = SlidingWindowDataset([5, 6, 7], context_length=2, stride=10)
    assert _as_lists(dataset) == [([5, 6], [6, 7])]


def test_too_short_sequence_says_what_to_do() -> None:
    with pytest.raises(ValueError) as info:
        SlidingWindowDataset(list(range(4)), context_length=4, stride=1)
    message = str(info.value)
    assert "4 tokens" in message
    assert "needs 5" in message
    assert "shorter context_length" in message and "more text" in message


@pytest.mark.parametrize(
    ("context_length", "stride", "match"),
    [(0, 1, "context_length"), (-2, 1, "context_length"), (4, 0, "stride"), (4, -1, "stride")],
)
def test_non_positive_sizes_are_rejected(context_length: int, stride: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SlidingWindowDataset(list(range(20)), context_length=context_length, stride=stride)


def test_two_dimensional_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="one-dimensional"):
        SlidingWindowDataset(torch.zeros(2, 10, dtype=torch.long), context_length=4, stride=1)


# --------------------------------------------------------------------------- #
# create_dataloader
# --------------------------------------------------------------------------- #
class WordTokenizer:
    """A whitespace tokenizer stub: its encode takes no keywords at all."""

    def __init__(self, text: str) -> None:
        self.vocab = {word: i for i, word in enumerate(sorted(set(text.split())))}

    def encode(self, text: str) -> list[int]:
        return [self.vocab[word] for word in text.split()]


TEXT = " ".join(f"w{i % 37}" for i in range(201))  # 201 tokens, 37 distinct words


def test_dataloader_batches() -> None:
    tokenizer = WordTokenizer(TEXT)
    ids = tokenizer.encode(TEXT)
    loader = create_dataloader(TEXT, tokenizer, batch_size=4, context_length=8, stride=8, shuffle=False)
    batches = list(loader)
    assert len(loader) == len(batches) == 25 // 4  # 25 windows, the last 1 dropped
    for b, (x, y) in enumerate(batches):
        assert x.shape == y.shape == (4, 8)
        assert x.dtype == y.dtype == torch.long
        for row in range(4):
            start = (4 * b + row) * 8
            assert x[row].tolist() == ids[start : start + 8]
            assert y[row].tolist() == ids[start + 1 : start + 9]


def test_dataloader_keeps_the_last_small_batch() -> None:
    loader = create_dataloader(
        TEXT,
        WordTokenizer(TEXT),
        batch_size=4,
        context_length=8,
        stride=8,
        shuffle=False,
        drop_last=False,
    )
    assert [x.shape[0] for x, _ in loader] == [4, 4, 4, 4, 4, 4, 1]


def test_dataloader_shuffles_reproducibly() -> None:
    tokenizer = WordTokenizer(TEXT)

    def order(seed: int) -> list[list[int]]:
        loader = create_dataloader(TEXT, tokenizer, batch_size=2, context_length=4, stride=4, seed=seed)
        return [x[:, 0].tolist() for x, _ in loader]

    unshuffled = [
        x[:, 0].tolist()
        for x, _ in create_dataloader(TEXT, tokenizer, batch_size=2, context_length=4, stride=4, shuffle=False)
    ]
    assert order(123) == order(123)
    assert order(123) != order(7)
    assert order(123) != unshuffled
    # Same windows, only the order differs.
    assert sorted(i for batch in order(123) for i in batch) == sorted(i for batch in unshuffled for i in batch)


def test_dataloader_turns_endoftext_into_its_token_with_a_bpe_tokenizer() -> None:
    # BPETokenizer.encode refuses special tokens by default; the loader lets them through.
    tokenizer = BPETokenizer.train("one two three four five six seven", 270)
    text = "one two three <|endoftext|> four five six seven"
    with pytest.raises(ValueError, match="allowed_special"):
        tokenizer.encode(text)
    expected = tokenizer.encode(text, allowed_special={ENDOFTEXT})
    assert expected.count(tokenizer.eot_token) == 1
    loader = create_dataloader(
        text, tokenizer, batch_size=1, context_length=4, stride=4, shuffle=False, drop_last=False
    )
    ids = [i for x, _ in loader for i in x[0].tolist()]
    assert ids == expected[: len(ids)]
    assert tokenizer.eot_token in ids


def test_dataloader_calls_a_plain_encode_without_keywords() -> None:
    # Any object with encode(text) works; it is called with the text alone.
    text = "w1 w2 <|endoftext|> w3 w4 w5"
    tokenizer = WordTokenizer(text)
    loader = create_dataloader(text, tokenizer, batch_size=1, context_length=5, stride=1, shuffle=False)
    assert [x[0].tolist() for x, _ in loader] == [tokenizer.encode(text)[:5]]


def test_dataloader_with_a_real_tiktoken_encoding() -> None:
    # A byte-level tiktoken Encoding built in memory (no download): one token per byte.
    encoding = tiktoken.Encoding(
        name="test-bytes",
        pat_str=r"\S+|\s+",
        mergeable_ranks={bytes([b]): b for b in range(256)},
        special_tokens={"<|endoftext|>": 256},
    )
    text = "ab<|endoftext|>cd"
    loader = create_dataloader(text, encoding, batch_size=1, context_length=4, stride=1, shuffle=False)
    ids = [ord("a"), ord("b"), 256, ord("c"), ord("d")]
    assert [(x[0].tolist(), y[0].tolist()) for x, y in loader] == [(ids[:4], ids[1:])]


def test_dataloader_with_too_few_windows_for_a_batch() -> None:
    with pytest.raises(ValueError, match="batch_size=8"):
        create_dataloader(TEXT, WordTokenizer(TEXT), batch_size=8, context_length=100, stride=50)
    with pytest.raises(ValueError, match="201 tokens"):
        create_dataloader(TEXT, WordTokenizer(TEXT), context_length=256)
