"""Atomic file writes: write under a temporary name in the target folder, check it is whole, then rename."""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

# mkstemp makes owner-only files; outputs must be readable by the platform and other users.
FILE_MODE = 0o644


class IncompleteWriteError(OSError):
    """A file came out shorter (or otherwise different) than what was written: full disk, quota, failed flush."""

    def __init__(self, problem: str, *, path: str | Path):
        super().__init__(f"{problem} (disk full?)")
        self.filename = str(path)
        self.problem = problem

    def __str__(self) -> str:
        return f"file {self.filename}: could not be written completely: {self.problem} (disk full?)"


@contextlib.contextmanager
def atomic_path(path: str | Path, *, verify: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path`, on failure it is removed.

    Readers never see half a file, and a failed write leaves any earlier file untouched. Before the
    rename the temporary file is flushed to disk and `verify(tmp)` runs: some writers (ITK) do not
    report a failed final flush, so only checking what landed on disk tells a full disk from a write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    # Named after its target (cut short: names may come from DICOM text), so a leftover says what it was.
    fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{path.name[:60]}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        fsync_file(tmp)
        if tmp.stat().st_size == 0:
            raise IncompleteWriteError("0 bytes on disk", path=path)
        if verify is not None:
            verify(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def require_size(tmp: Path, expected: int, *, path: str | Path) -> None:
    """IncompleteWriteError unless `tmp` holds exactly `expected` bytes (`path` is the name to report)."""
    actual = tmp.stat().st_size
    if actual != expected:
        raise IncompleteWriteError(f"{actual} bytes on disk, {expected} expected", path=path)


def fsync_file(path: Path) -> None:
    """Flush a file's data to disk; ENOSPC or EIO from a delayed write surfaces here."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable; some file systems cannot fsync a folder, which is harmless."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
