"""Tests for companion.data: the file registry, the download cache, and sliding windows.

Downloads are tested for real, over HTTP, against a server on the loopback interface
that serves the course's own files from the shared data folder (``../shared/data``
from the repository root, or ``$COMPANION_SHARED_DATA``). Nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import tiktoken
import torch

from companion import data
from companion.data import (
    DATA_DIR_ENV,
    DATASETS,
    ChecksumError,
    DataUnavailableError,
    SlidingWindowDataset,
    create_dataloader,
    fetch,
    load_json,
    read_text,
    sha256_of,
)


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


# --------------------------------------------------------------------------- #
# A local HTTP server
# --------------------------------------------------------------------------- #
class _Routes:
    """What the test server answers, and a log of the paths it was asked for."""

    def __init__(self) -> None:
        self.bodies: dict[str, tuple[bytes, str]] = {}
        self.requests: list[str] = []
        self.base = ""

    def serve(self, path: str, body: bytes, mode: str = "ok") -> str:
        """Serve ``body`` at ``path``; mode "truncate" cuts it short, "slow" stalls."""
        self.bodies[path] = (body, mode)
        return self.base + path


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        routes: _Routes = self.server.routes  # type: ignore[attr-defined]
        routes.requests.append(self.path)
        if self.path not in routes.bodies:
            self.send_error(404)
            return
        body, mode = routes.bodies[self.path]
        if mode == "slow":
            time.sleep(1.0)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "truncate":
            # Promise the whole body, send half of it, then close the connection.
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


class _QuietServer(ThreadingHTTPServer):
    """Clients that give up mid-response (timeouts, aborted downloads) are expected here."""

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


@pytest.fixture
def server():
    """A threaded HTTP server on 127.0.0.1 (a free port), stopped after the test."""
    httpd = _QuietServer(("127.0.0.1", 0), _Handler)
    routes = _Routes()
    routes.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.routes = routes  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield routes
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


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
        assert sha256_of(path) == entry.sha256, name


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
def test_download_into_empty_cache(cache: Path, shared: Path, server: _Routes) -> None:
    good = (shared / "the-verdict.txt").read_bytes()
    url = server.serve("/the-verdict.txt", good)
    path = fetch("the-verdict", url=url, progress=False)
    assert path == cache / "the-verdict.txt"
    assert path.read_bytes() == good
    assert sha256_of(path) == DATASETS["the-verdict"].sha256
    assert server.requests == ["/the-verdict.txt"]
    assert _listing(cache) == ["the-verdict.txt"]


def test_second_fetch_uses_the_cache(cache: Path, shared: Path, server: _Routes) -> None:
    url = server.serve("/the-verdict.txt", (shared / "the-verdict.txt").read_bytes())
    first = fetch("the-verdict", url=url, progress=False)
    second = fetch("the-verdict", url=url, progress=False)
    third = fetch("the-verdict", progress=False)  # the canonical URL is never tried
    assert first == second == third
    assert server.requests == ["/the-verdict.txt"]


def test_read_only_seeded_cache_needs_no_network(
    shared: Path, server: _Routes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What CI does: point the variable at the read-only shared folder.
    monkeypatch.setenv(DATA_DIR_ENV, str(shared))
    for name, entry in DATASETS.items():
        url = server.serve(f"/{entry.filename}", b"never served")
        assert fetch(name, url=url, progress=False) == shared / entry.filename
    assert server.requests == []


def test_read_only_copy_of_the_cache(
    tmp_path: Path, shared: Path, server: _Routes, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "seeded"
    folder.mkdir()
    (folder / "the-verdict.txt").write_bytes((shared / "the-verdict.txt").read_bytes())
    folder.chmod(0o555)
    (folder / "the-verdict.txt").chmod(0o444)
    monkeypatch.setenv(DATA_DIR_ENV, str(folder))
    try:
        url = server.serve("/the-verdict.txt", b"never served")
        assert fetch("the-verdict", url=url, progress=False) == folder / "the-verdict.txt"
        assert server.requests == []
        assert _listing(folder) == ["the-verdict.txt"]
    finally:
        folder.chmod(0o755)


def test_corrupted_download_raises_and_keeps_nothing(
    cache: Path, shared: Path, server: _Routes
) -> None:
    bad = bytearray((shared / "the-verdict.txt").read_bytes())
    bad[100] ^= 0xFF
    url = server.serve("/the-verdict.txt", bytes(bad))
    with pytest.raises(ChecksumError) as info:
        fetch("the-verdict", url=url, progress=False)
    message = str(info.value)
    assert DATASETS["the-verdict"].sha256 in message
    assert hashlib.sha256(bytes(bad)).hexdigest() in message
    assert url in message
    assert isinstance(info.value, DataUnavailableError)
    assert _listing(cache) == []


def test_connection_dropped_mid_file(cache: Path, shared: Path, server: _Routes) -> None:
    url = server.serve("/the-verdict.txt", (shared / "the-verdict.txt").read_bytes(), "truncate")
    with pytest.raises(DataUnavailableError) as info:
        fetch("the-verdict", url=url, progress=False)
    assert not isinstance(info.value, ChecksumError)
    assert "IncompleteRead" in str(info.value)
    assert _listing(cache) == []


def test_http_error_is_unavailable(cache: Path, server: _Routes) -> None:
    url = server.base + "/missing.txt"
    with pytest.raises(DataUnavailableError, match="404"):
        fetch("the-verdict", url=url, progress=False)
    assert _listing(cache) == []


def test_timeout_is_unavailable(cache: Path, shared: Path, server: _Routes) -> None:
    url = server.serve("/the-verdict.txt", (shared / "the-verdict.txt").read_bytes(), "slow")
    with pytest.raises(DataUnavailableError, match="timed out"):
        fetch("the-verdict", url=url, progress=False, timeout=0.2)
    assert _listing(cache) == []


def test_offline_message_says_what_to_do(cache: Path) -> None:
    url = _refused_url()
    with pytest.raises(DataUnavailableError) as info:
        fetch("the-verdict", url=url, progress=False)
    message = str(info.value)
    assert "the-verdict.txt" in message
    assert url in message
    assert str(cache) in message
    assert str(cache / "the-verdict.txt") in message  # where to put it by hand
    assert DATA_DIR_ENV in message
    assert DATASETS["the-verdict"].url in message  # where to get it by hand
    assert _listing(cache) == []


def test_corrupted_cached_file_is_replaced(cache: Path, shared: Path, server: _Routes) -> None:
    good = (shared / "the-verdict.txt").read_bytes()
    cache.mkdir()
    (cache / "the-verdict.txt").write_bytes(good[:-1] + b"?")
    url = server.serve("/the-verdict.txt", good)
    path = fetch("the-verdict", url=url, progress=False)
    assert path.read_bytes() == good
    assert server.requests == ["/the-verdict.txt"]
    assert _listing(cache) == ["the-verdict.txt"]


def test_corrupted_cached_file_is_not_replaced_by_a_bad_download(
    cache: Path, shared: Path, server: _Routes
) -> None:
    stale = b"an old, wrong copy\n"
    cache.mkdir()
    (cache / "the-verdict.txt").write_bytes(stale)
    url = server.serve("/the-verdict.txt", b"also wrong\n")
    with pytest.raises(ChecksumError, match="not trusted"):
        fetch("the-verdict", url=url, progress=False)
    assert (cache / "the-verdict.txt").read_bytes() == stale
    assert _listing(cache) == ["the-verdict.txt"]


def test_interrupted_download_leaves_no_temporary_file(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(url: str, path: Path, **kwargs: object) -> None:
        path.write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "download_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fetch("the-verdict", progress=False)
    assert _listing(cache) == []


def test_sms_zip_is_extracted_and_normalised(cache: Path, shared: Path, server: _Routes) -> None:
    entry = DATASETS["sms-spam"]
    lf = (shared / "SMSSpamCollection").read_bytes()
    archive = _crlf_zip(entry.member, lf)
    url = server.serve("/sms+spam+collection.zip", archive)
    path = fetch("sms-spam", url=url, progress=False)
    assert path == cache / "SMSSpamCollection"
    assert sha256_of(path) == entry.sha256
    assert b"\r" not in path.read_bytes()
    assert _listing(cache) == ["SMSSpamCollection"]  # no zip, no temporary files


def test_sms_download_that_is_not_a_zip(cache: Path, server: _Routes) -> None:
    url = server.serve("/sms+spam+collection.zip", b"<html>not an archive</html>")
    with pytest.raises(DataUnavailableError, match="not a ZIP archive"):
        fetch("sms-spam", url=url, progress=False)
    assert _listing(cache) == []


def test_progress_false_prints_nothing(
    cache: Path, shared: Path, server: _Routes, capfd: pytest.CaptureFixture[str]
) -> None:
    url = server.serve("/the-verdict.txt", (shared / "the-verdict.txt").read_bytes())
    fetch("the-verdict", url=url, progress=False)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_progress_true_shows_a_bar(
    cache: Path, shared: Path, server: _Routes, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.serve("/the-verdict.txt", (shared / "the-verdict.txt").read_bytes())
    fetch("the-verdict", url=url, progress=True)
    assert "the-verdict.txt" in capsys.readouterr().err


def test_read_text_and_load_json(
    shared: Path, server: _Routes, monkeypatch: pytest.MonkeyPatch
) -> None:
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
def test_windows_agree_with_the_books_loop(
    num_tokens: int, context_length: int, stride: int
) -> None:
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


class SpecialAwareTokenizer:
    """Behaves like tiktoken: refuses <|endoftext|> unless allowed_special lets it in."""

    EOT = 999

    def encode(
        self, text: str, *, allowed_special: frozenset[str] | set[str] = frozenset()
    ) -> list[int]:
        if "<|endoftext|>" in text and "<|endoftext|>" not in allowed_special:
            raise ValueError("disallowed special token <|endoftext|>")
        ids: list[int] = []
        for i, part in enumerate(text.split("<|endoftext|>")):
            if i:
                ids.append(self.EOT)
            ids.extend(len(word) for word in part.split())
        return ids


TEXT = " ".join(f"w{i % 37}" for i in range(201))  # 201 tokens, 37 distinct words


def test_dataloader_batches() -> None:
    tokenizer = WordTokenizer(TEXT)
    ids = tokenizer.encode(TEXT)
    loader = create_dataloader(
        TEXT, tokenizer, batch_size=4, context_length=8, stride=8, shuffle=False
    )
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
        loader = create_dataloader(
            TEXT, tokenizer, batch_size=2, context_length=4, stride=4, seed=seed
        )
        return [x[:, 0].tolist() for x, _ in loader]

    unshuffled = [
        x[:, 0].tolist()
        for x, _ in create_dataloader(
            TEXT, tokenizer, batch_size=2, context_length=4, stride=4, shuffle=False
        )
    ]
    assert order(123) == order(123)
    assert order(123) != order(7)
    assert order(123) != unshuffled
    # Same windows, only the order differs.
    assert sorted(sum(order(123), [])) == sorted(sum(unshuffled, []))


def test_dataloader_lets_endoftext_through_a_tiktoken_like_tokenizer() -> None:
    text = "one two three <|endoftext|> four five six seven"
    loader = create_dataloader(
        text, SpecialAwareTokenizer(), batch_size=1, context_length=3, stride=1, shuffle=False
    )
    inputs = [x[0].tolist() for x, _ in loader]
    assert inputs[0] == [3, 3, 5]
    assert inputs[1] == [3, 5, SpecialAwareTokenizer.EOT]


def test_dataloader_with_a_real_tiktoken_encoding() -> None:
    # A byte-level tiktoken Encoding built in memory (no download): one token per byte.
    encoding = tiktoken.Encoding(
        name="test-bytes",
        pat_str=r"\S+|\s+",
        mergeable_ranks={bytes([b]): b for b in range(256)},
        special_tokens={"<|endoftext|>": 256},
    )
    text = "ab<|endoftext|>cd"
    loader = create_dataloader(
        text, encoding, batch_size=1, context_length=4, stride=1, shuffle=False
    )
    ids = [ord("a"), ord("b"), 256, ord("c"), ord("d")]
    assert [(x[0].tolist(), y[0].tolist()) for x, y in loader] == [(ids[:4], ids[1:])]


def test_dataloader_with_too_few_windows_for_a_batch() -> None:
    with pytest.raises(ValueError, match="batch_size=8"):
        create_dataloader(TEXT, WordTokenizer(TEXT), batch_size=8, context_length=100, stride=50)
    with pytest.raises(ValueError, match="201 tokens"):
        create_dataloader(TEXT, WordTokenizer(TEXT), context_length=256)
