"""The course's data: a registry of files (download, check, cache) and sliding-window datasets.

Two concepts live here because every chapter needs both of them together:

* **Data files.** ``DATASETS`` names each file the course uses, with its canonical
  address and SHA-256. ``fetch(name)`` returns a local path: from the cache when the
  cached copy verifies, otherwise downloaded, verified and written atomically.
  ``read_text`` and ``load_json`` open the result.
* **Next-token training pairs.** ``SlidingWindowDataset`` cuts one long sequence of
  token ids into (input, target) windows, the targets shifted by one token, and
  ``create_dataloader`` tokenizes a text and batches those windows.

Environment variables:

* ``COMPANION_DATA_DIR``: the cache folder (default ``$XDG_CACHE_HOME/companion/data``,
  or ``~/.cache/companion/data``). CI and offline machines point it at a folder that
  already holds the files; the folder may be read-only.

Shape letters used in this module:

* ``N``: number of token ids in the whole corpus
* ``B``: batch size (windows per batch)
* ``T``: tokens per window (``context_length``)
"""

from __future__ import annotations

import json
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from companion.files import DEFAULT_TIMEOUT_S, ChecksumError, DownloadError, cache_folder, fetch_verified
from companion.tokenizers import encode_text

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "ChecksumError",
    "DataFile",
    "DownloadError",
    "SlidingWindowDataset",
    "create_dataloader",
    "data_dir",
    "fetch",
    "load_json",
    "read_text",
]

DATA_DIR_ENV = "COMPANION_DATA_DIR"
"""Name of the environment variable that sets the cache folder."""


# --------------------------------------------------------------------------- #
# The registry
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class DataFile:
    """One data file of the course: where it comes from and what its bytes must hash to.

    Attributes:
        name: Short name used with ``fetch`` (the key in ``DATASETS``).
        filename: Name of the file in the cache folder.
        url: Canonical download address.
        sha256: Hex SHA-256 of the cached file (after extraction and normalisation).
        size: Size of the cached file in bytes.
        member: For a ZIP download, the archive member that becomes the cached file;
            ``None`` when the URL serves the file itself.
        lf_newlines: Convert CRLF line endings to LF before checking the hash (for
            files whose copies in circulation differ only in line endings).
        description: What the file holds and which chapter uses it.
        licence: Its licence or origin.
    """

    name: str
    filename: str
    url: str
    sha256: str
    size: int
    member: str | None = None
    lf_newlines: bool = False
    description: str = ""
    licence: str = ""


DATASETS: dict[str, DataFile] = {
    entry.name: entry
    for entry in (
        DataFile(
            name="the-verdict",
            filename="the-verdict.txt",
            url=(
                "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/"
                "ch02/01_main-chapter-code/the-verdict.txt"
            ),
            sha256="b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
            size=20_479,
            description="A short story: the text chapters 2 to 5 tokenize and train on.",
            licence='Edith Wharton, "The Verdict" (1908), public domain',
        ),
        DataFile(
            name="tinyshakespeare",
            filename="tinyshakespeare.txt",
            url=(
                "https://raw.githubusercontent.com/karpathy/char-rnn/master/"
                "data/tinyshakespeare/input.txt"
            ),
            sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            size=1_115_394,
            description="About 1 MB of Shakespeare, a larger corpus for pretraining.",
            licence='Shakespeare, public domain (the char-rnn "Tiny Shakespeare" extract)',
        ),
        DataFile(
            name="sms-spam",
            filename="SMSSpamCollection",
            url="https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
            sha256="7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
            size=477_907,
            member="SMSSpamCollection",
            lf_newlines=True,
            description=(
                "5,574 tab-separated SMS messages labelled ham or spam, "
                "for fine-tuning a classifier."
            ),
            licence="UCI SMS Spam Collection, CC BY 4.0",
        ),
        DataFile(
            name="instruction-data",
            filename="instruction-data.json",
            url=(
                "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/"
                "ch07/01_main-chapter-code/instruction-data.json"
            ),
            sha256="7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
            size=203_524,
            description="1,100 instruction/input/output records for instruction fine-tuning.",
            licence="LLMs-from-scratch repository, Apache-2.0",
        ),
        DataFile(
            name="instruction-data-with-preference",
            filename="instruction-data-with-preference.json",
            url=(
                "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/"
                "ch07/04_preference-tuning-with-dpo/instruction-data-with-preference.json"
            ),
            sha256="305315abf14f65fa42c01a0877572f832606571c2a7d49f152ac1d758b16756e",
            size=386_968,
            description=(
                "The same 1,100 records with chosen and rejected answers, for preference tuning."
            ),
            licence="LLMs-from-scratch repository, Apache-2.0",
        ),
    )
}
"""Every data file of the course, keyed by its short name."""


