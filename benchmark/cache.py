"""Decode once: the preprocessed uint8 images of a data set at one size, stored once and reused by every backbone,
every epoch and every run of a sweep.

A cache is a folder named by a hash of its inputs (each file's path, size and modification time, the image size,
resize and equalisation modes), so any change to them makes a new cache. It holds ``images.u8`` (a raw N x S x S
uint8 array that other processes read through a memory map, never loaded whole), ``files.txt`` and ``meta.json``;
it is written in a ``.partial`` folder, made durable and renamed when complete, so an interrupted build is never
mistaken for a finished one. The processes that decode live in `benchmark.decoders`.
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
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from benchmark.decoders import decode_to_file, decoder_pool, process_alive, spans, stop_decoders
from benchmark.errors import UserError

CACHE_VERSION = 2  # 2: bilinear resizing when shrinking by less than 1/0.7


def default_cache_dir() -> Path:
    return Path(os.environ.get("CXR_BENCH_CACHE", Path.home() / ".cache" / "cxr-bench"))


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


def cache_key(files, size: int, resize: str, equalize: str) -> str:
    return _fingerprint(files, size, resize, equalize)[0]


def _fingerprint(files, size: int, resize: str, equalize: str) -> tuple[str, list]:
    """The cache's key, and the files that are missing or empty (known before any image is decoded)."""
    digest = hashlib.sha1(f"v{CACHE_VERSION}|{size}|{resize}|{equalize}".encode())
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
    """The folder a cache is built in: named by the machine and process building it, so that another process
    can tell an abandoned build from a running one (the cache folder may be shared by several machines)."""
    return f"{key}.partial-{socket.gethostname()}-{os.getpid()}"


def _remove_abandoned(cache_dir: Path) -> None:
    """Delete the partial builds, of any cache, left by processes of this machine that no longer run (killed
    mid-build): one can be as large as the cache it was to become."""
    here = socket.gethostname()
    for partial in cache_dir.glob("*.partial-*"):
        host, _, pid = partial.name.split(".partial-", 1)[1].rpartition("-")
        if host and host != here:  # no host: named by an earlier version, which ran here
            continue
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


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
    (tmp / "files.txt").write_text("\n".join(files) + "\n")
    with open(tmp / "meta.json", "w") as fh:
        fh.write(json.dumps(meta))
        fh.flush()
        os.fsync(fh.fileno())
    try:
        tmp.rename(final)
    except OSError:  # another process finished the same cache first
        shutil.rmtree(tmp, ignore_errors=True)


def build_cache(files, size: int, resize: str = "crop", equalize: str = "none", cache_dir=None,
                skip_bad: bool = False, workers: int | None = None, log=print, wait: bool = True) -> ImageCache:
    """Decode every file once into a cache (or open the existing one for these inputs).

    A bad image stops the build with its name, or with `skip_bad` is recorded in the cache's bad list.
    With `wait=False` the cache is returned as soon as its images are decoded, and a background thread makes
    them durable and finishes the cache's files (call `wait()` before another process needs them).
    """
    return begin_cache(files, size, resize, equalize, cache_dir, skip_bad, workers, log, wait).result()


def begin_cache(files, size: int, resize: str = "crop", equalize: str = "none", cache_dir=None,
                skip_bad: bool = False, workers: int | None = None, log=print, wait: bool = True) -> "CacheBuild":
    """Start build_cache: the decoders are given their work and this returns at once, so that the caller can
    set up what it needs next (the model, the input pipeline over `images`) while they run. Its result()
    waits for them and returns the ImageCache; cancel() (or leaving a `with` block without result()) stops
    them and removes the partial cache."""
    files = list(dict.fromkeys(files))
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    key, missing = _fingerprint(files, size, resize, equalize)
    final = cache_dir / key
    meta_file = final / "meta.json"
    if meta_file.is_file():
        stop_decoders()  # not needed
        meta = json.loads(meta_file.read_text())
        if meta["bad"] and not skip_bad:
            raise _bad_image_error(meta["bad"][0][1], f"{len(meta['bad'])} bad image(s) in all")
        return CacheBuild(ImageCache(final, files, size, meta["bad"], 0.0))
    if missing and not skip_bad:  # before decoding: the caller may not look at the result for a while
        raise _bad_image_error(missing[0], f"{len(missing)} missing or empty image(s) in all")
    _remove_abandoned(cache_dir)
    tmp = cache_dir / _partial_name(key)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    start = time.perf_counter()
    shape = (max(1, len(files)), size, size)
    try:
        _reserve(tmp / "images.u8", int(np.prod(shape)))
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"cannot make the image cache in {cache_dir} ({int(np.prod(shape)) >> 20} MB): {exc}; "
                        "free space there or set cache_dir (or CXR_BENCH_CACHE) to another folder") from None
    path = str(tmp / "images.u8")
    pool, workers = decoder_pool(len(files), workers)
    cache = ImageCache(final, files, size, [], array=np.memmap(path, dtype=np.uint8, mode="r+", shape=shape))
    meta = {"version": CACHE_VERSION, "size": size, "resize": resize, "equalize": equalize, "images": len(files)}
    build = CacheBuild(cache, pool=pool, tmp=tmp, meta=meta, skip_bad=skip_bad, log=log, wait=wait, start=start)
    try:
        for i, j in spans(len(files), workers):
            build.submit(j, decode_to_file, path, files[i:j], i, size, resize, equalize)
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

    def cancel(self) -> None:
        """Stop the decoders and remove the partial cache (nothing to do unless still decoding)."""
        if self.state != "decoding":
            return
        self._stop("cancelled")
        self.pool.shutdown(wait=True, cancel_futures=True)  # before the files go
        shutil.rmtree(self.tmp, ignore_errors=True)

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
        meta = dict(self.meta, bad=bad, seconds=cache.seconds)
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

        if self.wait:
            finish()
            cache.wait()
        else:
            cache.writer = threading.Thread(target=finish, name="cache-writer")
            cache.writer.start()
        return cache
