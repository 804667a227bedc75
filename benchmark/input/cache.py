"""Decode once: the preprocessed uint8 images of a data set at one size, stored once and reused by every backbone,
every epoch and every run of a sweep.

A cache is a folder named by a hash of its inputs (each file's path, size and modification time, the image size,
resize and equalisation modes), so any change to them makes a new cache. It holds ``images.u8`` (a raw N x S x S
uint8 array that other processes read through a memory map, never loaded whole), ``files.txt`` and ``meta.json``;
it is written in a ``.partial`` folder, made durable and renamed when complete, so an interrupted build is never
mistaken for a finished one. The processes that decode live in `benchmark.input.decoders`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from benchmark.errors import UserError
from benchmark.input.decoders import decode_to_file, decoder_pool, spans, stop_decoders
from benchmark.input.images import MAX_PIXELS
from benchmark.runs.compat import unlocked_build_owner
from benchmark.runs.ownership import claim, lock_is_held
from benchmark.runs.processes import process_alive

CACHE_VERSION = 3  # 2: bilinear resizing when shrinking by less than 1/0.7; 3: the pixel limit is in the key
BUILDING = ".building"  # a partial build's lock file, held (flock) by the process building it
CHECK_ROWS = 32  # images whose CRC is recorded, to detect a damaged cache when it is opened

CACHE_BUILT = "CXR_BENCH_CACHE_BUILT"  # set for a sweep's runs: their image caches exist already


def default_cache_dir() -> Path:
    return Path(os.environ.get("CXR_BENCH_CACHE", Path.home() / ".cache" / "cxr-bench"))


def check_cache_dir(cache_dir=None) -> Path:
    """The cache folder (`cache_dir`, else the default), refused as one line if it, or a folder above it, is a
    file: checked before a command touches anything."""
    from benchmark.errors import UserError

    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    for above in (folder, *folder.parents):
        if above.exists() and not above.is_dir():
            source = "cache_dir" if cache_dir else "the image cache ($CXR_BENCH_CACHE, or ~/.cache/cxr-bench)"
            raise UserError(f"{source} {folder}: {above} is a file, not a folder; give the image cache a folder "
                            f"(--set cache_dir=DIR)")
        if above.exists():
            break
    return folder


# Caches up to this size are gathered by the pipeline from one tensor over the whole memory map; larger ones
# (CheXpert at 320 px is ~20 GB) are read batch by batch.
IN_MEMORY_BYTES = 2 << 30


@dataclass
class ImageCache:
    path: Path
    files: list
    size: int
    bad: list
    seconds: float = 0.0
    array: np.memmap | None = None  # the map this process decoded into, when it built the cache
    writer: threading.Thread | None = None  # still finishing the cache's files (build_cache(..., wait=False))
    error: str | None = None  # why the cache's files could not be written

    @property
    def images(self) -> np.ndarray:
        """The N x S x S uint8 array, memory-mapped."""
        if self.array is not None:
            return self.array
        return np.memmap(self.path / "images.u8", dtype=np.uint8, mode="r",
                         shape=(len(self.files), self.size, self.size))

    def rows(self, files) -> np.ndarray:
        index = {f: i for i, f in enumerate(self.files)}
        return np.array([index[f] for f in files], dtype=np.int64)

    def wait(self) -> None:
        """Block until the cache's files are on disk (for other processes to open)."""
        if self.writer is not None:
            self.writer.join()
        if self.error:
            raise UserError(self.error)


def cache_key(files, size: int, resize: str, equalize: str, max_pixels: int = MAX_PIXELS) -> str:
    return _fingerprint(list(dict.fromkeys(files)), size, resize, equalize, max_pixels)[0]


def _fingerprint(files, size: int, resize: str, equalize: str, max_pixels: int = MAX_PIXELS) -> tuple[str, list]:
    """The cache's key, and the files that are missing or empty (known before any image is decoded)."""
    limit = "" if max_pixels == MAX_PIXELS else f"|{max_pixels}"
    digest = hashlib.sha1(f"v{CACHE_VERSION}|{size}|{resize}|{equalize}{limit}".encode())
    bad = []
    for f in files:
        try:
            st = os.stat(f)
            digest.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            if not st.st_size:
                bad.append(f"image {f} is empty")
        except OSError:
            digest.update(f"{f}|missing\n".encode())
            bad.append(f"image {f} does not exist")
    return digest.hexdigest()[:20], bad


