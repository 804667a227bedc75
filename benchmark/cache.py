"""Decode once: the preprocessed uint8 images of a data set at one size, stored once and reused by every backbone,
every epoch and every run of a sweep.

A cache is a folder named by a hash of its inputs (each file's path, size and modification time, the image size,
resize and equalisation modes), so any change to them makes a new cache. It holds ``images.u8`` (a raw N x S x S
uint8 array that other processes read through a memory map, never loaded whole), ``files.txt`` and ``meta.json``;
it is written in a ``.partial`` folder, made durable and renamed when complete, so an interrupted build is never
mistaken for a finished one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from benchmark.errors import UserError
from benchmark.images import BadImage, load_image

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("CXR_BENCH_CACHE", Path.home() / ".cache" / "cxr-bench"))


# Caches up to this size are gathered by the pipeline from one tensor over the whole memory map; larger ones
# (CheXpert at 320 px is ~20 GB) are read batch by batch.
IN_MEMORY_BYTES = 2 << 30
PROCESS_MIN_IMAGES = 2000  # sets this large are decoded by processes, smaller ones by threads


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
    digest = hashlib.sha1(f"v{CACHE_VERSION}|{size}|{resize}|{equalize}".encode())
    for f in files:
        try:
            st = os.stat(f)
            digest.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{f}|missing\n".encode())
    return digest.hexdigest()[:20]


def _decode_into(out: np.ndarray, files, start: int, size: int, resize: str, equalize: str):
    """Decode `files` into out[start:...]; returns the (row, message) of each bad image (left black)."""
    bad = []
    for i, f in enumerate(files):
        try:
            out[start + i] = load_image(f, size, resize, equalize)
        except BadImage as exc:
            bad.append((start + i, str(exc)))
            out[start + i] = 0
    return bad


def _decode_in_worker(args):
    """_decode_into in a worker process, writing into the cache file through its own memory map."""
    path, shape, files, start, resize, equalize = args
    cv2.setNumThreads(1)
    out = np.memmap(path, dtype=np.uint8, mode="r+", shape=shape)
    return _decode_into(out, files, start, shape[1], resize, equalize)


def _decoder_pool(n_files: int, workers: int | None):
    """Threads for small sets; for large ones, one process per core: threads decoded 8,564 JPEGs about 15 %
    slower, which outweighs a process pool's start-up (about 0.2 s) only on large sets."""
    cores = os.cpu_count() or 1
    if n_files >= PROCESS_MIN_IMAGES and cores > 1 and "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")  # not fork: the parent may run TensorFlow's threads
        ctx.set_forkserver_preload(["benchmark.cache"])
        workers = workers or cores
        return ProcessPoolExecutor(workers, mp_context=ctx), workers, True
    workers = workers or 2 * cores  # two per core hide file reads behind decoding
    return ThreadPoolExecutor(workers), workers, False


def _reserve(path: Path, nbytes: int) -> None:
    """Create the image file with its space allocated where the file system can: a full disk found later, under
    a memory map, is a crash (SIGBUS) instead of an error."""
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


def _remove_abandoned(cache_dir: Path, key: str) -> None:
    """Delete the partial builds of this cache left by processes that no longer run (killed mid-build)."""
    for partial in cache_dir.glob(f"{key}.partial-*"):
        try:
            os.kill(int(partial.name.rsplit("-", 1)[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(partial, ignore_errors=True)
        except (ValueError, PermissionError):
            pass


def _finish(tmp: Path, final: Path, images: np.memmap, files, meta: dict) -> None:
    """Make the decoded images durable, write the cache's other files into `tmp`, and rename it to `final`."""
    images.flush()
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
    files = list(dict.fromkeys(files))
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    key = cache_key(files, size, resize, equalize)
    final = cache_dir / key
    meta_file = final / "meta.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta["bad"] and not skip_bad:
            raise UserError(f"{meta['bad'][0][1]}; fix or remove it, or pass --skip-bad-images "
                            f"({len(meta['bad'])} bad image(s) in all)")
        return ImageCache(final, files, size, meta["bad"], 0.0)
    _remove_abandoned(cache_dir, key)
    tmp = cache_dir / f"{key}.partial-{os.getpid()}"
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
    # decoded straight into the file's pages: one copy in memory, written back by the kernel
    out = np.memmap(tmp / "images.u8", dtype=np.uint8, mode="r+", shape=shape)
    pool, workers, in_processes = _decoder_pool(len(files), workers)
    chunk = 64 if len(files) >= 64 * 8 * workers else 8  # small, so no core idles at the end
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # parallel over files, not inside one resize
    bad = []
    try:
        if in_processes:
            futures = [pool.submit(_decode_in_worker, (str(tmp / "images.u8"), shape, files[i:i + chunk], i, resize,
                                                       equalize)) for i in range(0, len(files), chunk)]
        else:
            futures = [pool.submit(_decode_into, out, files[i:i + chunk], i, size, resize, equalize)
                       for i in range(0, len(files), chunk)]
        for done, fut in enumerate(futures, 1):
            found = fut.result()
            if found and not skip_bad:
                raise UserError(f"{found[0][1]}; fix or remove it, or pass --skip-bad-images")
            bad.extend(found)
            if log and len(futures) > 20 and done % max(1, len(futures) // 10) == 0:
                log(f"  decoding images: {min(done * chunk, len(files))}/{len(files)}")
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # before the files go
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        cv2.setNumThreads(threads)
    seconds = time.perf_counter() - start
    meta = {"version": CACHE_VERSION, "size": size, "resize": resize, "equalize": equalize, "images": len(files),
            "bad": bad, "seconds": seconds}
    if bad and log:
        print(f"skipped {len(bad)} bad image(s), e.g. {bad[0][1]}", file=sys.stderr)
    cache = ImageCache(final, files, size, bad, seconds, array=out)

    def finish():
        try:
            _finish(tmp, final, out, files, meta)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            cache.error = (f"could not write the image cache {final}: {exc}; free space there or set "
                           "cache_dir (or CXR_BENCH_CACHE) to another folder")
            if not wait:
                print(f"warning: {cache.error} (this run goes on from memory)", file=sys.stderr)

    if wait:
        finish()
        cache.wait()
    else:
        cache.writer = threading.Thread(target=finish, name="cache-writer")
        cache.writer.start()
    return cache
