"""Decode once: the preprocessed uint8 images of a data set at one size, stored once and reused by every backbone,
every epoch and every run of a sweep.

A cache is a folder named by a hash of its inputs (each file's path, size and modification time, the image size,
resize and equalisation modes), so any change to them makes a new cache. It holds ``images.u8`` (a raw N x S x S
uint8 array read through a memory map, never loaded whole), ``files.txt`` and ``meta.json``; it is built in a
``.partial`` folder and renamed when complete, so an interrupted build is never mistaken for a finished one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from benchmark.errors import UserError
from benchmark.images import BadImage, load_image

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("CXR_BENCH_CACHE", Path.home() / ".cache" / "cxr-bench"))


@dataclass
class ImageCache:
    path: Path
    files: list
    size: int
    bad: list
    seconds: float = 0.0

    @property
    def images(self) -> np.ndarray:
        """The N x S x S uint8 array, memory-mapped."""
        return np.memmap(self.path / "images.u8", dtype=np.uint8, mode="r",
                         shape=(len(self.files), self.size, self.size))

    def rows(self, files) -> np.ndarray:
        index = {f: i for i, f in enumerate(self.files)}
        return np.array([index[f] for f in files], dtype=np.int64)


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
    bad = []
    for i, f in enumerate(files):
        try:
            out[start + i] = load_image(f, size, resize, equalize)
        except BadImage as exc:
            bad.append((start + i, str(exc)))
            out[start + i] = 0
    return bad


def build_cache(files, size: int, resize: str = "crop", equalize: str = "none", cache_dir=None,
                skip_bad: bool = False, workers: int | None = None, log=print) -> ImageCache:
    """Decode every file once into a cache (or open the existing one for these inputs).

    A bad image stops the build with its name, or with `skip_bad` is recorded in the cache's bad list.
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
    tmp = cache_dir / f"{key}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    start = time.perf_counter()
    mm = np.memmap(tmp / "images.u8", dtype=np.uint8, mode="w+", shape=(max(1, len(files)), size, size))
    workers = workers or 2 * (os.cpu_count() or 1)  # two per core hide file reads behind decoding
    chunk = max(16, min(256, len(files) // (workers * 4) or 16))
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # parallel over files, not inside one resize
    bad = []
    try:
        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(_decode_into, mm, files[i:i + chunk], i, size, resize, equalize)
                       for i in range(0, len(files), chunk)]
            done = 0
            for fut in futures:
                found = fut.result()
                if found and not skip_bad:
                    for f in futures:
                        f.cancel()
                    raise UserError(f"{found[0][1]}; fix or remove it, or pass --skip-bad-images")
                bad.extend(found)
                done += 1
                if log and len(futures) > 20 and done % max(1, len(futures) // 10) == 0:
                    log(f"  decoding images: {min(done * chunk, len(files))}/{len(files)}")
    except BaseException:
        del mm
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        cv2.setNumThreads(threads)
    mm.flush()
    del mm
    seconds = time.perf_counter() - start
    (tmp / "files.txt").write_text("\n".join(files) + "\n")
    (tmp / "meta.json").write_text(json.dumps({"version": CACHE_VERSION, "size": size, "resize": resize,
                                               "equalize": equalize, "images": len(files), "bad": bad,
                                               "seconds": seconds}))
    try:
        tmp.rename(final)
    except OSError:  # another process finished the same cache first
        shutil.rmtree(tmp, ignore_errors=True)
    if bad and log:
        print(f"skipped {len(bad)} bad image(s), e.g. {bad[0][1]}", file=sys.stderr)
    return ImageCache(final, files, size, bad, seconds)