def _bad_image_error(message: str, count: str = "") -> UserError:
    """The error that stops a build at a bad image (`message` names it; `count` says how many there are)."""
    return UserError(f"{message}; fix or remove it, or pass --skip-bad-images" + (f" ({count})" if count else ""))


def _reserve(path: Path, nbytes: int) -> None:
    """Create the image file with its space allocated where the file system can, so that a full disk is an
    error before any image is decoded (elsewhere, the write that finds it is)."""
    with open(path, "wb") as fh:
        try:
            os.posix_fallocate(fh.fileno(), 0, nbytes)
            return
        except AttributeError:  # not on macOS
            pass
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise
        fh.truncate(nbytes)  # file systems without fallocate


def _partial_name(key: str) -> str:
    """The folder a cache is built in: named by the machine and process building it (two builds never share
    one), and holding the lock file its builder holds."""
    return f"{key}.partial-{socket.gethostname()}-{os.getpid()}"


def _remove_abandoned(cache_dir: Path) -> None:
    """Delete the partial builds, of any cache, whose builder is gone (killed mid-build): one can be as large as
    the cache it was to become. A build in progress holds an flock on its lock file, which the operating system
    releases when its process dies, on any machine or container that shares the folder; only folders named as
    builds name them are considered. (Builds of earlier versions, without a lock file, are removed when the
    process their name gives is gone from this machine.)"""
    here = socket.gethostname()
    for partial in cache_dir.glob("*.partial-*"):
        key = partial.name.split(".partial-", 1)[0]
        if not partial.is_dir() or len(key) != 20 or any(c not in "0123456789abcdef" for c in key):
            continue
        if (partial / BUILDING).is_file():
            if not lock_is_held(partial / BUILDING):
                shutil.rmtree(partial, ignore_errors=True)
            continue
        owner = unlocked_build_owner(partial.name)  # a build of a version before the build lock
        if owner and (not owner[0] or owner[0] == here) and not process_alive(owner[1]):
            shutil.rmtree(partial, ignore_errors=True)


def _hold_build_lock(tmp: Path) -> int | None:
    """Create and lock the partial folder's lock file; the descriptor is held until the build ends."""
    try:
        import fcntl
    except ImportError:
        return None
    fd = os.open(tmp / BUILDING, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"cxr-bench cache build, process {os.getpid()} on {socket.gethostname()}\n".encode())
    return fd


def _check_rows(n: int) -> list[int]:
    return sorted({int(i) for i in np.linspace(0, n - 1, min(n, CHECK_ROWS))}) if n else []


def _row_crcs(images: np.ndarray, rows) -> list[int]:
    return [zlib.crc32(np.ascontiguousarray(images[r]).tobytes()) for r in rows]


def _damage(final: Path, files, size: int) -> str | None:
    """Why a finished cache cannot be used as it is (None if it can): truncated, its files unreadable, or its
    sampled images not what was stored."""
    try:
        meta = json.loads((final / "meta.json").read_text())
        listed = (final / "files.txt").read_text().splitlines()
        expected = len(files) * size * size
        actual = (final / "images.u8").stat().st_size
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {str(exc)[:80]}"
    if meta.get("images") != len(files) or len(listed) != len(files) or meta.get("size") != size:
        return "its file list does not match"
    if actual < expected:
        return f"images.u8 is truncated ({actual:,} of {expected:,} bytes)"
    check = meta.get("check")
    if check:
        images = np.memmap(final / "images.u8", dtype=np.uint8, mode="r", shape=(len(files), size, size))
        if _row_crcs(images, check["rows"]) != check["crc32"]:
            return "its stored images differ from what was decoded"
    return None