def data_dir() -> Path:
    """Return the cache folder for data files (it may not exist yet).

    ``$COMPANION_DATA_DIR`` if set, else ``$XDG_CACHE_HOME/companion/data`` if that is
    set, else ``~/.cache/companion/data`` (``companion.files.cache_folder``). Nothing
    is created here: ``fetch`` creates the folder only when it has a file to write.
    """
    return cache_folder("data", DATA_DIR_ENV)


def _lookup(name: str) -> DataFile:
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise KeyError(f"unknown data file {name!r}; known names: {known}") from None


def _by_hand(entry: DataFile, folder: Path) -> str:
    """Say where to put a file by hand: the advice every download error ends with."""
    target = folder / entry.filename
    if entry.member is None:
        how = f"download {entry.url} yourself and save it as {target}"
    else:
        how = (
            f"download {entry.url} yourself, extract the member {entry.member!r}"
            + (" with LF line endings" if entry.lf_newlines else "")
            + f" and save it as {target}"
        )
    return (
        f"To fix this by hand, {how} (its SHA-256 must be {entry.sha256}), "
        f"or set {DATA_DIR_ENV} to a folder that already holds {entry.filename}."
    )


def fetch(
    name: str,
    *,
    progress: bool = True,
    url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Return the local path of a course data file, downloading it on first use.

    A cached copy whose SHA-256 verifies is returned without touching the network (so a
    read-only cache folder works). Otherwise the file is downloaded, unpacked if it is
    a ZIP member, its hash checked, and only then moved under its final name
    (``companion.files.fetch_verified``); a cached copy with the wrong hash is replaced
    once a good download has verified.

    Args:
        name: A key of ``DATASETS``, e.g. ``"the-verdict"``.
        progress: Show a ``tqdm`` progress bar while downloading.
        url: Download from this address instead of the registered one (a mirror or a
            local test server). What it serves must be the same bytes (for a ZIP entry,
            an archive holding the same member), since the registered hash still applies.
        timeout: Seconds to wait for the server before giving up.

    Returns:
        The path of the verified file in ``data_dir()``.

    Raises:
        KeyError: ``name`` is not in ``DATASETS`` (the message lists the known names).
        DownloadError: The download failed (no network, refused, timed out, cut short,
            not the expected archive) or the cache folder cannot be written.
        ChecksumError: The downloaded bytes have the wrong SHA-256 (nothing is kept).
    """
    entry = _lookup(name)
    folder = data_dir()
    needs_unpacking = entry.member is not None or entry.lf_newlines
    return fetch_verified(
        url or entry.url,
        folder / entry.filename,
        sha256=entry.sha256,
        unpack=(lambda path: _unpack(entry, path)) if needs_unpacking else None,
        expected_download=f"a ZIP archive holding {entry.member!r}" if entry.member else "a text file",
        progress=progress,
        timeout=timeout,
        by_hand=_by_hand(entry, folder),
    )


def _unpack(entry: DataFile, download: Path) -> bytes | None:
    """Return the bytes to cache: the archive member if any, with LF newlines if asked.

    Returns ``None`` when the download is not a readable ZIP holding the member.
    """
    if entry.member is None:
        content = download.read_bytes()
    else:
        try:
            with zipfile.ZipFile(download) as archive:
                content = archive.read(entry.member)
        except (zipfile.BadZipFile, KeyError, zlib.error, EOFError):
            return None
    if entry.lf_newlines:
        content = content.replace(b"\r\n", b"\n")
    return content


def read_text(name: str, *, progress: bool = True) -> str:
    """Return a course data file as text (UTF-8), fetching it first if needed.

    Args:
        name: A key of ``DATASETS``, e.g. ``"the-verdict"``.
        progress: Show a progress bar if the file has to be downloaded.

    Returns:
        The whole file as one string.
    """
    return fetch(name, progress=progress).read_text(encoding="utf-8")


def load_json(name: str, *, progress: bool = True) -> Any:
    """Return a JSON data file of the course, parsed, fetching it first if needed.

    Args:
        name: A key of ``DATASETS`` whose file is JSON, e.g. ``"instruction-data"``.
        progress: Show a progress bar if the file has to be downloaded.

    Returns:
        The parsed JSON (for the instruction data, a list of dicts).
    """
    entry = _lookup(name)
    if not entry.filename.endswith(".json"):
        json_names = ", ".join(n for n, e in DATASETS.items() if e.filename.endswith(".json"))
        raise ValueError(
            f"data file {name!r} ({entry.filename}) is not JSON; use read_text() for it. "
            f"JSON files: {json_names}"
        )
    return json.loads(read_text(name, progress=progress))


# --------------------------------------------------------------------------- #
# Sliding windows for next-token prediction
# --------------------------------------------------------------------------- #
class SlidingWindowDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """(input, target) windows over one token sequence, the targets shifted by one token.

    Window ``i`` starts at token ``i * stride``; there are as many windows as fit with
    their last target token inside the sequence, i.e.
    ``(N - context_length - 1) // stride + 1``. The ids are stored once as a tensor and
    each window is a slice of it, made on demand.

    Built in chapter 2, "Input–target pairs with a sliding window".

    Args:
        token_ids: The whole corpus as token ids, shape ``(N,)``.
        context_length: Tokens per window ``T``.
        stride: Tokens between the starts of consecutive windows (``stride ==
            context_length`` gives windows that do not overlap).

    Raises:
        ValueError: ``context_length`` or ``stride`` is not positive, ``token_ids`` is
            not one-dimensional, or it holds fewer than ``context_length + 1`` tokens.
    """

    def __init__(
        self,
        token_ids: Sequence[int] | torch.Tensor,
        context_length: int,
        stride: int,
    ) -> None:
        if context_length < 1:
            raise ValueError(f"context_length must be a positive integer, got {context_length}")
        if stride < 1:
            raise ValueError(f"stride must be a positive integer, got {stride}")
        ids = torch.as_tensor(token_ids, dtype=torch.long)  # (N,)
        if ids.dim() != 1:
            raise ValueError(
                f"token_ids must be one-dimensional (N,), got shape {tuple(ids.shape)}"
            )
        needed = context_length + 1
        if ids.numel() < needed:
            raise ValueError(
                f"the text has {ids.numel()} tokens, but one window with "
                f"context_length={context_length} needs {needed} (the inputs plus one "
                f"target token); use a shorter context_length or more text"
            )
        self.token_ids = ids
        self.context_length = context_length
        self.stride = stride
        self._num_windows = (ids.numel() - needed) // stride + 1

    def __len__(self) -> int:
        return self._num_windows

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return window ``index`` as ``(input_ids, target_ids)``, each of shape ``(T,)``."""
        if index < 0:
            index += self._num_windows
        if not 0 <= index < self._num_windows:
            raise IndexError(
                f"window index out of range: the dataset has {self._num_windows} windows"
            )
        start = index * self.stride
        end = start + self.context_length
        input_ids = self.token_ids[start:end]  # (T,)
        target_ids = self.token_ids[start + 1 : end + 1]  # (T,), shifted by one token
        return input_ids, target_ids


def create_dataloader(
    text: str,
    tokenizer: Any,
    *,
    batch_size: int = 4,
    context_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    seed: int | None = 123,
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    """Tokenize a text and batch its sliding windows for next-token prediction.

    Built in chapter 2, "Input–target pairs with a sliding window".

    Args:
        text: The corpus.
        tokenizer: Any course tokenizer; the text is encoded with
            ``companion.tokenizers.encode_text``, so ``<|endoftext|>`` between
            documents becomes its token.
        batch_size: Windows per batch ``B``.
        context_length: Tokens per window ``T``.
        stride: Tokens between the starts of consecutive windows.
        shuffle: Visit the windows in a random order each epoch.
        drop_last: Drop a final batch smaller than ``batch_size``.
        num_workers: Worker processes for loading (0 loads in the main process).
        seed: Seeds the ``torch.Generator`` that shuffles, so the order is reproducible;
            ``None`` uses torch's global random state.

    Returns:
        A ``DataLoader`` yielding ``(input_ids, target_ids)``, each of shape ``(B, T)``
        and dtype ``torch.long``.

    Raises:
        ValueError: The text is too short for one window, or ``drop_last`` is set and
            there are fewer windows than ``batch_size`` (the loader would be empty).
    """
    token_ids = encode_text(tokenizer, text)  # (N,)
    dataset = SlidingWindowDataset(token_ids, context_length=context_length, stride=stride)
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"the text gives {len(dataset)} windows, fewer than batch_size={batch_size}, "
            f"so with drop_last=True the loader would yield no batch; use a smaller "
            f"batch_size, stride or context_length, more text, or drop_last=False"
        )
    generator = None
    if seed is not None:
        generator = torch.Generator()
        generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=generator,
    )
