"""What the tool may write into and delete: folders it made (marked), and one writer per folder (locked).

- **Markers.** A folder cxr-bench makes for itself (a run, a sweep, a report) holds a marker file. A command writes
  into a folder only if it is missing, empty, or holds that marker; anything else is a user's (a download, a
  project) and is refused with an error that names it. Nothing is ever deleted from a folder without the marker.
- **Locks.** A sweep holds a lock on its folder, a run on its run directory, a cache build on its partial folder:
  `fcntl.flock` on a lock file, which the operating system releases when the process dies (kill -9 included), so a
  killed command never leaves a stale lock. The lock file names its holder (process id and host) for the error a
  second writer gets.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
from pathlib import Path

from benchmark.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the markers still protect what is not ours
    fcntl = None

MARKER = ".cxr-bench"  # a folder cxr-bench made; its text says what kind
LOCK = ".lock"


def holder_text() -> str:
    return f"process {os.getpid()} on host {socket.gethostname()}"


def is_ours(folder: Path, kinds: tuple = ()) -> bool:
    """Whether `folder` holds cxr-bench's marker (of one of `kinds`, if given)."""
    marker = Path(folder) / MARKER
    if not marker.is_file():
        return False
    if not kinds:
        return True
    try:
        return marker.read_text().split()[0] in kinds
    except (OSError, IndexError):
        return False


def claim(folder: Path, kind: str, what: str, hint: str, legacy=None) -> Path:
    """Make `folder` ours to write: create it, or accept it if it is empty or already ours (`legacy(folder)` may
    accept one made by an earlier version, which had no marker). Anything else is a UserError naming the folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not a folder; {hint}")
    if folder.is_dir() and not is_ours(folder):
        entries = [p.name for p in folder.iterdir() if p.name != LOCK]
        if entries and not (legacy and legacy(folder)):
            shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
            raise UserError(f"{folder} holds files that cxr-bench did not make ({shown}), so it is not used as "
                            f"{what}; {hint}")
    folder.mkdir(parents=True, exist_ok=True)
    if not is_ours(folder):
        (folder / MARKER).write_text(f"{kind}\nmade by cxr-bench; the tool writes and deletes only in folders that "
                                     f"hold this file\n")
    return folder


def remove_ours(folder: Path, kinds: tuple = ()) -> None:
    """Delete a folder only if it holds cxr-bench's marker (of one of `kinds`); else a UserError."""
    folder = Path(folder)
    if not folder.exists():
        return
    if not is_ours(folder, kinds):
        raise UserError(f"{folder} was not made by cxr-bench (no {MARKER} file); it is left as it is")
    shutil.rmtree(folder)


class FolderLock:
    """An exclusive lock on a folder for as long as this object holds it (a context manager). `acquire()` raises a
    UserError naming the holder if another process has it."""

    def __init__(self, folder: Path, what: str):
        self.folder, self.what = Path(folder), what
        self.fd = None

    @property
    def path(self) -> Path:
        return self.folder / LOCK

    def acquire(self) -> "FolderLock":
        if fcntl is None or self.fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise UserError(f"{self.folder} is in use by another {self.what} ({self.holder() or 'a process'}); "
                            f"wait for it to end, or stop it, then run this again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder_text().encode(), 0)
        self.fd = fd
        return self

    def holder(self) -> str | None:
        try:
            return self.path.read_text().strip() or None
        except OSError:
            return None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the lock
            self.fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_is_held(path: Path) -> bool:
    """Whether some process holds an flock on the file at `path` (False if it does not exist)."""
    if fcntl is None:
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # releases the lock we may have taken
    return False
