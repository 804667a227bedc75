"""The decoder processes: one per core, started early and shared by a build, that decode image files into a cache
file (see `benchmark.input.cache` for the cache itself).

Their lifecycle holds one piece of global state, the processes `start_decoders()` started for the next build.
Each decoder process exits once the process that started it is gone, so a killed command leaves none behind.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import cv2
import numpy as np

from benchmark.cores import usable_cores
from benchmark.input.images import BadImage, load_image
from benchmark.runs.processes import exit_when_gone

PROCESS_MIN_IMAGES = 2000  # without start_decoders(), sets this large are decoded by processes, smaller by threads


WRITE_BYTES = 4 << 20  # decoded images are written to the cache file in blocks of about this size


def decode_to_file(path: str, files, start: int, size: int, resize: str, equalize: str, max_pixels: int):
    """Decode `files` into rows start... of the cache file; returns the (row, message) of each bad image (left
    black). Images are decoded into a small reused buffer that is written to the file a block at a time: large
    writes into the file's reserved space fill new page-cache pages several times faster than copies into a
    memory map of it (3.8 against 0.9 GB/s here), which are faulted in a page at a time."""
    image_bytes = size * size
    per_block = max(1, min(len(files), WRITE_BYTES // image_bytes))
    if _BUFFER is not None and _BUFFER.size >= per_block * image_bytes:
        buf = _BUFFER[:per_block * image_bytes].reshape(per_block, size, size)
    else:
        buf = np.empty((per_block, size, size), np.uint8)
    bad = []
    fd = os.open(path, os.O_WRONLY)
    try:
        for lo in range(0, len(files), len(buf)):
            block = files[lo:lo + len(buf)]
            for i, f in enumerate(block):
                try:
                    buf[i] = load_image(f, size, resize, equalize, max_pixels)
                except BadImage as exc:
                    bad.append((start + lo + i, str(exc)))
                    buf[i] = 0
            data, offset = memoryview(buf[:len(block)]).cast("B"), (start + lo) * image_bytes
            while data:
                written = os.pwrite(fd, data, offset)
                data, offset = data[written:], offset + written
    finally:
        os.close(fd)
    return bad


_BUFFER = None  # a decoder process's write buffer, touched at its start (threads allocate their own)


OWNER_POLL_S = 0.5  # how often a decoder process checks that the process that started it still runs


def _init_decoder(ready, owner: int) -> None:
    """Once in each decoder process: a watch on the process that started it, one OpenCV thread
    (parallel over files, not inside one resize), the codecs loaded and the write buffer's memory touched, so
    the first real images do not pay for them (1-6 ms per process here: a virtual machine may have handed the
    free memory back to its host); then `ready` (a semaphore) is released."""
    global _BUFFER
    # a process pool's workers outlive a parent that was killed (SIGTERM from a scheduler, SIGKILL from a sweep):
    # the rest of their chunk would be decoded for nobody, then they would wait for work forever
    threading.Thread(target=exit_when_gone, args=(owner, OWNER_POLL_S), name="owner-watch", daemon=True).start()
    cv2.setNumThreads(1)
    cv2.imdecode(cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1], cv2.IMREAD_GRAYSCALE)
    _BUFFER = np.ones(WRITE_BYTES, np.uint8)
    if ready is not None:
        ready.release()


_STARTED: dict = {}  # the decoder processes start_decoders() started: {"pool", "workers", "ready"}


def _processes_possible() -> bool:
    return usable_cores() > 1 and "forkserver" in mp.get_all_start_methods()


def _process_pool(workers: int, ready=None) -> ProcessPoolExecutor:
    """`workers` decoder processes from a fork server (not fork: the parent may run TensorFlow's threads)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["benchmark.input.decoders"])
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_decoder, initargs=(ready, os.getpid()))


def start_decoders(workers: int | None = None) -> None:
    """Start the decoder processes in the background, one per core, so that their start-up (about 0.2 s)
    overlaps what a command does before it builds a cache (reading the data set's CSV, checking its files).
    The next build_cache uses them, whatever the number of images, and stops them when it is done. No-op where
    processes cannot be used."""
    if _STARTED or not _processes_possible():
        return
    workers = workers or usable_cores()
    ready = mp.get_context("forkserver").Semaphore(0)
    pool = _process_pool(workers, ready)

    def start():
        # The pool starts a process for each task that finds none idle. A finished task does not mean that every
        # process is up (one may run them all while another is still starting): each releases `ready` when it is.
        try:
            for _ in range(workers):
                pool.submit(os.getpid)
        except RuntimeError:  # stopped already
            return
        for _ in range(workers):
            if not ready.acquire(timeout=60):
                break

    thread = threading.Thread(target=start, name="decoder-start", daemon=True)
    thread.start()
    _STARTED.update(pool=pool, workers=workers, ready=thread)


def decoders_ready() -> None:
    """Block until the processes start_decoders() started are running (for benchmarks)."""
    if _STARTED:
        _STARTED["ready"].join()


def _take_started():
    started = dict(_STARTED)
    _STARTED.clear()
    return started


def stop_decoders(wait: bool = False) -> None:
    """Stop the processes start_decoders() started, if no build has used them (nothing to decode, or an error).
    Pass `wait` when this process is about to exit: a decoder still starting then would fail, with a traceback,
    to open the pool's semaphores that the exit removes."""
    started = _take_started()
    if started:
        started["pool"].shutdown(wait=wait, cancel_futures=True)


def decoder_pool(n_files: int, workers: int | None):
    """The started decoder processes if there are any; else one process per core for large sets, threads for
    small ones (threads decode about 15 % slower, which outweighs a process pool's start-up only on large
    sets)."""
    started = _take_started()
    if started:
        return started["pool"], started["workers"]
    if n_files >= PROCESS_MIN_IMAGES and _processes_possible():
        workers = workers or usable_cores()
        return _process_pool(workers), workers
    workers = workers or 2 * usable_cores()  # two per core hide file reads behind decoding
    return ThreadPoolExecutor(workers), workers


SPAN_MAX = 256  # images in one chunk of work: a cancelled build waits for the chunks being decoded


def spans(n: int, workers: int) -> list:
    """(start, end) of each chunk of work: large chunks first (at most SPAN_MAX images), shrinking to 4 images,
    so that all workers finish together (fixed chunks left one core idle for up to a chunk at the end)."""
    spans, i = [], 0
    while i < n:
        step = max(4, min(SPAN_MAX, (n - i) // (4 * workers)))
        spans.append((i, min(n, i + step)))
        i += step
    return spans