def _sync(path: Path) -> None:
    """Flush a file to disk. Not through a memory map: numpy's flush (msync) holds the GIL until the disk has the
    data, which stalls every Python thread of the process, the training loop's included (87 ms per 200 MB here)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _finish(tmp: Path, final: Path, files, meta: dict) -> None:
    """Make the decoded images durable, write the cache's other files into `tmp`, and rename it to `final`."""
    _sync(tmp / "images.u8")
    with open(tmp / "files.txt", "w") as fh:
        fh.write("\n".join(files) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    with open(tmp / "meta.json", "w") as fh:
        fh.write(json.dumps(meta))
        fh.flush()
        os.fsync(fh.fileno())
    try:
        tmp.rename(final)
    except OSError:  # another process finished the same cache first
        shutil.rmtree(tmp, ignore_errors=True)
        return
    (final / BUILDING).unlink(missing_ok=True)
    try:
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def build_cache(files, size: int, resize: str = "crop", equalize: str = "none", cache_dir=None,
                skip_bad: bool = False, workers: int | None = None, log=print, wait: bool = True,
                max_pixels: int = MAX_PIXELS) -> ImageCache:
    """Decode every file once into a cache (or open the existing one for these inputs).

    A bad image stops the build with its name, or with `skip_bad` is recorded in the cache's bad list.
    With `wait=False` the cache is returned as soon as its images are decoded, and a background thread makes
    them durable and finishes the cache's files (call `wait()` before another process needs them).
    """
    return begin_cache(files, size, resize, equalize, cache_dir, skip_bad, workers, log, wait, max_pixels).result()


def begin_cache(files, size: int, resize: str = "crop", equalize: str = "none", cache_dir=None,
                skip_bad: bool = False, workers: int | None = None, log=print, wait: bool = True,
                max_pixels: int = MAX_PIXELS) -> "CacheBuild":
    """Start build_cache: the decoders are given their work and this returns at once, so that the caller can
    set up what it needs next (the model, the input pipeline over `images`) while they run. Its result()
    waits for them and returns the ImageCache; cancel() (or leaving a `with` block without result()) stops
    them and removes the partial cache."""
    files = list(dict.fromkeys(files))
    cache_dir = check_cache_dir(cache_dir)
    key, missing = _fingerprint(files, size, resize, equalize, max_pixels)
    final = cache_dir / key
    if final.is_dir():
        damage = _damage(final, files, size)
        if damage is None:
            stop_decoders()  # not needed
            meta = json.loads((final / "meta.json").read_text())
            if meta["bad"] and not skip_bad:
                raise _bad_image_error(meta["bad"][0][1], f"{len(meta['bad'])} bad image(s) in all")
            build = CacheBuild(ImageCache(final, files, size, meta["bad"], 0.0))
            build.key = key
            return build
        print(f"warning: the image cache {final} is damaged ({damage}); it is rebuilt", file=sys.stderr)
        doomed = final.with_name(f"{key}.damaged-{os.getpid()}")
        final.rename(doomed)  # then a reader that opens it meanwhile gets nothing half-deleted
        shutil.rmtree(doomed, ignore_errors=True)
    if missing and not skip_bad:  # before decoding: the caller may not look at the result for a while
        raise _bad_image_error(missing[0], f"{len(missing)} missing or empty image(s) in all")
    # the cache's folder is made (and marked) by us, or is an image cache already: never a user's folder
    claim(cache_dir, "cache", "an image cache", "set cache_dir (or $CXR_BENCH_CACHE) to a folder of its own")
    _remove_abandoned(cache_dir)
    tmp = cache_dir / _partial_name(key)
    shutil.rmtree(tmp, ignore_errors=True)  # this process's own, from a build it cancelled
    tmp.mkdir(parents=True)
    lock_fd = _hold_build_lock(tmp)
    start = time.perf_counter()
    shape = (max(1, len(files)), size, size)
    try:
        _reserve(tmp / "images.u8", int(np.prod(shape)))
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if lock_fd is not None:
            os.close(lock_fd)
        raise UserError(f"cannot make the image cache in {cache_dir} ({int(np.prod(shape)) >> 20} MB): {exc}; "
                        "free space there or set cache_dir (or CXR_BENCH_CACHE) to another folder") from None
    path = str(tmp / "images.u8")
    pool, workers = decoder_pool(len(files), workers)
    cache = ImageCache(final, files, size, [], array=np.memmap(path, dtype=np.uint8, mode="r+", shape=shape))
    meta = {"version": CACHE_VERSION, "size": size, "resize": resize, "equalize": equalize, "images": len(files),
            "max_pixels": max_pixels}
    build = CacheBuild(cache, pool=pool, tmp=tmp, meta=meta, skip_bad=skip_bad, log=log, wait=wait, start=start)
    build.key, build.lock_fd = key, lock_fd
    try:
        for i, j in spans(len(files), workers):
            build.submit(j, decode_to_file, path, files[i:j], i, size, resize, equalize, max_pixels)
    except BaseException:
        build.cancel()
        raise
    return build


class CacheBuild:
    """A cache whose images are being decoded (see begin_cache). `images` is its memory map, filled in as the
    decoders go: read it only after result()."""

    def __init__(self, cache: ImageCache, pool=None, tmp: Path | None = None, meta: dict | None = None,
                 skip_bad: bool = False, log=print, wait: bool = True, start: float = 0.0):
        self.cache, self.pool, self.tmp, self.meta = cache, pool, tmp, meta
        self.skip_bad, self.log, self.wait = skip_bad, log, wait
        self.key, self.lock_fd = cache.path.name, None  # the cache's key; the partial folder's lock, while building
        self.futures, self.ends = [], []  # each decoding task, and the number of images done when it is
        self.decoded_at = None  # when the last task ended (result() may be called much later)
        self.state = "decoding" if pool else "done"
        self.start = start
        self.cv2_threads = cv2.getNumThreads()
        if pool:
            cv2.setNumThreads(1)  # parallel over files, not inside one resize (for decoder threads)

    @property
    def images(self) -> np.ndarray:
        return self.cache.images

    @property
    def decoding(self) -> bool:
        return self.state == "decoding"

    def rows(self, files) -> np.ndarray:
        return self.cache.rows(files)

    def submit(self, end: int, fn, *args) -> None:
        future = self.pool.submit(fn, *args)
        future.add_done_callback(self._task_done)
        self.futures.append(future)
        self.ends.append(end)

    def _task_done(self, future) -> None:
        self.decoded_at = time.perf_counter()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cancel()

    def _stop(self, state: str) -> None:
        self.state = state
        cv2.setNumThreads(self.cv2_threads)

    def _release(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    def cancel(self) -> None:
        """Stop the decoders and remove the partial cache (nothing to do unless still decoding)."""
        if self.state != "decoding":
            return
        self._stop("cancelled")
        self.pool.shutdown(wait=True, cancel_futures=True)  # before the files go
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._release()

    def check(self) -> None:
        """Without waiting: raise result()'s error now if a decoder has already found a bad image."""
        if self.decoding and not self.skip_bad and any(
                f.done() and (f.exception() is not None or f.result()) for f in self.futures):
            self.result()

    def result(self) -> ImageCache:
        """Wait for the decoders and return the cache; raise on a bad image unless skip_bad."""
        if self.state == "cancelled":
            raise RuntimeError("this cache build was cancelled")
        if self.state == "done":
            return self.cache
        files, log, bad = self.cache.files, self.log, []
        try:
            for done, fut in enumerate(self.futures, 1):
                found = fut.result()
                if found and not self.skip_bad:
                    raise _bad_image_error(found[0][1])
                bad.extend(found)
                if log and len(self.futures) > 20 and done % max(1, len(self.futures) // 10) == 0:
                    log(f"  decoding images: {self.ends[done - 1]}/{len(files)}")
        except BaseException as exc:
            self.cancel()
            if isinstance(exc, OSError):  # reading is BadImage's: this is the cache file
                raise UserError(f"cannot write the image cache in {self.tmp.parent}: {exc}; free space there or "
                                "set cache_dir (or CXR_BENCH_CACHE) to another folder") from None
            raise
        self._stop("done")
        self.pool.shutdown(wait=False)  # every task is done: the processes exit in the background
        cache = self.cache
        cache.seconds = (self.decoded_at or time.perf_counter()) - self.start
        cache.bad = bad
        rows = _check_rows(len(files))
        meta = dict(self.meta, bad=bad, seconds=cache.seconds,
                    check={"rows": rows, "crc32": _row_crcs(cache.array, rows)})
        if bad and log:
            print(f"skipped {len(bad)} bad image(s), e.g. {bad[0][1]}", file=sys.stderr)
        tmp, final = self.tmp, cache.path

        def finish():
            try:
                _finish(tmp, final, files, meta)
            except OSError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                cache.error = (f"could not write the image cache {final}: {exc}; free space there or set "
                               "cache_dir (or CXR_BENCH_CACHE) to another folder")
                if not self.wait:
                    print(f"warning: {cache.error} (this run goes on from memory)", file=sys.stderr)
            finally:
                self._release()

        if self.wait:
            finish()
            cache.wait()
        else:
            cache.writer = threading.Thread(target=finish, name="cache-writer")
            cache.writer.start()
        return cache
