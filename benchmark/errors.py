"""The one exception type that the CLI turns into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user (a file, column, value or option): printed as one line, exit code 2."""


# what a user can do about the operating system's refusals, by errno name (the rest: the system's own words)
_OS_HINTS = {
    "ENOSPC": "free space there (or point --out, cache_dir or $CXR_BENCH_CACHE elsewhere), then run the same command "
              "again: it resumes",
    "EDQUOT": "the disk quota is used up; free space, then run the same command again: it resumes",
    "EACCES": "this user may not write or read there; check the folder's permissions or choose another path",
    "EPERM": "this user may not write or read there; check the folder's permissions or choose another path",
    "EROFS": "the file system is read-only; choose a path on a writable one",
    "ENOTDIR": "a part of the path is a file, not a folder; choose another path",
    "EISDIR": "the path is a folder where a file was expected; choose another path",
    "ENOENT": "check the path",
    "ENAMETOOLONG": "choose a shorter path",
}


def os_error_line(exc: OSError) -> str:
    """An OSError (a full disk, a refused permission, a file where a folder should be) as one line naming the
    path and what to do."""
    import errno
    import os

    name = errno.errorcode.get(exc.errno, "")
    what = exc.strerror or str(exc) or name or type(exc).__name__
    paths = [os.fsdecode(p) if isinstance(p, (str, bytes, os.PathLike)) else str(p)
             for p in (exc.filename, exc.filename2) if p is not None]
    where = " -> ".join(paths) if paths else "(no path given)"
    hint = _OS_HINTS.get(name, "check the path and the disk, then run the same command again")
    return f"{where}: {what}; {hint}".replace("\n", " ")
