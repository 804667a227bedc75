"""What the tool may write into and delete: folders it made (marked), and one writer per folder (locked).

- **Markers.** A folder cxr-bench makes for itself holds a marker file naming its kind (run, sweep, report,
  phantom, cache) and the layout version. A command writes into a folder only if it is missing, empty, or holds
  the marker of the kind the command expects; anything else, a user's folder (a download, a project) or one made
  for another purpose (a sweep given to `train --out`), is refused with an error that names it and what it is.
  Folders of versions before markers are recognised by one compatibility rule (`legacy_kind`, in
  `benchmark.runs.compat` with every rule for older folders), not by one file.
  Nothing is ever deleted from a folder without the marker.
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
from benchmark.runs import compat
from benchmark.runs.compat import CACHE_ENTRY, RUN_STATES  # noqa: F401 (their names here, as before)
from benchmark.runs.rundir import LOCK, MARKER

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the markers still protect what is not ours
    fcntl = None

LAYOUT = 1  # the layout of the folders this version writes (docs/run-directory.md); a marker without one is 1
KINDS = {"run": "a run directory", "sweep": "a sweep folder", "report": "a report folder",
         "phantom": "a synthetic phantom", "cache": "an image cache"}


def holder_text() -> str:
    return f"process {os.getpid()} on host {socket.gethostname()}"


def read_marker(folder: Path) -> tuple[str, int] | None:
    """(kind, layout) from `folder`'s marker, or None if it has none (or an unreadable one)."""
    marker = Path(folder) / MARKER
    try:
        if marker.is_symlink() or not marker.is_file():
            return None
        lines = marker.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    if not lines or not lines[0].split():
        return None
    return lines[0].split()[0], compat.marker_layout(lines)


def legacy_kind(folder: Path) -> str | None:
    """What a folder of a version before markers was made for (the compatibility rule, benchmark.runs.compat)."""
    return compat.legacy_kind(folder, kind_of, ignore=(MARKER, LOCK))


def kind_of(folder: Path) -> str | None:
    """What cxr-bench made `folder` for (a key of KINDS, from its marker or the compatibility rule), or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    marked = read_marker(folder)
    return marked[0] if marked else legacy_kind(folder)


def describe(folder: Path) -> str:
    """What a folder is, in words, for an error message."""
    kind = kind_of(folder)
    if kind:
        return f"{KINDS.get(kind, kind)} made by cxr-bench"
    return "a folder cxr-bench did not make"


def is_ours(folder: Path, kinds: tuple = ()) -> bool:
    """Whether `folder` holds cxr-bench's marker (of one of `kinds`, if given)."""
    marked = read_marker(folder)
    return marked is not None and (not kinds or marked[0] in kinds)


def expect_kind(folder: Path, kinds: tuple, what: str, hint: str) -> str:
    """The kind of an existing folder a command works in (one of `kinds`); anything else is a UserError naming the
    folder and what it is."""
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"{folder} does not exist; {hint}")
    if not folder.is_dir():
        raise UserError(f"{folder} is a file, not {what}; {hint}")
    kind = kind_of(folder)
    if kind not in kinds:
        raise UserError(f"{folder} is {describe(folder)}, not {what}; {hint}")
    _check_layout(folder)
    return kind


def _check_layout(folder: Path) -> None:
    marked = read_marker(folder)
    if marked and marked[1] > LAYOUT:
        raise UserError(f"{folder} was written by a newer cxr-bench (layout {marked[1]}; this version knows "
                        f"{LAYOUT}); use that version, or another folder")


def write_marker(folder: Path, kind: str) -> None:
    (Path(folder) / MARKER).write_text(f"{kind}\nlayout {LAYOUT}\nmade by cxr-bench; the tool writes and deletes "
                                       f"only in folders that hold this file\n")


def claim(folder: Path, kind: str, what: str, hint: str) -> Path:
    """Make `folder` ours to write as `kind`: create it, or accept it if it is empty or already of that kind (a
    folder of an earlier version by `legacy_kind`). Anything else, a user's folder or one cxr-bench made for
    another purpose, is a UserError naming the folder and what it is."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not a folder; {hint}")
    found = kind_of(folder)
    if found is not None and found != kind:
        raise UserError(f"{folder} is {describe(folder)}, not {what}; {hint}")
    if folder.is_dir() and found is None:
        entries = [p.name for p in folder.iterdir() if p.name != LOCK]
        if entries:
            shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
            raise UserError(f"{folder} holds files that cxr-bench did not make ({shown}), so it is not used as "
                            f"{what}; {hint}")
    if folder.is_dir():
        _check_layout(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if read_marker(folder) is None:
        write_marker(folder, kind)
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

    def __init__(self, folder: Path, what: str, name: str = LOCK):
        self.folder, self.what, self.name = Path(folder), what, name
        self.fd = None

    @property
    def path(self) -> Path:
        return self.folder / self.name

    def acquire(self) -> "FolderLock":
        if fcntl is None or self.fd is not None:
            return self
        # the folder is not created here: a lock goes only into a folder the command made or checked; a link put
        # where the lock file goes is not followed (it could point at any file the user can write)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UserError(f"{self.path} is a link, not cxr-bench's lock file; remove it and run this "
                                f"again") from None
            raise
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
