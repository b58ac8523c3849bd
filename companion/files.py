"""Files: where the package keeps things, how it writes them, how it downloads them.

Every file the package writes, and every file it downloads, goes through this module,
so the rules below hold everywhere (data files, the course's models, checkpoints,
tokenizers, GPT-2's weights):

* **One cache-folder rule.** ``cache_folder(kind, env_var)``: the folder named by the
  environment variable if it is set, else ``$XDG_CACHE_HOME/companion/<kind>``, else
  ``~/.cache/companion/<kind>``.
* **All-or-nothing writes.** ``atomic_write`` writes a file under a temporary name in
  the same folder, flushes it to disk and renames it into place; ``atomic_folder`` does
  the same for a whole folder, keeping the previous folder until the new one is whole.
  A crash leaves either the old content or the new, never a mixture, and never
  deletes what was there before the new content is complete.
* **One writer at a time.** ``folder_lock`` makes a second process that writes the
  same folder wait until the first is done (a lock file next to the folder's real
  path), so two saves never remove each other's temporary folders.
* **Verified downloads.** ``fetch_verified`` downloads to a temporary file, checks the
  SHA-256 (after an optional unpacking step), and only then renames the file into the
  cache. A file whose hash does not match is never used or kept.

Why not ``pooch``: the course needs the hash checked on the *unpacked* file (the SMS
archive is recorded by the hash of its member with normalised line endings), a cache
that may be read-only, errors that say how to place a file by hand, and the same
atomic writes for files the package makes itself (checkpoints, tokenizers). One small
module does all of it with the standard library.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import filelock
from tqdm.auto import tqdm

__all__ = [
    "ChecksumError",
    "DownloadError",
    "FolderBusyError",
    "atomic_folder",
    "atomic_write",
    "cache_folder",
    "download",
    "fetch_verified",
    "file_digest",
    "folder_backups",
    "folder_lock",
    "recover_folder",
    "sha256_of",
]

_CHUNK_BYTES = 1 << 16
DEFAULT_TIMEOUT_S = 30.0
"""Seconds a download may wait for the server before it gives up."""


class DownloadError(RuntimeError):
    """A file is not in the cache and could not be downloaded, verified and cached."""


class ChecksumError(DownloadError):
    """Downloaded bytes do not hash to the recorded SHA-256 (they are not kept)."""


class FolderBusyError(OSError):
    """Another process has been writing the same folder for longer than the wait allows.

    An ``OSError`` (like a full disk): a folder that cannot be written now.
    """


# --------------------------------------------------------------------------- #
# Where things are kept
# --------------------------------------------------------------------------- #
def cache_folder(kind: str, env_var: str) -> Path:
    """The package's cache folder for ``kind`` (``"data"``, ``"models"``, ``"gpt2"``).

    ``$<env_var>`` if set, else ``$XDG_CACHE_HOME/companion/<kind>`` if that is set,
    else ``~/.cache/companion/<kind>``. The folder may not exist yet: nothing is created.
    """
    configured = os.environ.get(env_var)
    if configured:
        return Path(configured).expanduser()
    xdg_cache = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg_cache).expanduser() if xdg_cache else Path.home() / ".cache"
    return root / "companion" / kind


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """The hex digest of a file (``hashlib`` algorithm name), read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 of a file."""
    return file_digest(path, "sha256")


# --------------------------------------------------------------------------- #
# All-or-nothing writes
# --------------------------------------------------------------------------- #
def _fsync(path: Path) -> None:
    """Flush a file's or folder's data to disk (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    """Remove a leftover temporary file or folder; never raise (the cache may be read-only)."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _naming_target(err: OSError, target: Path, action: str) -> OSError:
    """The same kind of error, with a message that names ``target`` rather than a temporary file."""
    parent = target.parent
    if isinstance(err, FileNotFoundError) and not parent.is_dir():
        hint = f"the folder {parent} does not exist; create it first"
    else:
        hint = err.strerror or str(err)
    new = type(err)(err.errno or errno.EIO, f"cannot {action} {target}: {hint}")
    new.filename = str(target)
    return new


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, encoding: str = "utf-8") -> Path:
    """Write ``data`` to ``path`` all at once: a reader sees the old file or the new, never half.

    The bytes go to a hidden temporary file in the same folder, are flushed to disk,
    and the file is renamed over ``path`` (an atomic step on one file system).

    Args:
        path: The file to write; its folder must exist.
        data: Bytes, or text encoded with ``encoding``.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        OSError: The file cannot be written (the message names ``path``, not the
            temporary file); nothing is left behind and an old file is untouched.
    """
    target = Path(path)
    payload = data.encode(encoding) if isinstance(data, str) else bytes(data)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "xb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, target)
    except OSError as err:
        _remove_quietly(tmp)
        raise _naming_target(err, target, "write") from err
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync(target.parent)
    return target


def folder_backups(target: Path, is_complete: Callable[[Path], bool]) -> list[Path]:
    """Complete backups an interrupted ``atomic_folder`` left next to ``target``, newest first."""
    if not target.parent.is_dir():
        return []
    found = [p for p in target.parent.glob(f".{target.name}.old-*") if p.is_dir() and is_complete(p)]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def recover_folder(target: Path, is_complete: Callable[[Path], bool]) -> None:
    """Tidy what an interrupted ``atomic_folder`` left: put a backup back, drop the rest.

    If ``target`` is missing and a complete backup exists, the newest backup is renamed
    back to ``target``. Every other temporary or backup folder of ``target`` (complete
    or half-deleted) is removed, quietly.
    """
    if not target.parent.is_dir():
        return
    if not target.exists():
        backups = folder_backups(target, is_complete)
        if backups:
            with contextlib.suppress(OSError):
                os.replace(backups[0], target)
    for leftover in (*target.parent.glob(f".{target.name}.tmp-*"), *target.parent.glob(f".{target.name}.old-*")):
        _remove_quietly(leftover)


WRITE_LOCK_TIMEOUT_S = 600.0
"""Seconds a writer waits for another process writing the same folder before it gives up."""


@contextlib.contextmanager
def folder_lock(target: str | os.PathLike[str], *, timeout: float = WRITE_LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the write lock of a folder (or file): ``.<name>.writing.lock`` next to its real path.

    A second process (or thread) that asks for the same lock waits until the first
    releases it (at most ``timeout`` seconds); the thread that holds it may take it again. The path is resolved first, so a folder reached through a
    symbolic link has one lock. The operating system releases the lock of a process
    that dies, so a crash never leaves a folder locked. Where no lock file can be
    created (a read-only folder) there is nothing to guard and no lock is taken.

    Raises:
        FolderBusyError: Another process held the lock for all of ``timeout`` seconds.
    """
    real = Path(target).expanduser().resolve()
    # One lock object per path in this process (is_singleton): a thread that holds it may take it
    # again (save_checkpoint holds it around atomic_folder, which takes it for its swap), while
    # another thread or process waits.
    lock = filelock.FileLock(str(real.parent / f".{real.name}.writing.lock"), is_singleton=True)
    try:
        lock.acquire(timeout=timeout)
    except filelock.Timeout:
        raise FolderBusyError(
            f"another process has been writing {real} for {timeout:.0f} s (it holds {lock.lock_file}); "
            "wait for it to finish, or write somewhere else"
        ) from None
    except OSError:  # a read-only or missing folder: the write itself will say what is wrong
        yield
        return
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a folder under a temporary name, then swap it in for ``target`` in one step.

    Usage::

        with atomic_folder(out) as tmp:
            (tmp / "weights.bin").write_bytes(...)

    When the block ends normally, every file is flushed to disk and the temporary
    folder renamed to ``target``. An existing ``target`` is first renamed to a hidden
    backup (``.<name>.old-<hex>``), the new folder renamed into place, and the backup
    removed; if the process dies between the two renames, the backup is still whole and
    ``recover_folder`` puts it back. If the block raises, the temporary folder is removed
    and ``target`` is untouched. Two writers of one folder swap in turn (``folder_lock``),
    so the last one's folder is the one left.

    Raises:
        OSError: The folder cannot be created or renamed (the message names ``target``).
    """
    final = Path(target)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex}"
    try:
        tmp.mkdir()
    except OSError as err:
        raise _naming_target(err, final, "create") from err
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                _fsync(file)
        _fsync(tmp)
        try:
            with folder_lock(final):  # two swaps of one folder must not interleave
                if final.exists():
                    backup = final.parent / f".{final.name}.old-{uuid.uuid4().hex}"
                    os.replace(final, backup)
                    try:
                        os.replace(tmp, final)
                    except BaseException:
                        os.replace(backup, final)  # put the old folder back
                        raise
                    _remove_quietly(backup)
                else:
                    os.replace(tmp, final)
        except OSError as err:
            raise _naming_target(err, final, "replace") from err
        _fsync(final.parent)
    finally:
        _remove_quietly(tmp)  # already gone after a successful rename


# --------------------------------------------------------------------------- #
# Downloads
# --------------------------------------------------------------------------- #
def download(url: str, path: Path, *, desc: str, progress: bool, timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Stream ``url`` into a new file at ``path`` with a progress bar; raise if cut short.

    ``path`` must not exist (it is opened with ``"xb"``): callers write to a temporary
    name and rename it once the content is checked. Network failures raise
    ``urllib.error.URLError``, ``http.client.HTTPException`` or ``OSError``.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "companion/1"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length_header = response.headers.get("Content-Length")
        expected = int(length_header) if length_header and length_header.isdigit() else None
        received = 0
        with (
            open(path, "xb") as file,
            tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not progress) as bar,
        ):
            while chunk := response.read(_CHUNK_BYTES):
                file.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    # http.client returns b"" rather than raising when the server closes early.
    if expected is not None and received != expected:
        raise http.client.IncompleteRead(b"", expected - received)


def fetch_verified(
    url: str,
    target: str | os.PathLike[str],
    *,
    sha256: str | None,
    unpack: Callable[[Path], bytes | None] | None = None,
    expected_download: str = "the expected archive",
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
    by_hand: str = "",
) -> Path:
    """Return ``target``, downloading and verifying it first unless a good copy is there.

    * A cached ``target`` whose SHA-256 equals ``sha256`` is returned at once, without
      touching the network (so a read-only cache works).
    * Otherwise ``url`` is downloaded to a temporary file next to ``target``; ``unpack``
      (if given) turns the download into the bytes to keep (``None`` when it cannot);
      their SHA-256 is checked; only then are they renamed to ``target``.
    * ``sha256=None`` means no hash is known in advance: the first good download's hash
      is written next to the file (``<name>.sha256``) and every later use checks the
      file against it. A file placed by hand with no hash recorded yet is trusted the
      same way: its hash is recorded the first time it is used.

    Args:
        url: Where to download from.
        target: The cached file.
        sha256: Expected hex SHA-256 of the kept bytes, or ``None`` (see above).
        unpack: ``unpack(downloaded_path) -> bytes | None``, e.g. extract a ZIP member.
        expected_download: What the download should be, for the message when
            ``unpack`` returns ``None`` (e.g. "a ZIP archive holding 'data.csv'").
        progress: Show a ``tqdm`` progress bar while downloading.
        timeout: Seconds to wait for the server.
        by_hand: A sentence telling a person how to put the file in place themselves;
            every error ends with it.

    Raises:
        DownloadError: The download failed (offline, refused, timed out, cut short,
            not unpackable) or the cache folder cannot be written.
        ChecksumError: The bytes have the wrong SHA-256 (nothing is kept).
    """
    final = Path(target)
    folder = final.parent
    sidecar = final.with_name(final.name + ".sha256")
    expected = sha256
    if expected is None and sidecar.is_file():
        expected = sidecar.read_text(encoding="ascii").strip() or None
    stale_note = ""
    if final.is_file():
        actual = sha256_of(final)
        if expected is None:  # placed by hand (as ``by_hand`` advises): trust it now, check it from now on
            with contextlib.suppress(OSError):  # a read-only cache: nothing can be recorded
                atomic_write(sidecar, actual + "\n")
            return final
        if actual == expected:
            return final
        stale_note = (
            f" The cached copy {final} has SHA-256 {actual}, not {expected}, so it is not trusted; "
            "it was left in place."
        )
    tail = f"{stale_note} {by_hand}".rstrip()

    def failed(reason: str) -> DownloadError:
        return DownloadError(f"Could not get {final.name} from {url} into {folder}: {reason}.{tail}")

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise failed(f"the folder cannot be created ({err})") from err

    downloaded = folder / f".{final.name}.{uuid.uuid4().hex}.part"
    unpacked = folder / f".{final.name}.{uuid.uuid4().hex}.unpacked.part"
    try:
        try:
            download(url, downloaded, desc=final.name, progress=progress, timeout=timeout)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            raise failed(f"{type(err).__name__}: {err}") from err
        candidate = downloaded
        if unpack is not None:
            content = unpack(downloaded)
            if content is None:
                raise failed(f"the download is not {expected_download}")
            try:
                with open(unpacked, "xb") as file:
                    file.write(content)
            except OSError as err:
                raise failed(f"{type(err).__name__}: {err}") from err
            candidate = unpacked
        actual = sha256_of(candidate)
        if expected is not None and actual != expected:
            raise ChecksumError(
                f"{final.name} downloaded from {url} has SHA-256 {actual}, expected {expected}; the "
                f"bytes were discarded and nothing was written to {folder}.{tail}"
            )
        try:
            if expected is None:  # the record first: a crash between the two leaves it checking a new download
                atomic_write(sidecar, actual + "\n")
            os.replace(candidate, final)
        except OSError as err:
            raise failed(f"{type(err).__name__}: {err}") from err
    finally:
        _remove_quietly(downloaded)
        _remove_quietly(unpacked)
    return final
